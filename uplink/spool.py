"""A local directory of this process's own, for files on their way to object storage.

Made inside a work directory (default: the system's temporary directory) at start, removed
at stop. A killed process cannot remove its own, so each start also removes the directories of
the same kind that were left there more than an hour ago (live processes keep theirs fresh:
every file written into it touches it).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from pathlib import Path

from uplink.resources import Resource

log = logging.getLogger(__name__)


class Spool(Resource):
    def __init__(self, kind: str, work_dir: Path | None = None, stale_after: float = 3600) -> None:
        self._prefix = f"uplink-{kind}-"
        self._work_dir = work_dir
        self._stale_after = stale_after
        self._path: Path | None = None

    @property
    def path(self) -> Path:
        if self._path is None:
            raise RuntimeError(f"{self._prefix}spool not started")
        return self._path

    async def start(self) -> None:
        if self._path is not None:
            return
        if self._work_dir is not None:
            self._work_dir.mkdir(parents=True, exist_ok=True)
        self._path = Path(tempfile.mkdtemp(prefix=self._prefix, dir=self._work_dir))
        await asyncio.to_thread(self._sweep, self._path.parent)

    async def stop(self) -> None:
        path, self._path = self._path, None
        if path is not None:
            await asyncio.to_thread(shutil.rmtree, path, True)

    def _sweep(self, parent: Path) -> None:
        cutoff = time.time() - self._stale_after
        for stale in parent.glob(f"{self._prefix}*"):
            try:
                if stale != self._path and stale.is_dir() and stale.stat().st_mtime < cutoff:
                    shutil.rmtree(stale)
                    log.info("removed %s, left by a killed worker", stale)
            except OSError:
                continue  # another process's, removed meanwhile, or not ours to remove
