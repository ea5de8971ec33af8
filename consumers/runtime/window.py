"""The dedupe window of a partition, rebuilt from the partition itself: one window of record time
before a position, up to it, so the decision after a crash, a rebalance or a replay equals the
decision before."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from consumers.runtime.dedupe import DedupeWindow
from schemas import PushCodec
from uplink.kafka import KafkaClients
from uplink.settings import WorkerSettings


async def rebuild_window(
    settings: WorkerSettings,
    codec: PushCodec,
    tp: TopicPartition,
    position: int,
    clients: KafkaClients | None = None,
) -> DedupeWindow:
    """The window as it stood before ``position``: replay one window of record time before it."""
    window = DedupeWindow(settings.dedupe_window_ms)
    if position <= 0:
        return window
    clients = clients or KafkaClients(settings.kafka)
    reader = clients.consumer()
    await clients.start(reader)
    try:
        reader.assign([tp])
        last = await _record_at(reader, tp, position - 1)
        if last is None:
            return window
        found = await reader.offsets_for_times(
            {tp: max(last.timestamp - settings.dedupe_window_ms, 0)}
        )
        start = found[tp].offset if found.get(tp) is not None else position - 1
        reader.seek(tp, start)
        while (await reader.position(tp)) < position:
            batch = await reader.getmany(tp, timeout_ms=1000, max_records=5000)
            records = [record for record in batch.get(tp, []) if record.offset < position]
            values = [record.value for record in records]
            heads = codec.heads(values)
            if heads.failed and await codec.learn(values):  # judged before: known, but not here
                heads = codec.heads(values)
            if heads.failed:  # it went to the DLQ when it was judged, and was never remembered
                failed = {index for index, _ in heads.failed}
                records = [r for index, r in enumerate(records) if index not in failed]
            # Remembered as they were judged; the answers are not needed.
            window.seen_many(heads.ids, [record.timestamp for record in records])
    finally:
        await reader.stop()
    return window


async def _record_at(
    reader: AIOKafkaConsumer, tp: TopicPartition, offset: int
) -> ConsumerRecord[bytes, bytes] | None:
    beginning = (await reader.beginning_offsets([tp]))[tp]
    if offset < beginning:
        return None  # retention removed it: nothing left to remember
    reader.seek(tp, offset)
    async with asyncio.timeout(60):
        while (await reader.position(tp)) <= offset:
            batch = await reader.getmany(tp, timeout_ms=1000, max_records=1)
            for record in batch.get(tp, []):
                return record
    return None  # a transaction marker: no record to date the window by
