"""Dead letters: list them, show one, re-drive them once fixed.

A dead letter is the original record (value, key and headers kept) plus the ``uplink-dlq-*``
headers its worker added (consumers/runtime/deadletters.py). ``redrive`` copies matching ones
unchanged into the worker's re-drive topic, ``uplink.<worker>.redrive.v1``, with a header
naming the dead letter (``uplink-redrive-of: <worker>:<partition>:<offset>``); every worker
reads its re-drive topic in a group of its own (uplink/cli/workers.py). Before copying, the
re-drive topic is read over the same window, so a dead letter re-driven already is counted,
not copied again: running the same re-drive twice processes each record once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from schemas import PushCodec
from uplink.exceptions import ConfigError
from uplink.kafka import Producer
from uplink.operate.readers import Readers
from uplink.operate.records import Headers, header_texts, last_header, message_id_of
from uplink.operate.window import Record, Scan, TopicReader, iso
from uplink.settings import Topics
from uplink.topics import ensure_topics
from uplink.topology import redrive_spec

WORKERS = ("archive", "media", "router")
REDRIVE_OF = "uplink-redrive-of"
# The router's parked-delivery headers (consumers/router/delivery.py): a re-driven router dead
# letter is one delivery to retry, to the endpoint it was refused by.
_ENDPOINT, _RULE = "uplink-endpoint", "uplink-rule"


def check_worker(worker: str, option: str = "--worker") -> str:
    if worker not in WORKERS:
        raise ConfigError(option, f"unknown worker {worker!r} (one of {', '.join(WORKERS)})")
    return worker


@dataclass(frozen=True, order=True)
class Ref:
    """Where a dead letter is: ``<worker>:<partition>:<offset>``."""

    worker: str
    partition: int
    offset: int

    @classmethod
    def parse(cls, text: str, option: str = "REF") -> Ref:
        worker, _, rest = text.partition(":")
        partition, _, offset = rest.partition(":")
        if not (partition.isdigit() and offset.isdigit()):
            raise ConfigError(option, f"{text!r} is not <worker>:<partition>:<offset>")
        return cls(check_worker(worker, option), int(partition), int(offset))

    def __str__(self) -> str:
        return f"{self.worker}:{self.partition}:{self.offset}"


@dataclass(frozen=True)
class DeadLetter:
    ref: Ref
    record: Record
    message_id: str | None
    redriven: bool = False

    @property
    def reason(self) -> str:
        return last_header(self.record.headers, "uplink-dlq-reason") or ""

    @property
    def origin(self) -> str:
        """topic/partition@offset of the record that failed."""
        headers = self.record.headers
        topic = last_header(headers, "uplink-dlq-topic") or "?"
        partition = last_header(headers, "uplink-dlq-partition") or "?"
        offset = last_header(headers, "uplink-dlq-offset") or "?"
        return f"{topic}/{partition}@{offset}"

    def row(self) -> dict[str, Any]:
        """One line of ``dlq list``."""
        return {
            "ref": str(self.ref),
            "time": iso(self.record.timestamp),
            "worker": self.ref.worker,
            "reason": self.reason,
            "origin": self.origin,
            "messageId": self.message_id,
            "redriven": self.redriven,
        }


@dataclass(frozen=True)
class Filter:
    worker: str | None = None  # None: every worker
    reason: str | None = None  # a substring of the reason, case-insensitive
    since_ms: int | None = None  # None: from the beginning of the DLQs
    refs: frozenset[Ref] | None = None  # None: any; else only these (a console's selection)

    def workers(self) -> list[str]:
        return [self.worker] if self.worker else list(WORKERS)

    def matches(self, letter: DeadLetter) -> bool:
        if self.refs is not None and letter.ref not in self.refs:
            return False
        return self.reason is None or self.reason.lower() in letter.reason.lower()


class DeadLetterQueues:
    """The workers' DLQs and re-drive topics of one cluster."""

    def __init__(
        self, readers: Readers, topics: Topics, codec: PushCodec, scan: Scan | None = None
    ) -> None:
        self._readers = readers
        self._kafka = readers.clients.settings
        self._topics = topics
        self._codec = codec
        self.scan = scan if scan is not None else Scan()

    async def _existing(self, reader: TopicReader, topic: str) -> bool:
        return topic in await reader.topics()

    async def redriven(self, reader: TopicReader, worker: str, since_ms: int | None) -> set[Ref]:
        """Dead letters of ``worker`` copied into its re-drive topic since ``since_ms`` (a copy
        is written after its dead letter: the same window holds it)."""
        topic = self._topics.redrive(worker)
        if not await self._existing(reader, topic):
            return set()
        done: set[Ref] = set()
        async for record in reader.read(topic, since_ms):
            source = last_header(record.headers, REDRIVE_OF)
            if source is not None:
                done.add(Ref.parse(source))
        return done

    async def letters(self, match: Filter, limit: int | None = None) -> AsyncIterator[DeadLetter]:
        """The dead letters that match, worker by worker, in each partition's order."""
        async with self._readers.reader(self.scan) as reader:
            shown = 0
            for worker in match.workers():
                topic = self._topics.dlq(worker)
                if not await self._existing(reader, topic):
                    continue
                done = await self.redriven(reader, worker, match.since_ms)
                async with contextlib.aclosing(reader.read(topic, match.since_ms)) as records:
                    async for record in records:
                        ref = Ref(worker, record.partition, record.offset)
                        message_id = message_id_of(self._codec, record.value)
                        letter = DeadLetter(ref, record, message_id, ref in done)
                        if not match.matches(letter):
                            continue
                        yield letter
                        shown += 1
                        if limit is not None and shown >= limit:
                            return

    async def show(self, ref: Ref) -> DeadLetter | None:
        async with self._readers.reader(self.scan) as reader:
            record = await reader.one(self._topics.dlq(ref.worker), ref.partition, ref.offset)
            if record is None:
                return None
            return DeadLetter(ref, record, message_id_of(self._codec, record.value))

    async def redrive(
        self,
        match: Filter,
        dry_run: bool = False,
        rate: float | None = None,
        limit: int | None = None,
    ) -> RedriveReport:
        """Copy the matching dead letters not re-driven yet into the worker's re-drive topic
        (created with the messages topic's partitions when missing), at most ``rate`` a second."""
        if match.worker is None:
            raise ConfigError("--worker", "redrive needs the worker whose dead letters to re-drive")
        report = RedriveReport(match.worker, dry_run)
        pending: list[DeadLetter] = []
        async for letter in self.letters(match, limit):
            if letter.redriven:
                report.already += 1
            else:
                pending.append(letter)
        report.matched = len(pending) + report.already
        report.first = pending[:10]
        if dry_run or not pending:
            return report
        spec = redrive_spec(self._topics, match.worker, self._kafka.max_request_size)
        await ensure_topics(self._kafka, self._topics, [spec])
        interval = 1 / rate if rate else 0.0
        async with Producer(self._readers.clients) as producer:
            for letter in pending:
                started = time.monotonic()
                record = letter.record
                await producer.send(
                    spec.name, record.value, key=record.key, headers=copy_headers(letter)
                )
                report.redriven += 1
                if interval:
                    await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))
        return report


def copy_headers(letter: DeadLetter) -> Headers:
    """The dead letter's headers, plus the one naming it; a router dead letter also names the
    endpoint it was refused by when it does not yet (a first attempt's refusal)."""
    headers: Headers = list(letter.record.headers or ())
    reason = letter.reason
    if letter.ref.worker == "router" and last_header(headers, _ENDPOINT) is None:
        if reason.startswith("http:"):
            endpoint = reason[len("http:") :].split(":", 1)[0]
            headers += [(_ENDPOINT, endpoint.encode()), (_RULE, b"redrive")]
    headers.append((REDRIVE_OF, str(letter.ref).encode()))
    return headers


@dataclass
class RedriveReport:
    worker: str
    dry_run: bool
    matched: int = 0
    redriven: int = 0
    already: int = 0
    first: list[DeadLetter] | None = None

    def summary(self) -> str:
        if self.dry_run:
            return (
                f"{self.matched - self.already} would be re-driven, "
                f"{self.already} already re-driven (dry run)"
            )
        return f"{self.redriven} re-driven, {self.already} already re-driven"

    def row(self) -> dict[str, Any]:
        return {
            "worker": self.worker,
            "dryRun": self.dry_run,
            "matched": self.matched,
            "redriven": self.redriven,
            "already": self.already,
        }


def show_row(letter: DeadLetter, push: Any, problem: str | None) -> dict[str, Any]:
    """``dlq show``: the dead letter, its push decoded, its key and every header."""
    record = letter.record
    return {
        **letter.row(),
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "key": (record.key or b"").decode("utf-8", "replace"),
        "headers": header_texts(record),
        "push": push,
        **({"undecodable": problem} if problem else {}),
    }
