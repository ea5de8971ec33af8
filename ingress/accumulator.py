"""Withdrawing refused records from aiokafka's accumulator before they are ever sent.

A push answered 503 leaves its record in the producer's buffer, and aiokafka has no delivery
timeout: the record would wait for the broker however long the outage lasts, and be written
once it returns. The deadline that answers 503 cancels the record's delivery future, so a
batch whose every future is done has nobody waiting for it.

Such a batch is dropped only while the sender has never taken it. The idempotent producer
gives a batch its sequence numbers when it drains it for a first send; a batch never drained
has none, so dropping it leaves no gap the broker would refuse (OutOfOrderSequenceNumber) and
the producer's guarantees hold. A drained batch (sent, perhaps written, being retried) keeps
its place and is written when the broker answers: at most one per partition, since aiokafka
sends one batch per partition at a time.

This reads aiokafka's private structures (``MessageAccumulator._batches``, a batch's
``_msg_futures`` and ``_drain_waiter``); tests/ingress/test_outage.py checks them against the
installed release on a real broker.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from aiokafka import AIOKafkaProducer


def withdraw_refused(producer: AIOKafkaProducer) -> int:
    """Drop the never-sent batches nobody awaits; return how many records they held."""
    batches_by_tp: dict[Any, deque[Any]] = producer._message_accumulator._batches
    withdrawn = 0
    for tp, batches in list(batches_by_tp.items()):
        kept = [batch for batch in batches if not _refused(batch)]
        if len(kept) == len(batches):
            continue
        for batch in batches:
            if _refused(batch):
                withdrawn += batch.record_count
                # A send waiting for room behind this (full) batch looks again, and finds it gone.
                if not batch._drain_waiter.done():
                    batch._drain_waiter.set_result(None)
        if kept:
            batches.clear()
            batches.extend(kept)
        else:
            # The sender reads the first batch of every partition listed: none may be empty.
            del batches_by_tp[tp]
    return withdrawn


def buffered(producer: AIOKafkaProducer) -> int:
    """Records in the producer's buffer, sent or not, not yet acknowledged."""
    accumulator = producer._message_accumulator
    waiting: int = sum(b.record_count for batches in accumulator._batches.values() for b in batches)
    sent: int = sum(b.record_count for b in accumulator._pending_batches)
    return waiting + sent


def _refused(batch: Any) -> bool:
    futures = batch._msg_futures
    return (
        batch.retry_count == 0  # never drained: no sequence numbers yet
        and bool(futures)
        and all(future.done() for future, _ in futures)
    )
