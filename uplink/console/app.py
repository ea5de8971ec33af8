"""The console's Starlette app, built by one function from its settings."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas import PushCodec
from uplink.console import pages
from uplink.console.auth import Guard, Keys
from uplink.console.sampler import Sampler
from uplink.console.settings import ConsoleSettings
from uplink.kafka import KafkaClients
from uplink.mediastore import MediaReader
from uplink.operate.deadletters import WORKERS
from uplink.operate.readers import Readers
from uplink.registry.client import SchemaRegistry, SubjectSchemas, subject

log = logging.getLogger("uplink.console")

# Pages carry no script: a script that escaping missed would still not run.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'; "
        b"form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


def templates() -> Environment:
    return Environment(
        loader=PackageLoader("uplink.console", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        enable_async=False,
    )


class _Headers:
    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def headed(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self._app(scope, receive, headed)


def console_app(settings: ConsoleSettings) -> Starlette:
    clients = KafkaClients(settings.kafka)
    topics = settings.topics
    dlqs = [topics.dlq(w) for w in WORKERS]
    sampler = Sampler(
        clients,
        topics.messages,
        {w: settings.groups.get(w, f"uplink-{w}") for w in WORKERS},
        [topics.messages, topics.quarantine, topics.media, *dlqs]
        + [topics.redrive(w) for w in WORKERS],
        dlqs=dlqs,
        interval=settings.sample_interval,
        span=settings.span,
    )
    keys = Keys(settings.token)
    media = MediaReader(settings.media)
    readers = Readers(clients, size=settings.readers)
    console = pages.Console(settings, sampler, readers, keys, media, templates())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if settings.registry is not None:
                client = await stack.enter_async_context(SchemaRegistry(settings.registry))
                console.codec = PushCodec(lookup=SubjectSchemas(client, subject(topics.messages)))
            else:
                console.codec = PushCodec()
            await media.start()
            stack.push_async_callback(media.stop)
            await readers.start()
            stack.push_async_callback(readers.stop)
            await sampler.start()
            stack.push_async_callback(sampler.stop)
            log.info(
                "console: serving on %s:%s (actions %s)",
                settings.host,
                settings.port,
                "allowed" if settings.allow_actions else "off",
            )
            yield

    routes = [
        Route(path, endpoint, methods=methods) for path, endpoint, methods in console.routes()
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(_Headers),
            Middleware(Guard, keys=keys, unauthorized=console.unauthorized),
        ],
    )
