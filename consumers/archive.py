"""The archive worker's side effect: each unique push once, in Avro Object Container Files.

Files live at ``ROOT/<topic>/dt=YYYY-MM-DD/hour=HH/<topic>+<partition>+<firstOffset>.avro``, by the
push's event time (UTC). Exactly-once files come from the naming and the commit order, not from
a transaction:

- a file is written under a temporary name, fsynced, renamed into place, the directory fsynced;
- one open file per partition, and the runtime commits right after each rename, before the next
  file of that partition can be renamed (a rotation inside ``handle`` returns the position to
  commit at once; ``flush`` renames every open file and the runtime commits them together).

So after any crash the only renamed file not yet committed is the one that starts at the
committed position, and the re-run, judging the same records the same way (dedupe is a function
of the log), writes a file of the same name over it — whatever the rotation timing.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from aiokafka import TopicPartition
from fastavro import parse_schema
from fastavro.write import Writer

from consumers.exceptions import TransientError
from consumers.runtime import Inbound, Positions
from schemas import load_push_schema

log = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp"


@dataclass(frozen=True)
class ArchiveSettings:
    root: Path
    max_records: int = 10_000  # per file
    max_bytes: int = 64 * 1024 * 1024  # per file, uncompressed datum bytes
    codec: str = "deflate"  # or "zstandard" (needs the zstandard package)


def archive_path(
    root: Path, topic: str, partition: int, first_offset: int, hour: datetime.datetime
) -> Path:
    return (
        root
        / topic
        / f"dt={hour:%Y-%m-%d}"
        / f"hour={hour:%H}"
        / f"{topic}+{partition}+{first_offset}.avro"
    )


def event_hour(push: dict[str, Any]) -> datetime.datetime:
    """The push's event time (its `timestamp`, seconds), else when the ingress received it."""
    seconds = push.get("timestamp")
    if seconds is None:
        seconds = push["receivedAt"] / 1000
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.replace(minute=0, second=0, microsecond=0)


class _OpenFile:
    def __init__(
        self, final: Path, schema: dict[str, Any], codec: str, hour: datetime.datetime
    ) -> None:
        self.final = final
        self.tmp = final.with_name(final.name + TMP_SUFFIX)
        self.hour = hour
        self.records = 0
        self.bytes = 0
        final.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] = open(self.tmp, "wb")  # closed by commit() or discard()
        self._writer = Writer(self._file, schema, codec=codec)

    def write(self, push: dict[str, Any], size: int) -> None:
        self._writer.write(push)
        self.records += 1
        self.bytes += size

    def commit(self) -> None:
        """Durable under its final name: flush, fsync, rename, fsync the directory."""
        self._writer.flush()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.tmp, self.final)
        directory = os.open(self.final.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def discard(self) -> None:
        self._file.close()
        self.tmp.unlink(missing_ok=True)


class ArchiveFiles:
    """The archive ``Handler`` for the consumer runtime."""

    def __init__(self, settings: ArchiveSettings) -> None:
        self._settings = settings
        self._schema: dict[str, Any] = parse_schema(load_push_schema())  # type: ignore[assignment]
        self._open: dict[TopicPartition, _OpenFile] = {}
        self._swept: set[TopicPartition] = set()

    async def handle(self, inbound: Inbound) -> Positions | None:
        tp, record = inbound.tp, inbound.record
        if tp not in self._swept:
            self._sweep(tp)
        hour = event_hour(inbound.push)
        durable: Positions | None = None
        current = self._open.get(tp)
        if current is not None and (
            current.hour != hour
            or current.records >= self._settings.max_records
            or current.bytes >= self._settings.max_bytes
        ):
            # At most one rename per call: the runtime commits it before the next one.
            self._commit(tp)
            durable = {tp: record.offset}
        current = self._open.get(tp)
        if current is None:
            final = archive_path(self._settings.root, tp.topic, tp.partition, record.offset, hour)
            current = self._open[tp] = self._opened(final, hour)
        try:
            current.write(inbound.push, len(record.value or b""))
        except OSError as exc:
            raise TransientError(f"cannot write {current.tmp}: {exc}") from exc
        return durable

    async def flush(self, handled: Positions) -> Positions:
        for tp in handled:
            if tp in self._open:
                self._commit(tp)
        return handled

    async def revoked(self, partitions: list[TopicPartition]) -> None:
        self._swept.difference_update(partitions)
        for tp in partitions:  # flushed just before: only a failed write can leave one open
            current = self._open.pop(tp, None)
            if current is not None:
                current.discard()

    def _sweep(self, tp: TopicPartition) -> None:
        """Remove temporary files a killed owner of this partition left behind.

        A re-run may rotate at other offsets than the killed run did, so its temporary names
        need not match; only this partition's owner writes them, so they are safe to delete.
        """
        pattern = f"dt=*/hour=*/{tp.topic}+{tp.partition}+*.avro{TMP_SUFFIX}"
        for stale in (self._settings.root / tp.topic).glob(pattern):
            stale.unlink(missing_ok=True)
            log.info("removed %s, left by a crashed worker", stale)
        self._swept.add(tp)

    def _opened(self, final: Path, hour: datetime.datetime) -> _OpenFile:
        try:
            return _OpenFile(final, self._schema, self._settings.codec, hour)
        except OSError as exc:
            raise TransientError(f"cannot open {final}: {exc}") from exc

    def _commit(self, tp: TopicPartition) -> None:
        current = self._open.pop(tp)
        current.commit()
        log.info("archived %d records to %s", current.records, current.final)
