"""Creating uplink's topics when they are missing: the one place that does (the ingress at
start-up, the launcher before a worker starts, ``uplink topics``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from uplink.kafka import KafkaClients
from uplink.settings import KafkaSettings, Topics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    configs: dict[str, str]


def topic_configs(topics: Topics, max_message_bytes: int) -> dict[str, str]:
    configs = {"max.message.bytes": str(max_message_bytes)}
    if topics.replication_factor >= 3:
        # acks=all only means "on two machines" when the topic insists on two in-sync replicas.
        configs["min.insync.replicas"] = "2"
    return configs


def topic_specs(topics: Topics, max_message_bytes: int) -> list[TopicSpec]:
    """The topics every uplink deployment needs, with their partition counts and configs."""
    configs = topic_configs(topics, max_message_bytes)
    return [
        TopicSpec(topics.messages, topics.messages_partitions, configs),
        TopicSpec(topics.quarantine, topics.partitions, configs),
        TopicSpec(topics.media, topics.partitions, configs),
        TopicSpec(topics.statuses, topics.messages_partitions, configs),
        TopicSpec(topics.meta_events, topics.partitions, configs),
    ]


def dlq_spec(topics: Topics, worker: str, max_message_bytes: int) -> TopicSpec:
    """A worker's DLQ: as many partitions as the other side topics, the same configs."""
    return TopicSpec(
        topics.dlq(worker), topics.partitions, topic_configs(topics, max_message_bytes)
    )


def redrive_spec(topics: Topics, worker: str, max_message_bytes: int) -> TopicSpec:
    """A worker's re-drive topic: the messages topic's partitions, so a conversation's dead
    letters land in one partition, as its pushes did."""
    return TopicSpec(
        topics.redrive(worker),
        topics.messages_partitions,
        topic_configs(topics, max_message_bytes),
    )


async def ensure_topics(
    kafka: KafkaSettings, topics: Topics, extra: list[TopicSpec] | None = None
) -> list[str]:
    """Create whichever of the topics do not exist yet; returns the names created."""
    specs = topic_specs(topics, kafka.max_request_size) + (extra or [])
    admin = KafkaClients(kafka).admin()
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        created: list[str] = []
        if not missing:
            return created
        response = await admin.create_topics(
            [
                NewTopic(
                    spec.name,
                    spec.partitions,
                    topics.replication_factor,
                    topic_configs=spec.configs,
                )
                for spec in missing
            ]
        )
        for name, code, *message in response.topic_errors:
            error = for_code(code) if code else None
            if error is TopicAlreadyExistsError:
                continue  # another process won the race: the topic exists, which is all we need
            if error is not None:
                raise error(f"cannot create topic {name}: {message[0] if message else ''}")
            created.append(name)
            log.info("created topic %s", name)
        return created
    finally:
        await admin.close()
