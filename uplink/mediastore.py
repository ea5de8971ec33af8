"""The media store's layout, one for its writer (the media worker, consumers/media/storage.py)
and its readers (the console): objects content-addressed by SHA-256 under a root, a directory
or ``s3://bucket/prefix``, at ``sha256/<hex[0:2]>/<hex>``, each beside ``<hex>.json``, a
sidecar with what the first push that brought it said of it (its content type among that).
Every name derives from the digest, which must be 64 lowercase hex digits: nothing a push says
picks a path.

``MediaReader`` reads an object back with its stored content type.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from uplink.s3.bucket import Bucket
from uplink.s3.settings import Location, S3Location

_HEX = re.compile(r"[0-9a-f]{64}")
OBJECTS = "sha256"  # the folder (or key prefix) of the objects, under the root
CHUNK = 64 * 1024
MEDIA_SETTING = "UPLINK_MEDIA_DIR"


def is_digest(digest: str) -> bool:
    return _HEX.fullmatch(digest) is not None


def _parts(digest: str) -> tuple[str, str, str]:
    if not is_digest(digest):
        raise ValueError(f"not a lowercase hex SHA-256: {digest!r}")
    return OBJECTS, digest[:2], digest


def object_path(root: Path, digest: str) -> Path:
    """Where the object of ``digest`` is kept under a directory ``root``."""
    return root.joinpath(*_parts(digest))


def object_key(location: S3Location, digest: str) -> str:
    """The object key of ``digest`` in the bucket."""
    return location.key(*_parts(digest))


def sidecar_name(name: str) -> str:
    """The sidecar's name (or key) of the object named ``name``."""
    return f"{name}.json"


@dataclass(frozen=True)
class MediaObject:
    content_type: str
    size: int
    chunks: AsyncIterator[bytes]


class MediaReader:
    """``start()``/``stop()`` (a bucket's client); ``get(digest)``: the object, or None."""

    def __init__(self, root: Location | None) -> None:
        self._root = root
        self._bucket: Bucket | None = None

    async def start(self) -> None:
        if isinstance(self._root, S3Location):
            bucket = Bucket(self._root, MEDIA_SETTING)
            await bucket.start()
            self._bucket = bucket

    async def stop(self) -> None:
        if self._bucket is not None:
            await self._bucket.stop()

    @property
    def configured(self) -> bool:
        return self._root is not None

    async def get(self, digest: str) -> MediaObject | None:
        if not is_digest(digest) or self._root is None:
            return None
        if self._bucket is not None:
            key = object_key(self._bucket.location, digest)
            size = await self._bucket.size(key)
            if size is None:
                return None
            kept = await self._bucket.get(sidecar_name(key))
            data = await self._bucket.get(key)
            return MediaObject(_content_type(kept), size, _once(data))
        assert isinstance(self._root, Path)
        path = object_path(self._root, digest)
        try:
            size = path.stat().st_size
            kept = await asyncio.to_thread(path.with_name(sidecar_name(path.name)).read_bytes)
        except FileNotFoundError:
            return None
        return MediaObject(_content_type(kept), size, _file_chunks(path))


def _content_type(kept: bytes) -> str:
    """The stored content type; a generic one where the push gave none."""
    try:
        found = orjson.loads(kept).get("mimeType")
    except (orjson.JSONDecodeError, AttributeError):
        found = None
    return found if isinstance(found, str) and found else "application/octet-stream"


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as file:
        while chunk := await asyncio.to_thread(file.read, CHUNK):
            yield chunk
