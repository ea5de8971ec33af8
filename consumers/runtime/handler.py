"""What a worker's side effect is to the runtime: the ``Handler`` every worker implements.

``handle`` is the one hook a handler must write; the others are declared here with defaults
that fit a handler whose effect is durable when ``handle`` returns.
"""

from __future__ import annotations

from typing import Any

from aiokafka import ConsumerRecord, TopicPartition

from consumers.runtime.outcomes import Outcome, Positions, Rewind
from schemas import PushCodec
from uplink.resources import Resource


class Inbound:
    """A push record with where it came from; the datum is decoded only if ``push`` is read.

    The runtime reads only a record's head (``messageId``, event ``timestamp``) to judge it; a
    handler that stores the record as it is (the archive) never pays for the full decode.
    """

    __slots__ = ("_codec", "_push", "message_id", "record", "timestamp", "tp", "value")

    def __init__(
        self,
        record: ConsumerRecord[bytes, bytes],
        codec: PushCodec,
        head: tuple[str, int | None] | None = None,
        tp: TopicPartition | None = None,
    ) -> None:
        if record.value is None:
            raise ValueError("a push record has a value")
        self.record = record
        self.value: bytes = record.value
        self.tp = tp if tp is not None else TopicPartition(record.topic, record.partition)
        self.message_id, self.timestamp = head if head is not None else codec.head(record.value)
        self._codec = codec
        self._push: dict[str, Any] | None = None

    @property
    def push(self) -> dict[str, Any]:
        """The decoded record; raises SchemaError (the runtime dead-letters the record)."""
        if self._push is None:
            self._push = self._codec.decode(self.value)
        return self._push


class Handler(Resource):
    """A worker's side effect. ``start()``/``stop()`` are its own resources (defaults: none);
    the launcher starts it before the worker and stops it after."""

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def handle(self, inbound: Inbound) -> Outcome:
        """Do the side effect; return positions that just became durable and must be committed
        before anything else happens, positions that will be (``Pending``), ``Postpone``, or
        None. Raises RecordError (→ DLQ) or TransientError (→ retry with backoff)."""
        raise NotImplementedError

    def take_many(
        self,
        tp: TopicPartition,
        records: list[ConsumerRecord[bytes, bytes]],
        stamps: list[int | None],
        repeats: list[bool],
        start: int,
    ) -> int:
        """The fast path, optional: handle records from ``start`` on, skipping repeats, with no
        I/O and no Inbound; return the index of the first left to ``handle`` (``len(records)``:
        none). The default takes none. The archive's append."""
        return start

    async def flush(self, handled: Positions) -> Positions | Rewind:
        """Make what was handled durable; return the positions safe to commit, or a ``Rewind``
        when another writer had already done some of it.

        ``handled`` holds, per partition, the offset after the last record handled. The default
        (an effect durable when ``handle`` returns) gives it back unchanged.
        """
        return handled

    async def assigned(self, partitions: list[TopicPartition]) -> None:
        """Partitions this worker now owns; records may still arrive before this returns (the
        router fences the previous owner's transactional producers here)."""
        return None

    async def revoked(self, partitions: list[TopicPartition]) -> None:
        """Forget the state of partitions this worker no longer owns (after their flush): on a
        rebalance's revoke, and for all of them as the worker stops, before it leaves the group."""
        return None

    async def drain(self) -> None:
        """As the worker stops, before its final flush: finish (or give up) the work in flight."""
        return None


def takes_many(handler: Handler) -> bool:
    """Whether the handler has a fast path of its own (the runtime skips the default's call)."""
    return type(handler).take_many is not Handler.take_many
