"""The consumer runtime against a real broker: commits, dedupe from the log, DLQ, retries."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from consumers.runtime import Handler, Inbound, Positions, Worker
from consumers.runtime.exceptions import RecordError, TransientError
from schemas import PushCodec
from tests.conftest import EXAMPLES, Reader
from tests.consumers.conftest import SettingsFactory
from uplink.broker import free_port
from uplink.cli.launcher import Assembly, run
from uplink.settings import WorkerSettings

pytestmark = pytest.mark.anyio

CODEC = PushCodec()
TEMPLATE = orjson.loads(EXAMPLES.joinpath("text.json").read_bytes())
# Record time of the first push: recent, or the broker's 7-day retention deletes the test's data.
T0 = time.time_ns() // 1_000_000 - 3 * 3_600_000
MINUTE = 60_000

Publish = Callable[..., Awaitable[None]]


class Recorder(Handler):
    """A handler that keeps what it handled; it can fail for given messageIds."""

    def __init__(
        self, poison: frozenset[str] = frozenset(), flaky: dict[str, int] | None = None
    ) -> None:
        self.handled: list[str] = []
        self.poison = poison
        self.flaky = dict(flaky or {})

    async def handle(self, inbound: Inbound) -> Positions | None:
        message_id = inbound.push["messageId"]
        if message_id in self.poison:
            raise RecordError(f"{message_id} is poison")
        if self.flaky.get(message_id, 0) > 0:
            self.flaky[message_id] -= 1
            raise TransientError("not yet")
        self.handled.append(message_id)
        return None


@pytest.fixture
def worker_settings(make_worker_settings: SettingsFactory) -> WorkerSettings:
    return make_worker_settings("test", retry_backoff=0.01)


@pytest.fixture
def publish(worker_settings: WorkerSettings, producer: AIOKafkaProducer) -> Publish:
    async def send(message_id: str, at: int, value: bytes | None = None) -> None:
        if value is None:
            raw = orjson.dumps({**TEMPLATE, "messageId": message_id})
            value = CODEC.encode(CODEC.parse(raw, at))
        await producer.send_and_wait(
            worker_settings.topics.messages, value, key=b"conversation", timestamp_ms=at
        )

    return send


async def test_each_record_is_handled_once_and_committed(
    worker_settings: WorkerSettings, publish: Publish
) -> None:
    for n in range(20):
        await publish(f"m{n}", T0 + n)
    first = Recorder()
    async with Worker(worker_settings, first, CODEC) as worker:
        assert await worker.run(count=20, timeout=60) == 20
    assert first.handled == [f"m{n}" for n in range(20)]

    again = Recorder()  # same group: starts at the committed position
    await publish("m20", T0 + 20)
    async with Worker(worker_settings, again, CODEC) as worker:
        assert await worker.run(count=1, timeout=60) == 1
    assert again.handled == ["m20"]


async def test_retried_pushes_are_skipped_within_the_window_and_kept_after_it(
    worker_settings: WorkerSettings, publish: Publish
) -> None:
    # The provider's retry pattern: again after 1, 3 and 5 minutes; then the same id 2 h later.
    for message_id, at in [
        ("a", T0), ("b", T0), ("a", T0 + MINUTE), ("a", T0 + 4 * MINUTE),
        ("a", T0 + 9 * MINUTE), ("a", T0 + 120 * MINUTE),
    ]:  # fmt: skip
        await publish(message_id, at)
    recorder = Recorder()
    async with Worker(worker_settings, recorder, CODEC) as worker:
        assert await worker.run(count=6, timeout=60) == 6
        assert sum(worker.metrics.duplicates.values()) == 3
    assert recorder.handled == ["a", "b", "a"]  # outside the 1 h window: processed again


async def test_the_window_is_rebuilt_from_the_log_after_a_restart(
    worker_settings: WorkerSettings, publish: Publish
) -> None:
    for n in range(5):
        await publish(f"m{n}", T0 + n * MINUTE)
    async with Worker(worker_settings, Recorder(), CODEC) as worker:
        assert await worker.run(count=5, timeout=60) == 5

    await publish("m1", T0 + 10 * MINUTE)  # a retry arriving after the restart
    await publish("m9", T0 + 11 * MINUTE)
    after = Recorder()
    async with Worker(worker_settings, after, CODEC) as worker:
        assert await worker.run(count=2, timeout=60) == 2
        assert sum(worker.metrics.duplicates.values()) == 1
    assert after.handled == ["m9"]


async def test_poison_records_go_to_the_dlq_and_the_partition_moves_on(
    worker_settings: WorkerSettings, publish: Publish, read_records: Reader
) -> None:
    await publish("garbage", T0, value=b"not avro at all")
    await publish("bad", T0 + 1)
    await publish("good", T0 + 2)
    recorder = Recorder(poison=frozenset({"bad"}))
    async with Worker(worker_settings, recorder, CODEC) as worker:
        assert await worker.run(count=3, timeout=60) == 3
        assert sum(worker.metrics.dead_lettered.values()) == 2
    assert recorder.handled == ["good"]

    dead = await read_records(worker_settings.dlq, 2)
    assert dead[0].value == b"not avro at all"
    assert dead[0].key == b"conversation"
    headers = [dict(record.headers) for record in dead]
    assert headers[0]["uplink-dlq-reason"].startswith(b"undecodable")
    assert headers[1]["uplink-dlq-reason"] == b"bad is poison"
    assert [h["uplink-dlq-offset"] for h in headers] == [b"0", b"1"]
    assert {h["uplink-dlq-topic"] for h in headers} == {worker_settings.topics.messages.encode()}
    assert {h["uplink-dlq-worker"] for h in headers} == {b"test"}


async def test_transient_failures_are_retried_in_order_never_skipped(
    worker_settings: WorkerSettings, publish: Publish
) -> None:
    await publish("x", T0)
    await publish("y", T0 + 1)
    recorder = Recorder(flaky={"x": 3})
    async with Worker(worker_settings, recorder, CODEC) as worker:
        assert await worker.run(count=2, timeout=60) == 2
        assert sum(worker.metrics.retries.values()) == 3
    assert recorder.handled == ["x", "y"]


async def test_metrics_render_as_prometheus_text(
    worker_settings: WorkerSettings, publish: Publish
) -> None:
    await publish("m", T0)
    await publish("m", T0 + MINUTE)
    async with Worker(worker_settings, Recorder(), CODEC) as worker:
        await worker.run(count=2, timeout=60)
        text = worker.metrics.render().decode()
    topic = worker_settings.topics.messages
    labels = f'{{partition="0",topic="{topic}",worker="test"}}'  # rendered in sorted order
    assert f"uplink_worker_processed_total{labels} 1.0" in text
    assert f"uplink_worker_duplicates_total{labels} 1.0" in text


async def test_metrics_are_served_on_the_workers_own_port(
    worker_settings: WorkerSettings, publish: Publish
) -> None:
    await publish("served", T0)
    settings = dataclasses.replace(worker_settings, metrics_port=free_port())
    worker = Worker(settings, Recorder(), CODEC)
    assembly = Assembly(
        settings.kafka,
        settings.topics,
        [worker],
        registry=worker.metrics.registry,
        metrics_port=settings.metrics_port,
    )
    started = asyncio.Event()
    running = asyncio.create_task(run(assembly, timeout=60, ready=started.set))
    await started.wait()  # the launcher serves the port once the worker has started
    async with asyncio.timeout(60):
        while worker.metrics.processed.total() < 1:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{settings.metrics_port}/metrics")
    assembly.request_stop()
    await running
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "uplink_worker_processed_total{" in response.text
    assert 'uplink_worker_commit_seconds_bucket{le="' in response.text
    with pytest.raises(httpx.ConnectError):  # the launcher closed the port as it stopped
        async with httpx.AsyncClient() as client:
            await client.get(f"http://127.0.0.1:{settings.metrics_port}/metrics")
