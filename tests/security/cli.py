"""uplink's verbs as a deployment runs them: their own processes, settings from the environment
only, each topic name under a namespace of the test's own."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from uplink.broker import free_port


def namespace_env(prefix: str = "uplink") -> dict[str, str]:
    """Topic names of a fresh namespace, ``<prefix>.<id>.``: every test its own topics."""
    ns = f"{prefix}.{uuid.uuid4().hex[:8]}"
    return {
        "UPLINK_TOPIC_MESSAGES": f"{ns}.messages",
        "UPLINK_TOPIC_QUARANTINE": f"{ns}.quarantine",
        "UPLINK_TOPIC_MEDIA": f"{ns}.media",
        "UPLINK_TOPIC_STATUSES": f"{ns}.statuses",
        "UPLINK_TOPIC_META_EVENTS": f"{ns}.meta-events",
        "UPLINK_TOPIC_DLQ": f"{ns}.{{worker}}.dlq",
        "UPLINK_TOPIC_REDRIVE": f"{ns}.{{worker}}.redrive",
        "UPLINK_TOPIC_ROUTER_DELAY": f"{ns}.router.delay.{{step}}",
        "UPLINK_MESSAGES_PARTITIONS": "2",
        "UPLINK_TOPIC_PARTITIONS": "1",
    }


def base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("UPLINK_", "KAFKA_", "AWS_"))}


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


@dataclass
class Verb:
    """One ``uplink`` process; ``stop`` sends SIGTERM and returns how it ended. Its stderr is
    read as it comes (``lines``), so a test can wait for a line (``said``)."""

    argv: tuple[str, ...]
    env: dict[str, str]
    process: asyncio.subprocess.Process | None = None
    lines: list[str] = field(default_factory=list)
    _reading: asyncio.Task[None] | None = None
    _new_line: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> Verb:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "uplink.cli.main",
            *self.argv,
            env={**base_env(), **self.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._reading = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        try:
            async for line in self.process.stderr:
                self.lines.append(line.decode(errors="replace"))
                self._new_line.set()
        finally:
            self._new_line.set()  # the end is news too

    async def said(self, text: str, timeout: float) -> str:
        """The first line of stderr with ``text`` in it, once it is written."""
        async with asyncio.timeout(timeout):
            while True:
                self._new_line.clear()
                for line in self.lines:
                    if text in line:
                        return line
                if self._reading is None or self._reading.done():
                    raise AssertionError(f"{self.argv[0]} ended without saying {text!r}")
                await self._new_line.wait()

    async def wait(self, timeout: float) -> Run:
        assert self.process is not None and self.process.stdout is not None
        assert self._reading is not None
        async with asyncio.timeout(timeout):
            stdout = await self.process.stdout.read()
            await self._reading
            await self.process.wait()
        assert self.process.returncode is not None
        return Run(self.process.returncode, stdout.decode(), "".join(self.lines))

    async def stop(self, timeout: float = 120) -> Run:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await self.wait(timeout)


async def uplink(env: dict[str, str], *argv: str, timeout: float = 300) -> Run:
    """Run a verb to its end; one still running after ``timeout`` is stopped, and what it
    said is the failure's message."""
    verb = await Verb(argv, env).start()
    try:
        return await verb.wait(timeout)
    except TimeoutError:
        run = await verb.stop(60)
        raise AssertionError(
            f"uplink {' '.join(argv)} still ran after {timeout:g}s; it said:\n{run.stderr[-4000:]}"
        ) from None


def stopped_cleanly(verb: Verb, run: Run) -> bool:
    """Ended by the SIGTERM ``stop`` sent after a clean stop: exit code 0, or, for the ingress,
    uvicorn's re-raise of the signal once the application has shut down; on granian (the
    default server) the ingress's own line says its lifespan shut the producer down."""
    if verb.argv[0] == "ingress":
        shut_down = (
            "Application shutdown complete" in run.stderr  # uvicorn's lifespan
            or "ingress stopped: producer flushed and closed" in run.stderr  # ingress/rsgi.py
        )
        return run.code in (0, -signal.SIGTERM) and shut_down
    return run.code == 0


async def ended_after(
    verb: Verb, ready: str, change: Callable[[], Awaitable[object]], timeout: float = 120
) -> tuple[Run, float]:
    """Once ``verb`` has said ``ready``, ``change`` (what the test does to the running
    process); how the process ended, and how many seconds after the change."""
    try:
        await verb.said(ready, timeout)
        await change()
        changed = time.monotonic()
        await verb.wait(timeout)
        took = time.monotonic() - changed
    finally:
        run = await verb.stop()  # already ended: how it ended; else stopped
    return run, took


async def until_ready(client: httpx.AsyncClient, url: str) -> None:
    async with asyncio.timeout(180):
        while True:
            try:
                if (await client.get(f"{url}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)


@dataclass
class Serving:
    """A running ingress: its URL, a client, and once it is stopped, how it ended."""

    url: str
    client: httpx.AsyncClient
    ended: Run | None = None


@contextlib.asynccontextmanager
async def serving(env: dict[str, str]) -> AsyncIterator[Serving]:
    """``uplink ingress`` started and ready; stopped after the block, cleanly."""
    port = free_port()
    ingress = await Verb(("ingress", "--port", str(port)), env).start()
    try:
        async with httpx.AsyncClient() as client:
            served = Serving(f"http://127.0.0.1:{port}", client)
            await until_ready(client, served.url)
            yield served
    finally:
        served.ended = run = await ingress.stop()
    assert stopped_cleanly(ingress, run), (run.code, run.stderr[-2000:])
