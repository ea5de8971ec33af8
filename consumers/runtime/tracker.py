"""Records finished out of order, committed in order.

A handler that processes a partition's records concurrently (media downloads, re-deliveries)
starts each as a task here and commits, per partition, up to the lowest offset still in flight:
everything below it is finished. A task that fails unexpectedly keeps its offset in flight, so no
commit ever passes it, and the next ``start`` or ``position`` raises ``HandlerFailed``, which
stops the worker. Records in flight are bounded: ``start`` waits for a slot (backpressure).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from aiokafka import TopicPartition

from consumers.runtime.exceptions import HandlerFailed
from consumers.runtime.handler import Handler
from consumers.runtime.outcomes import Positions

log = logging.getLogger(__name__)


class InOrderCommits:
    def __init__(self, limit: int, what: str = "task") -> None:
        self._slots = asyncio.Semaphore(limit)
        self._what = what
        self._pending: dict[TopicPartition, dict[int, asyncio.Task[None]]] = {}
        self._failure: BaseException | None = None

    async def start(
        self, tp: TopicPartition, offset: int, work: Coroutine[Any, Any, None], name: str
    ) -> None:
        """Run ``work`` for the record at ``offset`` once a slot is free."""
        try:
            self.check()
            await self._slots.acquire()
        except BaseException:
            work.close()
            raise
        if self._failure is not None:
            self._slots.release()
            work.close()
            self.check()
        task = asyncio.create_task(work, name=name)
        self._pending.setdefault(tp, {})[offset] = task
        task.add_done_callback(lambda done: self._finished(tp, offset, done))

    def position(self, tp: TopicPartition, handled: int) -> int:
        """The position safe to commit: the lowest offset in flight, else ``handled``."""
        self.check()
        pending = self._pending.get(tp)
        return min(pending) if pending else handled

    def check(self) -> None:
        if self._failure is not None:
            raise HandlerFailed(f"a {self._what} failed: {self._failure!r}") from self._failure

    def in_flight(self) -> int:
        return sum(len(pending) for pending in self._pending.values())

    async def cancel(self, partitions: list[TopicPartition]) -> None:
        """Cancel the partitions' work (revoked: their offsets were not committed, the next
        owner redoes them)."""
        tasks = [
            task
            for tp in partitions
            for task in (self._pending.pop(tp, None) or {}).values()
            if not task.done()
        ]
        await _cancel(tasks)

    async def drain(self, timeout: float | None) -> None:
        """Wait for the work in flight (at most ``timeout`` s), then cancel the rest; their
        offsets stay uncommitted."""
        tasks = [t for pending in self._pending.values() for t in pending.values() if not t.done()]
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=timeout)
        if late:
            log.warning(
                "%d %ss unfinished at stop: cancelled, not committed", len(late), self._what
            )
            await _cancel(list(late))

    def _finished(self, tp: TopicPartition, offset: int, task: asyncio.Task[None]) -> None:
        self._slots.release()
        if task.cancelled():
            return  # revoked or stopped: the offset stays uncommitted
        error = task.exception()
        if error is not None:
            # Stays pending, so no commit passes it; the next start or position raises.
            log.error("%s failed", task.get_name(), exc_info=error)
            if self._failure is None:
                self._failure = error
            return
        pending = self._pending.get(tp)
        if pending is not None:
            pending.pop(offset, None)


class Concurrent(Handler):
    """A handler whose records finish in the background, out of order (``tracker``): it commits
    each partition up to its first unfinished record, cancels a revoked partition's work (its
    next owner redoes it), and at stop gives the work in flight ``drain_timeout`` seconds."""

    def __init__(self, tracker: InOrderCommits, drain_timeout: float) -> None:
        self._tracker = tracker
        self._drain_timeout = drain_timeout

    async def flush(self, handled: Positions) -> Positions:
        return {tp: self._tracker.position(tp, position) for tp, position in handled.items()}

    async def revoked(self, partitions: list[TopicPartition]) -> None:
        await self._tracker.cancel(partitions)

    async def drain(self) -> None:
        await self._tracker.drain(self._drain_timeout)

    def in_flight(self) -> int:
        return self._tracker.in_flight()


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
