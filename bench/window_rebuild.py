"""Rebuilding a partition's dedupe window from the log, against a bare read of the same records.

    .venv/bin/python -m bench.window_rebuild [--records 1000000]

Fills a one-partition topic with ``--records`` push records (unique messageIds, record time
spread over less than the 1 h window, so the whole partition is the window), then in this run:
a bare aiokafka loop reading the partition from its start (getmany, discard), the worker's
``rebuild_window`` at the partition's end (what a worker does on assignment), the bare loop again.
Writes seconds, records/s and the ratio into bench/RESULTS.md (its row and section).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.pushes import examples, fill
from bench.results import command, run_line, write_run
from consumers.runtime import rebuild_window
from schemas import PushCodec
from uplink.broker import kafka_broker
from uplink.settings import KafkaSettings, Topics, WorkerSettings
from uplink.topics import ensure_topics


def pushes(count: int) -> Iterator[dict[str, Any]]:
    bodies = examples()
    for n in range(count):
        yield {**bodies[n % len(bodies)], "messageId": f"rebuild-{n:09d}"}


async def bare_loop(kafka: KafkaSettings, tp: TopicPartition, count: int) -> float:
    """Seconds to read the partition's ``count`` records from its start."""
    consumer = AIOKafkaConsumer(**kafka.client_options(), enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        started, seen = time.perf_counter(), 0
        while seen < count:
            batch = await consumer.getmany(tp, timeout_ms=1000, max_records=5000)
            seen += len(batch.get(tp, []))
        return time.perf_counter() - started
    finally:
        await consumer.stop()


async def rebuild(
    settings: WorkerSettings, codec: PushCodec, tp: TopicPartition, count: int
) -> float:
    started = time.perf_counter()
    window = await rebuild_window(settings, codec, tp, count)
    elapsed = time.perf_counter() - started
    assert len(window) == count, f"the window holds {len(window)} ids, not {count}"
    return elapsed


async def main(count: int) -> None:
    codec = PushCodec()
    with (
        tempfile.TemporaryDirectory() as tmp,
        kafka_broker(os.environ, data_dir=Path(tmp) / "kafka") as bootstrap,
    ):
        kafka = KafkaSettings(bootstrap_servers=bootstrap)
        topics = Topics(
            messages="bench.rebuild", quarantine="bench.q", media="bench.m", messages_partitions=1
        )
        await ensure_topics(kafka, topics)
        tp = TopicPartition(topics.messages, 0)
        filled = time.perf_counter()
        start = time.time_ns() // 1_000_000 - 1_800_000  # the last half hour: one 1 h window
        await fill(
            kafka,
            tp.topic,
            pushes(count),
            codec,
            partition=tp.partition,
            timestamp=lambda n: start + n * 1_800_000 // count,
        )
        print(f"filled {count:,} records in {time.perf_counter() - filled:.0f}s", flush=True)
        settings = WorkerSettings(name="archive", kafka=kafka, topics=topics)
        bare = await bare_loop(kafka, tp, count)
        rebuilt = await rebuild(settings, codec, tp, count)
        bare_again = await bare_loop(kafka, tp, count)
    write(count, bare, bare_again, rebuilt)


def write(count: int, bare: float, bare_again: float, rebuilt: float) -> None:
    baseline = (bare + bare_again) / 2
    section = f"""{run_line("; broker on this machine")}
One partition of {count:,} push records (the spec's 13 examples in rotation, unique messageIds,
record time spread over the last 30 min, so all of it is inside the 1 h window). In this run: a
bare aiokafka loop reading the partition from its start, `rebuild_window` at its end (what a
worker does when it is assigned the partition: reads each record's head and remembers its
messageId), the bare loop again.

| reader | seconds | records/s |
|---|---|---|
| bare aiokafka loop | {bare:.1f} | {count / bare:,.0f} |
| `rebuild_window` | {rebuilt:.1f} | {count / rebuilt:,.0f} |
| bare aiokafka loop, again | {bare_again:.1f} | {count / bare_again:,.0f} |

**Rebuild / bare read time (mean of the two bare runs): {rebuilt / baseline:.2f}x.** A worker
assigned such a partition judges its first record {rebuilt:.0f} s after the assignment.
"""
    write_run(
        "Dedupe window rebuild",
        figure=f"rebuilding a {count:,}-record partition's window takes "
        f"{rebuilt / baseline:.2f}x a bare read of it ({rebuilt:.1f} s)",
        command=command(),
        section=section,
    )
    print(section)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    asyncio.run(main(parser.parse_args().records))
