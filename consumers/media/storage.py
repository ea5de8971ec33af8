"""Where fetched media is kept: content-addressed by SHA-256 behind a small interface.

``FileStore`` (the default) keeps ``ROOT/sha256/<hex[0:2]>/<hex>`` plus ``<hex>.json``, a sidecar
with what the first push that brought the object said about it. Downloads are spooled under
``ROOT/tmp`` (same filesystem, so the final rename is atomic). The sidecar is linked into place
before the object is renamed, so an object that exists always has its sidecar; linking fails if
one is already there, so the first push's sidecar is the one that stays. Every name under ROOT
derives from the digest this worker computed, never from anything a push says.

``MediaBucket`` keeps the same layout under ``s3://bucket/prefix``: downloads are spooled in a
local directory of the process's own, then the sidecar and the object are put create-only
(``If-None-Match: *``), the sidecar first, so an object that exists always has its sidecar and
the first push's sidecar is the one that stays; ``find`` is a HEAD. The media events carry the
``s3://`` URI.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from uplink.disk import fsync
from uplink.mediastore import OBJECTS, object_key, object_path, sidecar_name
from uplink.resources import Resource
from uplink.s3.bucket import Bucket
from uplink.s3.store import BucketStore

log = logging.getLogger(__name__)

SPOOL_SUFFIX = ".part"


@dataclass(frozen=True)
class Stored:
    uri: str
    size: int


class MediaStore(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def find(self, digest: str) -> Stored | None:
        """The object with this hex SHA-256, if it is already kept."""
        ...

    def spool(self) -> Path:
        """A fresh local path to download into; ``put`` or ``discard`` it afterwards."""
        ...

    async def put(self, digest: str, spooled: Path, sidecar: dict[str, Any]) -> Stored:
        """Keep the spooled bytes (already verified to hash to ``digest``), durably."""
        ...

    def discard(self, spooled: Path) -> None:
        """Remove a spool file that was not put (safe if it is gone)."""
        ...


class FileStore(Resource):
    """The filesystem ``MediaStore``."""

    def __init__(self, root: Path, *, stale_after: float = 3600.0) -> None:
        self._root = root
        self._objects = root / OBJECTS
        self._spool = root / "tmp"
        self._stale_after = stale_after  # spool files older than this were left by a crash

    async def start(self) -> None:
        self._objects.mkdir(parents=True, exist_ok=True)
        self._spool.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self._sweep)

    async def stop(self) -> None:
        return None

    def path(self, digest: str) -> Path:
        return object_path(self._root, digest)

    def uri(self, digest: str) -> str:
        return self.path(digest).absolute().as_uri()

    async def find(self, digest: str) -> Stored | None:
        try:
            size = self.path(digest).stat().st_size
        except FileNotFoundError:
            return None
        return Stored(self.uri(digest), size)

    def spool(self) -> Path:
        return self._spool / f"{uuid.uuid4().hex}{SPOOL_SUFFIX}"

    async def put(self, digest: str, spooled: Path, sidecar: dict[str, Any]) -> Stored:
        final = self.path(digest)
        size = await asyncio.to_thread(self._put, final, spooled, orjson.dumps(sidecar))
        return Stored(self.uri(digest), size)

    def discard(self, spooled: Path) -> None:
        spooled.unlink(missing_ok=True)

    def _put(self, final: Path, spooled: Path, sidecar: bytes) -> int:
        final.parent.mkdir(parents=True, exist_ok=True)
        fsync(spooled)
        size = spooled.stat().st_size
        meta = self.spool()
        try:
            with meta.open("wb") as out:
                out.write(sidecar)
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(meta, final.with_name(sidecar_name(final.name)))
            except FileExistsError:
                pass  # the first push's sidecar stays
        finally:
            meta.unlink(missing_ok=True)
        os.replace(spooled, final)  # another worker may have put the same bytes: same result
        fsync(final.parent)
        return size

    def _sweep(self) -> None:
        """Spool files of crashed downloads; only old ones, as other workers share the root."""
        cutoff = time.time() - self._stale_after
        for stale in self._spool.glob(f"*{SPOOL_SUFFIX}"):
            try:
                if stale.stat().st_mtime < cutoff:
                    stale.unlink()
                    log.info("removed %s, left by a crashed download", stale)
            except FileNotFoundError:
                continue


class MediaBucket(BucketStore):
    """The S3 ``MediaStore``: content-addressed objects and sidecars, create-only."""

    def __init__(self, bucket: Bucket, work_dir: Path | None = None) -> None:
        super().__init__(bucket, "media", work_dir)

    def key(self, digest: str) -> str:
        return object_key(self.bucket.location, digest)

    def uri(self, digest: str) -> str:
        return f"s3://{self.bucket.location.bucket}/{self.key(digest)}"

    async def find(self, digest: str) -> Stored | None:
        size = await self.bucket.size(self.key(digest))
        return None if size is None else Stored(self.uri(digest), size)

    def spool(self) -> Path:
        return self.spooled(f"{uuid.uuid4().hex}{SPOOL_SUFFIX}")

    async def put(self, digest: str, spooled: Path, sidecar: dict[str, Any]) -> Stored:
        key = self.key(digest)
        size = (await asyncio.to_thread(spooled.stat)).st_size
        # Taken: the first push's sidecar stays, or another worker put the same bytes.
        await self.bucket.put_new(sidecar_name(key), orjson.dumps(sidecar))
        await self.bucket.put_new(key, spooled)
        return Stored(self.uri(digest), size)

    def discard(self, spooled: Path) -> None:
        spooled.unlink(missing_ok=True)
