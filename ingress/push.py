"""``POST /v1/uplink``: validate a push, make it durable in Kafka, and only then answer 200."""

from __future__ import annotations

import logging
import time

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ingress.auth import TokenAuth
from ingress.body import read_body
from ingress.exceptions import BodyTooLarge, NotDurable, Overloaded
from ingress.metrics import IngressMetrics
from ingress.producer import DurableProducer
from schemas import NotAPush, PushCodec
from uplink.settings import IngressSettings

log = logging.getLogger(__name__)

_JSON = "application/json"


class PushEndpoint:
    """The push handler; its collaborators are passed in by ``create_app``."""

    def __init__(
        self,
        settings: IngressSettings,
        codec: PushCodec,
        producer: DurableProducer,
        metrics: IngressMetrics,
    ) -> None:
        self._settings = settings
        self._topics = settings.topics
        self._codec = codec
        self._producer = producer
        self._metrics = metrics
        self._auth = TokenAuth(settings.token) if settings.token is not None else None
        self._retry_after = {"Retry-After": str(settings.retry_after)}
        self._produce_seconds = metrics.produce_seconds.labels(settings.topics.messages)
        self._answered = {
            code: metrics.pushes.labels(str(code)) for code in (200, 400, 401, 413, 503)
        }

    async def handle(self, request: Request) -> Response:
        if self._auth is not None and not self._auth.allows(request):
            # Not quarantined: anyone on the internet could fill the topic with junk.
            return self._answer(401, {"error": "unauthorized"})
        received_at = time.time_ns() // 1_000_000
        try:
            body = await read_body(request, self._settings.max_body_bytes)
        except BodyTooLarge as exc:
            return await self._quarantine(
                request, exc.prefix, str(exc), received_at, status=413, truncated=True
            )
        try:
            record = self._codec.parse(body, received_at)
        except NotAPush as exc:
            return await self._quarantine(request, body, exc.reason, received_at, status=400)

        started = time.perf_counter()
        try:
            await self._producer.send(
                self._topics.messages, self._codec.encode(record), key=self._codec.key(record)
            )
        except NotDurable as exc:
            return self._unavailable(exc)
        self._produce_seconds.observe(time.perf_counter() - started)
        self._answered[200].inc()
        return Response(
            b'{"messageId":' + orjson.dumps(record["messageId"]) + b"}", media_type=_JSON
        )

    async def _quarantine(
        self,
        request: Request,
        body: bytes,
        reason: str,
        received_at: int,
        *,
        status: int,
        truncated: bool = False,
    ) -> Response:
        """Keep a body that is not a push, then say why it was refused (503 if not kept)."""
        headers = [
            ("uplink-reason", reason.encode()),
            ("uplink-received-at", str(received_at).encode()),
            ("uplink-content-type", request.headers.get("content-type", "").encode()),
        ]
        if truncated:
            headers.append(("uplink-truncated", b"true"))
            headers.append(
                ("uplink-content-length", request.headers.get("content-length", "").encode())
            )
        try:
            await self._producer.send(self._topics.quarantine, body, headers=headers)
        except NotDurable as exc:
            # The body must not be lost: the provider's retry is its way back in.
            return self._unavailable(exc)
        self._metrics.quarantined.labels("too_large" if truncated else "not_a_push").inc()
        log.info("quarantined a body (%d bytes): %s", len(body), reason)
        error = "body too large" if truncated else "not a push"
        return self._answer(status, {"error": error, "reason": reason})

    def _unavailable(self, exc: NotDurable) -> Response:
        self._metrics.shed.labels("overloaded" if isinstance(exc, Overloaded) else "kafka").inc()
        self._answered[503].inc()
        return Response(
            orjson.dumps({"error": "not durable, retry later", "reason": str(exc)}),
            status_code=503,
            headers=self._retry_after,
            media_type=_JSON,
        )

    def _answer(self, status: int, payload: dict[str, str]) -> Response:
        self._answered[status].inc()
        return Response(orjson.dumps(payload), status_code=status, media_type=_JSON)
