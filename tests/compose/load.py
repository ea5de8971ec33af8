"""Pushes through the load balancer as the provider sends them: the spec's examples with fresh
messageIds and conversations, a few hundred in flight, every answer counted."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import h11
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
        # Sent now, as a provider's are: the examples' own dates (2023 and 2024, a dozen hours)
        # interleaved in each partition would make the archive start a file at every change of
        # hour, tens of thousands of files.
        push["timestamp"] = int(time.time())
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


class Client:
    """Keep-alive HTTP/1.1 connections to one URL, on asyncio's streams with h11 framing them.

    Not httpx: its connection pool checks every connection for every request, which at a few
    hundred in flight held the scenarios to about 50 pushes a second here, a fraction of what
    the stack answers. Each worker of ``send`` holds one connection at a time; one that failed
    is dropped and the next push opens another, as a provider's client would.
    """

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"an http:// URL with a host, not {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.target = parts.path or "/"
        self.timeout = timeout
        self._idle: list[_Connection] = []
        # Every connection open, idle or in use: a post cancelled mid-request (its scenario
        # ended, a task group failed) leaves its connection to be closed at exit, not to the GC.
        self._open: set[_Connection] = set()

    async def post(self, body: bytes) -> int | None:
        """The answer's status, or None where none came (refused, reset, timed out)."""
        connection = self._idle.pop() if self._idle else None
        try:
            if connection is None:
                connection = await _Connection.open(self.host, self.port)
                self._open.add(connection)
            async with asyncio.timeout(self.timeout):
                status = await connection.post(self.host, self.target, body)
        except (OSError, TimeoutError, h11.ProtocolError):
            if connection is not None:
                self._close(connection)
            return None
        except BaseException:  # cancelled: the connection is mid-request, of no further use
            if connection is not None:
                self._close(connection)
            raise
        if connection.reusable():
            self._idle.append(connection)
        else:
            self._close(connection)
        return status

    def _close(self, connection: _Connection) -> None:
        self._open.discard(connection)
        connection.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._idle.clear()
        while self._open:
            self._close(self._open.pop())


@dataclass(eq=False)  # kept in a set: by identity
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    protocol: h11.Connection

    @classmethod
    async def open(cls, host: str, port: int) -> _Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, h11.Connection(h11.CLIENT))

    async def post(self, host: str, target: str, body: bytes) -> int:
        headers = [
            ("host", host),
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
        ]
        self.writer.write(
            self.protocol.send(h11.Request(method="POST", target=target, headers=headers))
            + self.protocol.send(h11.Data(data=body))
            + self.protocol.send(h11.EndOfMessage())
        )
        status = None
        while True:
            event = self.protocol.next_event()
            if event is h11.NEED_DATA:
                self.protocol.receive_data(await self.reader.read(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.EndOfMessage) and status is not None:
                return status
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionResetError("the server closed the connection before answering")

    def reusable(self) -> bool:
        if self.protocol.our_state is h11.DONE and self.protocol.their_state is h11.DONE:
            self.protocol.start_next_cycle()
            return True
        return False

    def close(self) -> None:
        self.writer.close()


async def send(
    client: Client,
    items: Iterable[tuple[str, bytes]],
    tally: Tally,
    concurrency: int = 200,
    rate: float | None = None,
) -> None:
    """POST every item, ``concurrency`` at a time (at most ``rate`` a second), counting each
    answer in ``tally``."""
    queue = iter(items)
    loop = asyncio.get_running_loop()
    started = loop.time()
    handed = 0

    async def worker() -> None:
        nonlocal handed
        for message_id, body in queue:
            if rate is not None:
                # The item's slot in an even stream: after a stall it catches up at full
                # speed, as a provider's backlog would.
                slot = started + handed / rate
                handed += 1
                if slot > loop.time():
                    await asyncio.sleep(slot - loop.time())
            tally.sent += 1
            tally._count(message_id, body, await client.post(body))

    await asyncio.gather(*(worker() for _ in range(concurrency)))


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


async def retry(client: Client, tally: Tally, within: float = 300.0, pause: float = 5.0) -> None:
    """The provider's retries, compressed: every push not answered 200, again, until it is,
    ``pause`` s apart while the stack recovers, for ``within`` s at most (the provider's own
    retries span 9 minutes; a busy host's broker can take minutes to answer promptly again)."""
    deadline = time.monotonic() + within
    while tally.failed and time.monotonic() < deadline:
        await send(client, list(tally.failed.items()), tally, concurrency=50)
        if tally.failed:
            await asyncio.sleep(pause)  # the provider's backoff
