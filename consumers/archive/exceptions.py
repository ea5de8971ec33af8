"""Errors of the archive worker and of reading archive files back."""

from __future__ import annotations

from uplink.exceptions import UplinkError


class ArchiveReadError(UplinkError):
    """An archive file that cannot be read back (``archive cat``, ``replay``)."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name  # a path or an s3:// URI
