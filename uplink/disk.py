"""What the stores that write local files need of the disk."""

from __future__ import annotations

import os
from pathlib import Path


def fsync(path: Path) -> None:
    """A file's bytes, or a directory's entries, on disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
