"""Kill the broker (SIGKILL) mid-traffic: 503s within the produce timeout, never a lost 200."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from ingress.app import create_app
from schemas import PushCodec
from tests.conftest import EXAMPLES, Reader, Server, wait_ready
from uplink.broker import LocalBroker
from uplink.settings import IngressSettings, KafkaSettings, Topics

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

PRODUCE_TIMEOUT = 2.0
MAX_IN_FLIGHT = 8  # half the pushers: while the broker is down, the other half is shed at once
TEMPLATE = orjson.loads(EXAMPLES.joinpath("text.json").read_bytes())


@dataclass
class Outcome:
    message_id: str
    status: int
    seconds: float
    phase: str
    retry_after: str | None


class Traffic:
    """Concurrent pushers with unique messageIds; phases mark what the broker was doing."""

    def __init__(self, url: str, pace: float = 0.0) -> None:
        self.url = url
        # Seconds a pusher waits after a 503, as a provider would: 503s answered at once
        # otherwise make a hot loop that starves the broker being restarted on this machine.
        self.pace = pace
        self.phase = "up"
        self.outcomes: list[Outcome] = []
        self.changed = asyncio.Event()
        self._stop = False
        self._next = 0

    def count(self, phase: str, status: int) -> int:
        return sum(1 for o in self.outcomes if o.phase == phase and o.status == status)

    async def until(self, phase: str, status: int, n: int, timeout: float = 90) -> None:
        async with asyncio.timeout(timeout):
            while self.count(phase, status) < n:
                self.changed.clear()
                await self.changed.wait()

    @contextlib.asynccontextmanager
    async def running(self, pushers: int) -> AsyncIterator[None]:
        """``pushers`` pushing while the block runs; stopped, and their last answers in, after
        it, whatever it raised."""
        tasks = [asyncio.create_task(self.pusher()) for _ in range(pushers)]
        try:
            yield
        finally:
            self.stop()
            await asyncio.gather(*tasks)

    async def pusher(self) -> None:
        # A client per pusher, like independent provider connections: one shared pool would
        # queue requests client-side and blur what the server answered when.
        async with httpx.AsyncClient(timeout=30) as client:
            await self._push_until_stopped(client)

    async def _push_until_stopped(self, client: httpx.AsyncClient) -> None:
        while not self._stop:
            self._next += 1
            message_id = f"durable-{self._next}"
            body = orjson.dumps({**TEMPLATE, "messageId": message_id})
            phase = self.phase
            started = time.monotonic()
            response = await client.post(f"{self.url}/v1/uplink", content=body)
            self.outcomes.append(
                Outcome(
                    message_id,
                    response.status_code,
                    time.monotonic() - started,
                    phase,
                    response.headers.get("retry-after"),
                )
            )
            self.changed.set()
            if response.status_code == 503 and self.pace:
                await asyncio.sleep(self.pace)

    def stop(self) -> None:
        self._stop = True


async def test_broker_killed_mid_traffic_loses_no_acknowledged_push(
    tmp_path: Path, serve: Server, topics: Topics, read_records: Reader, own_broker: LocalBroker
) -> None:
    ingress = IngressSettings(
        kafka=KafkaSettings(bootstrap_servers=own_broker.bootstrap_servers),
        topics=topics,
        produce_timeout=PRODUCE_TIMEOUT,
        max_in_flight=MAX_IN_FLIGHT,
    )
    url = await serve(create_app(ingress))
    async with httpx.AsyncClient(timeout=30) as client:
        await wait_ready(client, url)
        traffic = Traffic(url)
        async with traffic.running(pushers=16):
            await traffic.until("up", 200, 300)
            traffic.phase = "down"
            await asyncio.to_thread(own_broker.kill)
            await traffic.until("down", 503, 50)
            traffic.phase = "restarting"
            await asyncio.to_thread(own_broker.start)
            traffic.phase = "restarted"
            await traffic.until("restarted", 200, 300)
        metrics = (await client.get(f"{url}/metrics")).text

    statuses = Counter((o.phase, o.status) for o in traffic.outcomes)
    assert set(o.status for o in traffic.outcomes) <= {200, 503}, statuses
    unavailable = [o for o in traffic.outcomes if o.status == 503]
    assert all(o.retry_after == "5" for o in unavailable)
    # Answered within the produce timeout (plus scheduling slack on a loaded 2-core machine).
    slowest = max(o.seconds for o in unavailable)
    assert slowest < PRODUCE_TIMEOUT + 1.5, slowest

    # The bound on in-flight pushes sheds at once instead of queueing behind a dead broker.
    assert min(o.seconds for o in unavailable) < 0.5
    assert 'uplink_ingress_shed_total{cause="overloaded"}' in metrics
    assert 'uplink_ingress_shed_total{cause="kafka"}' in metrics

    acknowledged = {o.message_id for o in traffic.outcomes if o.status == 200}
    codec = PushCodec()
    kept = {
        codec.decode(record.value)["messageId"]
        for record in await read_records(
            topics.messages, bootstrap=own_broker.bootstrap_servers, timeout=60
        )
    }
    lost = acknowledged - kept
    assert not lost, f"{len(lost)} acknowledged pushes are not in the topic: {sorted(lost)[:5]}"
