"""The media store's one layout: what the media worker's stores put (consumers/media/storage.py),
the console's reader reads back by digest, with the content type the sidecar keeps, from a
directory and from a bucket on the session's S3 server."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import pytest

from consumers.media.storage import FileStore, MediaBucket, MediaStore
from uplink.mediastore import MediaReader
from uplink.s3.bucket import Bucket
from uplink.s3.settings import Location, S3Location

pytestmark = pytest.mark.anyio


async def kept_and_read(store: MediaStore, root: Location) -> None:
    data = os.urandom(200_000)  # more than one chunk of a file
    digest = hashlib.sha256(data).hexdigest()
    reader = MediaReader(root)
    await store.start()
    await reader.start()
    try:
        spooled = store.spool()
        spooled.parent.mkdir(parents=True, exist_ok=True)
        spooled.write_bytes(data)
        await store.put(digest, spooled, {"sha256": digest, "mimeType": "image/png"})
        found = await reader.get(digest)
        assert found is not None and found.content_type == "image/png"
        assert found.size == len(data)
        assert b"".join([chunk async for chunk in found.chunks]) == data
        assert await reader.get(hashlib.sha256(b"other").hexdigest()) is None
        assert await reader.get("../" + digest[3:]) is None  # never a path from a request
    finally:
        await reader.stop()
        await store.stop()


async def test_an_object_kept_in_a_directory_is_read_back_with_its_content_type(
    tmp_path: Path,
) -> None:
    await kept_and_read(FileStore(tmp_path / "media"), tmp_path / "media")


async def test_an_object_kept_in_a_bucket_is_read_back_with_its_content_type(
    s3: S3Location, tmp_path: Path
) -> None:
    root = dataclasses.replace(s3, prefix="media")
    await kept_and_read(MediaBucket(Bucket(root, "test"), tmp_path / "work"), root)
