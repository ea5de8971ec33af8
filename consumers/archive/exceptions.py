"""Errors of the archive worker and of reading archive files back."""

from __future__ import annotations

from pathlib import Path

from uplink.exceptions import UplinkError


class ArchiveReadError(UplinkError):
    """An archive file that cannot be read back (``archive cat``, ``replay``)."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
