"""The machine's cache of fetched tools, ``~/.cache/uplink``, shared by every checkout: the local
Kafka broker's jars here, the tests' S3 server and schema registry there (``tests/servers``).

Each tool is fetched once per machine, by whichever process asks first, under a file lock that
the others wait on; a fetch says so in one line on stderr, and shows its command's output only
when it fails.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from uplink.exceptions import UplinkError

# Maven's plugin that copies an artifact (and its dependencies) out of Maven Central.
MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1"


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "uplink"


def shown(path: Path) -> str:
    """``path`` as a person would type it: ``~/...`` under the home directory."""
    try:
        return str(Path("~") / path.relative_to(Path.home()))
    except ValueError:
        return str(path)


def say(text: str) -> None:
    # Not a log record: a person waits at the console for this, whatever the log settings.
    print(f"uplink: {text}", file=sys.stderr, flush=True)


def fetch_once(what: str, done: Path, lock: Path, fetch: Callable[[], None], announce: str) -> None:
    """Unless ``done`` exists: under ``lock`` (saying so when another process holds it), and
    unless ``done`` appeared meanwhile, say ``announce`` and ``fetch``. ``fetch`` makes ``done``
    last (a marker file, or the tool moved into place), so a fetch cut short is done again."""
    if done.exists():
        return
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as held:
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another uplink fetching {what}…")
            fcntl.flock(held, fcntl.LOCK_EX)
        if done.exists():
            return
        say(announce)
        fetch()


def run_quietly(
    argv: Sequence[str],
    error: type[UplinkError],
    failed: str,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> None:
    """Run a fetch's command with its output kept; raises ``error`` (``failed``, the exit code
    and the output's tail) when it fails."""
    result = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        env={**os.environ, **env} if env is not None else None,
    )
    if result.returncode != 0:
        raise error(
            f"{failed} (exit {result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )


def go_environ(root: Path) -> dict[str, str]:
    """Go's variables for a build kept under ``root`` (GOPATH, the module and build caches),
    outside any checkout."""
    return {
        "GOPATH": str(root / "gopath"),
        "GOMODCACHE": str(root / "modcache"),
        "GOCACHE": str(root / "gocache"),
        "GOFLAGS": "-modcacherw",  # so the cache can be deleted without chmod
    }


def go_install(
    package: str, version: str, binary: Path, root: Path, error: type[UplinkError], took: str
) -> Path:
    """``go install package@version`` through the Go module proxy into ``binary`` (named by
    version, so a bump builds again), once per machine; ``took`` says how long a build takes."""
    if binary.exists():
        return binary
    go = shutil.which("go")
    if go is None:
        raise error(f"{package} is built with Go: `go` is not on PATH")
    name = package.rsplit("/", 1)[-1]

    def build() -> None:
        built = root / "build"
        run_quietly(
            [go, "install", f"{package}@{version}"],
            error,
            f"go install {package}@{version} failed",
            env={**go_environ(root), "GOBIN": str(built)},
        )
        binary.parent.mkdir(parents=True, exist_ok=True)
        os.replace(built / name, binary)

    fetch_once(
        f"{name} {version}",
        binary,
        root / f".{name}.lock",
        build,
        f"building {name} {version} into {shown(root)} (first run only, {took})…",
    )
    return binary
