"""A bucket and a spool: the object storage under the archive and the media store.

Files are written into the spool, a local directory of this process's own (``uplink.spool``),
then put into the bucket. ``start()`` checks the bucket answers and makes the spool; ``stop()``
ends the bucket's retries and removes the spool, whatever the bucket's stop raised.
"""

from __future__ import annotations

from pathlib import Path

from uplink.resources import Resource
from uplink.s3.bucket import Bucket
from uplink.spool import Spool


class BucketStore(Resource):
    def __init__(self, bucket: Bucket, kind: str, work_dir: Path | None = None) -> None:
        self.bucket = bucket
        self._spool = Spool(kind, work_dir)  # in work_dir, default the system's temporary one

    async def start(self) -> None:
        await self.bucket.start()
        await self._spool.start()

    async def stop(self) -> None:
        try:
            await self.bucket.stop()
        finally:
            await self._spool.stop()

    def spooled(self, name: str) -> Path:
        """The spool's path for a file named ``name``."""
        return self._spool.path / name
