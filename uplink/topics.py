"""Creating uplink's topics when they are missing: the one place that does (the ingress at
start-up, the launcher before a worker starts, ``uplink topics``, ``uplink dev``), each creating
what its topology (``uplink.topology``) says."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from uplink.kafka import KafkaClients
from uplink.settings import KafkaSettings, Topics
from uplink.topology import TopicSpec, shared

log = logging.getLogger(__name__)


async def ensure_topics(
    kafka: KafkaSettings, topics: Topics, specs: Sequence[TopicSpec] | None = None
) -> list[str]:
    """Create whichever of ``specs`` (default: uplink's own topics) do not exist yet, replicated
    as ``topics`` says; returns the names created."""
    if specs is None:
        specs = shared(topics, kafka.max_request_size)
    clients = KafkaClients(kafka)
    admin = clients.admin()
    try:
        await clients.start(admin)
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
