"""Which topics each kind of uplink process reads, writes and creates: the one answer.

The wiring subscribes each worker to what its topology ``reads``; the launcher, the ingress,
``uplink topics`` and ``uplink dev`` create what it ``creates`` (``uplink.topics.ensure_topics``).
Every process creates uplink's own topics (``shared``) beside its own, so whichever starts first
makes the pipeline whole. Names only, from the settings: this module imports no worker (the
router's rule outputs and delay topics are handed in as names).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from uplink.settings import Topics, WorkerSettings


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    configs: dict[str, str]


@dataclass(frozen=True)
class Topology:
    """The topics of one process kind (or, joined with ``|``, of several)."""

    reads: tuple[str, ...]
    writes: tuple[str, ...]
    creates: tuple[TopicSpec, ...]

    def __or__(self, other: Topology) -> Topology:
        creates = {spec.name: spec for spec in (*self.creates, *other.creates)}
        return Topology(
            _union(self.reads, other.reads), _union(self.writes, other.writes), (*creates.values(),)
        )

    @property
    def names(self) -> list[str]:
        """The names of the topics it creates."""
        return [spec.name for spec in self.creates]


def topic_configs(topics: Topics, max_message_bytes: int) -> dict[str, str]:
    configs = {"max.message.bytes": str(max_message_bytes)}
    if topics.replication_factor >= 3:
        # acks=all only means "on two machines" when the topic insists on two in-sync replicas.
        configs["min.insync.replicas"] = "2"
    return configs


def shared(topics: Topics, max_message_bytes: int) -> tuple[TopicSpec, ...]:
    """uplink's own topics, with their partition counts and configs."""
    configs = topic_configs(topics, max_message_bytes)
    return (
        TopicSpec(topics.messages, topics.messages_partitions, configs),
        TopicSpec(topics.quarantine, topics.partitions, configs),
        TopicSpec(topics.media, topics.partitions, configs),
        TopicSpec(topics.statuses, topics.messages_partitions, configs),
        TopicSpec(topics.meta_events, topics.partitions, configs),
    )


def side(topics: Topics, names: Iterable[str], max_message_bytes: int) -> tuple[TopicSpec, ...]:
    """Topics of one worker (its DLQ, the router's outputs and delay topics): as many
    partitions as uplink's other side topics, the same configs."""
    configs = topic_configs(topics, max_message_bytes)
    return tuple(TopicSpec(name, topics.partitions, configs) for name in names)


def ingress(topics: Topics, max_message_bytes: int) -> Topology:
    """The ingress: pushes to the messages topic, what is not a push to the quarantine, Meta's
    statuses and other events to theirs."""
    return Topology(
        reads=(),
        writes=(topics.messages, topics.quarantine, topics.statuses, topics.meta_events),
        creates=shared(topics, max_message_bytes),
    )


def _worker(settings: WorkerSettings, reads: Sequence[str], writes: Sequence[str]) -> Topology:
    """A worker: what it writes besides uplink's own topics is created with them."""
    topics, max_bytes = settings.topics, settings.kafka.max_request_size
    base = shared(topics, max_bytes)
    own = [name for name in writes if name not in {spec.name for spec in base}]
    return Topology((*reads,), (*writes,), (*base, *side(topics, own, max_bytes)))


def archive(settings: WorkerSettings) -> Topology:
    return _worker(settings, [settings.topics.messages], [settings.dlq])


def media(settings: WorkerSettings) -> Topology:
    """Reads the pushes, writes a media event for each object it keeps."""
    return _worker(settings, [settings.topics.messages], [settings.topics.media, settings.dlq])


def router(settings: WorkerSettings, outputs: Iterable[str], delays: Sequence[str]) -> Topology:
    """The router's first consumer: its rules' output topics (``Rules.topics``), and a
    delivery that failed parked in the first delay topic (``RouterSettings.delay_topics``)."""
    writes = [*sorted(outputs), *delays[:1], settings.dlq]
    return _worker(settings, [settings.topics.messages], writes)


def redeliveries(settings: WorkerSettings, delays: Sequence[str]) -> Topology:
    """The router's second consumer (same process, its own group): the delay topics; what
    fails again moves to the next one, after the last to the router's DLQ."""
    return _worker(settings, delays, [*delays[1:], settings.dlq])


def setup(topics: Topics, max_message_bytes: int, dlqs: Iterable[str]) -> Topology:
    """What ``uplink topics`` creates: uplink's own topics and the DLQs of the workers named.
    The router's outputs and delay topics are the router's to create (they follow its rules)."""
    names = [topics.dlq(worker) for worker in dlqs]
    return Topology(
        (), (), (*shared(topics, max_message_bytes), *side(topics, names, max_message_bytes))
    )


def _union(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    return (*dict.fromkeys((*first, *second)),)


def redrive_spec(topics: Topics, worker: str, max_message_bytes: int) -> TopicSpec:
    """A worker's re-drive topic (``uplink dlq redrive``): the messages topic's partitions, so
    a conversation's dead letters land in one partition, as its pushes did."""
    configs = topic_configs(topics, max_message_bytes)
    return TopicSpec(topics.redrive(worker), topics.messages_partitions, configs)


def redrive(settings: WorkerSettings) -> Topology:
    """A worker's reader of its re-drive topic (same process, group ``<group>-redrive``)."""
    spec = redrive_spec(settings.topics, settings.name, settings.kafka.max_request_size)
    return Topology((spec.name,), (), (spec,))
