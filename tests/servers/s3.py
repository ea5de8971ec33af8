"""A local S3 server for the tests and development: versitygw (Apache-2.0) serving a directory.

Go builds it from the Go module proxy once per machine into ``~/.cache/uplink/go`` (GOPATH, the
module and build caches there too, outside the repository; about two minutes); every start is
then a plain process: ``versitygw --port 127.0.0.1:PORT posix DIR``, each top-level directory of
DIR a bucket. It is a real S3 implementation (SigV4, ``If-None-Match: *`` answered with 412 on a
taken key), not a mock.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from uplink.broker.local import free_port
from uplink.cache import default_cache_dir, go_install
from uplink.exceptions import UplinkError
from uplink.resources import BlockingResource
from uplink.settings import Secret

VERSITYGW = "github.com/versity/versitygw/cmd/versitygw"
VERSITYGW_VERSION = "v1.8.0"


class S3ServerError(UplinkError):
    """The local S3 server could not be built or started."""


def go_dir(cache_dir: Path) -> Path:
    return cache_dir / "go"


def versitygw_binary(cache_dir: Path) -> Path:
    return go_dir(cache_dir) / "bin" / f"versitygw-{VERSITYGW_VERSION}"


def install_versitygw(cache_dir: Path | None = None) -> Path:
    """Build versitygw into the cache unless it is there (once per machine, about two minutes);
    returns the binary."""
    cache_dir = cache_dir or default_cache_dir()
    return go_install(
        VERSITYGW,
        VERSITYGW_VERSION,
        versitygw_binary(cache_dir),
        go_dir(cache_dir),
        S3ServerError,
        "about two minutes",
    )


@dataclass(frozen=True)
class S3ServerSettings:
    data_dir: Path
    port: int = field(default_factory=free_port)
    access_key: str = field(default_factory=lambda: "uplink" + secrets.token_hex(4))
    secret_key: Secret = field(default_factory=lambda: Secret(secrets.token_hex(16)))
    cache_dir: Path = field(default_factory=default_cache_dir)
    ready_timeout: float = 30.0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environ(self) -> dict[str, str]:
        """The AWS variables a client of this server needs."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key.reveal(),
        }


class LocalS3(BlockingResource):
    """versitygw on loopback; ``bucket(name)`` creates a bucket (a directory of the data dir).
    ``stop()`` then ``start()`` again serves the same data on the same port."""

    def __init__(self, settings: S3ServerSettings) -> None:
        self.settings = settings
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self._process is not None:
            return
        binary = install_versitygw(self.settings.cache_dir)
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.settings.data_dir.parent / f"versitygw-{self.settings.port}.log", "ab")
        env = {
            **os.environ,
            "ROOT_ACCESS_KEY": self.settings.access_key,
            "ROOT_SECRET_KEY": self.settings.secret_key.reveal(),
        }
        with log:
            self._process = subprocess.Popen(
                [
                    binary,
                    "--port",
                    f"127.0.0.1:{self.settings.port}",
                    "posix",
                    str(self.settings.data_dir),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + self.settings.ready_timeout
        while not _listening(self.settings.port):
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise S3ServerError(f"versitygw exited with {code} (see {log.name})")
            if time.monotonic() > deadline:
                self.stop()
                raise S3ServerError(f"versitygw not listening after {self.settings.ready_timeout}s")
            time.sleep(0.05)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def bucket(self, name: str) -> str:
        """A new, empty bucket (versitygw's posix backend: a directory); returns its name."""
        (self.settings.data_dir / name).mkdir()
        return name


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def main() -> int:
    """``python -m tests.servers.s3``: build versitygw into the cache if it is missing."""
    print(install_versitygw())
    return 0


if __name__ == "__main__":
    sys.exit(main())
