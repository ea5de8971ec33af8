"""Errors of the consumer runtime. ``retriable`` decides between retry-with-backoff and the DLQ."""

from __future__ import annotations

from aiokafka import TopicPartition

from uplink.exceptions import UplinkError


class ConsumerError(UplinkError):
    """A record's processing failed: the runtime retries it (``retriable``) or dead-letters it."""


class RecordError(ConsumerError):
    """This record can never be processed (undecodable, invalid, refused for good): DLQ it."""


class TransientError(ConsumerError):
    """Processing failed for now (a timeout, a 5xx): retry with backoff, never skip the record."""

    retriable = True


class HandlerFailed(UplinkError):
    """A handler's background work failed unexpectedly: not a record's fault, so not a
    ConsumerError; it stops the worker, and nothing past the failed record is committed. A
    restart redoes the work from the committed position."""

    retriable = True


class Rewind(UplinkError):
    """From a handler's ``Pending`` or ``flush``: another writer had already done this work (the
    archive's key was taken), up to other positions than this one's. ``moved``: partitions to
    read again from these positions, everything before which is durable (commit them);
    ``durable``: positions of other partitions of the same flush, durable as usual."""

    def __init__(
        self, moved: dict[TopicPartition, int], durable: dict[TopicPartition, int] | None = None
    ) -> None:
        super().__init__(", ".join(f"{tp.topic}[{tp.partition}]@{at}" for tp, at in moved.items()))
        self.moved = moved
        self.durable = durable or {}
