"""The media store as the console reads it: an object by its SHA-256, with the content type its
sidecar keeps, from the directory or the bucket the media worker writes to. Every name derives
from the digest, which must be 64 hex digits: nothing a push says picks a path."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from consumers.media.storage import FileStore, MediaBucket
from uplink.s3.bucket import Bucket
from uplink.s3.settings import Location

_HEX = re.compile(r"[0-9a-f]{64}")
CHUNK = 64 * 1024
MEDIA_SETTING = "UPLINK_MEDIA_DIR"


@dataclass(frozen=True)
class MediaObject:
    content_type: str
    size: int
    chunks: AsyncIterator[bytes]


class MediaReader:
    """``start()``/``stop()`` (a bucket's client); ``get(digest)``: the object, or None."""

    def __init__(self, root: Location | None) -> None:
        self._root = root
        self._bucket: MediaBucket | None = None

    async def start(self) -> None:
        if self._root is not None and not isinstance(self._root, Path):
            bucket = Bucket(self._root, MEDIA_SETTING)
            await bucket.start()
            self._bucket = MediaBucket(bucket)

    async def stop(self) -> None:
        if self._bucket is not None:
            await self._bucket.bucket.stop()

    @property
    def configured(self) -> bool:
        return self._root is not None

    async def get(self, digest: str) -> MediaObject | None:
        if not _HEX.fullmatch(digest) or self._root is None:
            return None
        if self._bucket is not None:
            key = self._bucket.key(digest)
            size = await self._bucket.bucket.size(key)
            if size is None:
                return None
            sidecar = await self._bucket.bucket.get(f"{key}.json")
            data = await self._bucket.bucket.get(key)
            return MediaObject(_content_type(sidecar), size, _once(data))
        assert isinstance(self._root, Path)
        path = FileStore(self._root).path(digest)
        try:
            size = path.stat().st_size
            sidecar = await asyncio.to_thread(path.with_name(path.name + ".json").read_bytes)
        except FileNotFoundError:
            return None
        return MediaObject(_content_type(sidecar), size, _file_chunks(path))


def _content_type(sidecar: bytes) -> str:
    """The stored content type; a generic one where the push gave none."""
    try:
        kept = orjson.loads(sidecar).get("mimeType")
    except (orjson.JSONDecodeError, AttributeError):
        kept = None
    return kept if isinstance(kept, str) and kept else "application/octet-stream"


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as file:
        while chunk := await asyncio.to_thread(file.read, CHUNK):
            yield chunk
