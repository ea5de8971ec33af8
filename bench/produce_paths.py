"""The ingress's ways to produce a record and await its ack, side by side on one broker.

.venv/bin/python -m bench.produce_paths [--seconds 6] [--rounds 2] [--concurrency 64]

Each path runs ``--concurrency`` tasks, each producing a 600-byte record keyed by one of 50,000
conversations to a 12-partition topic and awaiting the broker's acks=all ack (idempotent), for
``--seconds``; the paths alternate, ``--rounds`` times. Reported: records/s, and CPU per record
of this process (all its threads) and of the broker. The baseline is ``aiokafka send`` (the
ingress's path until issue 26); the ingress's own path now is ``DurableProducer.send``; the
others are the directions issue 15 named:

- ``aiokafka send, pure murmur2``: the same, with aiokafka's Python partitioner (as before);
- ``edge batches``: the pushes for a partition append to one open batch builder, handed whole
  to aiokafka's public ``send_batch``, one waiter a push resolved by one future a batch;
- ``accumulator, private``: the same appending straight into aiokafka's accumulator (its
  private ``_batches``), as its ``add_message`` does minus a future and a metadata a record;
- ``DurableProducer.send``: the ingress's (ingress/accumulator.py: appended into the
  accumulator, one callback a batch, a swept deadline a record, the in-flight bound);
- ``confluent-kafka``: librdkafka, its delivery reports handed to the event loop in batches
  (one ``call_soon_threadsafe`` per poll of a thread), when confluent-kafka is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.results import command, run_line, write_run

if TYPE_CHECKING:
    from ingress.producer import DurableProducer
    from uplink.settings import KafkaSettings

VALUE = os.urandom(600)
KEYS = [b"8613800000000:%d" % (910000000000 + n) for n in range(50_000)]
PARTITIONS = 12

Send = Callable[[bytes], Awaitable[None]]


async def drive(send: Send, seconds: float, concurrency: int) -> tuple[int, float, float]:
    stop = time.monotonic() + seconds
    done = 0

    async def one() -> None:
        nonlocal done
        while time.monotonic() < stop:
            await send(random.choice(KEYS))
            done += 1

    cpu, wall = time.process_time(), time.monotonic()
    await asyncio.gather(*(one() for _ in range(concurrency)))
    return done, time.monotonic() - wall, time.process_time() - cpu


def aiokafka_send(producer: Any, topic: str, pure: bool) -> Send:
    from aiokafka.partitioner import murmur2

    from uplink._partition import partition

    def choose(key: bytes) -> int:
        if pure:
            return int(murmur2(key) & 0x7FFFFFFF) % PARTITIONS
        return partition(key, PARTITIONS)

    async def send(key: bytes) -> None:
        delivery = await producer.send(topic, VALUE, key=key, partition=choose(key))
        await delivery

    return send


def edge_batches(producer: Any, topic: str) -> Send:
    from uplink._partition import partition

    loop = asyncio.get_running_loop()
    open_: dict[int, tuple[Any, list[asyncio.Future[None]]]] = {}
    handing: set[asyncio.Task[None]] = set()

    def start(part: int) -> tuple[Any, list[asyncio.Future[None]]]:
        batch: tuple[Any, list[asyncio.Future[None]]] = (producer.create_batch(), [])
        open_[part] = batch
        task = loop.create_task(hand_over(part, batch))
        handing.add(task)
        task.add_done_callback(handing.discard)
        return batch

    async def hand_over(part: int, batch: tuple[Any, list[asyncio.Future[None]]]) -> None:
        # Open for appends while send_batch waits for the batch queued before it.
        delivered = await producer.send_batch(batch[0], topic, partition=part)
        if open_.get(part) is batch:
            del open_[part]
        delivered.add_done_callback(lambda _: resolve(batch[1]))

    async def send(key: bytes) -> None:
        part = partition(key, PARTITIONS)
        batch = open_.get(part) or start(part)
        if batch[0].append(timestamp=None, key=key, value=VALUE, headers=[]) is None:
            batch = start(part)
            batch[0].append(timestamp=None, key=key, value=VALUE, headers=[])
        waiter = loop.create_future()
        batch[1].append(waiter)
        await waiter

    return send


def private_accumulator(producer: Any, topic: str) -> Send:
    from aiokafka.structs import TopicPartition

    from uplink._partition import partition

    loop = asyncio.get_running_loop()
    accumulator = producer._message_accumulator
    tps = [TopicPartition(topic, n) for n in range(PARTITIONS)]
    waiters: dict[int, list[asyncio.Future[None]]] = {}

    async def send(key: bytes) -> None:
        tp = tps[partition(key, PARTITIONS)]
        pending = accumulator._batches.get(tp)
        batch = pending[-1] if pending else None
        waiter = loop.create_future()
        if (
            batch is None
            or batch._builder.append(timestamp=None, key=key, value=VALUE, headers=[]) is None
        ):
            batch = accumulator._append_batch(accumulator.create_builder(), tp)
            batch._builder.append(timestamp=None, key=key, value=VALUE, headers=[])
            waiting = waiters[id(batch)] = []
            batch.future.add_done_callback(lambda _, w=waiting: resolve(w))
        waiters[id(batch)].append(waiter)
        await waiter

    return send


def resolve(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)


async def confluent(bootstrap: str, topic: str, seconds: float, concurrency: int) -> Any:
    import confluent_kafka

    from uplink._partition import partition

    loop = asyncio.get_running_loop()
    producer = confluent_kafka.Producer(
        # linger 0 as aiokafka's: librdkafka's default 5 ms would cost closed-loop tasks a rate.
        {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 0}
    )
    reports: list[asyncio.Future[None]] = []
    lock = threading.Lock()
    stopping = threading.Event()

    def poll() -> None:
        while not stopping.is_set():
            producer.poll(0.02)
            with lock:
                done = reports[:]
                reports.clear()
            if done:
                loop.call_soon_threadsafe(resolve, done)  # one hop per poll, not per record

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()

    async def send(key: bytes) -> None:
        waiter = loop.create_future()

        def delivered(error: Any, message: Any, waiter: asyncio.Future[None] = waiter) -> None:
            with lock:
                reports.append(waiter)

        producer.produce(
            topic, VALUE, key, partition=partition(key, PARTITIONS), on_delivery=delivered
        )
        await waiter

    try:
        return await drive(send, seconds, concurrency)
    finally:
        stopping.set()
        thread.join()
        producer.flush(10)


@contextlib.asynccontextmanager
async def connected_durable(kafka: KafkaSettings) -> AsyncIterator[DurableProducer]:
    """The ingress's producer as the benchmarks drive it (in-flight bound out of the way),
    once it has connected: it connects in the background, and its first sends would be 503s."""
    from ingress.producer import DurableProducer
    from uplink.kafka import KafkaClients

    producer = DurableProducer(
        KafkaClients(kafka),
        timeout=5.0,
        max_in_flight=10_000,
        linger_ms=0,
    )
    async with producer:
        async with asyncio.timeout(60):
            while not producer.connected:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        yield producer


async def durable(kafka: KafkaSettings, topic: str, seconds: float, concurrency: int) -> Any:
    async with connected_durable(kafka) as producer:

        async def send(key: bytes) -> None:
            await producer.send(topic, VALUE, key=key)

        return await drive(send, seconds, concurrency)


def broker_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    args: argparse.Namespace, kafka: KafkaSettings, broker_pid: int | None
) -> list[Any]:
    from aiokafka.admin import NewTopic

    from uplink.kafka import KafkaClients

    # Every client through uplink's settings (UPLINK_KAFKA_* security applies); the producers
    # are KafkaClients' (acks=all, idempotent), each send names its partition.
    clients = KafkaClients(kafka)
    admin = clients.admin()
    await clients.start(admin)
    await admin.create_topics([NewTopic("bench.paths", PARTITIONS, 1)])
    await admin.close()
    paths: dict[str, Callable[[Any, str], Send] | str] = {
        "aiokafka send (the ingress before)": lambda p, t: aiokafka_send(p, t, pure=False),
        "aiokafka send, pure murmur2": lambda p, t: aiokafka_send(p, t, pure=True),
        "edge batches (send_batch)": edge_batches,
        "accumulator, private": private_accumulator,
        "DurableProducer.send (the ingress now)": "durable",
    }
    try:
        import confluent_kafka  # noqa: F401

        # librdkafka is configured apart: only on a plain broker.
        if kafka.security_protocol == "PLAINTEXT":
            paths["confluent-kafka"] = "confluent"
    except ImportError:
        pass
    rows = []
    # Warm-up (leaders elected, connections and code warm), not measured.
    producer = clients.producer()
    await clients.start(producer)
    try:
        await drive(aiokafka_send(producer, "bench.paths", pure=False), 3, args.concurrency)
    finally:
        await producer.stop()
    for number in range(1, args.rounds + 1):
        for name, build in paths.items():
            before = broker_cpu(broker_pid) if broker_pid else 0.0
            if build == "confluent":
                done, wall, cpu = await confluent(
                    kafka.bootstrap_servers, "bench.paths", args.seconds, args.concurrency
                )
            elif build == "durable":
                done, wall, cpu = await durable(
                    kafka, "bench.paths", args.seconds, args.concurrency
                )
            else:
                assert not isinstance(build, str), build
                producer = clients.producer()
                await clients.start(producer)
                try:
                    await producer.partitions_for("bench.paths")
                    send = build(producer, "bench.paths")
                    done, wall, cpu = await drive(send, args.seconds, args.concurrency)
                finally:
                    await producer.stop()
            after = broker_cpu(broker_pid) if broker_pid else 0.0
            rows.append(
                (number, name, done / wall, 1e6 * cpu / done, 1e6 * (after - before) / done)
            )
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    import uvloop

    from uplink.broker import kafka_broker
    from uplink.settings import kafka_from_env

    with (
        tempfile.TemporaryDirectory() as tmp,
        kafka_broker(os.environ, data_dir=Path(tmp) / "kafka") as bootstrap,
    ):
        broker_pid = next(
            (
                int(p.parent.name)
                for p in Path("/proc").glob("[0-9]*/cmdline")
                if tmp in p.read_bytes().decode(errors="replace")
            ),
            None,
        )
        kafka = kafka_from_env({**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap})
        rows = uvloop.run(measure(args, kafka, broker_pid))
    write(rows, args)


def write(rows: list[Any], args: argparse.Namespace) -> None:
    names = list(dict.fromkeys(row[1] for row in rows))
    cpu = {name: statistics.median(r[3] for r in rows if r[1] == name) for name in names}
    base = cpu["aiokafka send (the ingress before)"]
    lines = [
        run_line("; broker on this machine"),
        f"{args.concurrency} tasks, each producing and awaiting one record at a time (600 bytes, "
        f"50,000 keys, 12 partitions, acks=all, idempotent), {args.seconds:g} s a path, "
        f"{args.rounds} alternating rounds.",
        "",
        "| round | path | records/s | client CPU µs a record | broker CPU µs a record |",
        "|---|---|---|---|---|",
        *(f"| {n} | {name} | {rate:.0f} | {c:.1f} | {b:.1f} |" for n, name, rate, c, b in rows),
        "",
        "Median client CPU a record against aiokafka's send (the ingress's path before): "
        + "; ".join(f"{name} {cpu[name] - base:+.1f} µs" for name in names[1:])
        + ".",
        "",
    ]
    section = "\n".join(lines)
    write_run(
        "Produce paths",
        figure=f"aiokafka send {base:.1f} µs of client CPU a record; "
        + ", ".join(f"{name} {cpu[name] - base:+.1f}" for name in names[1:]),
        command=command(),
        section=section,
    )
    print(section)


if __name__ == "__main__":
    main()
