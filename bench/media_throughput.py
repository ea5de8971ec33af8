"""Media worker throughput against a bare httpx loop, same files, same concurrency, same run.

    .venv/bin/python -m bench.media_throughput [--records 2000] [--concurrency 1,8,32,128]

A uvicorn server in a separate process serves ``--records`` distinct 100 KiB files from memory;
the topic holds one image push per file (12 partitions). For each concurrency, one after the other:
a bare loop (httpx, that many tasks, stream each body and discard it), then the media worker (a new
group and an empty media directory: decode, dedupe, guard, stream to a spool file with SHA-256,
verify, fsync + rename + sidecar, media event with acks=all, in-order commits). The worker's time
runs from its first record to its last one finished, so joining the group is not counted. All
files come from one origin, so the per-host limit is set to the concurrency. Writes records/s
and the ratio into bench/RESULTS.md (its row and section).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
from starlette.applications import Starlette

from bench.pushes import EXAMPLES, fill
from bench.results import command, run_line, write_run
from consumers.media.fetch import Fetcher
from consumers.media.guard import AddressGuard
from consumers.media.handler import MediaHandler
from consumers.media.settings import MediaSettings
from consumers.media.storage import FileStore
from consumers.runtime import DeadLetters, Inbound, Worker, WorkerMetrics
from schemas import PushCodec
from uplink.broker import free_port, kafka_broker
from uplink.kafka import KafkaClients, Producer
from uplink.settings import KafkaSettings, Topics, WorkerSettings
from uplink.topics import ensure_topics

SIZE = 100 * 1024


def blob(n: int) -> bytes:
    return random.Random(n).randbytes(SIZE)


def app(count: int) -> Starlette:
    """The file server (run in its own process by ``--serve``)."""
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    files = {f"{n}.bin": blob(n) for n in range(count)}

    async def file(request: Request) -> Response:
        return Response(files[request.path_params["name"]], media_type="image/jpeg")

    return Starlette(routes=[Route("/files/{name}", file)])


def serve(port: int, count: int) -> None:
    import uvicorn

    uvicorn.run(app(count), host="127.0.0.1", port=port, log_level="warning", access_log=False)


async def wait_up(base: str) -> None:
    async with httpx.AsyncClient() as client, asyncio.timeout(120):
        while True:
            try:
                if (await client.get(f"{base}/files/0.bin")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)


def pushes(count: int, base: str) -> Iterator[dict[str, Any]]:
    """An image push for each file the server serves, from one of 500 senders."""
    template = orjson.loads((EXAMPLES / "image.json").read_bytes())
    for n in range(count):
        sha = base64.b64encode(hashlib.sha256(blob(n)).digest()).decode()
        image = {**template["message"]["image"], "filePath": f"{base}/files/{n}.bin"}
        yield {
            **template,
            "messageId": f"bench-{n}",
            "from": {"phone": str(910000000 + n % 500)},
            "message": {"type": "image", "image": {**image, "sha256": sha}},
        }


async def bare_loop(base: str, count: int, concurrency: int) -> float:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    queue = iter(range(count))
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def fetcher() -> None:
            for n in queue:
                async with client.stream("GET", f"{base}/files/{n}.bin") as response:
                    async for _ in response.aiter_bytes(64 * 1024):
                        pass

        started = time.perf_counter()
        await asyncio.gather(*(fetcher() for _ in range(concurrency)))
        return count / (time.perf_counter() - started)


class TimedMedia(MediaHandler):
    """The media handler, plus when its first record came."""

    started: float | None = None

    async def handle(self, inbound: Inbound) -> None:
        if self.started is None:
            self.started = time.perf_counter()
        await super().handle(inbound)


async def media_worker(
    kafka: KafkaSettings, topics: Topics, root: Path, count: int, concurrency: int
) -> float:
    settings = WorkerSettings(
        name="media",
        kafka=kafka,
        topics=topics,
        group_id=f"bench-media-{uuid.uuid4().hex[:6]}",
    )
    media = MediaSettings(
        root=root,
        concurrency=concurrency,
        per_host=concurrency,
        allow_hosts=frozenset({"127.0.0.1"}),
    )
    # As cli/workers.py wires `uplink media`, with the handler timed.
    store = FileStore(root)
    fetcher = Fetcher(media, AddressGuard(media.allow_hosts))
    clients = KafkaClients(kafka)
    producer = Producer(clients)
    metrics = WorkerMetrics(settings.name)
    dead_letters = DeadLetters(settings, producer, metrics)
    timed = TimedMedia(media, fetcher, store, producer, topics.media, dead_letters)
    worker = Worker(
        settings, timed, PushCodec(), clients=clients, metrics=metrics, dead_letters=dead_letters
    )
    async with producer, store, fetcher, worker:
        assert await worker.run(count=count, timeout=600) == count
        await timed.drain()
        finished = time.perf_counter()
    assert timed.started is not None
    assert sum(metrics.dead_lettered.values()) == 0, "a bench download failed"
    return count / (finished - timed.started)


async def measure(base: str, count: int, levels: list[int]) -> list[tuple[int, float, float]]:
    rows: list[tuple[int, float, float]] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        kafka_broker(os.environ, data_dir=Path(tmp) / "kafka") as bootstrap,
    ):
        await wait_up(base)
        kafka = KafkaSettings(bootstrap_servers=bootstrap)
        topics = Topics(messages="bench.media", quarantine="bench.q", media="bench.m")
        await ensure_topics(kafka, topics)
        await fill(kafka, topics.messages, pushes(count, base), PushCodec())
        for level in levels:
            bare = await bare_loop(base, count, level)
            worker = await media_worker(kafka, topics, Path(tmp) / f"media-{level}", count, level)
            rows.append((level, bare, worker))
            print(f"concurrency {level}: bare {bare:,.0f}/s, worker {worker:,.0f}/s")
    return rows


def main(count: int, levels: list[int]) -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), "--records", str(count)]
    )
    try:
        rows = asyncio.run(measure(f"http://127.0.0.1:{port}", count, levels))
    finally:
        server.terminate()
        server.wait()
    write(count, rows)


def write(count: int, rows: list[tuple[int, float, float]]) -> None:
    table = "\n".join(
        f"| {level} | {bare:,.0f} | {worker:,.0f} | {worker / bare:.0%} |"
        for level, bare, worker in rows
    )
    run = run_line("; broker and file server (uvicorn, separate process) on this machine")
    section = f"""{run}
{count:,} image pushes in 12 partitions, each with its own 100 KiB file. Per concurrency, in this
run: a bare httpx loop (stream and discard each body), then the media worker on a new group and
an empty directory (guard, stream to disk with SHA-256, verify, fsync + rename + sidecar, media
event acks=all, in-order commits; timed from its first record to its last one finished).
Per-host limit = concurrency (one origin).

| concurrency | bare httpx, records/s | media worker, records/s | worker / bare |
|---|---|---|---|
{table}
"""
    # The summary's figure: the default concurrency (32) if measured, the others in brief.
    level, bare, worker = next((row for row in rows if row[0] == 32), rows[-1])
    others = [row for row in rows if row[0] != level]
    figure = (
        f"media worker at {100 * worker / bare:.0f} % of a bare httpx loop at concurrency "
        f"{level} ({worker:,.0f} records/s)"
    )
    if others:
        figure += (
            f"; {' / '.join(f'{100 * w / b:.0f}' for _, b, w in others)} % at "
            f"{' / '.join(str(c) for c, _, _ in others)}"
        )
    write_run("Media throughput", figure=figure, command=command(), section=section)
    print(section)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--concurrency", default="1,8,32,128")
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve, args.records)
    else:
        main(args.records, [int(c) for c in args.concurrency.split(",")])
