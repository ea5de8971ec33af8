"""The web console's pages on a million pushes and ten thousand dead letters, against a bare
Starlette page served the same way in the same run.

    .venv/bin/python -m bench.console [--records 1000000] [--dead-letters 10000] [--rounds 15]

Fills a messages topic of 12 partitions with ``--records`` pushes and a router DLQ of 3
partitions with the first ``--dead-letters`` of them (bench/operate_scan.py's fill: the spec's
examples in rotation, record time spread over the last 10 h), serves the console and a bare
Starlette page with uvicorn on loopback in this process, and asks each page ``--rounds`` times
in turn with one client. Writes each page's median answer time, and its ratio to the bare
page's, into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from bench.operate_scan import ROOT, fill
from bench.results import command, run_line, write_run
from schemas import PushCodec
from uplink.broker import free_port, kafka_broker
from uplink.console import ConsoleSettings, console_app
from uplink.operate.window import iso
from uplink.settings import KafkaSettings, Topics
from uplink.topics import ensure_topics
from uplink.topology import setup

BAR_MS = 300.0


def bare() -> Starlette:
    text = "<!doctype html><title>bare</title><p>" + "x" * 2000

    async def page(request: object) -> HTMLResponse:
        return HTMLResponse(text)

    return Starlette(routes=[Route("/", page)])


async def serving(app: object) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="warning")  # type: ignore[arg-type]
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)  # uvicorn has no started event to await
    return server, task, f"http://127.0.0.1:{port}"


async def main(count: int, dead_letters: int, rounds: int) -> None:
    codec = PushCodec()
    with (
        tempfile.TemporaryDirectory() as tmp,
        kafka_broker(os.environ, data_dir=Path(tmp) / "kafka") as bootstrap,
    ):
        kafka = KafkaSettings(bootstrap_servers=bootstrap)
        topics = Topics(
            messages="bench.console.messages",
            quarantine="bench.console.q",
            media="bench.console.m",
            partitions=3,
        )
        await ensure_topics(kafka, topics, setup(topics, 1 << 20, ["router"]).creates)
        filled = time.perf_counter()
        last = await fill(kafka, topics, count, codec, dead_letters)
        print(f"filled {count:,} pushes, {dead_letters:,} dead letters "
              f"in {time.perf_counter() - filled:.0f}s", flush=True)  # fmt: skip
        example = sorted((ROOT / "tests/examples").glob("*.json"))[(count - 10) % 13]
        body = orjson.loads(example.read_bytes())
        business, customer = body["businessPhone"], body["from"]["phone"]
        target = f"scan-{count - 10:09d}"
        pages = {
            "bare Starlette page": "/",
            "overview": "/",
            "dead letters (every worker, 24 h, first 100)": "/deadletters",
            "dead letters, reason filter": "/deadletters?worker=router&reason=HTTP%20400",
            "a dead letter": "/deadletters/router:0:5",
            "quarantine": "/quarantine",
            "trace with the phones (30 min)": f"/trace?messageId={target}&business={business}"
            f"&customer={customer}&window=30m",
            # From 5 minutes before the last push (the fill takes longer than that).
            "conversation (5 min, newest 100 shown)": f"/conversation?business={business}"
            f"&customer={customer}&since={iso(last - 300_000)}",
        }
        settings = ConsoleSettings(kafka=kafka, topics=topics, sample_interval=1.0)
        servers = [await serving(bare()), await serving(console_app(settings))]
        bases = {"bare Starlette page": servers[0][2]}
        times: dict[str, list[float]] = {name: [] for name in pages}
        try:
            async with httpx.AsyncClient(trust_env=False, timeout=120) as client:
                for _ in range(rounds):
                    for name, path in pages.items():
                        base = bases.get(name, servers[1][2])
                        started = time.perf_counter()
                        answer = await client.get(base + path)
                        times[name].append(time.perf_counter() - started)
                        if answer.status_code != 200:
                            raise SystemExit(f"bench: {name}: {answer.status_code}")
        finally:
            for server, _, _ in servers:
                server.should_exit = True
            await asyncio.gather(*(task for _, task, _ in servers))
    write(count, dead_letters, rounds, {n: statistics.median(t) * 1000 for n, t in times.items()})


def write(count: int, dead_letters: int, rounds: int, medians: dict[str, float]) -> None:
    base = medians["bare Starlette page"]
    pages = {n: ms for n, ms in medians.items() if n != "bare Starlette page"}
    rows = "\n".join(
        f"| {name} | {ms:.1f} | {ms / base:.0f}x | {'yes' if ms <= BAR_MS else 'no'} |"
        for name, ms in medians.items()
    )
    slowest = max(pages, key=lambda n: pages[n])
    met = all(ms <= BAR_MS for ms in pages.values())
    section = f"""{run_line("; broker on this machine, console and client in one process")}
{count:,} pushes in a messages topic of 12 partitions, {dead_letters:,} dead letters in a router
DLQ of 3 (bench/operate_scan.py's fill); each page asked {rounds} times in turn by one client,
median answer time.

| page | median ms | against the bare page | within {BAR_MS:.0f} ms |
|---|---|---|---|
{rows}

Slowest: {slowest}, {pages[slowest]:.0f} ms. Every page but the overview reads Kafka by time at
each request (offsets-for-times, then the window) with a consumer the console keeps
(uplink/operate/readers.py); the overview reads only the console's samples.
"""
    write_run(
        "Console pages",
        figure=f"median per page {min(pages.values()):.0f} to {max(pages.values()):.0f} ms "
        f"({min(pages.values()) / base:.0f}x to {max(pages.values()) / base:.0f}x a bare "
        f"Starlette page of {base:.1f} ms); slowest {slowest}",
        command=command(),
        section=section,
        bar=f"{BAR_MS:.0f} ms median per page",
        met=met,
    )
    print(section)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--dead-letters", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    asyncio.run(main(args.records, args.dead_letters, args.rounds))
