"""Archive worker throughput against a bare aiokafka consumer loop, same topic, same run.

    .venv/bin/python -m bench.archive_throughput [--records 100000] [--rounds 3]

Fills a 12-partition topic with the spec's example pushes (unique messageIds), then reads all of
it with a bare loop (getmany, discard) and ``--rounds`` times with the archive worker (heads,
dedupe, Avro container files with deflate, fsync + rename, commits), each followed by the bare
loop again. Writes records/s and the ratios (median and range) into bench/RESULTS.md: the
summary's row and the section of this benchmark (bench/results.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from bench.pushes import campaign, fill
from bench.results import command, run_line, write_run
from consumers.archive.settings import COMMITS, ArchiveSettings
from schemas import PushCodec
from uplink.broker import kafka_broker
from uplink.cli import launcher, workers
from uplink.process import tune_gc
from uplink.s3.settings import Location
from uplink.settings import KafkaSettings, Topics, WorkerSettings
from uplink.topics import ensure_topics


async def bare_loop(kafka: KafkaSettings, topic: str, count: int) -> float:
    consumer = AIOKafkaConsumer(
        topic,
        **kafka.client_options(),
        group_id=f"bench-bare-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        seen, started = 0, None
        while seen < count:
            batch = await consumer.getmany(timeout_ms=500, max_records=500)
            if started is None and batch:
                started = time.perf_counter()
            seen += sum(len(records) for records in batch.values())
        assert started is not None
        return count / (time.perf_counter() - started)
    finally:
        await consumer.stop()


async def archive_worker(settings: WorkerSettings, root: Location, count: int) -> float:
    tune_gc()  # as `uplink archive` does
    assembly = workers.archive(settings, ArchiveSettings(root=root))  # as `uplink archive` wires it
    worker = assembly.workers[0]  # then its re-drive reader
    async with launcher.started(assembly):
        started = time.perf_counter()  # includes joining the group and rebuilding windows
        assert await worker.run(count=count, timeout=600) == count
        await worker.stop()  # the last files renamed and committed
        elapsed = time.perf_counter() - started
    return count / elapsed


async def main(count: int, rounds: int) -> None:
    codec = PushCodec()
    with (
        tempfile.TemporaryDirectory() as tmp,
        kafka_broker(os.environ, data_dir=Path(tmp) / "kafka") as bootstrap,
    ):
        kafka = KafkaSettings(bootstrap_servers=bootstrap)
        topics = Topics(messages="bench.archive", quarantine="bench.q", media="bench.m")
        await ensure_topics(kafka, topics)
        await fill(kafka, topics.messages, campaign(count), codec)
        # Bare and archive alternate, so each archive run has a baseline measured just before
        # and just after it: on a shared machine the speed drifts within a run.
        bares = [await bare_loop(kafka, topics.messages, count)]
        archives = []
        for n in range(rounds):
            settings = WorkerSettings(
                name="archive",
                kafka=kafka,
                topics=topics,
                group_id=f"bench-archive-{uuid.uuid4().hex[:6]}",
                commit_every=COMMITS.every,  # as `uplink archive` runs
                commit_interval=COMMITS.interval,
            )
            archives.append(await archive_worker(settings, Path(tmp) / f"archive{n}", count))
            bares.append(await bare_loop(kafka, topics.messages, count))
    write(count, bares, archives)


def write(count: int, bares: list[float], archives: list[float]) -> None:
    ratios = [
        archive / ((before + after) / 2)
        for archive, before, after in zip(archives, bares, bares[1:], strict=False)
    ]
    rows = "\n".join(
        f"| {n + 1} | {bares[n]:,.0f} | {archive:,.0f} | {bares[n + 1]:,.0f} | {ratio:.1%} |"
        for n, (archive, ratio) in enumerate(zip(archives, ratios, strict=True))
    )
    median = statistics.median(ratios)
    section = f"""{run_line("; broker on this machine")}
{count:,} records (the spec's 13 examples in rotation, unique messageIds, event time now) in 12
partitions, read in full by each reader in turn: a bare aiokafka loop (getmany, discard), then
{len(archives)} times the archive worker (a fresh group each time: decode heads, dedupe, deflate
Avro container files, fsync + rename, commits; its time includes joining the group) followed by
the bare loop again. Each archive run is compared with the bare runs just before and after it.

| round | bare before, records/s | archive worker, records/s | bare after, records/s | ratio |
|---|---|---|---|---|
{rows}

**Ratio archive / bare: {median:.1%} (median of {len(ratios)}; range
{min(ratios):.1%} to {max(ratios):.1%})** (bar: 50 %).
"""
    write_run(
        "Archive throughput",
        figure=f"archive at {100 * median:.1f} % of a bare aiokafka loop (median of "
        f"{len(ratios)}, range {100 * min(ratios):.1f} to {100 * max(ratios):.1f} %)",
        bar="50 % of the bare loop",
        met=median >= 0.5,
        command=command(),
        section=section,
    )
    print(section)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3, help="archive runs, each between two bare")
    args = parser.parse_args()
    asyncio.run(main(args.records, args.rounds))
