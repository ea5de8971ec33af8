"""HTTP outputs of the router: signed POSTs, at least once, never holding up a partition.

- ``Deliverer``: one httpx client per endpoint with its own timeout and concurrency limit, so a
  slow or dead endpoint only ever waits on its own slots. Every POST carries the push's original
  JSON, ``Idempotency-Key: <messageId>`` and an HMAC-SHA256 signature (see ``sign``).
- ``FirstAttempts``: the first attempt of each delivery runs in the background while the router
  goes on; the router's commit collects what has not been delivered and parks it in the first
  delay topic, inside the same Kafka transaction as the input offsets (so a crash re-routes the
  push rather than losing the delivery).
- ``parked``/``park``: a delivery as a record of a delay topic, which ``Redeliveries``
  (redelivery.py) reads when it is due.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import httpx
from aiokafka import ConsumerRecord, TopicPartition

from consumers.router.metrics import RouterMetrics
from consumers.router.rules import Endpoint
from consumers.router.settings import RouterSettings
from uplink.http import HttpClients
from uplink.kafka import Producer
from uplink.resources import Resource

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Uplink-Signature"
TIMESTAMP_HEADER = "X-Uplink-Timestamp"

# Headers of a delivery parked in a delay topic (the value and key are the input record's).
H_ENDPOINT = "uplink-endpoint"
H_RULE = "uplink-rule"
H_ATTEMPTS = "uplink-attempts"  # attempts made (or started) so far
H_DUE = "uplink-due"  # epoch ms of the next attempt
H_REASON = "uplink-reason"  # why the last attempt failed
H_SOURCE = "uplink-source"  # topic/partition@offset of the input record
# On a settlement: the final answer (delivered, refused) to a first attempt that was still in
# flight when its delivery was parked (settlements.py).
H_SETTLED = "uplink-settled"
_OWN_HEADERS = frozenset({H_ENDPOINT, H_RULE, H_ATTEMPTS, H_DUE, H_REASON, H_SETTLED})
IN_FLIGHT = "still in flight at commit"  # the reason of a delivery parked with its POST going

Headers = list[tuple[str, bytes]]


def header(record: ConsumerRecord[bytes, bytes], name: str) -> str | None:
    """The header's first value (the router's own headers appear once)."""
    for key, value in record.headers or ():
        if key == name:
            text: str = value.decode("utf-8", "replace")
            return text
    return None


def source_of(record: ConsumerRecord[bytes, bytes]) -> str:
    """Where a push entered the router: the ``uplink-source`` it carries already (a re-driven
    record keeps its first), else the record itself as ``topic/partition@offset``."""
    return header(record, H_SOURCE) or f"{record.topic}/{record.partition}@{record.offset}"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``v1=`` + hex HMAC-SHA256 over ``<timestamp>.<body>`` (the receiver recomputes it)."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + digest.hexdigest()


class Verdict(enum.Enum):
    """What one delivery attempt came to."""

    DELIVERED = "delivered"
    RETRY = "retry"  # a timeout, a connection error, 408, 429, 5xx
    REFUSED = "refused"  # any other status: retrying would not help → DLQ


@dataclass(frozen=True)
class Attempt:
    verdict: Verdict
    reason: str = ""


class Deliverer(Resource):
    """POSTs to the endpoints of the rules file. ``start()``/``stop()`` or ``async with``."""

    def __init__(
        self,
        endpoints: Mapping[str, Endpoint],
        metrics: RouterMetrics,
        clock: Callable[[], float] = time.time,
        remember: int = 100_000,
        clients: HttpClients | None = None,
    ) -> None:
        self._endpoints = dict(endpoints)
        self._new_client = clients if clients is not None else HttpClients()
        self._metrics = metrics
        self._clock = clock
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}
        # The last final answer (delivered or refused) of each (endpoint, messageId) this process
        # posted recently: a delivery parked while its first attempt was still in flight is
        # settled by that attempt's answer, not sent again.
        self._answers: OrderedDict[tuple[str, str], Attempt] = OrderedDict()
        # Posts under way (waiting for a slot, or for the answer), set when they end.
        self._posting: dict[tuple[str, str], asyncio.Event] = {}
        self._remember = remember

    async def start(self) -> None:
        for name, endpoint in self._endpoints.items():
            if name not in self._clients:
                self._clients[name] = self._new_client(
                    timeout=httpx.Timeout(endpoint.timeout),
                    limits=httpx.Limits(
                        max_connections=endpoint.concurrency,
                        max_keepalive_connections=endpoint.concurrency,
                    ),
                )
                self._slots[name] = asyncio.Semaphore(endpoint.concurrency)

    async def stop(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.aclose()

    def endpoint(self, name: str) -> Endpoint | None:
        return self._endpoints.get(name)

    def delivered_recently(self, endpoint: str, message_id: str) -> bool:
        answer = self._answers.get((endpoint, message_id))
        return answer is not None and answer.verdict is Verdict.DELIVERED

    async def posted(self, endpoint: str, message_id: str) -> None:
        """Returns once no post of this delivery is under way (one parked while in flight)."""
        posting = self._posting.get((endpoint, message_id))
        if posting is not None:
            await posting.wait()

    def answer(self, endpoint: str, message_id: str) -> Attempt | None:
        """The last final answer (delivered or refused) to a recent post, if any."""
        return self._answers.get((endpoint, message_id))

    def _remember_answer(self, endpoint: str, message_id: str, attempt: Attempt) -> None:
        key = (endpoint, message_id)
        if attempt.verdict is Verdict.RETRY:
            self._answers.pop(key, None)  # not settled: a parked copy must be tried again
            return
        self._answers[key] = attempt
        self._answers.move_to_end(key)
        if len(self._answers) > self._remember:
            self._answers.popitem(last=False)

    async def post(self, endpoint: str, body: bytes, message_id: str, rule: str) -> Attempt:
        key = (endpoint, message_id)
        posting = self._posting.get(key)
        if posting is not None:
            return await self._post(endpoint, body, message_id, rule)
        posting = self._posting[key] = asyncio.Event()
        try:
            return await self._post(endpoint, body, message_id, rule)
        finally:
            del self._posting[key]
            posting.set()

    async def _post(self, endpoint: str, body: bytes, message_id: str, rule: str) -> Attempt:
        spec = self._endpoints[endpoint]
        client = self._clients.get(endpoint)
        if client is None:
            raise RuntimeError("deliverer not started")
        timestamp = str(int(self._clock()))
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": message_id,
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(spec.secret.reveal(), timestamp, body),
            "X-Uplink-Rule": rule,
        }
        async with self._slots[endpoint]:
            started = time.perf_counter()
            try:
                response = await client.post(spec.url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                attempt = Attempt(Verdict.RETRY, f"{type(exc).__name__}: {exc}".strip(": "))
                self._remember_answer(endpoint, message_id, attempt)
                return attempt
            finally:
                self._metrics.observe_delivery(endpoint, time.perf_counter() - started)
        status = response.status_code
        if 200 <= status < 300:
            self._metrics.delivered[endpoint] += 1
            attempt = Attempt(Verdict.DELIVERED)
        elif status in (408, 429) or status >= 500:
            attempt = Attempt(Verdict.RETRY, f"HTTP {status} from {spec.url}")
        else:
            attempt = Attempt(Verdict.REFUSED, f"HTTP {status} from {spec.url}")
        self._remember_answer(endpoint, message_id, attempt)
        return attempt


@dataclass
class Delivery:
    """One HTTP output of one routed push."""

    endpoint: str
    rule: str
    record: ConsumerRecord[bytes, bytes]
    message_id: str
    body: bytes
    attempt: Attempt | None = None  # None while in flight
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    # Still in flight when its partition was committed: parked, and settled by its answer.
    parked: bool = False
    # Parked: whether its copy reached the delay topic (its transaction committed).
    copy: asyncio.Future[bool] | None = field(default=None, repr=False)

    @property
    def source(self) -> str:
        """The input record, as its parked copy's ``uplink-source`` names it."""
        return source_of(self.record)


AnsweredLate = Callable[[Delivery], None]


class FirstAttempts:
    """First attempts in the background; ``settle`` hands back what a commit must park.

    An attempt still in flight at the commit is parked; its final answer (delivered, refused)
    is handed to ``answered_late``, which settles the parked copy (settlements.py)."""

    def __init__(
        self,
        deliverer: Deliverer,
        max_pending: int = 1000,
        answered_late: AnsweredLate | None = None,
    ) -> None:
        self._deliverer = deliverer
        self._answered_late = answered_late
        self._max_pending = max_pending  # per endpoint; beyond it a delivery is parked at once
        self._pending: dict[str, int] = {}
        self._by_partition: dict[TopicPartition, list[Delivery]] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # including those of parked deliveries

    def submit(self, tp: TopicPartition, delivery: Delivery) -> None:
        self._by_partition.setdefault(tp, []).append(delivery)
        if self._pending.get(delivery.endpoint, 0) >= self._max_pending:
            # The endpoint is this far behind: park it rather than hold up the partition.
            delivery.attempt = Attempt(Verdict.RETRY, "too many deliveries in flight")
            return
        self._pending[delivery.endpoint] = self._pending.get(delivery.endpoint, 0) + 1
        task = asyncio.create_task(self._attempt(delivery))
        delivery.task = task
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._finished(delivery, done))

    async def _attempt(self, delivery: Delivery) -> None:
        delivery.attempt = await self._deliverer.post(
            delivery.endpoint, delivery.body, delivery.message_id, delivery.rule
        )
        late = self._answered_late
        if delivery.parked and delivery.attempt.verdict is not Verdict.RETRY and late is not None:
            late(delivery)

    def _finished(self, delivery: Delivery, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._pending[delivery.endpoint] -= 1
        if delivery.attempt is None:
            # Cancelled or crashed: the delivery is not done, so it must be parked, not lost.
            error = None if task.cancelled() else task.exception()
            delivery.attempt = Attempt(Verdict.RETRY, f"attempt failed: {error!r}")
            if error is not None:
                log.error("delivery to %s crashed", delivery.endpoint, exc_info=error)

    async def settle(self, partitions: Iterable[TopicPartition], grace: float) -> list[Delivery]:
        """The deliveries of ``partitions`` not delivered after up to ``grace`` seconds; the
        partitions' deliveries are forgotten (attempts still in flight go on)."""
        deliveries = [d for tp in partitions for d in self._by_partition.pop(tp, [])]
        running = [d.task for d in deliveries if d.task is not None and not d.task.done()]
        if running and grace > 0:
            await asyncio.wait(running, timeout=grace)
        unsettled = []
        for delivery in deliveries:
            if delivery.attempt is None:
                delivery.parked = True
                delivery.copy = asyncio.get_running_loop().create_future()
                unsettled.append(delivery)
            elif delivery.attempt.verdict is not Verdict.DELIVERED:
                unsettled.append(delivery)
        return unsettled

    async def stop(self) -> None:
        """Cancel attempts in flight: either their offsets were not committed (the push is
        routed again) or they were parked already (the retry loop delivers them)."""
        tasks = list(self._tasks)
        self._by_partition.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def delay_headers(
    record: ConsumerRecord[bytes, bytes],
    endpoint: str,
    rule: str,
    attempts: int,
    due_ms: int,
    reason: str,
) -> Headers:
    kept = [(k, v) for k, v in (record.headers or ()) if k not in _OWN_HEADERS]
    if not any(k == H_SOURCE for k, _ in kept):
        kept.append((H_SOURCE, source_of(record).encode()))
    return [
        *kept,
        (H_ENDPOINT, endpoint.encode()),
        (H_RULE, rule.encode()),
        (H_ATTEMPTS, str(attempts).encode()),
        (H_DUE, str(due_ms).encode()),
        (H_REASON, reason.encode()[:1000]),
    ]


class Parked(NamedTuple):
    """A delivery as a record of a delay topic."""

    topic: str
    value: bytes
    key: bytes | None
    headers: Headers


def parked(
    settings: RouterSettings,
    record: ConsumerRecord[bytes, bytes],
    endpoint: str,
    rule: str,
    attempts: int,
    reason: str,
    step: int,
    clock: Callable[[], float] = time.time,
) -> Parked:
    """The delivery as a record of delay topic ``step``, due after that step's delay."""
    due_ms = int((clock() + settings.delays[step - 1]) * 1000)
    return Parked(
        settings.delay_topic(step),
        record.value,
        record.key,
        delay_headers(record, endpoint, rule, attempts, due_ms, reason),
    )


async def park(producer: Producer, delivery: Parked) -> None:
    """Put a delivery into its delay topic."""
    await producer.send(delivery.topic, delivery.value, key=delivery.key, headers=delivery.headers)
