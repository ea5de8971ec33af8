"""The worker's dead-letter queue: records that can never be processed, kept with why and where.

A resource of its own so a handler that finishes records in the background (the media worker's
concurrent downloads) can dead-letter them too; the worker starts and stops it (both safe twice).
"""

from __future__ import annotations

import logging

from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition

from consumers.metrics import WorkerMetrics
from uplink.resources import Resource
from uplink.settings import WorkerSettings

log = logging.getLogger(__name__)


class DeadLetters(Resource):
    def __init__(self, settings: WorkerSettings, metrics: WorkerMetrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        if self._producer is None:
            producer = AIOKafkaProducer(
                **self._settings.kafka.client_options(), acks="all", enable_idempotence=True
            )
            await producer.start()
            self._producer = producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def send(self, record: ConsumerRecord[bytes, bytes], reason: str) -> None:
        """Keep the original bytes, key and headers, plus why and where from; returns once the
        broker has it, so the record's offset may then be committed."""
        if self._producer is None:
            raise RuntimeError("dead letters not started")
        headers = [
            *(record.headers or ()),
            ("uplink-dlq-reason", reason.encode()),
            ("uplink-dlq-worker", self._settings.name.encode()),
            ("uplink-dlq-topic", record.topic.encode()),
            ("uplink-dlq-partition", str(record.partition).encode()),
            ("uplink-dlq-offset", str(record.offset).encode()),
        ]
        await self._producer.send_and_wait(
            self._settings.dlq, record.value, key=record.key, headers=headers
        )
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
