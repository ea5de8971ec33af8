"""The ingress application: ``create_app(settings)`` builds it; the lifespan owns the producer."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ingress.meta import META_PATH, Handshake, MetaEndpoint
from ingress.metrics import CONTENT_TYPE_LATEST, IngressMetrics
from ingress.producer import DurableProducer
from ingress.push import PushEndpoint
from schemas import PushCodec
from schemas.framing import Framing
from schemas.meta import MetaEventCodec, StatusCodec
from uplink import topology
from uplink.kafka import KafkaClients
from uplink.process import tune_gc
from uplink.registry.client import Registration, SchemaRegistry, subject
from uplink.resources import Resource
from uplink.settings import IngressSettings
from uplink.topics import ensure_topics

PUSH_PATH = "/v1/uplink"


class IngressApp(Starlette):
    """Starlette, with ``POST /v1/uplink`` handed straight to the push endpoint.

    A push is the hot path. Through Starlette's middleware stack and router it passed seven
    layers of coroutines, at the call and again at each resumption after an await, and two
    wrappers around every ``send``, a measurable share of a push's CPU (bench/RESULTS.md,
    "Push dispatch"). Any other request (other paths, other methods, the lifespan) goes
    through Starlette as before, and an unexpected error in a push still gets a 500, from
    uvicorn.
    """

    def __init__(self, push: PushEndpoint, meta: PushEndpoint | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.push = push
        self.meta = meta  # POST /v1/meta, when Meta's webhook is configured: the same shortcut

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and not scope.get("root_path")  # mounted elsewhere: Starlette's routing decides
        ):
            path = scope["path"]
            if path == PUSH_PATH:
                return await self.push(scope, receive, send)
            if path == META_PATH and self.meta is not None:
                return await self.meta(scope, receive, send)
        await super().__call__(scope, receive, send)


def create_app(settings: IngressSettings, *, clients: KafkaClients | None = None) -> IngressApp:
    """Build the ingress: every collaborator is made here and passed in."""
    created = topology.ingress(settings.topics, settings.kafka.max_request_size).creates

    def summary() -> str:
        shed = metrics.shed
        return (
            f"since start {shed['kafka'] + shed['unreachable']} pushes answered 503 for Kafka "
            f"({shed['unreachable']} at once), {producer.withdrawn} unsent records withdrawn"
        )

    producer = DurableProducer(
        clients if clients is not None else KafkaClients(settings.kafka),
        timeout=settings.produce_timeout,
        max_in_flight=settings.max_in_flight,
        linger_ms=settings.linger_ms,
        batch_bytes=settings.batch_bytes,
        unreachable_after=settings.kafka.unreachable_after,
        remind_every=settings.kafka.outage_reminder,
        summary=summary,
        prepare=(
            (lambda: ensure_topics(settings.kafka, settings.topics, created))
            if settings.create_topics
            else None
        ),
    )
    metrics = IngressMetrics(
        settings.topics.messages,
        in_flight=lambda: producer.in_flight,
        buffered=lambda: producer.buffered,
        withdrawn=lambda: producer.withdrawn,
        renewals=lambda: producer.renewals,
        reachable=lambda: producer.reachability.reachable,
        refusals=lambda: producer.refusals,
    )
    codec = PushCodec()
    meta = settings.meta
    webhook_on = meta.webhook and meta.verify_token is not None  # else /v1/meta is not served
    statuses, events = StatusCodec(), MetaEventCodec()
    registry: SchemaRegistry | None = None
    registrations: list[Registration] = []  # the push schema's first, then Meta's two
    if settings.registry is not None:
        registry = SchemaRegistry(settings.registry)
        topics = settings.topics
        framings: list[tuple[str, PushCodec | Framing]] = [(topics.messages, codec)]
        if webhook_on:
            framings += [(topics.statuses, statuses), (topics.meta_events, events)]
        registrations = [
            Registration(registry, subject(topic), framing.text, on_registered=framing.frame_with)
            for topic, framing in framings
        ]
    registration = registrations[0] if registrations else None
    schema: list[Resource] = [*([registry] if registry else []), *registrations]
    push = PushEndpoint(settings, codec, producer, metrics, registration)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(request: Request) -> Response:
        for pending in (r for r in registrations if not r.done):
            reason = f"schema not registered: {pending.subject}: {pending.problem}"
            return JSONResponse({"status": "not ready", "reason": reason}, 503)
        if await producer.check() and producer.refused is None:
            return JSONResponse({"status": "ready"})
        refused = producer.refused
        if refused is not None:
            said = {"reason": refused.reason, "refused": refused.refused, "check": refused.check}
            return JSONResponse({"status": "not ready", **said}, 503)
        return JSONResponse({"status": "not ready", "reason": "Kafka not reachable"}, 503)

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for resource in [*schema, producer]:  # the registry's client stops last
                await stack.enter_async_context(resource)
            yield
        # Leaving the block flushed the producer: every push still in flight got its answer.

    routes = [
        Route(PUSH_PATH, push, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    webhook = None
    if webhook_on and meta.verify_token is not None:
        webhook = MetaEndpoint(
            settings, codec, producer, metrics, statuses, events, registrations=registrations
        )
        routes += [
            Route(META_PATH, webhook, methods=["POST"]),
            Route(META_PATH, Handshake(meta.verify_token).answer, methods=["GET"]),
        ]
    return IngressApp(push, webhook, routes=routes, lifespan=lifespan)


def app_from_env() -> Starlette:
    """Factory for uvicorn's worker processes: each builds its settings from the environment."""
    app = create_app(IngressSettings.from_env(os.environ))
    tune_gc()
    return app
