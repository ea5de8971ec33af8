"""The archive worker's own settings (beside its WorkerSettings), and its commit policy."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.container import compressor
from uplink.exceptions import ConfigError
from uplink.s3.settings import Location, location
from uplink.settings import CommitPolicy
from uplink.variables import DIRECTORY, LOCATION, declaration, read, variable

# A flush renames every open file, so a commit by record count would cut each partition's file
# at count / partitions records: files rotate by their own count and size instead (each
# rotation commits), and the interval (``--flush-interval``) makes a quiet stream durable.
COMMITS = CommitPolicy(every=None, interval=60.0)


@dataclass(frozen=True)
class ArchiveSettings:
    root: Location = variable(
        "UPLINK_ARCHIVE_DIR",
        LOCATION,
        ("archive", "replay"),
        "where files go: a directory (or `file://`), or `s3://bucket/prefix`; "
        "`archive cat` and `replay` read files under it",
        shown="required",
        flag="--archive-dir",
    )
    work_dir: Path | None = variable(
        "UPLINK_ARCHIVE_WORK_DIR",
        DIRECTORY,
        ("archive",),
        "with a bucket: files are written here (in a directory of the process's own, removed "
        "at stop), then put",
        default=None,
        shown="the system's temporary directory",
        flag="--work-dir",
    )
    max_records: int = 10_000  # per file
    max_bytes: int = 64 * 1024 * 1024  # per file, uncompressed datum bytes
    codec: str = "deflate"  # or "zstandard" (needs the zstandard package) or "null"
    # Uncompressed datum bytes per container block: each block costs a compressor, a job on the
    # writer thread and a hand-over of the GIL, so blocks are large (docs/archive.md).
    block_bytes: int = 1024 * 1024
    # Decode every datum before archiving it (a corrupt one goes to the DLQ) instead of checking
    # only its framing and head; it costs CPU per record. docs/archive.md says what is trusted.
    verify: bool = False

    def __post_init__(self) -> None:
        try:  # at start-up, not at the first file: a missing zstandard package too
            compressor(self.codec)
        except ValueError as exc:
            raise ConfigError("--codec", str(exc)) from exc

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str], root: str | None = None, **explicit: Any
    ) -> ArchiveSettings:
        """``root`` (``--archive-dir``) wins over UPLINK_ARCHIVE_DIR: a path or s3://bucket/prefix."""
        declared = declaration(cls, "root")
        setting = "--archive-dir" if root else declared.name
        root = root or declared.read(environ)
        if root is None:
            raise ConfigError(
                "--archive-dir", "the archive worker needs a directory or s3://bucket/prefix"
            )
        where = location(root, setting, environ)
        return read(cls, environ, given={"root": where}, explicit=explicit)
