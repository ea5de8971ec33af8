"""The router against a real broker and real HTTP receivers on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import inspect
import time
import tomllib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupCoordinatorNotAvailableError
from aiokafka.partitioner import DefaultPartitioner
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from consumers.router.exceptions import RouterError
from consumers.router.handler import KeyHashes, Router, TransactionalOutputs
from consumers.router.metrics import RouterMetrics
from consumers.router.rules import RULE_HEADER, Rules, ToTopic, compile_rules
from consumers.router.settings import RouterSettings
from consumers.runtime.worker import Worker
from schemas import PushCodec
from tests.conftest import EXAMPLES, Reader, Server
from tests.consumers.conftest import SettingsFactory
from uplink.cli import launcher, workers
from uplink.kafka import KafkaClients
from uplink.settings import WorkerSettings
from uplink.topics import ensure_topics

pytestmark = pytest.mark.anyio

CODEC = PushCodec()
EXAMPLE_NAMES = sorted(path.stem for path in EXAMPLES.glob("*.json"))
SECRET = "test-secret"


def example_raw(name: str, message_id: str) -> bytes:
    body = orjson.loads(EXAMPLES.joinpath(f"{name}.json").read_bytes())
    body["messageId"] = message_id
    return orjson.dumps(body)


async def send_pushes(
    settings: WorkerSettings, pushes: list[bytes]
) -> dict[str, tuple[bytes, dict[str, Any]]]:
    """Produce raw pushes as the ingress would; returns messageId → (Avro value, decoded)."""
    await ensure_topics(settings.kafka, settings.topics)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, linger_ms=5)
    await producer.start()
    sent: dict[str, tuple[bytes, dict[str, Any]]] = {}
    try:
        futures = []
        for raw in pushes:
            record = CODEC.parse(raw, int(time.time() * 1000))
            value = CODEC.encode(record)
            # A retried duplicate is a new record; the first one is what gets routed.
            sent.setdefault(record["messageId"], (value, CODEC.decode(value)))
            futures.append(
                await producer.send(settings.topics.messages, value, key=CODEC.key(record))
            )
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sent


@dataclass
class Receiver:
    """An HTTP endpoint on loopback that fails its first ``failures`` requests per push, and
    every request for the pushes in ``broken`` (keyed by idempotency key) while they are there."""

    failures: int = 0
    broken: set[str] = field(default_factory=set)
    status: int = 503
    hang: bool = False  # failures hang until ``release`` is set instead of answering
    release: asyncio.Event = field(default_factory=asyncio.Event)
    times: list[float] = field(default_factory=list)  # monotonic, of each accepted request
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    accepted: Counter[str] = field(default_factory=Counter)
    tries: Counter[str] = field(default_factory=Counter)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            body = await request.body()
            key = request.headers["idempotency-key"]
            self.requests.append((dict(request.headers), body))
            self.tries[key] += 1
            self.changed.set()
            if self.tries[key] <= self.failures or key in self.broken:
                if self.hang:
                    await self.release.wait()
                return Response(status_code=self.status)
            self.accepted[key] += 1
            self.times.append(time.monotonic())
            return Response(status_code=204)

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 60) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


def verify(headers: dict[str, str], body: bytes, secret: str = SECRET) -> bool:
    """The receiver's side of the recipe in docs/router.md."""
    timestamp = headers["x-uplink-timestamp"]
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest(headers["x-uplink-signature"], "v1=" + expected.hexdigest())


@asynccontextmanager
async def running_router(
    settings: WorkerSettings, router_settings: RouterSettings, rules: Rules
) -> AsyncIterator[tuple[Worker, RouterMetrics, Router]]:
    """The router and its re-deliveries wired and launched as ``uplink router`` does, running
    until the block ends."""
    assembly = workers.router(settings, router_settings, rules)
    worker = assembly.workers[0]
    router = worker.handler
    assert isinstance(router, Router)
    ready = asyncio.Event()
    running = asyncio.create_task(launcher.run(assembly, ready=ready.set))
    try:
        async with asyncio.timeout(60):
            await asyncio.wait(
                [asyncio.create_task(ready.wait()), running], return_when="FIRST_COMPLETED"
            )
        if running.done():
            running.result()  # start-up failed: raise why
        yield worker, router.metrics, router
    finally:
        assembly.request_stop()
        await running


def make_rules(text: str, **environ: str) -> Rules:
    return compile_rules(tomllib.loads(text), environ, source="test rules")


@pytest.fixture
def router_settings(make_worker_settings: SettingsFactory) -> RouterSettings:
    prefix = make_worker_settings("router").topics.messages
    return RouterSettings(delays=(0.2, 0.5, 1.0), delay_pattern=prefix + ".delay.{step}")


async def committed(settings: WorkerSettings, total: int) -> bool:
    """Whether the group committed positions adding up to ``total`` records."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(settings.group)
    except GroupCoordinatorNotAvailableError:
        return False  # the coordinator is still loading the group
    finally:
        await admin.close()
    return sum(meta.offset for meta in offsets.values() if meta.offset >= 0) >= total


async def wait_until(condition: Callable[[], bool | Awaitable[bool]], timeout: float = 60) -> None:
    """Poll: the broker has no push for "committed", nor the metrics for "counted"."""
    async with asyncio.timeout(timeout):
        while True:
            result = condition()
            if await result if inspect.isawaitable(result) else result:
                return
            await asyncio.sleep(0.1)


async def test_topic_outputs_once_per_rule_same_avro_value_rule_header(
    make_worker_settings: SettingsFactory,
    router_settings: RouterSettings,
    read_records: Reader,
) -> None:
    settings = make_worker_settings("router", commit_interval=0.2)
    out = settings.topics.messages + ".out"
    rules = make_rules(
        f"""
        [default]
        topic = "{out}.unmatched"
        [[rule]]
        name = "everything"
        match = {{ not = {{ type = "unknown" }} }}
        actions = [{{ topic = "{out}.all" }}]
        continue = true
        [[rule]]
        name = "media"
        match = {{ hasMedia = true }}
        actions = [{{ topic = "{out}.media" }}]
        [[rule]]
        name = "texts"
        match = {{ type = "text", not = {{ forwarded = true }} }}
        actions = [{{ topic = "{out}.texts" }}]
        [[rule]]
        name = "spam"
        match = {{ type = "unsupported" }}
        actions = [{{ drop = true }}]
        """
    )
    raws = [example_raw(name, f"{name}-{n}") for n in range(20) for name in EXAMPLE_NAMES]
    sent = await send_pushes(settings, raws + raws[:30])  # and 30 retried duplicates
    async with running_router(settings, router_settings, rules) as (worker, metrics, _router):
        await wait_until(lambda: committed(settings, len(raws) + 30))
    exposition = worker.metrics.render().decode()

    expected: dict[str, dict[str, str]] = {}  # topic → messageId → rule
    for message_id, (_, push) in sent.items():
        for rule, action in rules.route(push).pairs:
            if isinstance(action, ToTopic):
                expected.setdefault(action.topic, {})[message_id] = rule
    assert set(expected) == {f"{out}.{s}" for s in ("all", "media", "texts", "unmatched")}
    partitions = list(range(settings.topics.partitions))
    assert len(expected[f"{out}.unmatched"]) == 20
    inputs: dict[str, ConsumerRecord[bytes, bytes]] = {}  # messageId → its first sighting
    for r in await read_records(settings.topics.messages):
        inputs.setdefault(CODEC.decode(r.value or b"")["messageId"], r)
    for topic, ids in expected.items():
        records = await read_records(topic)
        decoded = [CODEC.decode(r.value or b"")["messageId"] for r in records]
        assert Counter(decoded) == Counter(set(ids)), topic  # each exactly once
        for record in records:
            message_id = CODEC.decode(record.value or b"")["messageId"]
            assert record.value == sent[message_id][0]  # the same Avro record
            assert dict(record.headers)[RULE_HEADER].decode() == ids[message_id]
            source = inputs[message_id]  # duplicates are not routed
            assert (record.key, record.timestamp) == (source.key, source.timestamp)
            # Batched by the router itself: still the partition `send` would pick for the key.
            assert record.partition == DefaultPartitioner()(source.key, partitions, partitions)
    assert metrics.matches["spam"] == 20 and metrics.outputs["drop"] == 20
    assert metrics.matches["everything"] == len(sent) - 20  # all but the unknown ones
    assert metrics.matches["default"] == 20
    assert 'uplink_router_matches_total{rule="spam"} 20.0' in exposition
    assert f'uplink_router_outputs_total{{destination="topic:{out}.unmatched"}} 20.0' in exposition


async def test_endpoint_failing_three_times_then_recovering_gets_each_push_once_signed(
    make_worker_settings: SettingsFactory,
    router_settings: RouterSettings,
    serve: Server,
) -> None:
    settings = make_worker_settings("router", commit_interval=0.2)
    flaky = Receiver(failures=3)
    url = await serve(flaky.app())
    rules = make_rules(
        f"""
        [endpoint.flaky]
        url = "{url}/hook"
        secret_env = "FLAKY_SECRET"
        timeout = 2
        [[rule]]
        name = "to-flaky"
        match = {{}}
        actions = [{{ post = "flaky" }}]
        """,
        FLAKY_SECRET=SECRET,
    )
    sent = await send_pushes(settings, [example_raw("text", f"flaky-{n}") for n in range(5)])
    async with running_router(settings, router_settings, rules) as (_, metrics, _router):
        await flaky.wait_for(lambda: set(flaky.accepted) == set(sent))
    assert all(flaky.accepted[m] == 1 for m in sent)
    assert all(flaky.tries[m] == 4 for m in sent)  # the first attempt and three retries
    for headers, body in flaky.requests:
        assert verify(headers, body)
        assert body == sent[headers["idempotency-key"]][1]["raw"]  # the original push JSON
        assert headers["content-type"] == "application/json"
        assert not verify(headers, body + b" ")  # a tampered body fails the check
    assert metrics.retries["flaky"] == 15 and metrics.delivered["flaky"] == 5
    assert metrics.dead_lettered["flaky"] == 0


async def test_endpoint_down_for_good_ends_in_dlq_while_another_keeps_receiving(
    make_worker_settings: SettingsFactory,
    router_settings: RouterSettings,
    serve: Server,
    read_records: Reader,
) -> None:
    settings = make_worker_settings("router", commit_interval=0.2)
    # Down: every POST hangs until ``release``, then fails (500) from then on.
    down, healthy = Receiver(failures=1_000_000, status=500, hang=True), Receiver()
    down_url, healthy_url = await serve(down.app()), await serve(healthy.app())
    rules = make_rules(
        f"""
        [endpoint.down]
        url = "{down_url}/hook"
        secret = "{SECRET}"
        timeout = 300.0
        [endpoint.healthy]
        url = "{healthy_url}/hook"
        secret = "{SECRET}"
        concurrency = 2
        [[rule]]
        name = "both"
        match = {{}}
        actions = [{{ post = "down" }}, {{ post = "healthy" }}]
        """
    )
    sent = await send_pushes(settings, [example_raw("image", f"down-{n}") for n in range(30)])
    async with running_router(settings, router_settings, rules) as (_, metrics, _router):
        # The healthy endpoint gets everything while the other has answered nothing yet.
        await healthy.wait_for(lambda: set(healthy.accepted) == set(sent))
        assert not down.release.is_set() and sum(down.tries.values()) <= len(sent)
        down.release.set()
        dlq = await read_records(settings.dlq, count=len(sent), timeout=60)
    assert all(healthy.accepted[m] == 1 for m in sent)
    assert all(verify(h, b) for h, b in healthy.requests)
    assert all(down.tries[m] == 4 for m in sent)
    by_id = {CODEC.decode(r.value or b"")["messageId"]: dict(r.headers) for r in dlq}
    assert set(by_id) == set(sent)
    for headers in by_id.values():
        reason = headers["uplink-dlq-reason"].decode()
        assert reason.startswith("http:down: gave up after 4 attempts: HTTP 500"), reason
        assert headers["uplink-endpoint"] == b"down"
    assert metrics.dead_lettered["down"] == len(sent)
    assert metrics.dead_lettered["healthy"] == 0


async def test_refused_delivery_goes_to_the_dlq_without_retries(
    make_worker_settings: SettingsFactory,
    router_settings: RouterSettings,
    serve: Server,
    read_records: Reader,
) -> None:
    settings = make_worker_settings("router", commit_interval=0.2)
    refusing = Receiver(failures=1_000_000, status=422)
    url = await serve(refusing.app())
    rules = make_rules(
        f"""
        [endpoint.strict]
        url = "{url}/hook"
        secret = "{SECRET}"
        [[rule]]
        name = "r"
        match = {{}}
        actions = [{{ post = "strict" }}]
        """
    )
    sent = await send_pushes(settings, [example_raw("text", f"refused-{n}") for n in range(3)])
    async with running_router(settings, router_settings, rules):
        dlq = await read_records(settings.dlq, count=3, timeout=60)
    assert {CODEC.decode(r.value or b"")["messageId"] for r in dlq} == set(sent)
    assert all(refusing.tries[m] == 1 for m in sent)
    assert all(b"HTTP 422" in dict(r.headers)["uplink-dlq-reason"] for r in dlq)


async def test_a_hanging_endpoint_does_not_slow_delivery_to_another(
    make_worker_settings: SettingsFactory,
    router_settings: RouterSettings,
    serve: Server,
) -> None:
    # Eight commits of five records: the first would wait for ever on the stuck endpoint if
    # commits waited for its attempts.
    settings = make_worker_settings("router", commit_interval=0.2, commit_every=5, max_batch=5)
    stuck, healthy = Receiver(failures=1_000_000, hang=True), Receiver()
    stuck_url, healthy_url = await serve(stuck.app()), await serve(healthy.app())
    rules = make_rules(
        f"""
        [endpoint.stuck]
        url = "{stuck_url}/hook"
        secret = "{SECRET}"
        timeout = 300.0
        concurrency = 2
        [endpoint.healthy]
        url = "{healthy_url}/hook"
        secret = "{SECRET}"
        [[rule]]
        name = "both"
        match = {{}}
        actions = [{{ post = "stuck" }}, {{ post = "healthy" }}]
        """
    )
    pushes = 40
    sent = await send_pushes(settings, [example_raw("text", f"stuck-{n}") for n in range(pushes)])
    try:
        async with running_router(settings, router_settings, rules):
            await healthy.wait_for(lambda: set(healthy.accepted) == set(sent))
    finally:
        stuck.release.set()
    assert all(healthy.accepted[m] == 1 for m in sent)
    # Every record was read past eight commits while the stuck endpoint answered nothing: had
    # a commit waited for its attempts, the router would still be at the first five.
    assert not stuck.accepted and len(stuck.requests) >= 2  # it was tried, and hung


async def test_a_new_owner_fences_the_previous_one_whose_transaction_then_counts_for_nothing(
    make_worker_settings: SettingsFactory,
    router_settings: RouterSettings,
    read_records: Reader,
) -> None:
    # One transaction for the whole run: only the stop would commit it.
    settings = make_worker_settings("router", commit_every=100_000, commit_interval=3600)
    out = settings.topics.messages + ".out"
    rules = make_rules(f'[[rule]]\nname = "all"\nmatch = {{}}\nactions = [{{ topic = "{out}" }}]')
    sent = await send_pushes(settings, [example_raw("text", f"zombie-{n}") for n in range(50)])
    tp = TopicPartition(settings.topics.messages, 0)
    successor = TransactionalOutputs(settings, router_settings, set(), KafkaClients(settings.kafka))
    with pytest.raises(RouterError, match="not committed"):
        async with running_router(settings, router_settings, rules) as (_, metrics, _router):
            await wait_until(lambda: metrics.outputs[f"topic:{out}"] == len(sent))
            # The partition's next owner starts its producer: the same transactional id.
            await successor.producer(tp)
    await successor.stop()
    assert await read_records(out) == []  # the zombie's routed records never became visible
    assert not await committed(settings, 1)  # nor did its offsets


async def test_two_routers_hand_partitions_over_without_duplicates_or_gaps(
    make_worker_settings: SettingsFactory,
    router_settings: RouterSettings,
    read_records: Reader,
) -> None:
    # Small transactions, so the first router is still busy when the second one joins.
    base = make_worker_settings("router", commit_interval=0.2, commit_every=20, max_batch=10)
    settings = dataclasses.replace(
        base, topics=dataclasses.replace(base.topics, messages_partitions=3)
    )
    out = settings.topics.messages + ".out"
    rules = make_rules(f'[[rule]]\nname = "all"\nmatch = {{}}\nactions = [{{ topic = "{out}" }}]')
    raws = [
        orjson.dumps(
            {**orjson.loads(example_raw("text", f"handover-{n}")), "from": {"phone": str(n)}}
        )
        for n in range(6000)
    ]  # in two halves: the second once both routers own partitions
    sent = await send_pushes(settings, raws[:3000])
    async with running_router(settings, router_settings, rules) as (_, first, one):
        await wait_until(lambda: first.outputs[f"topic:{out}"] >= 500)
        async with running_router(settings, router_settings, rules) as (_, second, two):
            await wait_until(lambda: bool(two.partitions) and bool(one.partitions))
            sent.update(await send_pushes(settings, raws[3000:]))  # for both of them
            await wait_until(lambda: second.outputs[f"topic:{out}"] >= 100)
        # The second one left: the first takes its partitions back.
        await wait_until(lambda: committed(settings, len(sent)))
    counts = Counter(CODEC.decode(r.value or b"")["messageId"] for r in await read_records(out))
    assert not [m for m, n in counts.items() if n > 1], "routed twice"
    assert set(counts) == set(sent)


def test_key_hashes_pick_the_partitions_of_the_default_partitioner() -> None:
    hashes, default = KeyHashes(limit=50), DefaultPartitioner()
    for n in range(2000):  # past the limit many times: the cache starts over
        key = f"6395110022481:{n % 300}".encode()
        partitions = list(range(n % 12 + 1))
        assert hashes(key, partitions, partitions) == default(key, partitions, partitions)
