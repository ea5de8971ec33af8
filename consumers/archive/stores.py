"""Where archive files are published: a directory, or a bucket. Both create only.

A file is written locally (its *spool*), then published under its key, ``<topic>/dt=…/hour=…/
<topic>+<partition>+<firstOffset>.avro``, only if that key is free: a link on a filesystem
(``link(2)`` fails on an existing name), ``If-None-Match: *`` on S3. A key is taken when another
writer archived the same first offset: the previous owner of the partition after a crash between
its publish and its commit, or a zombie (a worker paused past its session that does not know it
lost the partition). Either way the records are the same (dedupe is a function of the log), but
the winner may have cut its file at another offset, so the loser does not guess: it reads the
winner's *end* (the offset after the last record its file covers, in the file's header as
``uplink.end``) and resumes from there (``Rewind``).

``publish`` runs on the archive's writer thread: it blocks.
"""

from __future__ import annotations

import io
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Protocol

import fastavro
from aiokafka import TopicPartition

from uplink.disk import fsync
from uplink.s3.bucket import Bucket
from uplink.s3.store import BucketStore

log = logging.getLogger(__name__)

END_KEY = "uplink.end"
END_WIDTH = 20  # digits: the placeholder written at open is patched in place at close
TMP_SUFFIX = ".tmp"
_HEADER_BYTES = 256 * 1024  # the header (schema included, ~10 KiB) is within this


def end_of(head: bytes) -> int | None:
    """The ``uplink.end`` of a container file from its first bytes; None for a file written
    before uplink kept it."""
    try:
        metadata = fastavro.reader(io.BytesIO(head)).metadata
    except (ValueError, EOFError) as exc:
        raise ValueError(f"not an Avro container file header: {exc!r}") from exc
    end = metadata.get(END_KEY)
    return None if end is None else int(end)


class ArchiveStore(Protocol):
    """What the archive's files are published to."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def spool(self, relative: str) -> Path:
        """The local path to write the file of key ``relative`` into."""
        ...

    def publish(self, spool: Path, relative: str) -> int | None:
        """Make the spool durable under ``relative`` if that key is free (None), else drop it
        and return the end of the file that holds the key."""
        ...

    def sweep(self, tp: TopicPartition) -> None:
        """Remove spool files a killed owner of ``tp`` left behind."""
        ...

    def describe(self, relative: str) -> str:
        """Where ``relative`` is, for a log line."""
        ...


class DirectoryStore:
    """Files under ``root``; the spool is ``<final name>.<random>.tmp`` beside the final name
    (one filesystem, so the link is atomic; a name of its own, as a zombie on another host may
    be writing the same file on a shared volume)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def spool(self, relative: str) -> Path:
        path = self.root / f"{relative}.{uuid.uuid4().hex[:12]}{TMP_SUFFIX}"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def publish(self, spool: Path, relative: str) -> int | None:
        fsync(spool)
        final = self.root / relative
        try:
            os.link(spool, final)
        except FileExistsError:
            with final.open("rb") as taken:
                end = end_of(taken.read(_HEADER_BYTES))
            if end is not None:
                spool.unlink()
                return end
            # A file of an uplink that did not record ends: replaced, as that uplink did.
            os.replace(spool, final)
        else:
            spool.unlink()
        fsync(final.parent)
        return None

    def sweep(self, tp: TopicPartition) -> None:
        # A re-run may rotate at other offsets than the killed run did, so its temporary names
        # need not match. Only this partition's owner writes them, or a zombie on a shared
        # volume: its publish then fails (the worker stops), which loses nothing uncommitted.
        pattern = f"dt=*/hour=*/{tp.topic}+{tp.partition}+*.avro*{TMP_SUFFIX}"
        for stale in (self.root / tp.topic).glob(pattern):
            stale.unlink(missing_ok=True)
            log.info("removed %s, left by a crashed worker", stale)

    def describe(self, relative: str) -> str:
        return str(self.root / relative)


class ArchiveBucket(BucketStore):
    """Objects in a bucket; the spool is a directory of this process's own under ``work_dir``
    (default: the system's temporary directory), removed at stop."""

    def __init__(self, bucket: Bucket, work_dir: Path | None = None) -> None:
        super().__init__(bucket, "archive", work_dir)

    def spool(self, relative: str) -> Path:
        return self.spooled(relative.rsplit("/", 1)[-1] + TMP_SUFFIX)

    def publish(self, spool: Path, relative: str) -> int | None:
        key = self.bucket.location.key(relative)
        data = spool.read_bytes()
        while True:
            if self.bucket.put_new_sync(key, data):
                spool.unlink()
                return None
            # Taken, maybe by an earlier attempt of this very put whose answer was lost: then
            # the end read back is this file's own, and resuming from it changes nothing.
            size = self.bucket.size_sync(key)
            if size is not None:
                break
            # Not there after all: a concurrent put still in progress (S3's 409
            # ConditionalRequestConflict), or it failed. Try again.
            log.warning("%s: taken but not there yet, putting again", self.describe(relative))
            time.sleep(0.5)
        spool.unlink()
        end = end_of(self.bucket.get_sync(key, min(size, _HEADER_BYTES)))
        if end is None:
            raise ValueError(f"{self.describe(relative)} has no {END_KEY} in its header")
        return end

    def sweep(self, tp: TopicPartition) -> None:
        return None  # the spool directory is this process's own

    def describe(self, relative: str) -> str:
        return self.bucket.location.uri(relative)
