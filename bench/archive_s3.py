"""The archive to S3 against the bare aiokafka loop and against the archive to disk, same run.

    .venv/bin/python -m bench.archive_s3 [--records 100000] [--rounds 3]

Fills a 12-partition topic as bench/archive_throughput.py does, starts a local S3 server
(versitygw, on this machine's disk), then alternates: the bare loop, the archive worker to a
directory, the bare loop, the archive worker to ``s3://bench/archive``, … Each archive run is
compared with the bare runs just before and after it. Writes records/s and the ratios (median
and range) into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import uuid
from pathlib import Path

from bench.archive_throughput import archive_worker, bare_loop
from bench.pushes import campaign, fill
from bench.results import command, run_line, write_run
from consumers.archive.settings import COMMITS
from schemas import PushCodec
from tests.servers.s3 import LocalS3, S3ServerSettings
from uplink.broker import kafka_broker
from uplink.s3.settings import Location, S3Location, S3Settings
from uplink.settings import KafkaSettings, Secret, Topics, WorkerSettings


def ratios(archives: list[float], befores: list[float], afters: list[float]) -> list[float]:
    return [a / ((b + c) / 2) for a, b, c in zip(archives, befores, afters, strict=True)]


async def main(count: int, rounds: int) -> None:
    codec = PushCodec()
    with (
        tempfile.TemporaryDirectory() as tmp,
        kafka_broker(os.environ, data_dir=Path(tmp) / "kafka") as bootstrap,
        LocalS3(S3ServerSettings(data_dir=Path(tmp) / "s3")) as server,
    ):
        kafka = KafkaSettings(bootstrap_servers=bootstrap)
        topics = Topics(messages="bench.archive", quarantine="bench.q", media="bench.m")
        await ensure(kafka, topics)
        await fill(kafka, topics.messages, campaign(count), codec)
        settings = server.settings
        bucket = S3Location(
            server.bucket("bench"),
            "archive",
            S3Settings(
                endpoint=settings.endpoint,
                access_key_id=settings.access_key,
                secret_access_key=Secret(settings.secret_key.reveal()),
            ),
        )

        async def archive(root: Location) -> float:
            worker = WorkerSettings(
                name="archive",
                kafka=kafka,
                topics=topics,
                group_id=f"bench-archive-{uuid.uuid4().hex[:6]}",
                commit_every=COMMITS.every,  # as `uplink archive` runs
                commit_interval=COMMITS.interval,
            )
            return await archive_worker(worker, root, count)

        bares = [await bare_loop(kafka, topics.messages, count)]
        disks: list[float] = []
        s3s: list[float] = []
        for n in range(rounds):
            disks.append(await archive(Path(tmp) / f"archive{n}"))
            bares.append(await bare_loop(kafka, topics.messages, count))
            s3s.append(await archive(S3Location(bucket.bucket, f"archive{n}", bucket.s3)))
            bares.append(await bare_loop(kafka, topics.messages, count))
        files = sorted((Path(tmp) / "archive0").rglob("*.avro"))
        mean_mib = sum(f.stat().st_size for f in files) / len(files) / 2**20
    print(f"bare {bares}\ndisk {disks}\ns3 {s3s}", flush=True)
    write(count, bares, disks, s3s, len(files), mean_mib)


async def ensure(kafka: KafkaSettings, topics: Topics) -> None:
    from uplink.topics import ensure_topics

    await ensure_topics(kafka, topics)


def write(
    count: int, bares: list[float], disks: list[float], s3s: list[float], files: int, mib: float
) -> None:
    rounds = len(disks)  # bares: before disk 1, between disk 1 and S3 1, after S3 1, ...
    to_disk = ratios(disks, bares[0 : 2 * rounds : 2], bares[1 : 2 * rounds : 2])
    to_s3 = ratios(s3s, bares[1 : 2 * rounds : 2], bares[2 : 2 * rounds + 1 : 2])
    versus = [s / d for s, d in zip(s3s, disks, strict=True)]
    rows = "\n".join(
        f"| {n + 1} | {bares[2 * n]:,.0f} | {disks[n]:,.0f} | {bares[2 * n + 1]:,.0f} "
        f"| {s3s[n]:,.0f} | {bares[2 * n + 2]:,.0f} | {to_disk[n]:.1%} | {to_s3[n]:.1%} |"
        for n in range(len(disks))
    )
    median_s3, median_disk = statistics.median(to_s3), statistics.median(to_disk)
    section = f"""{run_line("; broker and versitygw on this machine")}
{count:,} records (as in "Archive throughput") in 12 partitions, read in full by each reader in
turn: the bare aiokafka loop, the archive worker to a directory, the bare loop, the archive
worker to `s3://bench/archive<n>` (files spooled to a temporary directory, then one create-only
put each), the bare loop again; each archive run is compared with the bare runs around it. The
run made {files} files a round, {mib:.2f} MiB each on average (deflate).

| round | bare | archive to disk | bare | archive to S3 | bare | disk / bare | S3 / bare |
|---|---|---|---|---|---|---|---|
{rows}

**Archive to S3 at {median_s3:.1%} of the bare loop (median of {len(to_s3)}; range
{min(to_s3):.1%} to {max(to_s3):.1%}); to disk at {median_disk:.1%} (range {min(to_disk):.1%}
to {max(to_disk):.1%}); S3 / disk {statistics.median(versus):.2f}x.** (records/s)
"""
    write_run(
        "Archive to S3",
        figure=f"archive to S3 at {100 * median_s3:.1f} % of a bare aiokafka loop, to disk at "
        f"{100 * median_disk:.1f} % (medians of {len(to_s3)}; S3 range {100 * min(to_s3):.1f} "
        f"to {100 * max(to_s3):.1f} %)",
        bar="50 % of the bare loop",
        met=median_s3 >= 0.5,
        command=command(),
        section=section,
    )
    print(section)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of disk and S3 runs")
    args = parser.parse_args()
    asyncio.run(main(args.records, args.rounds))
