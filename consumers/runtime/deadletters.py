"""The worker's dead-letter queue: records that can never be processed, kept with why and where.

It sends through a ``Producer`` it is handed (the process's one producer of side records, which
whoever built it starts and stops), so a handler that finishes records in the background (the
media worker's downloads, the router's re-deliveries) dead-letters through the same one.
"""

from __future__ import annotations

import logging

from aiokafka import ConsumerRecord, TopicPartition

from consumers.runtime.metrics import WorkerMetrics
from uplink.kafka import Producer
from uplink.settings import WorkerSettings

log = logging.getLogger(__name__)


class DeadLetters:
    def __init__(
        self, settings: WorkerSettings, producer: Producer, metrics: WorkerMetrics
    ) -> None:
        self._settings = settings
        self._producer = producer
        self._metrics = metrics

    async def send(self, record: ConsumerRecord[bytes, bytes], reason: str) -> None:
        """Keep the original bytes, key and headers, plus why and where from; returns once the
        broker has it, so the record's offset may then be committed."""
        headers = [
            *(record.headers or ()),
            ("uplink-dlq-reason", reason.encode()),
            ("uplink-dlq-worker", self._settings.name.encode()),
            ("uplink-dlq-topic", record.topic.encode()),
            ("uplink-dlq-partition", str(record.partition).encode()),
            ("uplink-dlq-offset", str(record.offset).encode()),
        ]
        await self._producer.send(self._settings.dlq, record.value, key=record.key, headers=headers)
        self._metrics.dead_lettered[TopicPartition(record.topic, record.partition)] += 1
        log.warning(
            "DLQ %s[%d]@%d: %s",
            record.topic,
            record.partition,
            record.offset,
            reason,
            extra={
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "reason": reason,
                "dlq": self._settings.dlq,
            },
        )
