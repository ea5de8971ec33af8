"""The benchmarks' traffic: the spec's example pushes, and a topic filled with them as the
ingress would have (parsed, encoded, keyed by conversation)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from bench.results import ROOT
from schemas import PushCodec
from uplink.settings import KafkaSettings

EXAMPLES = ROOT / "tests" / "examples"


def examples() -> list[dict[str, Any]]:
    """The spec's example pushes (tests/examples/*.json), in name order."""
    return [orjson.loads(path.read_bytes()) for path in sorted(EXAMPLES.glob("*.json"))]


def campaign(count: int, conversations: int = 5000) -> Iterator[dict[str, Any]]:
    """``count`` pushes, the examples in rotation, each with a messageId of its own
    (``bench-<n>``), one of ``conversations`` senders, and event time now (the examples' own
    timestamps are months apart and would rotate the archive's hour partition at every record)."""
    bodies = examples()
    now = int(time.time())
    for n in range(count):
        body = {**bodies[n % len(bodies)], "messageId": f"bench-{n}", "timestamp": now}
        body["from"] = {**body.get("from", {}), "phone": str(910000000 + n % conversations)}
        yield body


async def fill(
    kafka: KafkaSettings,
    topic: str,
    bodies: Iterable[dict[str, Any]],
    codec: PushCodec,
    *,
    partition: int | None = None,
    timestamp: Callable[[int], int] | None = None,
) -> None:
    """Produce a record of each push: to ``partition`` (default: by key), with record time
    ``timestamp(n)`` for the n-th (default: now)."""
    now = time.time_ns() // 1_000_000
    producer = AIOKafkaProducer(**kafka.client_options(), linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    try:
        pending = []
        for n, body in enumerate(bodies):
            record = codec.parse(orjson.dumps(body), now)
            stamp = None if timestamp is None else timestamp(n)
            pending.append(
                await producer.send(
                    topic,
                    codec.encode(record),
                    key=codec.key(record),
                    partition=partition,
                    timestamp_ms=stamp,
                )
            )
            if len(pending) >= 10_000:  # bounds the futures held, not the batches sent
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
