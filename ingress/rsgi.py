"""The ingress on granian's RSGI interface: the same app, its hot paths answered natively.

``POST /v1/uplink`` and ``POST /v1/meta`` go straight to their endpoints through an
``RsgiExchange`` (no ASGI messages at all); every other request (health, readiness, metrics, Meta's
handshake) goes through the Starlette app ``create_app`` built, over a small RSGI → ASGI bridge, and
its lifespan (the producer, the registry's client) is driven over ASGI's lifespan protocol.

granian's worker calls ``__rsgi_init__`` before it serves and ``__rsgi_del__`` once it has stopped,
each with its event loop not running: the lifespan's startup and shutdown run there. Embedded in a
running loop (granian's ``embed`` server, the tests) the caller runs them: ``startup()`` and
``shutdown()``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

# Re-exported by granian.rsgi without __all__, hence the ignore.
from granian.rsgi import HTTPProtocol, ProtocolClosed, Scope  # type: ignore[attr-defined]
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message

from ingress.app import PUSH_PATH, IngressApp, create_app
from ingress.exceptions import BodyTooLarge
from ingress.exchange import Headers
from ingress.meta import META_PATH
from ingress.responses import JSON_HEADERS
from uplink.process import tune_gc
from uplink.settings import IngressSettings

log = logging.getLogger(__name__)

_ASGI = {"version": "3.0", "spec_version": "2.3"}
# Every 200 of a push carries these: decoded once, not per answer.
_JSON_TEXT = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in JSON_HEADERS]


class RsgiExchange:
    """A request of the hot paths over RSGI (``ingress.exchange.Exchange``)."""

    __slots__ = ("_headers", "_proto", "_scope")

    def __init__(self, scope: Scope, proto: HTTPProtocol) -> None:
        self._scope = scope
        self._proto = proto
        self._headers: dict[bytes, bytes] | None = None

    @property
    def headers(self) -> dict[bytes, bytes]:
        # Built only when asked (a token, a signature, a quarantined body): most pushes never do.
        if self._headers is None:
            self._headers = {
                k.encode("latin-1"): v.encode("latin-1") for k, v in self._scope.headers.items()
            }
        return self._headers

    @property
    def query_string(self) -> bytes:
        return self._scope.query_string.encode("latin-1")

    async def body(self, limit: int) -> bytes:
        proto = self._proto
        length = self._scope.headers.get("content-length")
        try:
            if length is not None and length.isdigit() and int(length) <= limit:
                # HTTP/1.1 framing: the body cannot be longer than its declared length.
                return await proto()
            chunks: list[bytes] = []
            size = 0
            async for chunk in proto:
                size += len(chunk)
                chunks.append(chunk)
                if size > limit:
                    raise BodyTooLarge(limit, b"".join(chunks)[:limit])
            return b"".join(chunks)
        except ProtocolClosed:
            raise ClientDisconnect() from None

    async def respond(self, status: int, headers: Headers, body: bytes) -> None:
        # granian adds content-length to a whole body.
        if headers is JSON_HEADERS:
            text = _JSON_TEXT
        else:
            text = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]
        self._proto.response_bytes(status, text, body)


class Lifespan:
    """An ASGI app's lifespan driven by hand: ``startup()``, then ``shutdown()``."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._to_app: asyncio.Queue[Message] | None = None
        self._from_app: asyncio.Queue[Message] | None = None
        self._task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        self._to_app, self._from_app = asyncio.Queue(), asyncio.Queue()
        scope = {"type": "lifespan", "asgi": _ASGI, "state": {}}
        receive, send = self._to_app.get, self._from_app.put

        async def run() -> None:
            await self._app(scope, receive, send)

        self._task = asyncio.create_task(run(), name="lifespan")
        await self._exchange("startup")

    async def shutdown(self) -> None:
        if self._task is None:
            return
        await self._exchange("shutdown")
        await self._task

    async def _exchange(self, phase: str) -> None:
        assert self._to_app is not None and self._from_app is not None and self._task is not None
        await self._to_app.put({"type": f"lifespan.{phase}"})
        answer = asyncio.ensure_future(self._from_app.get())
        await asyncio.wait({answer, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not answer.done():
            answer.cancel()
            self._task.result()  # the app's error, if it raised one
            raise RuntimeError(f"the app's lifespan ended during {phase}")
        message = answer.result()
        if message["type"] != f"lifespan.{phase}.complete":
            raise RuntimeError(f"lifespan {phase} failed: {message.get('message', '')}")


class RsgiIngress:
    """The ingress as an RSGI application."""

    def __init__(self, app: IngressApp) -> None:
        self._app = app
        self._push = app.push
        self._meta = app.meta
        self._lifespan = Lifespan(app)

    async def startup(self) -> None:
        await self._lifespan.startup()
        log.info("ingress started (granian, RSGI)")

    async def shutdown(self) -> None:
        await self._lifespan.shutdown()
        log.info("ingress stopped: producer flushed and closed")

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        if not loop.is_running():
            loop.run_until_complete(self.startup())

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        if not loop.is_running():
            loop.run_until_complete(self.shutdown())

    async def __rsgi__(self, scope: Scope, proto: HTTPProtocol) -> None:
        if scope.method == "POST":
            path = scope.path
            if path == PUSH_PATH:
                return await self._push.handle(RsgiExchange(scope, proto))
            if path == META_PATH and self._meta is not None:
                return await self._meta.handle(RsgiExchange(scope, proto))
        await asgi_over_rsgi(self._app, scope, proto)


async def asgi_over_rsgi(app: ASGIApp, scope: Scope, proto: HTTPProtocol) -> None:
    """One HTTP request of an RSGI server through an ASGI app, its answer sent whole."""
    host, _, port = scope.client.rpartition(":")
    server_host, _, server_port = scope.server.rpartition(":")
    asgi_scope: dict[str, Any] = {
        "type": "http",
        "asgi": _ASGI,
        "http_version": scope.http_version,
        "method": scope.method,
        "scheme": scope.scheme,
        "path": scope.path,
        "raw_path": scope.path.encode(),
        "query_string": scope.query_string.encode("latin-1"),
        "root_path": "",
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in scope.headers.items()],
        "client": (host, int(port or 0)),
        "server": (server_host, int(server_port or 0)),
    }
    received = False

    async def receive() -> Message:
        nonlocal received
        if not received:
            received = True
            try:
                body = await proto()
            except ProtocolClosed:
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": body, "more_body": False}
        await proto.client_disconnect()
        return {"type": "http.disconnect"}

    status = 500
    headers: list[tuple[str, str]] = []
    chunks: list[bytes] = []

    async def send(message: Message) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = [
                (k.decode("latin-1"), v.decode("latin-1"))
                for k, v in message.get("headers", [])
                if k.lower() != b"content-length"  # granian sets it for the whole body
            ]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                proto.response_bytes(status, headers, b"".join(chunks))

    await app(asgi_scope, receive, send)


def app_from_env() -> RsgiIngress:
    """Factory for granian's worker processes: each builds its settings from the environment."""
    app = RsgiIngress(create_app(IngressSettings.from_env(os.environ)))
    tune_gc()
    return app
