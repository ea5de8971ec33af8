"""The "200 means kept" promise on a three-broker cluster (replication factor 3,
min.insync.replicas=2): a leader killed under load, a leader hung past the produce timeout, two
brokers of three gone. Every push answered 200 is in the topic, none twice."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.cluster.load import PRODUCE_TIMEOUT, Figures, Ingress, Traffic, kept
from tests.conftest import Reader
from uplink.broker.cluster import LocalCluster, leaders
from uplink.settings import Topics

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

PUSHERS = 16


async def busiest_leader(cluster: LocalCluster, topic: str) -> int:
    """The node leading the partitions that hold the most records."""
    led = await leaders(cluster.bootstrap_servers, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=cluster.bootstrap_servers)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in led])
    finally:
        await consumer.stop()
    load: Counter[int] = Counter()
    for tp, end in ends.items():
        load[led[tp.partition]] += end
    return load.most_common(1)[0][0]


def assert_kept(traffic: Traffic, counts: Counter[str]) -> None:
    lost = traffic.acknowledged - set(counts)
    assert not lost, f"{len(lost)} pushes answered 200 are not in the topic: {sorted(lost)[:5]}"
    twice = [m for m, c in counts.items() if c > 1]
    assert not twice, f"{len(twice)} pushes are in the topic twice: {twice[:5]}"
    assert {o.status for o in traffic.outcomes} <= {200, 503}, Counter(
        o.status for o in traffic.outcomes
    )


async def test_leader_killed_under_load_loses_and_duplicates_nothing(
    cluster: LocalCluster,
    ingress: Ingress,
    replicated: Topics,
    read_records: Reader,
    figures: list[Figures],
) -> None:
    traffic = Traffic(ingress.url, "killed")
    async with traffic.running(PUSHERS):
        await traffic.until("up", 200, 400)
        victim = await busiest_leader(cluster, replicated.messages)
        traffic.phase = "failover"
        killed_at = time.monotonic()
        await asyncio.to_thread(cluster.kill, victim)
        # The ingress rides the election: 200s again from the same process, no restart.
        await traffic.until("failover", 200, 400, timeout=120)
        resumed = time.monotonic() - killed_at
    assert ingress.alive
    counts = await kept(read_records, replicated.messages)
    assert_kept(traffic, counts)
    row = Figures.of(
        "SIGKILL of the busiest partitions' leader",
        traffic,
        counts,
        PUSHERS,
        note=f"node {victim} killed; 400 200s after it within {resumed:.1f}s",
    )
    figures.append(row)
    print(row)


async def test_leader_hung_past_the_produce_timeout_answers_no_200_without_the_ack(
    cluster: LocalCluster,
    ingress: Ingress,
    replicated: Topics,
    read_records: Reader,
    figures: list[Figures],
) -> None:
    hung = 4 * PRODUCE_TIMEOUT + 4  # and past the broker session timeout (9 s): it is fenced
    traffic = Traffic(ingress.url, "hung")
    baseline = peak = 0
    async with traffic.running(PUSHERS):
        await traffic.until("up", 200, 400)
        baseline = ingress.rss()
        victim = await busiest_leader(cluster, replicated.messages)
        traffic.phase = "hung"
        cluster.pause(victim)
        try:
            deadline = time.monotonic() + hung
            while time.monotonic() < deadline:  # the pause lasts this long: nothing to await
                peak = max(peak, ingress.rss())
                await asyncio.sleep(0.25)
        finally:
            cluster.resume(victim)
        traffic.phase = "resumed"
        await traffic.until("resumed", 200, 400, timeout=120)
        peak = max(peak, ingress.rss())
    assert ingress.alive
    # Past the produce timeout the broker's silence is a 503, never a 200.
    assert traffic.count("hung", 503) > 0, Counter((o.phase, o.status) for o in traffic.outcomes)
    slowest = max(o.seconds for o in traffic.outcomes)
    assert slowest < PRODUCE_TIMEOUT + 2, slowest
    growth = peak - baseline
    assert growth < 64 * 1024 * 1024, f"the ingress grew by {growth / 2**20:.0f} MiB"
    counts = await kept(read_records, replicated.messages)
    assert_kept(traffic, counts)
    row = Figures.of(
        f"SIGSTOP of a leader for {hung:.0f}s (produce timeout {PRODUCE_TIMEOUT:g}s), SIGCONT",
        traffic,
        counts,
        PUSHERS,
        note=f"ingress memory +{growth / 2**20:.1f} MiB at most",
    )
    figures.append(row)
    print(row)


async def test_two_brokers_of_three_down_answers_503_then_200_when_one_returns(
    cluster: LocalCluster,
    ingress: Ingress,
    replicated: Topics,
    read_records: Reader,
    figures: list[Figures],
) -> None:
    traffic = Traffic(ingress.url, "quorum")
    first, second, _ = cluster.node_ids
    async with traffic.running(PUSHERS):
        await traffic.until("up", 200, 200)
        traffic.phase = "two down"
        await asyncio.gather(
            asyncio.to_thread(cluster.kill, first), asyncio.to_thread(cluster.kill, second)
        )
        # Answered within the produce timeout, each one a 503: one copy is not "kept".
        await traffic.until("two down", 503, 5 * PUSHERS, timeout=60)
        traffic.phase = "one returning"
        await asyncio.to_thread(cluster.restart, first)
        traffic.phase = "one back"
        await traffic.until("one back", 200, 200, timeout=120)
    assert traffic.count("two down", 200) == 0, Counter(
        (o.phase, o.status) for o in traffic.outcomes
    )
    assert ingress.alive
    counts = await kept(read_records, replicated.messages)
    assert_kept(traffic, counts)
    row = Figures.of("two of three brokers SIGKILLed, then one restarted", traffic, counts, PUSHERS)
    figures.append(row)
    print(row)
