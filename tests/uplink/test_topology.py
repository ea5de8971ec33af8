"""uplink/topology.py: each process kind's topics, from the settings alone."""

from __future__ import annotations

from uplink import topology
from uplink.settings import Topics, WorkerSettings

TOPICS = Topics(replication_factor=3)
OWN = [
    "uplink.messages.v1",
    "uplink.quarantine.v1",
    "uplink.media.v1",
    "uplink.statuses.v1",
    "uplink.meta.events.v1",
]
DELAYS = ["uplink.router.delay.1", "uplink.router.delay.2"]


def worker(name: str) -> WorkerSettings:
    return WorkerSettings(name=name, topics=TOPICS)


def test_every_process_creates_uplinks_own_topics_and_its_own() -> None:
    assert topology.ingress(TOPICS, 1024).names == OWN
    assert topology.archive(worker("archive")).names == [*OWN, "uplink.archive.dlq.v1"]
    media = topology.media(worker("media"))
    assert media.names == [*OWN, "uplink.media.dlq.v1"]  # its events' topic is one of uplink's
    assert media.writes == ("uplink.media.v1", "uplink.media.dlq.v1")


def test_the_router_process_reads_its_delays_and_creates_its_outputs() -> None:
    settings = worker("router")
    routes = topology.router(settings, {"b.out", "a.out"}, DELAYS)
    retries = topology.redeliveries(settings, DELAYS)
    assert routes.reads == ("uplink.messages.v1",)
    assert routes.writes == ("a.out", "b.out", DELAYS[0], "uplink.router.dlq.v1")
    assert retries.reads == tuple(DELAYS)
    assert retries.writes == (DELAYS[1], "uplink.router.dlq.v1")
    process = routes | retries
    assert process.reads == ("uplink.messages.v1", *DELAYS)
    assert process.names == [*OWN, "a.out", "b.out", DELAYS[0], "uplink.router.dlq.v1", DELAYS[1]]


def test_specs_carry_partitions_and_the_replicated_configs() -> None:
    specs = {s.name: s for s in topology.router(worker("router"), {"out"}, DELAYS).creates}
    assert specs["uplink.messages.v1"].partitions == TOPICS.messages_partitions
    assert specs["out"].partitions == TOPICS.partitions
    assert specs["out"].configs == {
        "max.message.bytes": str(worker("router").kafka.max_request_size),
        "min.insync.replicas": "2",
    }


def test_uplink_topics_creates_the_named_workers_dlqs() -> None:
    setup = topology.setup(Topics(), 1024, ["archive", "media"])
    assert setup.names == [*OWN, "uplink.archive.dlq.v1", "uplink.media.dlq.v1"]
    assert setup.creates[0].configs == {"max.message.bytes": "1024"}  # one replica: no ISR rule
