"""Router throughput (20 rules, topic outputs, transactions) against bare aiokafka loops, same run.

    .venv/bin/python -m bench.router_throughput [--records 100000] [--commit-every 2000 10000]

Fills a 12-partition topic with the spec's example pushes (unique messageIds), then reads all of it
with, one after the other:

- bare consume-produce, transactional: one consumer (read_committed, manual), one transactional
  producer; every record's value and key produced to one output topic; every ``commit_every``
  records the consumed offsets are sent to the transaction and it commits (the fair baseline:
  transactions included);
- the router: the consumer runtime (decode, dedupe) + 20 rules (appId, businessPhone, type,
  fromPrefix, text regex, hasMedia, forwarded, any/not), each push produced to exactly one topic
  (the first rule it matches; none continue), one transactional producer per input partition,
  committing every ``commit_every`` records;
- the transactional bare loop again;
- once, for reference: bare consume-produce without transactions (produce, commit offsets).

for each commit size given (records per transaction).

Each time includes joining the group and ends when the last transaction is committed. Writes
records/s and the ratio router / transactional bare (mean of its two runs) into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import tomllib
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.pushes import campaign, fill
from bench.results import command, run_line, write_run
from consumers.router.handler import Router
from consumers.router.rules import Rules, compile_rules
from consumers.router.settings import RouterSettings
from schemas import PushCodec
from uplink import topology
from uplink.broker import kafka_broker
from uplink.cli import launcher, workers
from uplink.process import tune_gc
from uplink.settings import KafkaSettings, Topics, WorkerSettings
from uplink.topics import ensure_topics

BARE_OUT = "bench.router.bare"

# 20 rules, from narrow to broad, as a business would write them; the last catches the rest.
RULES = """
[default]
topic = "bench.router.unmatched"

[[rule]]
name = "vip-app"
match = { appId = ["vip-1", "vip-2", "vip-3"] }
actions = [{ topic = "bench.router.vip" }]

[[rule]]
name = "uk"
match = { fromPrefix = ["44", "353"] }
actions = [{ topic = "bench.router.uk" }]

[[rule]]
name = "us"
match = { fromPrefix = "1" }
actions = [{ topic = "bench.router.us" }]

[[rule]]
name = "second-line"
match = { businessPhone = ["15550001111", "15550002222"] }
actions = [{ topic = "bench.router.second-line" }]

[[rule]]
name = "test-events"
match = { not = { eventType = "up-message-event" } }
actions = [{ topic = "bench.router.test-events" }]

[[rule]]
name = "unsubscribe"
match = { type = "text", text = "(?i)\\\\b(stop|unsubscribe|opt out)\\\\b" }
actions = [{ topic = "bench.router.unsubscribe" }]

[[rule]]
name = "support"
match = { type = ["text", "interactive"], text = "(?i)\\\\b(help|support|agent|human)\\\\b" }
actions = [{ topic = "bench.router.support" }]

[[rule]]
name = "orders"
match = { any = [{ text = "(?i)\\\\border\\\\b" }, { type = ["order"] }] }
actions = [{ topic = "bench.router.orders" }]

[[rule]]
name = "forwarded"
match = { forwarded = true }
actions = [{ topic = "bench.router.forwarded" }]

[[rule]]
name = "buttons"
match = { type = "interactive" }
actions = [{ topic = "bench.router.buttons" }]

[[rule]]
name = "stickers"
match = { type = "sticker" }
actions = [{ topic = "bench.router.stickers" }]

[[rule]]
name = "images"
match = { type = "image", hasMedia = true }
actions = [{ topic = "bench.router.images" }]

[[rule]]
name = "videos"
match = { type = "video" }
actions = [{ topic = "bench.router.videos" }]

[[rule]]
name = "voice"
match = { type = "audio" }
actions = [{ topic = "bench.router.voice" }]

[[rule]]
name = "documents"
match = { type = "document" }
actions = [{ topic = "bench.router.documents" }]

[[rule]]
name = "locations"
match = { type = "location" }
actions = [{ topic = "bench.router.locations" }]

[[rule]]
name = "contacts"
match = { type = "contacts" }
actions = [{ topic = "bench.router.contacts" }]

[[rule]]
name = "errors"
match = { type = ["unknown", "unsupported"] }
actions = [{ topic = "bench.router.errors" }]

[[rule]]
name = "texts"
match = { type = "text" }
actions = [{ topic = "bench.router.texts" }]

[[rule]]
name = "rest"
match = {}
actions = [{ topic = "bench.router.rest" }]
"""


async def bare_loop(
    kafka: KafkaSettings, topic: str, count: int, commit_every: int, transactional: bool
) -> float:
    """Consume, produce each value and key to one topic, commit (in a transaction, or not)."""
    group = f"bench-bare-{uuid.uuid4().hex[:6]}"
    consumer = AIOKafkaConsumer(
        topic,
        **kafka.client_options(),
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    producer = AIOKafkaProducer(
        **kafka.client_options(),
        acks="all",
        enable_idempotence=True,
        linger_ms=0,  # the router's producer settings, for a like-for-like baseline
        retry_backoff_ms=20,
        max_batch_size=256 * 1024,
        transactional_id=f"{group}.tx" if transactional else None,
    )
    started = time.perf_counter()
    await producer.start()
    await consumer.start()
    try:
        seen, since_commit = 0, 0
        positions: dict[TopicPartition, int] = {}
        in_txn = False
        pending = []
        while seen < count:
            batch = await consumer.getmany(timeout_ms=500, max_records=500)
            for tp, records in batch.items():
                for record in records:
                    if transactional and not in_txn:
                        await producer.begin_transaction()
                        in_txn = True
                    future = await producer.send(BARE_OUT, record.value, key=record.key)
                    if not transactional:
                        pending.append(future)
                    positions[tp] = record.offset + 1
                    seen += 1
                    since_commit += 1
            if since_commit >= commit_every or seen >= count:
                if transactional:
                    await producer.send_offsets_to_transaction(positions, group)
                    await producer.commit_transaction()
                    in_txn = False
                else:
                    await asyncio.gather(*pending)
                    pending.clear()
                    await consumer.commit(positions)
                since_commit = 0
        return count / (time.perf_counter() - started)
    finally:
        await consumer.stop()
        await producer.stop()


async def router_run(
    settings: WorkerSettings, router_settings: RouterSettings, rules: Rules, count: int
) -> float:
    """``uplink router`` as it runs, re-deliveries included: from its start to its last
    transaction committed."""
    assembly = workers.router(settings, router_settings, rules)
    router = assembly.workers[0].handler
    assert isinstance(router, Router)
    started = time.perf_counter()
    assert await launcher.run(assembly, count=count, timeout=900) == count
    elapsed = time.perf_counter() - started
    routed = sum(n for d, n in router.metrics.outputs.items() if d.startswith("topic:"))
    assert routed == count, f"{routed} routed of {count}"
    return count / elapsed


async def main(count: int, sizes: list[int]) -> None:
    tune_gc()  # as `uplink router` does; for every reader alike
    codec = PushCodec()
    rules = compile_rules(tomllib.loads(RULES), {}, source="bench rules")
    assert len(rules.rules) == 20
    rows: list[tuple[int, float, float, float]] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        kafka_broker(os.environ, data_dir=Path(tmp) / "kafka") as bootstrap,
    ):
        kafka = KafkaSettings(bootstrap_servers=bootstrap)
        topics = Topics(messages="bench.router.in", quarantine="bench.q", media="bench.m")
        router_settings = RouterSettings(delay_pattern="bench.router.delay.{step}")
        probe = WorkerSettings(name="router", kafka=kafka, topics=topics)
        delays = router_settings.delay_topics
        flow = topology.router(probe, rules.topics, delays) | topology.redeliveries(probe, delays)
        bare_out = topology.side(topics, [BARE_OUT], kafka.max_request_size)
        await ensure_topics(kafka, topics, [*flow.creates, *bare_out])
        await fill(kafka, topics.messages, campaign(count), codec)
        # The broker's first transactions create __transaction_state (50 partitions): warm it
        # up first, or the first measured run pays for it.
        await bare_loop(kafka, topics.messages, min(count, 5000), 1000, True)
        plain = await bare_loop(kafka, topics.messages, count, sizes[0], False)
        for size in sizes:
            settings = WorkerSettings(
                name="router",
                kafka=kafka,
                topics=topics,
                group_id=f"bench-router-{uuid.uuid4().hex[:6]}",
                commit_every=size,
                commit_interval=60.0,
            )
            bare = await bare_loop(kafka, topics.messages, count, size, True)
            router = await router_run(settings, router_settings, rules, count)
            bare_again = await bare_loop(kafka, topics.messages, count, size, True)
            rows.append((size, bare, router, bare_again))
    write(count, plain, rows)


def write(count: int, plain: float, rows: list[tuple[int, float, float, float]]) -> None:
    table = "\n".join(
        f"| {size:,} | {bare:,.0f} | {router:,.0f} | {again:,.0f} "
        f"| **{router / ((bare + again) / 2):.1%}** |"
        for size, bare, router, again in rows
    )
    section = f"""{run_line("; broker on this machine")}
{count:,} records (the spec's 13 examples in rotation, unique messageIds) in 12 partitions, read
in full by each reader, one after the other in this run (after a transactional warm-up). Every
reader produces each record once to a topic and commits every N records; times include joining
the group and the last commit. Bare loop: getmany → send(value, key) to one topic → commit
(transactional: offsets sent to the transaction of one transactional producer, the same
producer settings as the router's; plain: await the sends, then commit the offsets). Router:
the consumer runtime (decode, dedupe) + 20 rules (first match wins, every push routed to one of
20 topics) + headers naming the rule, one transactional producer per input partition (its
fencing design: 12 transactions per commit where the bare loop has one).

Bare consume-produce without transactions (reference): {plain:,.0f} records/s.

| N | bare, tx | router | bare, tx, again | router / bare (mean) |
|---|---|---|---|---|
{table}

(bar: 40 %)
"""
    ratios = [(size, router / ((bare + again) / 2)) for size, bare, router, again in rows]
    (size, ratio), *others = ratios
    write_run(
        "Router throughput",
        figure=f"router at {100 * ratio:.1f} % of the transactional bare loop at N = {size:,}"
        + "".join(f", {100 * r:.1f} % at N = {n:,}" for n, r in others),
        bar="40 % of the transactional bare loop",
        met=all(r >= 0.4 for _, r in ratios),
        command=command(),
        section=section,
    )
    print(section)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument(
        "--commit-every", type=int, nargs="+", default=[2000, 10_000], help="records per commit"
    )
    arguments = parser.parse_args()
    asyncio.run(main(arguments.records, arguments.commit_every))
