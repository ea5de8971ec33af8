"""``/v1/meta``: Meta's WhatsApp Cloud API webhook, through the push path's producer and quarantine.

``GET`` is Meta's subscription handshake. ``POST`` is a signed webhook: its events fan out to one
record each (schemas/meta.py: messages in the push schema to the messages topic, statuses to the
statuses topic, every other field to the Meta events topic), all sent at once, and the answer is
200 only when the broker acknowledged every one of them. Otherwise 503: Meta (or the solution
provider relaying it) retries the whole POST, and the records that did get in the first time
are duplicates the workers' dedupe absorbs (a push by its wamid, a status by
wamid:status:timestamp, an event by its eventId).

A POST whose signature is missing or wrong gets 401 and is not quarantined, like a bad token: anyone
could fill the topic. A body over the size limit gets 413 and is not quarantined either: its
signature covers bytes that were never read, so nothing says it came from Meta.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Sequence
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response

from ingress.exceptions import BodyTooLarge, NotDurable, NotRegistered
from ingress.exchange import Exchange
from ingress.metrics import IngressMetrics
from ingress.producer import DurableProducer
from ingress.push import PushEndpoint
from ingress.responses import JSON_HEADERS
from ingress.signature import SignatureCheck
from schemas import NotAPush, PushCodec
from schemas.meta import MetaEventCodec, MetaWebhook, StatusCodec
from uplink.registry.client import Registration
from uplink.settings import IngressSettings, Secret

log = logging.getLogger(__name__)

META_PATH = "/v1/meta"


class Handshake:
    """``GET /v1/meta?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…``: the challenge back
    as plain text when the token is ours (compared in constant time), else 403."""

    def __init__(self, token: Secret) -> None:
        self._token = token.reveal().encode()

    async def answer(self, request: Request) -> Response:
        params = request.query_params
        offered = params.get("hub.verify_token", "").encode()
        challenge = params.get("hub.challenge")
        token_ok = hmac.compare_digest(offered, self._token)
        if params.get("hub.mode") != "subscribe" or not token_ok or not challenge:
            return PlainTextResponse("forbidden", status_code=403)
        return PlainTextResponse(challenge)


class MetaEndpoint(PushEndpoint):
    """``POST /v1/meta``: the push endpoint's body reading, quarantine, producer and answers,
    with Meta's signature in place of the token and one record per event."""

    def __init__(
        self,
        settings: IngressSettings,
        codec: PushCodec,
        producer: DurableProducer,
        metrics: IngressMetrics,
        statuses: StatusCodec,
        events: MetaEventCodec,
        *,
        registrations: Sequence[Registration] = (),
    ) -> None:
        super().__init__(settings, codec, producer, metrics)
        self._signature = SignatureCheck(settings.meta.app_secrets)
        self._statuses = statuses
        self._events = events
        self._webhook = MetaWebhook(codec, statuses)
        # With a registry: the three schemas' ids, without which no record is written (503).
        self._registrations = tuple(registrations)

    async def handle(self, exchange: Exchange) -> None:
        headers = exchange.headers
        received_at = time.time_ns() // 1_000_000
        try:
            body = await exchange.body(self._settings.max_body_bytes)
        except ClientDisconnect:
            log.info("client disconnected before sending the whole webhook")
            return None
        except BodyTooLarge as exc:
            return await self._answer(
                exchange, 413, {"error": "body too large", "reason": str(exc)}
            )
        problem = self._signature.problem(headers, body)
        if problem is not None:
            return await self._answer(exchange, 401, {"error": "unauthorized", "reason": problem})
        try:
            webhook = self._webhook.parse(body, received_at)
        except NotAPush as exc:
            return await self._quarantine(
                exchange, headers, body, exc.reason, received_at, status=400
            )

        for pending in (r for r in self._registrations if not r.done):
            reason = f"schema not registered: {pending.subject}: {pending.problem}"
            return await self._unavailable(exchange, NotRegistered(reason))
        topics = self._topics
        sends = [
            *(
                self._producer.send(topics.messages, self._codec.encode(r), key=self._codec.key(r))
                for r in webhook.messages
            ),
            *(
                self._producer.send(
                    topics.statuses, self._statuses.encode(r), key=self._statuses.key(r)
                )
                for r in webhook.statuses
            ),
            *(
                self._producer.send(
                    topics.meta_events, self._events.encode(r), key=self._events.key(r)
                )
                for r in webhook.events
            ),
        ]
        started = time.perf_counter()
        if len(sends) == 1:
            # The usual POST, one message: no tasks to make (gather wraps each coroutine in one).
            try:
                await sends[0]
                errors: list[BaseException] = []
            except NotDurable as exc:
                errors = [exc]
        else:
            # All at once, then every answer awaited: one slow partition does not serialise the
            # rest, and no record is left in flight behind a 503.
            outcomes = await asyncio.gather(*sends, return_exceptions=True)
            errors = [o for o in outcomes if isinstance(o, BaseException)]
        failed = [e for e in errors if isinstance(e, NotDurable)]
        if len(failed) != len(errors):
            # A bug, not the broker: uvicorn answers 500.
            raise next(e for e in errors if not isinstance(e, NotDurable))
        if failed:
            log.info("%d of %d records of a webhook not durable: 503", len(failed), len(sends))
            return await self._unavailable(exchange, failed[0])
        self._produce_seconds.observe(time.perf_counter() - started)
        counts = self._metrics.meta_records
        counts["message"] += len(webhook.messages)
        counts["status"] += len(webhook.statuses)
        counts["event"] += len(webhook.events)
        answer: dict[str, Any] = {
            "messages": len(webhook.messages),
            "statuses": len(webhook.statuses),
            "events": len(webhook.events),
        }
        self._answered[200] += 1
        await exchange.respond(200, JSON_HEADERS, orjson.dumps(answer))
