"""Pushes through the load balancer as the provider sends them: the spec's examples with fresh
messageIds and conversations, a few hundred in flight, every answer counted."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import httpx
import orjson

from tests.conftest import EXAMPLES

# The spec's examples (top level; Meta's are another route). Each push gets a fresh messageId
# and one of many conversations, so that the pushes spread over every partition.
TEMPLATES = [orjson.loads(path.read_bytes()) for path in sorted(EXAMPLES.glob("*.json"))]


def pushes(count: int, seed: int) -> list[tuple[str, bytes]]:
    """``count`` (messageId, body) pairs."""
    rng = random.Random(seed)
    found = []
    for _ in range(count):
        push = dict(rng.choice(TEMPLATES))
        message_id = uuid.UUID(int=rng.getrandbits(128)).hex
        push["messageId"] = message_id
        push["from"] = {**push.get("from", {}), "phone": f"9185{rng.randrange(10**7):07d}"}
        found.append((message_id, orjson.dumps(push)))
    return found


@dataclass
class Tally:
    """What the clients saw."""

    sent: int = 0
    answered_ok: int = 0  # 200s, a retried push's counted again
    ok: set[str] = field(default_factory=set)  # messageIds answered 200
    unavailable: int = 0  # 503: not durable, retry
    errors: int = 0  # any other status, or no answer at all
    failed: dict[str, bytes] = field(default_factory=dict)  # not (yet) answered 200
    error_times: list[float] = field(default_factory=list)  # monotonic, of errors and 503s
    _milestones: list[tuple[int, asyncio.Event]] = field(default_factory=list)

    def answered(self) -> int:
        return self.answered_ok + self.unavailable + self.errors

    def after(self, answers: int) -> asyncio.Event:
        """Set once ``answers`` pushes have been answered (whatever the answer)."""
        event = asyncio.Event()
        self._milestones.append((answers, event))
        return event

    def _count(self, message_id: str, body: bytes, status: int | None) -> None:
        if status == 200:
            self.answered_ok += 1
            self.ok.add(message_id)
            self.failed.pop(message_id, None)
        else:
            if status == 503:
                self.unavailable += 1
            else:
                self.errors += 1
            self.error_times.append(time.monotonic())
            if message_id not in self.ok:
                self.failed[message_id] = body
        for answers, event in self._milestones:
            if self.answered() >= answers:
                event.set()


async def send(
    client: httpx.AsyncClient,
    url: str,
    items: Iterable[tuple[str, bytes]],
    tally: Tally,
    concurrency: int = 200,
) -> None:
    """POST every item, ``concurrency`` at a time, counting each answer in ``tally``."""
    queue = iter(items)

    async def worker() -> None:
        for message_id, body in queue:
            tally.sent += 1
            try:
                response = await client.post(
                    url, content=body, headers={"content-type": "application/json"}
                )
                status: int | None = response.status_code
            except httpx.TransportError:
                status = None
            tally._count(message_id, body, status)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(30.0),
        limits=httpx.Limits(max_connections=400, max_keepalive_connections=400),
    )


def traffic(
    seed: int, stop: asyncio.Event, after_stop: int, limit: int
) -> Iterator[tuple[str, bytes]]:
    """Fresh pushes until ``after_stop`` more have been handed out once ``stop`` is set (or
    ``limit`` in all)."""
    rng = random.Random(seed)
    left = after_stop
    for _ in range(limit):
        if stop.is_set():
            if left == 0:
                return
            left -= 1
        yield from pushes(1, rng.getrandbits(64))


async def retry(
    client: httpx.AsyncClient, url: str, tally: Tally, within: float = 300.0, pause: float = 5.0
) -> None:
    """The provider's retries, compressed: every push not answered 200, again, until it is,
    ``pause`` s apart while the stack recovers, for ``within`` s at most (the provider's own
    retries span 9 minutes; a busy host's broker can take minutes to answer promptly again)."""
    deadline = time.monotonic() + within
    while tally.failed and time.monotonic() < deadline:
        await send(client, url, list(tally.failed.items()), tally, concurrency=50)
        if tally.failed:
            await asyncio.sleep(pause)  # the provider's backoff
