"""Where a push's CPU goes, end to end: the server, the endpoint's stages, the produce path.

    .venv/bin/python -m bench.profile_push [--seconds 10] [--connections 64] [--rounds 2]

Three kinds of figures, on one broker (local unless KAFKA_BOOTSTRAP_SERVERS is set), CPU time
throughout (steadier than rates on a shared machine):

- **servers** (wrk, the spec's 13 pushes in rotation): CPU µs a request of the ingress on uvicorn
  and on granian (RSGI), and of each server's raw endpoint (reads the body, answers 200: the
  server's HTTP parsing, socket I/O, its interface to Python and the response);
- **stages** (in this process, no network): the JSON parse, the conversion to the record, the
  Avro encoding, the key, the partition, the answer's body;
- **produce path** (in this process, ``--concurrency`` sends in flight on the broker):
  aiokafka's ``send()`` call (the append into a batch), the whole send-and-await-the-ack loop
  on a bare aiokafka producer (adds the sender: batch building, the produce request, the
  response, the futures), the ingress's ``DurableProducer.send`` (its own append straight into
  aiokafka's accumulator, one callback a batch, instead of ``send()``; plus the deadline, the
  in-flight bound, reachability), and a bare future resolved and awaited (the event loop's part
  of any await that suspends).

What the ingress spends beyond the raw server, the stages and the produce path is the
remainder: the handler's own lines, the exchange, metrics, task scheduling and GC.
Writes its row and section ("Push profile") into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.codec_paths import per_call_us
from bench.ingress_load import (
    BARE_APP,
    PARTITIONS,
    RAW_APPS,
    create_topic,
    granian_cmd,
    lua_script,
    profile,
    uvicorn_cmd,
    wait_http,
    wrk,
)
from bench.load import cpu_seconds, server_stats
from bench.produce_paths import connected_durable
from bench.results import ROOT, command, run_line, write_run

KEYS = [b"639518159038:%d" % (910000000000 + n) for n in range(50_000)]
TOPIC = "bench.profile"

SERVERS = {
    "raw-asgi": ("raw ASGI app on uvicorn", uvicorn_cmd, "raw_apps:asgi", False),
    "raw-rsgi": ("raw RSGI app on granian", granian_cmd, "raw_apps:rsgi", False),
    "ingress": ("ingress on uvicorn", uvicorn_cmd, "ingress.app:app_from_env", True),
    "ingress-granian": ("ingress on granian", granian_cmd, "ingress.rsgi:app_from_env", True),
}


def stages(seconds: float) -> dict[str, float]:
    """CPU µs a push of each step of the endpoint that needs no network."""
    import orjson

    from schemas import PushCodec
    from schemas.body import load_json
    from uplink._partition import partition

    bodies = [path.read_bytes() for path in sorted((ROOT / "tests" / "examples").glob("*.json"))]
    codec = PushCodec()
    records = [codec.parse(body, 1_700_000_000_000) for body in bodies]
    keys = [codec.key(record) for record in records]
    parse = per_call_us(lambda body: codec.parse(body, 1_700_000_000_000), bodies, seconds)
    json = per_call_us(load_json, bodies, seconds)
    return {
        "JSON parse (orjson)": json,
        "convert to the record, checks": parse - json,
        "Avro encode (C)": per_call_us(codec.encode, records, seconds),
        "key": per_call_us(codec.key, records, seconds),
        "partition (murmur2, C)": per_call_us(
            lambda key: partition(key, PARTITIONS), keys, seconds
        ),
        "answer body": per_call_us(
            lambda record: b'{"messageId":' + orjson.dumps(record["messageId"]) + b"}",
            records,
            seconds,
        ),
    }


async def closed_loop(send: Any, seconds: float, concurrency: int) -> float:
    """CPU µs a send of ``concurrency`` tasks sending for ``seconds``."""
    stop = time.monotonic() + seconds
    done = 0

    async def one() -> None:
        nonlocal done
        while time.monotonic() < stop:
            await send(random.choice(KEYS))
            done += 1

    cpu = time.process_time()
    await asyncio.gather(*(one() for _ in range(concurrency)))
    return 1e6 * (time.process_time() - cpu) / max(done, 1)


async def produce_path(bootstrap: str, seconds: float, concurrency: int) -> dict[str, float]:
    from aiokafka import AIOKafkaProducer

    from uplink._partition import partition
    from uplink.settings import KafkaSettings

    value = os.urandom(600)  # about a text push's record
    loop = asyncio.get_running_loop()

    async def future_only(key: bytes) -> None:
        future = loop.create_future()
        loop.call_soon(future.set_result, None)
        await future

    figures: dict[str, float] = {}
    figures["a future resolved and awaited"] = await closed_loop(future_only, seconds, concurrency)

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.partitions_for(TOPIC)
        appended = [0.0, 0]

        async def bare(key: bytes) -> None:
            delivery = await producer.send(
                TOPIC, value, key=key, partition=partition(key, PARTITIONS)
            )
            await delivery

        async def timed(key: bytes) -> None:
            started = time.thread_time()
            delivery = await producer.send(
                TOPIC, value, key=key, partition=partition(key, PARTITIONS)
            )
            appended[0] += time.thread_time() - started
            appended[1] += 1
            await delivery

        await closed_loop(bare, 2, concurrency)  # warm-up
        figures["aiokafka send + ack, bare"] = await closed_loop(bare, seconds, concurrency)
        await closed_loop(timed, seconds, concurrency)
        empty = per_call_us(lambda _: time.thread_time() - time.thread_time(), [None], 0.5)
        figures["aiokafka send() call: append"] = 1e6 * appended[0] / appended[1] - empty
    finally:
        await producer.stop()

    async with connected_durable(KafkaSettings(bootstrap_servers=bootstrap)) as durable:

        async def ingress_send(key: bytes) -> None:
            await durable.send(TOPIC, value, key=key)

        await closed_loop(ingress_send, 2, concurrency)
        figures["DurableProducer.send (the ingress's)"] = await closed_loop(
            ingress_send, seconds, concurrency
        )
    return figures


def servers(
    bootstrap: str, tmp: Path, args: argparse.Namespace
) -> tuple[list[dict[str, dict[str, float]]], list[tuple[str, float, float]]]:
    from uplink.broker import free_port

    (tmp / "bare_app.py").write_text(BARE_APP)
    (tmp / "raw_apps.py").write_text(RAW_APPS)
    script = lua_script(tmp)
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "PYTHONPATH": f"{tmp}:{ROOT}",
        "UPLINK_TOPIC_MESSAGES": "bench.messages",
        "UPLINK_TOPIC_QUARANTINE": "bench.quarantine",
        "UPLINK_TOPIC_MEDIA": "bench.media",
    }
    running: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    rounds = []
    try:
        for name, (_, cmd, target, factory) in SERVERS.items():
            port = free_port()
            process = subprocess.Popen(cmd(target, port, factory, 1), env=env, cwd=tmp)
            running[name] = (process, f"http://127.0.0.1:{port}")
            wait_http(f"{running[name][1]}/readyz")
            wrk(running[name][1], script, 3, args.connections)  # warm-up
        for number in range(args.rounds):
            measured = {}
            order = list(running.items())
            for name, (process, base) in order if number % 2 == 0 else reversed(order):
                cpu = cpu_seconds(process.pid)
                result = wrk(base, script, int(args.seconds), args.connections)
                result["cpu_us"] = 1e6 * (cpu_seconds(process.pid) - cpu) / result["requests"]
                measured[name] = result
                print(name, result["rps"], result["cpu_us"], flush=True)
            rounds.append(measured)
        hotspots: list[tuple[str, float, float]] = []
        if args.py_spy:
            # The ingress on granian: py-spy follows its worker process, under the same load.
            process, base = running["ingress-granian"]
            worker = next(
                int(d.name) for d, _ in server_stats(process.pid) if d.name != str(process.pid)
            )
            load = subprocess.Popen(
                ["wrk", "-t1", f"-c{args.connections}", f"-d{int(args.seconds) + 4}s", "-s",
                 str(script), base],
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(2)
            hotspots = profile(worker, int(args.seconds), tmp / "profile.txt")
            load.wait()
    finally:
        for process, _ in running.values():
            process.send_signal(signal.SIGTERM)
            process.wait(30)
    return rounds, hotspots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--py-spy",
        action="store_true",
        help="then sample the ingress on granian with py-spy under the same load (pip install "
        "py-spy): where the remainder goes",
    )
    args = parser.parse_args()
    load_before = os.getloadavg()

    from uplink.broker import kafka_broker
    from uplink.settings import KafkaSettings

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        bootstrap = stack.enter_context(kafka_broker(os.environ, data_dir=tmp / "kafka"))
        create_topic(KafkaSettings(bootstrap_servers=bootstrap), TOPIC)
        steps = stages(args.seconds / 4)
        print(steps, flush=True)
        produce = asyncio.run(produce_path(bootstrap, args.seconds, args.concurrency))
        print(produce, flush=True)
        rounds, hotspots = servers(bootstrap, tmp, args)
    write(steps, produce, rounds, hotspots, args, load_before)


def write(
    steps: dict[str, float],
    produce: dict[str, float],
    rounds: list[dict[str, dict[str, float]]],
    hotspots: list[tuple[str, float, float]],
    args: argparse.Namespace,
    load_before: tuple[float, float, float],
) -> None:
    cpu = {name: statistics.median(r[name]["cpu_us"] for r in rounds) for name in SERVERS}
    spread = {
        name: (min(r[name]["cpu_us"] for r in rounds), max(r[name]["cpu_us"] for r in rounds))
        for name in SERVERS
    }
    stage_sum = sum(steps.values())
    durable = produce["DurableProducer.send (the ingress's)"]
    bare = produce["aiokafka send + ack, bare"]
    append = produce["aiokafka send() call: append"]
    future = produce["a future resolved and awaited"]
    load_after = os.getloadavg()
    lines = [
        run_line("; broker, servers and wrk all on this machine"),
        f"Servers: wrk -t1 -c{args.connections} -d{args.seconds:g}s, {args.rounds} rounds "
        "alternating the four (the spec's 13 pushes in rotation, unique messageIds, 50,000 "
        "senders), one worker each; CPU µs a request = the server's processes' CPU time over "
        "the requests answered, median (range). Stages: CPU µs a call over the 13 pushes, in "
        f"one process. Produce path: {args.concurrency} sends in flight, 600-byte records, "
        f"acks=all, idempotent, {PARTITIONS} partitions, {args.seconds:g} s each, this "
        "process's CPU a record. Load average before: "
        f"{' '.join(f'{x:.1f}' for x in load_before)}, after: "
        f"{' '.join(f'{x:.1f}' for x in load_after)}.",
        "",
        "| server | CPU µs a request | range | requests/s (median) |",
        "|---|---|---|---|",
    ]
    for name, (label, *_) in SERVERS.items():
        rps = statistics.median(r[name]["rps"] for r in rounds)
        low, high = spread[name]
        lines.append(f"| {label} | {cpu[name]:.1f} | {low:.1f} to {high:.1f} | {rps:.0f} |")
    lines += [
        "",
        "| stage of a push | CPU µs |",
        "|---|---|",
        *(f"| {name} | {value:.2f} |" for name, value in steps.items()),
        f"| **the stages together** | **{stage_sum:.2f}** |",
        "",
        "| produce path, a record | CPU µs |",
        "|---|---|",
        f"| aiokafka `send()` call: the append into a batch | {append:.2f} |",
        f"| aiokafka's sender and the ack: batch, produce request, response, futures "
        f"(the bare loop less the append and a bare future) | {bare - append - future:.2f} |",
        f"| the await that suspends until the ack (a bare future, resolved, awaited) | "
        f"{future:.2f} |",
        f"| **bare aiokafka loop, send + ack** | **{bare:.2f}** |",
        "| DurableProducer against the bare loop: its own append (ingress/accumulator.py), "
        f"deadline, in-flight bound, reachability | {durable - bare:+.2f} |",
        f"| **the ingress's produce path (DurableProducer.send)** | **{durable:.2f}** |",
        "",
        "A push's CPU, by part (medians above):",
        "",
        "| part | on uvicorn, µs | on granian (RSGI), µs |",
        "|---|---|---|",
    ]
    parts: list[tuple[str, float, float]] = [
        (
            "the server (HTTP, socket I/O, its interface, the response): its raw endpoint",
            cpu["raw-asgi"],
            cpu["raw-rsgi"],
        ),
        ("the endpoint's stages (parse, convert, encode, key, partition, answer)", stage_sum, 0),
        ("the produce path (append, sender, produce request, ack, future)", durable, 0),
    ]
    remainders = (
        cpu["ingress"] - cpu["raw-asgi"] - stage_sum - durable,
        cpu["ingress-granian"] - cpu["raw-rsgi"] - stage_sum - durable,
    )
    for label, on_uvicorn, on_granian in parts:
        lines.append(f"| {label} | {on_uvicorn:.1f} | {on_granian or on_uvicorn:.1f} |")
    lines += [
        "| the remainder: handler lines, exchange, metrics, scheduling, GC | "
        f"{remainders[0]:.1f} | {remainders[1]:.1f} |",
        f"| **the ingress, a push** | **{cpu['ingress']:.1f}** | "
        f"**{cpu['ingress-granian']:.1f}** |",
        "",
    ]
    if hotspots:
        lines += [
            "The ingress on granian under the same load, sampled by py-spy (200 Hz, its worker "
            "process; `own`: the function itself was running, `on stack`: it or its callees; "
            "the 25 with the most own samples; the unnamed row is native code outside Python "
            "frames, the event loop's own included):",
            "",
            "| function | own % | on stack % |",
            "|---|---|---|",
            *(f"| `{label}` | {own:.1f} | {total:.1f} |" for label, total, own in hotspots),
            "",
        ]
    section = "\n".join(lines)
    write_run(
        "Push profile",
        figure=f"a push {cpu['ingress']:.0f} µs CPU on uvicorn (server {cpu['raw-asgi']:.0f}, "
        f"stages {stage_sum:.0f}, produce path {durable:.0f}, remainder "
        f"{remainders[0]:.0f}), {cpu['ingress-granian']:.0f} µs on granian (server "
        f"{cpu['raw-rsgi']:.0f}), at {args.connections} connections",
        command=command(),
        section=section,
    )
    print(section)


if __name__ == "__main__":
    main()
