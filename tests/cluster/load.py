"""What the cluster tests share: concurrent pushers with unique messageIds and a bounded run,
`uplink ingress` as a process (its memory can be read), a bounded poll, what the topic holds,
and a row of the reliability table."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import orjson

from schemas import PushCodec
from tests.conftest import EXAMPLES, Reader
from uplink.settings import Topics

TEMPLATE = orjson.loads(EXAMPLES.joinpath("text.json").read_bytes())
PRODUCE_TIMEOUT = 2.0
CONVERSATIONS = 48  # keys spread over every partition
CODEC = PushCodec()


async def until(
    condition: Callable[[], Awaitable[bool]], what: str, timeout: float, every: float = 0.2
) -> None:
    """Poll ``condition`` (the broker announces none of these) until true, at most ``timeout``.

    Each check runs as its own task, waited for only until the deadline: a client call that
    swallows its cancellation (a close in a finally block) cannot stretch the bound."""
    deadline = time.monotonic() + timeout
    while True:
        check = asyncio.ensure_future(condition())
        done, _ = await asyncio.wait({check}, timeout=max(deadline - time.monotonic(), 0))
        if not done:
            check.cancel()
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        if check.result():
            return
        if time.monotonic() + every > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        await asyncio.sleep(every)


@dataclass
class Outcome:
    message_id: str
    status: int
    seconds: float
    phase: str


class Traffic:
    """``pushers`` concurrent pushers, each with its own connection as independent provider
    connections are; every push a new messageId. Bounded: at most ``limit`` pushes."""

    def __init__(self, url: str, prefix: str, limit: int = 20_000) -> None:
        self.url = url
        self.prefix = prefix
        self.limit = limit
        self.phase = "up"
        self.outcomes: list[Outcome] = []
        self._changed = asyncio.Event()
        self._stop = False
        self._next = 0

    def count(self, phase: str | None = None, status: int | None = None) -> int:
        return sum(
            1
            for o in self.outcomes
            if (phase is None or o.phase == phase) and (status is None or o.status == status)
        )

    async def until(self, phase: str, status: int, n: int, timeout: float = 90) -> None:
        try:
            async with asyncio.timeout(timeout):
                while self.count(phase, status) < n:
                    if self._stop:
                        raise AssertionError(f"the pushers stopped ({self.limit} pushes)")
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"{phase}: not {n} answers {status} within {timeout:.0f}s "
                f"({Counter((o.phase, o.status) for o in self.outcomes)})"
            ) from None

    @contextlib.asynccontextmanager
    async def running(self, pushers: int = 16) -> AsyncIterator[Traffic]:
        tasks = [asyncio.create_task(self._pusher()) for _ in range(pushers)]
        try:
            yield self
        finally:
            self._stop = True
            await asyncio.gather(*tasks)

    async def _pusher(self) -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            while not self._stop and self._next < self.limit:
                self._next += 1
                n = self._next
                message_id = f"{self.prefix}-{n}"
                body = orjson.dumps(
                    {
                        **TEMPLATE,
                        "messageId": message_id,
                        "from": {"phone": str(910000 + n % CONVERSATIONS)},
                    }
                )
                phase = self.phase
                started = time.monotonic()
                try:
                    response = await client.post(f"{self.url}/v1/uplink", content=body)
                    status = response.status_code
                except httpx.TransportError:
                    status = 0  # no answer at all: the provider would retry, as after a 503
                self.outcomes.append(Outcome(message_id, status, time.monotonic() - started, phase))
                self._changed.set()
            self._stop = True
            self._changed.set()

    @property
    def acknowledged(self) -> set[str]:
        return {o.message_id for o in self.outcomes if o.status == 200}


async def kept(read_records: Reader, topic: str) -> Counter[str]:
    """How many times each messageId is in ``topic`` (read_committed, from the beginning)."""
    records = await read_records(topic, timeout=90)
    return Counter(CODEC.decode(record.value or b"")["messageId"] for record in records)


@dataclass
class Figures:
    """One row of the reliability table."""

    fault: str
    load: str
    answered_200: int
    answered_503: int
    longest_answer: float
    lost: int
    duplicated: int
    # Answered 503 and in the topic all the same: the idempotent producer retries a batch
    # until the broker has it, after the answer (the provider's retry is then a duplicate,
    # which the workers' dedupe drops).
    kept_after_503: int
    note: str = ""

    @classmethod
    def of(
        cls, fault: str, traffic: Traffic, counts: Counter[str], pushers: int, note: str = ""
    ) -> Figures:
        acknowledged = traffic.acknowledged
        return cls(
            fault=fault,
            load=f"{pushers} pushers, {len(traffic.outcomes)} pushes",
            answered_200=len(acknowledged),
            answered_503=traffic.count(status=503),
            longest_answer=round(max(o.seconds for o in traffic.outcomes), 2),
            lost=len(acknowledged - set(counts)),
            duplicated=sum(1 for c in counts.values() if c > 1),
            kept_after_503=sum(
                1 for o in traffic.outcomes if o.status == 503 and o.message_id in counts
            ),
            note=note,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Ingress:
    """`uplink ingress` as its own process on loopback (one worker of the default server), as
    deployed."""

    def __init__(self, bootstrap: str, topics: Topics, port: int, log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self._port = port
        self._log_path = log
        self._env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "UPLINK_TOPIC_MESSAGES": topics.messages,
            "UPLINK_TOPIC_QUARANTINE": topics.quarantine,
            "UPLINK_TOPIC_MEDIA": topics.media,
            "UPLINK_MESSAGES_PARTITIONS": str(topics.messages_partitions),
            "UPLINK_REPLICATION_FACTOR": str(topics.replication_factor),
            "UPLINK_PRODUCE_TIMEOUT": str(PRODUCE_TIMEOUT),
        }
        self._process: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def rss(self) -> int:
        """Resident memory now, bytes: the process and its worker processes (granian serves
        from a child of the process it was started as)."""
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                parent = stat.read_text().rsplit(")", 1)[1].split()[1]
                if stat.parent.name != str(self.pid) and parent != str(self.pid):
                    continue
                status = (stat.parent / "status").read_text()
            except OSError:  # gone meanwhile
                continue
            total += next(
                int(line.split()[1]) * 1024
                for line in status.splitlines()
                if line.startswith("VmRSS:")
            )
        if total == 0:
            raise AssertionError("no VmRSS")
        return total

    async def start(self) -> None:
        self._log = self._log_path.open("wb")
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "uplink.cli.main",
            "ingress",
            "--host",
            "127.0.0.1",
            "--port",
            str(self._port),
            env=self._env,
            stderr=self._log,
            stdout=self._log,
        )
        async with httpx.AsyncClient(timeout=5) as client:

            async def ready() -> bool:
                assert self._process is not None
                if self._process.returncode is not None:
                    raise AssertionError(f"the ingress exited: {self._log_path.read_text()}")
                try:
                    return (await client.get(f"{self.url}/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await until(ready, "the ingress ready", timeout=60, every=0.1)

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def stop(self) -> None:
        process, self._process = self._process, None
        try:
            if process is not None and process.returncode is None:
                process.send_signal(signal.SIGTERM)
                try:
                    async with asyncio.timeout(30):
                        await process.wait()
                except TimeoutError:
                    process.kill()
                    await process.wait()
        finally:
            if self._log is not None:
                self._log.close()
