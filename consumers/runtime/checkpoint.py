"""The worker's commit policy and positions: what is done, what may be committed, and when.

- A partition's position is the offset after the last record the worker is done with (handled,
  skipped as a duplicate, or dead-lettered); the handler's ``flush`` says which of them are
  durable, and only those are committed.
- Commits are due by count (``commit_every`` records) or by interval (``commit_interval`` s on a
  monotonic clock), and happen on revoke and on stop too.
- A handler's ``Pending`` positions are committed in the background once ready, and before the
  handler is called again for their partitions; a partition whose pending commit failed is
  never flushed or committed again here, so its next owner redoes it from the committed position.
- A ``Rewind`` commits the positions another writer reached and moves the partitions there.

Handed the group's consumer per call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from consumers.runtime.assignment import Assignment
from consumers.runtime.handler import Handler
from consumers.runtime.metrics import WorkerMetrics
from consumers.runtime.outcomes import Pending, Positions, Rewind
from uplink.settings import WorkerSettings


class Checkpoint:
    def __init__(
        self,
        settings: WorkerSettings,
        handler: Handler,
        assignment: Assignment,
        metrics: WorkerMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._handler = handler
        self._assignment = assignment
        self._metrics = metrics
        self._clock = clock
        self._every = settings.commit_every
        self._interval = settings.commit_interval
        self._done: Positions = {}
        self._pending: dict[TopicPartition, asyncio.Task[None]] = {}  # commits of Pending
        # Partitions whose Pending failed (a rename): never flushed or committed again here, so
        # the records of the lost file are redone from the committed position by the next owner.
        self._broken: set[TopicPartition] = set()
        self._uncommitted = 0
        self._last_commit = clock()

    def advance(self, tp: TopicPartition, position: int, seen: int = 0) -> None:
        """The worker is done with ``tp`` up to ``position``, ``seen`` records more since the
        last commit."""
        self._done[tp] = position
        self._uncommitted += seen

    def expired(self) -> bool:
        """Whether a commit is due: by count or by interval."""
        every = self._every
        return (
            every is not None and self._uncommitted >= every
        ) or self._clock() - self._last_commit >= self._interval

    def pending(self, consumer: AIOKafkaConsumer, tp: TopicPartition, pending: Pending) -> None:
        """Commit ``pending``'s positions (a ``handle``'s for ``tp``) in the background once it
        is ready."""
        self._pending[tp] = asyncio.create_task(self._commit_when(consumer, pending))

    def waiting(self, tp: TopicPartition) -> asyncio.Task[None] | None:
        """The partition's pending commit, if any, handed over to be awaited before the handler
        is called for ``tp`` again."""
        return self._pending.pop(tp, None)

    async def maybe_commit(self, consumer: AIOKafkaConsumer) -> bool:
        """After a batch: raise what a finished background commit failed with (the worker
        stops), and commit every partition if ``expired()``, which it returns."""
        for tp in [tp for tp, later in self._pending.items() if later.done()]:
            await self._pending.pop(tp)
        due = self.expired()
        if due and self._done:
            await self.commit(consumer, list(self._done))
        return due

    async def commit_all(self, consumer: AIOKafkaConsumer) -> None:
        """As the worker stops: every partition with a position or a pending commit."""
        await self.commit(consumer, [*self._done, *self._pending])

    async def commit(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
        """Flush the partitions' positions through the handler and commit what is durable."""
        later = [self._pending.pop(tp) for tp in partitions if tp in self._pending]
        if later:  # before the flush renames the partitions' next files
            await asyncio.gather(*later)
        done = {
            tp: self._done[tp] for tp in partitions if tp in self._done and tp not in self._broken
        }
        if not done:
            return
        durable = await self._handler.flush(done)
        if isinstance(durable, Rewind):
            await self._rewind(consumer, durable)
        else:
            await self.commit_positions(consumer, durable)
        self._uncommitted = 0
        self._last_commit = self._clock()

    async def commit_positions(self, consumer: AIOKafkaConsumer, durable: Positions) -> None:
        """Commit positions the handler says are durable now."""
        if not durable:
            return  # e.g. a handler that committed inside its own transaction
        started = time.perf_counter()
        await consumer.commit(dict(durable))
        self._metrics.commit_seconds.observe(time.perf_counter() - started)

    def revoke(self, partitions: list[TopicPartition]) -> None:
        """Forget the partitions' positions (flushed just before, or given up)."""
        for tp in partitions:
            self._done.pop(tp, None)
            self._broken.discard(tp)

    async def _commit_when(self, consumer: AIOKafkaConsumer, pending: Pending) -> None:
        try:
            rewind = await pending.ready
            if rewind is not None:
                await self._rewind(consumer, rewind)
                return
            await self.commit_positions(consumer, pending.positions)
        except BaseException:
            # The next file must not be renamed before this commit: none will be, here.
            self._broken.update(pending.positions)
            raise

    async def _rewind(self, consumer: AIOKafkaConsumer, rewind: Rewind) -> None:
        """Another writer did the work up to ``rewind.moved``: commit those positions (and the
        flush's others), and read those partitions again from there."""
        await self.commit_positions(consumer, {**rewind.durable, **rewind.moved})
        self._done.update(rewind.moved)
        self._assignment.move(consumer, rewind.moved)
