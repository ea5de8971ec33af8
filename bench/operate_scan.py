"""The operator verbs on a topic of a million records, against a kcat scan of the same topic.

    .venv/bin/python -m bench.operate_scan [--records 1000000]

Fills a router DLQ of 3 partitions with ``--records`` dead letters (the spec's examples in
rotation, unique messageIds, the dead-letter headers a worker writes, record time spread over
the last 10 h) and a messages topic of 12 partitions with the same pushes; then, in one run:
kcat reading the whole DLQ (`-C -e -f '%o %h'`, what the README's recipe does to find dead
letters), ``uplink dlq list --since 1h``, ``uplink trace`` of a push of that hour with and
without the conversation's phones, and kcat again. Writes seconds and records read into
bench/RESULTS.md (its row and section).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

from bench.results import command, run_line, write_run
from schemas import PushCodec
from uplink.broker import kafka_broker
from uplink.settings import KafkaSettings, Topics
from uplink.topics import ensure_topics
from uplink.topology import setup

ROOT = Path(__file__).resolve().parent.parent

SPAN_MS = 10 * 3_600_000
DLQ_PARTITIONS = 3


async def fill(
    kafka: KafkaSettings,
    topics: Topics,
    count: int,
    codec: PushCodec,
    dead_letters: int | None = None,
) -> int:
    """The messages topic and the DLQ (the first ``dead_letters`` pushes, default all of
    them); returns the record time of the last push."""
    bodies = [
        orjson.loads(p.read_bytes()) for p in sorted((ROOT / "tests/examples").glob("*.json"))
    ]
    now = time.time_ns() // 1_000_000
    start = now - SPAN_MS
    producer = AIOKafkaProducer(**kafka.client_options(), linger_ms=50, max_batch_size=1 << 20)
    await producer.start()
    try:
        pending = []
        for n in range(count):
            body = {**bodies[n % len(bodies)], "messageId": f"scan-{n:09d}"}
            record = codec.parse(orjson.dumps(body), now)
            value, key = codec.encode(record), codec.key(record)
            stamp = start + n * SPAN_MS // count
            headers = [
                ("uplink-dlq-reason", b"http:crm: HTTP 400 from http://crm.example/hook"),
                ("uplink-dlq-worker", b"router"),
                ("uplink-dlq-topic", topics.messages.encode()),
                ("uplink-dlq-partition", b"0"),
                ("uplink-dlq-offset", str(n).encode()),
            ]
            if dead_letters is None or n < dead_letters:
                pending.append(
                    await producer.send(
                        topics.dlq("router"), value, key=key, timestamp_ms=stamp, headers=headers
                    )
                )
            pending.append(await producer.send(topics.messages, value, key=key, timestamp_ms=stamp))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return start + (count - 1) * SPAN_MS // count


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, str, str]:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode not in (0, 1):  # 1: found nothing, which the caller checks
        raise SystemExit(f"bench: {' '.join(argv)} exited {done.returncode}: {done.stderr}")
    return time.perf_counter() - started, done.stdout, done.stderr


def kcat_scan(bootstrap: str, topic: str, env: dict[str, str]) -> tuple[float, int]:
    argv = ["kcat", "-b", bootstrap, "-C", "-t", topic, "-e", "-q", "-f", "%o %h\n"]
    seconds, out, _ = timed(argv, env)
    return seconds, out.count("\n")


async def main(count: int) -> None:
    if shutil.which("kcat") is None:
        raise SystemExit("bench: needs kcat (apt-get install kcat)")
    codec = PushCodec()
    uplink = str(Path(sys.executable).with_name("uplink"))
    with (
        tempfile.TemporaryDirectory() as tmp,
        kafka_broker(os.environ, data_dir=Path(tmp) / "kafka") as bootstrap,
    ):
        kafka = KafkaSettings(bootstrap_servers=bootstrap)
        topics = Topics(
            messages="bench.scan.messages",
            quarantine="bench.scan.q",
            media="bench.scan.m",
            partitions=DLQ_PARTITIONS,
        )
        await ensure_topics(kafka, topics, setup(topics, 1 << 20, ["router"]).creates)
        filled = time.perf_counter()
        last = await fill(kafka, topics, count, codec)
        print(f"filled 2 x {count:,} records in {time.perf_counter() - filled:.0f}s", flush=True)
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "UPLINK_TOPIC_MESSAGES": topics.messages,
            "UPLINK_TOPIC_QUARANTINE": topics.quarantine,
            "UPLINK_TOPIC_MEDIA": topics.media,
        }
        dlq = topics.dlq("router")
        kcat_first = kcat_scan(bootstrap, dlq, env)
        listed = timed(
            [uplink, "dlq", "list", "--worker", "router", "--since", "1h", "--json"], env
        )
        target = f"scan-{count - 10:09d}"
        # The push's phones as its example has them (the examples' conversations differ).
        body = orjson.loads(
            sorted((ROOT / "tests/examples").glob("*.json"))[(count - 10) % 13].read_bytes()
        )
        phones = ["--business", body["businessPhone"], "--from", body["from"]["phone"]]
        around = ["--around", str(last), "--window", "30m"]
        traced_key = timed([uplink, "trace", target, *around, *phones, "--json"], env)
        traced_all = timed([uplink, "trace", target, *around, "--json"], env)
        kcat_again = kcat_scan(bootstrap, dlq, env)
    rows = orjson.loads(traced_key[1])
    assert rows["found"], f"trace did not find {target}"
    write(count, kcat_first, kcat_again, listed, traced_key, traced_all)


def read_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("uplink: read")]
    return lines[-1].removeprefix("uplink: ") if lines else "?"


def write(
    count: int,
    kcat_first: tuple[float, int],
    kcat_again: tuple[float, int],
    listed: tuple[float, str, str],
    traced_key: tuple[float, str, str],
    traced_all: tuple[float, str, str],
) -> None:
    kcat = (kcat_first[0] + kcat_again[0]) / 2
    shown = max(0, listed[1].count("\n") - 1)  # the table's heading
    table = [
        ("kcat scan of the whole DLQ (`-C -e -f '%o %h'`)", kcat_first[0], f"{kcat_first[1]:,}"),
        ("`uplink dlq list --worker router --since 1h`", listed[0], read_line(listed[2])),
        ("`uplink trace ID --around T --window 30m --business B --from F`", traced_key[0],
         read_line(traced_key[2])),
        ("`uplink trace ID --around T --window 30m` (every partition)", traced_all[0],
         read_line(traced_all[2])),
        ("kcat scan again", kcat_again[0], f"{kcat_again[1]:,}"),
    ]  # fmt: skip
    rows = "\n".join(f"| {name} | {seconds:.1f} | {what} |" for name, seconds, what in table)
    section = f"""{run_line("; broker on this machine")}
A router DLQ of {count:,} dead letters in {DLQ_PARTITIONS} partitions and a messages topic of
the same {count:,} pushes in 12 partitions (the spec's 13 examples in rotation, unique
messageIds, record time spread over the last 10 h). Each command is a process of its own,
start-up included; `dlq list` printed {shown:,} dead letters.

| reader | seconds | what it read |
|---|---|---|
{rows}

**`dlq list --since 1h` / kcat scan time: {listed[0] / kcat:.2f}x; `trace` with the phones:
{traced_key[0] / kcat:.2f}x.** The verbs seek by time (offsets-for-times) and read only the
window; kcat has no time seek in the recipe and reads every record.
"""
    write_run(
        "Operator verbs on 1M records",
        figure=f"`dlq list --since 1h` {listed[0] / kcat:.2f}x and `trace` "
        f"{traced_key[0] / kcat:.2f}x the time of a kcat scan of the topic",
        command=command(),
        section=section,
    )
    print(section)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    asyncio.run(main(parser.parse_args().records))
