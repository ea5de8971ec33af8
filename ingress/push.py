"""``POST /v1/uplink``: validate a push, make it durable in Kafka, and only then answer 200.

A plain ASGI app rather than a ``func(request) -> response`` endpoint: it is the hot path, and
building Request and Response objects per push cost a tenth of a request's CPU
(bench/RESULTS.md, "Ingress load").
"""

from __future__ import annotations

import logging
import time

import orjson
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from ingress.auth import TokenAuth
from ingress.exceptions import (
    BodyTooLarge,
    NotDurable,
    NotRegistered,
    Overloaded,
    Refused,
    Unreachable,
)
from ingress.exchange import AsgiExchange, Exchange
from ingress.metrics import IngressMetrics
from ingress.producer import DurableProducer
from ingress.responses import JSON_HEADERS
from schemas import NotAPush, PushCodec
from uplink.registry.client import Registration
from uplink.settings import IngressSettings

log = logging.getLogger(__name__)


class PushEndpoint:
    """The push handler; its collaborators are passed in by ``create_app``."""

    def __init__(
        self,
        settings: IngressSettings,
        codec: PushCodec,
        producer: DurableProducer,
        metrics: IngressMetrics,
        registration: Registration | None = None,
    ) -> None:
        self._settings = settings
        # Set with a registry: until the schema has its id, pushes get 503 (the provider retries).
        self._registration = registration
        self._topics = settings.topics
        self._codec = codec
        self._producer = producer
        self._metrics = metrics
        self._auth = TokenAuth(settings.token) if settings.token is not None else None
        self._unavailable_headers = [
            *JSON_HEADERS,
            (b"retry-after", str(settings.retry_after).encode()),
        ]
        self._produce_seconds = metrics.produce_seconds
        self._answered = metrics.pushes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handle(AsgiExchange(scope, receive, send))

    async def handle(self, exchange: Exchange) -> None:
        """A push, from either server (``exchange``: its request and the way to answer it)."""
        # The headers only when asked for: on RSGI they are built on first use.
        auth = self._auth
        if auth is not None and not auth.allows(exchange.headers, exchange.query_string):
            # Not quarantined: anyone on the internet could fill the topic with junk.
            return await self._answer(exchange, 401, {"error": "unauthorized"})
        received_at = time.time_ns() // 1_000_000
        try:
            body = await exchange.body(self._settings.max_body_bytes)
        except ClientDisconnect:
            # Gone before the body arrived: nothing was accepted, the provider retries.
            log.info("client disconnected before sending the whole body")
            return None
        except BodyTooLarge as exc:
            return await self._quarantine(
                exchange,
                exchange.headers,
                exc.prefix,
                str(exc),
                received_at,
                status=413,
                truncated=True,
            )
        try:
            record = self._codec.parse(body, received_at)
        except NotAPush as exc:
            return await self._quarantine(
                exchange, exchange.headers, body, exc.reason, received_at, status=400
            )

        if self._registration is not None and not self._registration.done:
            problem = self._registration.problem
            return await self._unavailable(
                exchange, NotRegistered(f"schema not registered: {problem}")
            )
        started = time.perf_counter()
        try:
            await self._producer.send(
                self._topics.messages, self._codec.encode(record), key=self._codec.key(record)
            )
        except NotDurable as exc:
            return await self._unavailable(exchange, exc)
        self._produce_seconds.observe(time.perf_counter() - started)
        self._answered[200] += 1
        await exchange.respond(
            200, JSON_HEADERS, b'{"messageId":' + orjson.dumps(record["messageId"]) + b"}"
        )

    async def _quarantine(
        self,
        exchange: Exchange,
        request_headers: dict[bytes, bytes],
        body: bytes,
        reason: str,
        received_at: int,
        *,
        status: int,
        truncated: bool = False,
    ) -> None:
        """Keep a body that is not a push, then say why it was refused (503 if not kept)."""
        headers = [
            ("uplink-reason", reason.encode()),
            ("uplink-received-at", str(received_at).encode()),
            ("uplink-content-type", request_headers.get(b"content-type", b"")),
        ]
        if truncated:
            headers.append(("uplink-truncated", b"true"))
            headers.append(("uplink-content-length", request_headers.get(b"content-length", b"")))
        try:
            await self._producer.send(self._topics.quarantine, body, headers=headers)
        except NotDurable as exc:
            # The body must not be lost: the provider's retry is its way back in.
            return await self._unavailable(exchange, exc)
        self._metrics.quarantined["too_large" if truncated else "not_a_push"] += 1
        log.info("quarantined a body (%d bytes): %s", len(body), reason)
        error = "body too large" if truncated else "not a push"
        await self._answer(exchange, status, {"error": error, "reason": reason})

    async def _unavailable(self, exchange: Exchange, exc: NotDurable) -> None:
        cause = (
            "overloaded"
            if isinstance(exc, Overloaded)
            else "schema"
            if isinstance(exc, NotRegistered)
            else "unreachable"
            if isinstance(exc, Unreachable)
            else "refused"
            if isinstance(exc, Refused)
            else "kafka"
        )
        self._metrics.shed[cause] += 1
        self._answered[503] += 1
        payload = orjson.dumps({"error": "not durable, retry later", "reason": str(exc)})
        await exchange.respond(503, self._unavailable_headers, payload)

    async def _answer(self, exchange: Exchange, status: int, payload: dict[str, str]) -> None:
        self._answered[status] += 1
        await exchange.respond(status, JSON_HEADERS, orjson.dumps(payload))
