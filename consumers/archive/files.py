"""The archive worker's side effect: each unique push once, in Avro Object Container Files.

Files are keyed ``<topic>/dt=YYYY-MM-DD/hour=HH/<topic>+<partition>+<firstOffset>.avro``, by the
push's event time (UTC), in a directory or a bucket (``stores.py``). Exactly-once files come from
the naming, create-only publishing and the commit order, not from a transaction:

- a file is written to a local spool, its header's ``uplink.end`` (the offset after the last
  record it covers) patched in at close, then published under its key only if the key is free;
- one open file per partition, and the runtime commits right after each publish, before the next
  file of that partition can be published (a rotation inside ``handle`` starts the publish on the
  writer thread and returns the position as ``Pending``: the runtime commits it once the publish
  is done, and before it calls ``handle`` or ``flush`` for that partition again; ``flush``
  publishes every open file and the runtime commits them together).

So at most one published file of a partition is ever uncommitted: the one keyed at the committed
position. A re-run after a crash, or a zombie still writing after its partitions moved on, finds
that key taken; the records are the same (dedupe is a function of the log) but the cut may not
be, so the loser drops its file, and the runtime commits the winner's end and reads the
partition again from there (``Rewind``). Nothing is overwritten, on a shared volume either.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import compress, repeat
from operator import not_
from pathlib import Path
from typing import IO, Any, cast

from aiokafka import ConsumerRecord, TopicPartition

from consumers.archive.settings import ArchiveSettings
from consumers.archive.stores import END_KEY, END_WIDTH, ArchiveStore, DirectoryStore
from consumers.runtime.exceptions import RecordError, TransientError
from consumers.runtime.handler import Handler, Inbound
from consumers.runtime.outcomes import Pending, Positions, Rewind
from schemas import PushCodec
from schemas.container import BlockFormat
from schemas.writers import Writer

log = logging.getLogger(__name__)

_HOUR_S = 3600
# Datum bytes queued for the writer thread before records wait for it to catch up.
_MAX_BACKLOG_BYTES = 32 * 1024 * 1024
# A file's own line is DEBUG: at INFO, one line sums up the files published over this long, so
# the normal work never buries what an operator has to read (an outage's lines).
SUMMARY_EVERY = 60.0


def archive_key(topic: str, partition: int, first_offset: int, hour: datetime.datetime) -> str:
    """The file's key relative to the archive's root (a directory or ``s3://bucket/prefix``)."""
    return f"{topic}/dt={hour:%Y-%m-%d}/hour={hour:%H}/{topic}+{partition}+{first_offset}.avro"


def named_hour(seconds: int | None) -> int | None:
    """The hour (since the epoch, UTC) of an event `timestamp` in seconds, if it is a date a file
    can be named by."""
    if seconds is None or not _NAMEABLE[0] <= seconds < _NAMEABLE[1]:
        return None
    return int(seconds) // _HOUR_S


def event_hour(inbound: Inbound) -> int:
    """The push's event hour: its `timestamp`'s (``named_hour``), else the hour the ingress
    received it."""
    hour = named_hour(inbound.timestamp)
    if hour is None:
        return int(inbound.push["receivedAt"] // 1000) // _HOUR_S
    return hour


# Years 1..9999: what datetime (and so a dt=YYYY-MM-DD directory) can represent.
_NAMEABLE = (
    int(datetime.datetime(1, 1, 1, tzinfo=datetime.UTC).timestamp()),
    int(datetime.datetime(9999, 12, 31, 23, tzinfo=datetime.UTC).timestamp()),
)


def hour_start(hour: int) -> datetime.datetime:
    return datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(hours=hour)


class _Writer:
    """The archive's one writer thread, and how far behind it is.

    Jobs run in submission order: the blocks of a file land in order, then its rename. The
    event loop only collects datums, so without a bound a writer slower than the fetches would
    queue them without end: ``behind()`` (more than ``max_backlog`` jobs queued, blocks mostly)
    says to stop taking records, ``catch_up()`` waits.
    """

    def __init__(self, max_backlog: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="archive-writer")
        self._queued: deque[Future[Any]] = deque()
        self._max_backlog = max_backlog

    def submit(self, job: Callable[..., Any], *args: Any) -> Future[Any]:
        done = self._executor.submit(job, *args)
        self._queued.append(done)
        return done

    def behind(self) -> bool:
        queued = self._queued
        while queued and queued[0].done():  # one thread: jobs finish in submission order
            queued.popleft()
        return len(queued) > self._max_backlog

    async def catch_up(self) -> None:
        while self.behind():
            await asyncio.wrap_future(self._queued[0])

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)


class _OpenFile:
    """One container file being written to its spool, of one writer schema and framing: the
    records' datums are copied as they are, under the writer's schema (a record of another
    writer, or framed otherwise, rotates the file).

    Blocks are compressed and written on the archive's writer thread, in submission order; the
    event loop only collects datums. A failed write is kept and raised by the ``close`` job.
    """

    def __init__(
        self,
        key: str,
        fmt: BlockFormat,
        hour: int,
        writer: _Writer,
        settings: ArchiveSettings,
        store: ArchiveStore,
        header: bytes,
    ) -> None:
        self.key = key
        self.header = header  # of every value in the file
        self._skip = len(header)
        self.tmp = store.spool(key)
        self._store = store
        self.hour = hour
        self.records = 0
        self.bytes = 0
        self._format = fmt
        self._writer = writer
        self._block_bytes = settings.block_bytes
        self._max_bytes = settings.max_bytes
        self._max_records = settings.max_records
        # Record values as fetched (framing included): the writer thread joins their datums, so
        # the event loop copies nothing per record.
        self._values: list[bytes] = []
        self._pending = 0  # datum bytes in _values
        self._error: BaseException | None = None
        self._file: IO[bytes] = open(self.tmp, "wb")  # closed by close() or discard()
        self._submit(self._file.write, fmt.header)

    def add(self, value: bytes) -> None:
        """A record value (framed with ``header``) whose datum goes into the file."""
        self._values.append(value)
        self._pending += len(value) - self._skip
        self.records += 1
        if self._pending >= self._block_bytes:
            self._end_block()

    def append(
        self,
        records: list[ConsumerRecord[bytes, bytes]],
        stamps: list[int | None],
        repeats: list[bool],
        start: int,
    ) -> int:
        """``add`` the records from ``start`` on (repeats skipped) while they ``fit``; returns
        the index of the first that does not, ``len(records)`` if none."""
        # A fetch of live traffic is one run of records of one hour, retries among them: its new
        # records are checked and appended as a whole, with C-speed list operations.
        new_records, new_stamps = records[start:], stamps[start:]
        if True in repeats[start:]:
            fresh = list(map(not_, repeats[start:]))
            new_records = list(compress(new_records, fresh))
            new_stamps = list(compress(new_stamps, fresh))
        seconds = cast(list[int], new_stamps)  # once None is ruled out
        low = self.hour * _HOUR_S  # the seconds of this file's hour: all nameable
        if (
            new_stamps
            and None not in new_stamps
            and low <= min(seconds)
            and max(seconds) < low + _HOUR_S
            and self.records + len(new_stamps) <= self._max_records
        ):
            values = [record.value for record in new_records]
            size = sum(map(len, values)) - self._skip * len(values)
            if self.bytes + self._pending + size < self._max_bytes and all(
                map(bytes.startswith, values, repeat(self.header))  # one writer: C-speed check
            ):
                self._values += values
                self._pending += size
                self.records += len(values)
                if self._pending >= self._block_bytes:
                    self._end_block()
                return len(records)
        # The run crosses an hour or a limit (a rotation is near): record by record.
        for index in range(start, len(records)):
            if not repeats[index]:
                hour = named_hour(stamps[index])
                value = records[index].value
                if hour is None or not self.fits(hour, value[: self._skip]):
                    return index
                self.add(value)
        return len(records)

    def fits(self, hour: int, header: bytes) -> bool:
        """Whether a record of event ``hour`` and writer ``header`` belongs here: its hour, its
        writer, and room left (records and bytes); else the file rotates first."""
        return (
            hour == self.hour
            and header == self.header
            and self.records < self._max_records
            and self.bytes + self._pending < self._max_bytes
        )

    def close(self, end: int) -> Future[int | None]:
        """Publish it, covering the records before offset ``end``, on the writer thread: last
        block, its end patched into the header, then the store's create-only publish. The
        returned future gives None once it is durable under its key, or the end of the file
        that already held the key."""
        self._end_block()
        return self._writer.submit(self._commit, end)

    async def discard(self) -> None:
        await asyncio.wrap_future(self._writer.submit(self._discard))

    def _end_block(self) -> None:
        if self._values:
            self.bytes += self._pending
            values, self._values, self._pending = self._values, [], 0
            self._submit(self._write_block, values)

    def _submit(self, write: Any, data: Any) -> None:
        self._writer.submit(write, data).add_done_callback(self._failed)

    def _failed(self, done: Future[Any]) -> None:
        error = done.exception()
        if error is not None and self._error is None:
            self._error = error

    def _write_block(self, values: list[bytes]) -> None:
        if self._error is None:  # after a failed write the file is lost anyway
            self._file.write(self._format.block(values, skip=self._skip))

    def _commit(self, end: int) -> int | None:
        try:
            if self._error is not None:
                raise self._error
            self._file.seek(self._format.header.index(_END_PLACEHOLDER) + _END_AT)
            self._file.write(b"%0*d" % (END_WIDTH, end))
            self._file.close()
            return self._store.publish(self.tmp, self.key)
        except BaseException:
            self._file.close()
            self.tmp.unlink(missing_ok=True)  # lost anyway: redone from the committed position
            raise

    def _discard(self) -> None:
        self._file.close()
        self.tmp.unlink(missing_ok=True)


# The header's uplink.end entry as written at open: a placeholder of fixed width, patched in
# place at close (its key and value are Avro strings: zigzag lengths, then the bytes).
_END_META = {END_KEY: b"0" * END_WIDTH}
_END_PLACEHOLDER = (
    bytes([len(END_KEY) << 1]) + END_KEY.encode() + bytes([END_WIDTH << 1]) + b"0" * END_WIDTH
)
_END_AT = len(_END_PLACEHOLDER) - END_WIDTH


class PublishedSummary:
    """Files published, summed up in one INFO line at most every ``every`` seconds (when the
    next file is published past it)."""

    def __init__(
        self, every: float = SUMMARY_EVERY, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._every = every
        self._clock = clock
        self._since = clock()
        self._files = 0
        self._records = 0

    def add(self, records: int) -> None:
        self._files += 1
        self._records += records
        now = self._clock()
        if now - self._since >= self._every:
            log.info(
                "archived %d records in %d files in the last %.0fs",
                self._records,
                self._files,
                now - self._since,
                extra={"records": self._records, "files": self._files},
            )
            self._since, self._files, self._records = now, 0, 0


class ArchiveFiles(Handler):
    """The archive ``Handler`` for the consumer runtime; ``stop()`` ends its writer thread.

    A write that fails (disk full, I/O error) is not retried record by record: the data of the
    file is lost, so the error stops the worker, nothing of that partition is committed any
    more, and its restart redoes the file from the committed position (crash-only; the file
    names make the redo exact). An object store that is away is waited for (the bucket retries
    with backoff): records stop being taken once the writer is behind, and lag grows until it
    answers again.
    """

    def __init__(
        self,
        settings: ArchiveSettings,
        store: ArchiveStore | None = None,
        codec: PushCodec | None = None,
    ) -> None:
        """``codec``: the worker's, whose writer schemas name each record's (a file holds the
        records of one writer schema, under it)."""
        self._settings = settings
        if store is None:
            if not isinstance(settings.root, Path):
                raise TypeError("an archive on object storage is handed its store")
            store = DirectoryStore(settings.root)
        self._store = store
        self._writers = (codec or PushCodec()).writers
        self._open: dict[TopicPartition, _OpenFile] = {}
        self._swept: set[TopicPartition] = set()
        # One thread: blocks of a file land in order, and fsyncs never stall the event loop.
        self._writer = _Writer(max_backlog=max(1, _MAX_BACKLOG_BYTES // settings.block_bytes))
        self._summary = PublishedSummary()

    async def start(self) -> None:
        await self._store.start()

    async def stop(self) -> None:
        await asyncio.to_thread(self._writer.shutdown)  # the jobs queued finish first
        await self._store.stop()

    def take_many(
        self,
        tp: TopicPartition,
        records: list[ConsumerRecord[bytes, bytes]],
        stamps: list[int | None],
        repeats: list[bool],
        start: int,
    ) -> int:
        """The runtime's fast path: append records from ``start`` on (repeats skipped) to the
        partition's open file while that needs no I/O (the file is open, of their event hour, not
        full); returns the index of the first record left to ``handle`` (open or rotate a file,
        verify, or name the hour otherwise), ``len(records)`` if none."""
        current = self._open.get(tp)
        if current is None or self._settings.verify or self._writer.behind():
            return start
        return current.append(records, stamps, repeats, start)

    async def handle(self, inbound: Inbound) -> Pending | None:
        tp = inbound.tp
        await self._writer.catch_up()
        if self._settings.verify:
            inbound.push  # noqa: B018  # decoding raises SchemaError: the runtime dead-letters it
        hour = event_hour(inbound)
        writer = self._writers.get(inbound.value)
        if writer is None:  # its head was read, so its writer is known; unless it is a bug
            raise RecordError(f"no known writer schema for header {inbound.value[:10].hex()}")
        durable: Pending | None = None
        current = self._open.get(tp)
        if current is not None and not current.fits(hour, writer.header):
            # Renamed in the background while records go on into the next file. The runtime
            # commits this record's offset once the rename is done, and before it calls handle
            # or flush for this partition again: so the next rename of the partition comes after
            # that commit, and at most one renamed file of a partition is ever uncommitted.
            durable = Pending(self._close(tp, inbound.record.offset), {tp: inbound.record.offset})
            current = None
        if current is None:
            current = self._open[tp] = self._opened(tp, inbound.record.offset, hour, writer)
        current.add(inbound.value)
        return durable

    async def flush(self, handled: Positions) -> Positions | Rewind:
        closing = [self._close(tp, handled[tp]) for tp in handled if tp in self._open]
        moved: Positions = {}
        for outcome in await asyncio.gather(*closing, return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome
            if outcome is not None:
                moved.update(outcome.moved)
        if moved:
            return Rewind(moved, {tp: end for tp, end in handled.items() if tp not in moved})
        return handled

    async def revoked(self, partitions: list[TopicPartition]) -> None:
        self._swept.difference_update(partitions)
        for tp in partitions:  # flushed just before: only a failed write can leave one open
            current = self._open.pop(tp, None)
            if current is not None:
                await current.discard()

    def _opened(self, tp: TopicPartition, offset: int, hour: int, writer: Writer) -> _OpenFile:
        if tp not in self._swept:
            self._store.sweep(tp)  # what a killed owner of this partition left
            self._swept.add(tp)
        key = archive_key(tp.topic, tp.partition, offset, hour_start(hour))
        fmt = BlockFormat(writer.text, self._settings.codec, meta=_END_META)
        try:
            return _OpenFile(
                key, fmt, hour, self._writer, self._settings, self._store, writer.header
            )
        except OSError as exc:
            raise TransientError(f"cannot open {self._store.describe(key)}: {exc}") from exc

    def _close(self, tp: TopicPartition, end: int) -> asyncio.Future[Rewind | None]:
        """Publish the partition's open file, covering offsets before ``end``, on the writer
        thread (submitted now); done when it is, with a ``Rewind`` if its key was taken."""
        current = self._open.pop(tp)
        return asyncio.ensure_future(self._published(tp, current, current.close(end)))

    async def _published(
        self, tp: TopicPartition, current: _OpenFile, closing: Future[int | None]
    ) -> Rewind | None:
        winner = await asyncio.wrap_future(closing)
        where = self._store.describe(current.key)
        if winner is not None:
            log.warning(
                "%s was already archived by another worker, up to offset %d: resuming from there",
                where,
                winner,
                extra={"topic": tp.topic, "partition": tp.partition},
            )
            # The file opened since (a rotation's next) starts at an offset the winner may
            # have covered: dropped too, its records are read again.
            following = self._open.pop(tp, None)
            if following is not None:
                await following.discard()
            return Rewind({tp: winner}, {})
        log.debug(
            "archived %d records to %s",
            current.records,
            where,
            extra={"topic": tp.topic, "partition": tp.partition, "records": current.records},
        )
        self._summary.add(current.records)
        return None
