"""What the worker keeps for each partition it owns, and forgets in one ``revoke``.

- Its dedupe window, rebuilt from the log before the partition's first record is judged.
- Its moves: a ``Rewind`` reads a partition again from another position; records fetched from
  the old one before the move are told apart by the count of moves, and skipped.
- Its postponement: a partition paused until its first record is due, then resumed.

Handed the group's consumer per call; it never commits (``checkpoint.py`` does).
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from consumers.runtime.dedupe import DedupeWindow
from consumers.runtime.outcomes import Positions
from consumers.runtime.window import rebuild_window
from schemas import PushCodec
from uplink.kafka import KafkaClients
from uplink.settings import WorkerSettings

log = logging.getLogger(__name__)


class Assignment:
    def __init__(
        self, settings: WorkerSettings, codec: PushCodec, clients: KafkaClients, *, dedupe: bool
    ) -> None:
        self._settings = settings
        self._codec = codec
        self._clients = clients
        # Off for streams that are not the provider's pushes (the router's delay topics), where
        # one push may stand for several records on purpose.
        self._dedupe = dedupe
        self._windows: dict[TopicPartition, DedupeWindow] = {}
        # The count of moves, and per partition moved the count at its last move.
        self._moves = 0
        self._moved: dict[TopicPartition, int] = {}
        self._resumes: dict[TopicPartition, asyncio.TimerHandle] = {}  # of postponed partitions

    @property
    def moves(self) -> int:
        """The count of moves so far: a fetch notes it, to tell later moves apart."""
        return self._moves

    async def repeats(
        self,
        tp: TopicPartition,
        offset: int,
        ids: list[str],
        records: list[ConsumerRecord[bytes, bytes]],
    ) -> list[bool]:
        """Which of the partition's ``records`` (fetched from ``offset``, message ids ``ids``)
        are duplicates; each is remembered as it is judged."""
        if not self._dedupe:
            return [False] * len(records)
        window = await self._window(tp, offset)
        return window.seen_many(ids, [record.timestamp for record in records])

    def moved_since(self, tp: TopicPartition, moves: int) -> bool:
        """Whether ``tp`` moved after the count of moves was ``moves``: what was fetched
        before is read again from where it moved."""
        return self._moved.get(tp, -1) > moves

    def move(self, consumer: AIOKafkaConsumer, positions: Positions) -> None:
        """Read these partitions again from these positions, their windows rebuilt there."""
        assigned = consumer.assignment()
        for tp, offset in positions.items():
            log.info("%s: read again from %d, where another writer's file ends", tp, offset)
            self._moves += 1
            self._moved[tp] = self._moves
            self._windows.pop(tp, None)
            if tp in assigned:
                consumer.seek(tp, offset)

    def postpone(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int, seconds: float
    ) -> None:
        """Read ``tp`` again from ``offset`` in ``seconds``; meanwhile its partition is paused."""
        consumer.seek(tp, offset)
        consumer.pause(tp)
        # The window judged records past this one: rebuilt from the log when they come again.
        self._windows.pop(tp, None)
        self._cancel_resumes([tp])

        def resume() -> None:
            self._resumes.pop(tp, None)
            if tp in consumer.assignment():
                consumer.resume(tp)

        self._resumes[tp] = asyncio.get_running_loop().call_later(max(seconds, 0.0), resume)

    def revoke(self, partitions: list[TopicPartition]) -> None:
        """Forget the partitions' windows and postponements (no longer this worker's)."""
        self._cancel_resumes(partitions)
        for tp in partitions:
            self._windows.pop(tp, None)

    def close(self) -> None:
        """The worker stopped: no partition is resumed any more."""
        self._cancel_resumes(list(self._resumes))

    def _cancel_resumes(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            timer = self._resumes.pop(tp, None)
            if timer is not None:
                timer.cancel()

    async def _window(self, tp: TopicPartition, offset: int) -> DedupeWindow:
        """The partition's window, rebuilt from the log before its first record is judged.

        Built at the first record rather than in the assign callback: aiokafka may hand out
        fetched records before that callback has finished, and the record's own offset is exactly
        the position the window must stand at.
        """
        window = self._windows.get(tp)
        if window is None:
            started = time.perf_counter()
            window = await rebuild_window(self._settings, self._codec, tp, offset, self._clients)
            self._windows[tp] = window
            seconds = time.perf_counter() - started
            log.info(
                "%s at %d: dedupe window of %d ids rebuilt from the log in %.2fs",
                tp,
                offset,
                len(window),
                seconds,
                extra={"topic": tp.topic, "partition": tp.partition, "ids": len(window)},
            )
        return window
