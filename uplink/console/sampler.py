"""What the overview draws: the topics' offsets and the groups' committed positions, sampled
while the console runs (Kafka keeps no history of either), over the last ``span`` seconds.

A group's state, per the rule the page writes beside it: green when nothing waits (lag 0) or
it commits with its lag not growing; amber when it commits but its lag grows, or it has not
been watched long enough to tell; red when records wait and it committed nothing for
``STUCK_SECONDS``, or it never committed where records are.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    CoordinatorLoadInProgressError,
    GroupCoordinatorNotAvailableError,
    KafkaError,
)

from uplink.kafka import KafkaClients, stop_consumer
from uplink.operate.records import last_header
from uplink.operate.window import Record

log = logging.getLogger(__name__)

STUCK_SECONDS = 60.0
RULE = (
    "green: lag 0, or committing with the lag not growing; amber: committing while the lag "
    f"grows, or watched too briefly to tell; red: records waiting and no commit for "
    f"{STUCK_SECONDS:.0f} s (or none ever)"
)

TP = tuple[str, int]


@dataclass(frozen=True)
class Sample:
    at: float  # epoch seconds
    begins: dict[TP, int]
    ends: dict[TP, int]
    committed: dict[str, dict[int, int | None]]  # group → messages partition → position

    def count(self, topic: str) -> int:
        """Records kept in ``topic`` (end minus beginning, over its partitions)."""
        return sum(e - self.begins.get(tp, 0) for tp, e in self.ends.items() if tp[0] == topic)

    def produced(self, topic: str) -> int:
        return sum(e for tp, e in self.ends.items() if tp[0] == topic)

    def lags(self, group: str, topic: str) -> dict[int, int]:
        """Per partition of ``topic``: records after the group's position (from the
        partition's beginning where it committed nothing)."""
        positions = self.committed.get(group, {})
        lags: dict[int, int] = {}
        for (name, partition), end in sorted(self.ends.items()):
            if name != topic:
                continue
            at = positions.get(partition)
            start = at if at is not None else self.begins.get((name, partition), 0)
            lags[partition] = max(0, end - start)
        return lags

    def position(self, group: str) -> int:
        return sum(p for p in self.committed.get(group, {}).values() if p is not None)


@dataclass(frozen=True)
class GroupView:
    worker: str
    group: str
    lags: dict[int, int]
    moving: dict[int, bool]  # per partition: committed further within STUCK_SECONDS
    state: str  # green, amber, red
    why: str
    lag_series: list[float]

    @property
    def lag(self) -> int:
        return sum(self.lags.values())


@dataclass(frozen=True)
class Newest:
    """The newest dead letter of a DLQ, read once per change of its end."""

    ends: tuple[int, ...]
    reason: str
    at: int  # record time, ms


@dataclass
class Sampler:
    clients: KafkaClients
    messages: str
    groups: Mapping[str, str]  # worker → group
    topics: Sequence[str]  # every topic whose offsets to sample (missing ones are skipped)
    dlqs: Sequence[str] = ()  # of those, the DLQs: their newest reason is read too
    interval: float = 10.0
    span: float = 900.0
    samples: deque[Sample] = field(default_factory=deque)
    error: str | None = None  # why the last sample failed, shown on the page
    newest: dict[str, Newest] = field(default_factory=dict)
    _consumer: AIOKafkaConsumer | None = None
    _admin: AIOKafkaAdminClient | None = None
    _task: asyncio.Task[None] | None = None
    _sampled: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        self._consumer = self.clients.consumer(group_id=None, enable_auto_commit=False)
        self._admin = self.clients.admin()
        await self._consumer.start()
        await self._admin.start()
        self._task = asyncio.create_task(self._run(), name="console sampler")
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """A sampler that died of a bug says so, in the log and on the page."""
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        self.error = f"the sampler stopped: {type(error).__name__}: {error}"
        log.error("console: %s", self.error, exc_info=error)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await stop_consumer(self._consumer)
        if self._admin is not None:
            await self._admin.close()

    async def sampled(self) -> None:
        """Until the next sample is taken (tests and ``uplink dev`` wait for the first)."""
        self._sampled.clear()
        await self._sampled.wait()

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                # Bounded: a client waiting on a coordinator that does not answer would
                # otherwise hold the overview at its last sample without a word.
                async with asyncio.timeout(max(4 * self.interval, 10.0)):
                    sample = await self.sample()
                    for dlq in self.dlqs:
                        await self.newest_letter(dlq, sample)
                self._keep(sample)
                self.error = None
            except (KafkaError, TimeoutError) as exc:
                # Shown on the overview; the next sample may succeed (a broker restarting).
                self.error = f"{type(exc).__name__}: {exc}"
                log.warning("console: sampling failed: %s", self.error)
            self._sampled.set()
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    def _keep(self, sample: Sample) -> None:
        self.samples.append(sample)
        while self.samples and self.samples[0].at < sample.at - self.span:
            self.samples.popleft()

    async def sample(self) -> Sample:
        consumer, admin = self._consumer, self._admin
        assert consumer is not None and admin is not None, "start() first"
        # The admin client asks the cluster; the consumer's topics() leaves its own metadata
        # as it was, so a topic created since it started would not be seen.
        described = await admin.describe_topics(list(self.topics))
        tps = [
            TopicPartition(topic["topic"], partition["partition"])
            for topic in described
            if not topic.get("error_code")
            for partition in sorted(topic.get("partitions") or (), key=lambda p: p["partition"])
        ]
        ends = await consumer.end_offsets(tps) if tps else {}
        begins = await consumer.beginning_offsets(tps) if tps else {}
        committed: dict[str, dict[int, int | None]] = {}
        previous = self.latest()
        for group in self.groups.values():
            try:
                offsets = await admin.list_consumer_group_offsets(group)
            except (GroupCoordinatorNotAvailableError, CoordinatorLoadInProgressError):
                # A group that never committed may have no coordinator loaded yet: its
                # last known positions stand, if any.
                committed[group] = dict(previous.committed.get(group, {})) if previous else {}
                continue
            committed[group] = {
                tp.partition: (at.offset if at.offset >= 0 else None)
                for tp, at in offsets.items()
                if tp.topic == self.messages
            }
        sample = Sample(
            time.time(),
            {(tp.topic, tp.partition): at for tp, at in begins.items()},
            {(tp.topic, tp.partition): at for tp, at in ends.items()},
            committed,
        )
        return sample

    async def newest_letter(self, topic: str, sample: Sample) -> Newest | None:
        """The newest record of ``topic`` (a DLQ), re-read only when its end moved (the page
        reads ``newest``)."""
        ends = tuple(e for (name, _), e in sorted(sample.ends.items()) if name == topic)
        known = self.newest.get(topic)
        if known is not None and known.ends == ends:
            return known
        consumer = self._consumer
        assert consumer is not None
        newest: Record | None = None
        for (name, partition), end in sorted(sample.ends.items()):
            if name != topic or end <= sample.begins.get((name, partition), 0):
                continue
            record = await _last(consumer, TopicPartition(topic, partition), end)
            if record is not None and (newest is None or record.timestamp > newest.timestamp):
                newest = record
        if newest is None:
            return None
        found = Newest(
            ends, last_header(newest.headers, "uplink-dlq-reason") or "", newest.timestamp
        )
        self.newest[topic] = found
        return found

    # --- what the page shows -----------------------------------------------------------------

    def latest(self) -> Sample | None:
        return self.samples[-1] if self.samples else None

    def rate(self, topic: str) -> tuple[float, list[float]]:
        """Records a second over the samples kept, and between each two samples."""
        samples = list(self.samples)
        series = [
            max(0.0, (b.produced(topic) - a.produced(topic)) / max(b.at - a.at, 1e-3))
            for a, b in itertools.pairwise(samples)
        ]
        if len(samples) < 2:
            return 0.0, series
        first, last = samples[0], samples[-1]
        overall = (last.produced(topic) - first.produced(topic)) / max(last.at - first.at, 1e-3)
        return max(0.0, overall), series

    def group(self, worker: str) -> GroupView | None:
        sample = self.latest()
        if sample is None:
            return None
        group = self.groups[worker]
        lags = sample.lags(group, self.messages)
        earlier = [s for s in self.samples if s.at <= sample.at - STUCK_SECONDS]
        before = earlier[-1] if earlier else self.samples[0]
        now_at = sample.committed.get(group, {})
        then_at = before.committed.get(group, {})
        moving = {p: (now_at.get(p) or 0) > (then_at.get(p) or 0) or lags[p] == 0 for p in lags}
        series = [float(sum(s.lags(group, self.messages).values())) for s in self.samples]
        state, why = _judge(sample, before, group, lags, self.messages)
        return GroupView(worker, group, lags, moving, state, why, series)


def _judge(
    now: Sample, before: Sample, group: str, lags: dict[int, int], topic: str
) -> tuple[str, str]:
    lag = sum(lags.values())
    if lag == 0:
        return "green", "lag 0"
    if not now.committed.get(group):
        return "red", f"{lag} records waiting and the group never committed"
    if before is now:
        return "amber", f"{lag} behind; one sample so far"
    moved = now.position(group) > before.position(group)
    watched = now.at - before.at
    if not moved:
        if watched < STUCK_SECONDS:
            return "amber", f"{lag} behind, no commit in the {watched:.0f} s watched"
        return "red", f"{lag} behind and no commit for {watched:.0f} s"
    was = sum(before.lags(group, topic).values())
    if lag > was:
        return "amber", f"committing, but the lag grew from {was} to {lag}"
    return "green", f"committing, lag {lag} (was {was})"


async def _last(consumer: AIOKafkaConsumer, tp: TopicPartition, end: int) -> Record | None:
    """The last readable record before ``end`` (a transaction marker may stand at end - 1)."""
    consumer.assign([tp])
    for back in (1, 10, 100):
        consumer.seek(tp, max(0, end - back))
        last: Record | None = None
        while await consumer.position(tp) < end:
            batches = await consumer.getmany(tp, timeout_ms=1000, max_records=back)
            if not batches:
                break
            for record in batches.get(tp, []):
                if record.offset < end:
                    last = record
        if last is not None:
            return last
    return None
