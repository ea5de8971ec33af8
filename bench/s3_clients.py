"""obstore against aiobotocore on the archive's S3 workload: create-only puts (``If-None-Match:
*``) of archive-sized objects, on a local versitygw, alternating rounds.

    .venv/bin/pip install -e '.[bench]'   # aiobotocore
    .venv/bin/python -m bench.s3_clients [--objects 40] [--size-mib 2] [--rounds 3]

Each round puts ``--objects`` new objects of ``--size-mib`` with each client in turn (one at a
time, as the archive's writer thread does), then checks that a second create-only put of a
taken key is refused by each (412). Writes puts/s (median and range) into bench/RESULTS.md.
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

from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from bench.results import command, run_line, write_run
from tests.servers.s3 import LocalS3, S3ServerSettings
from uplink.s3.bucket import Bucket
from uplink.s3.settings import S3Location, S3Settings
from uplink.settings import Secret


async def with_obstore(bucket: Bucket, data: bytes, count: int) -> float:
    started = time.perf_counter()
    for n in range(count):
        key = f"obstore/{uuid.uuid4().hex}-{n}.avro"
        assert bucket.put_new_sync(key, data)  # the archive's call, on its writer thread
    elapsed = time.perf_counter() - started
    assert not await bucket.put_new(key, data), "obstore: a taken key was not refused"
    return count / elapsed


async def with_aiobotocore(server: S3ServerSettings, name: str, data: bytes, count: int) -> float:
    session = get_session()
    async with session.create_client(
        "s3",
        endpoint_url=server.endpoint,
        region_name="us-east-1",
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key.reveal(),
    ) as client:
        started = time.perf_counter()
        for n in range(count):
            key = f"aiobotocore/{uuid.uuid4().hex}-{n}.avro"
            await client.put_object(Bucket=name, Key=key, Body=data, IfNoneMatch="*")
        elapsed = time.perf_counter() - started
        try:
            await client.put_object(Bucket=name, Key=key, Body=data, IfNoneMatch="*")
        except ClientError as exc:
            assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 412
        else:
            raise AssertionError("aiobotocore: a taken key was not refused")
    return count / elapsed


async def main(objects: int, size_mib: float, rounds: int) -> None:
    data = os.urandom(int(size_mib * 1024 * 1024))  # deflated Avro: as good as random
    with tempfile.TemporaryDirectory() as tmp:
        server = LocalS3(S3ServerSettings(data_dir=Path(tmp) / "s3"))
        with server:
            name = server.bucket("bench")
            settings = server.settings
            location = S3Location(
                name,
                "",
                S3Settings(
                    endpoint=settings.endpoint,
                    access_key_id=settings.access_key,
                    secret_access_key=Secret(settings.secret_key.reveal()),
                ),
            )
            obstores, botos = [], []
            async with Bucket(location, "bench") as bucket:
                for _ in range(rounds):
                    obstores.append(await with_obstore(bucket, data, objects))
                    botos.append(await with_aiobotocore(settings, name, data, objects))
    write(objects, size_mib, obstores, botos)


def write(objects: int, size_mib: float, obstores: list[float], botos: list[float]) -> None:
    rows = "\n".join(
        f"| {n + 1} | {o:.1f} ({o * size_mib:.0f} MiB/s) | {b:.1f} ({b * size_mib:.0f} MiB/s) |"
        for n, (o, b) in enumerate(zip(obstores, botos, strict=True))
    )
    ratio = statistics.median(obstores) / statistics.median(botos)
    section = f"""{run_line("; versitygw on this machine, one put at a time")}
{objects} create-only puts (`If-None-Match: *`) of {size_mib:g} MiB per client per round (about
archive file's size: see "Archive to S3"), obstore (the archive's sync call on
its writer thread) and aiobotocore alternating; after each, a second put of a taken key is
refused with 412 by both.

| round | obstore, puts/s | aiobotocore, puts/s |
|---|---|---|
{rows}

**obstore {statistics.median(obstores):.1f} puts/s against aiobotocore
{statistics.median(botos):.1f} (median of {len(obstores)}): {ratio:.2f}x.** The archive uses
obstore: create-only puts as a mode, retries with backoff and jitter built in, a blocking and an
async API over one Rust client (the writer thread needs the blocking one), and no aiohttp and
botocore stack (aiobotocore pins botocore's exact versions).
"""
    write_run(
        "S3 clients",
        figure=f"obstore {statistics.median(obstores):.1f} create-only puts/s of "
        f"{size_mib:g} MiB against aiobotocore {statistics.median(botos):.1f} "
        f"(median of {len(obstores)}, {ratio:.2f}x)",
        command=command(),
        section=section,
    )
    print(section)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objects", type=int, default=40)
    parser.add_argument("--size-mib", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.objects, args.size_mib, args.rounds))
