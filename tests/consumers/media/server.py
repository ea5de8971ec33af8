"""A media server for the tests: a Starlette app whose routes misbehave on purpose.

Served by uvicorn on loopback (the ``serve`` fixture). Every request is logged (path, monotonic
time when it arrived) before it is answered.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route


def b64sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


@dataclass
class Hit:
    path: str
    at: float  # time.monotonic() when the request arrived
    headers: dict[str, str]


@dataclass
class MediaServer:
    files: dict[str, bytes] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    slow_seconds: float = 1.0  # /slow: the first request waits this long before answering
    failures: int = 2  # /flaky: this many 500s first
    gate: asyncio.Event = field(default_factory=asyncio.Event)  # /gated waits for it
    delay: float = 0.0  # /files: seconds before answering, so downloads overlap and take time
    # Called on every request first; e.g. to check whether the object is already stored.
    on_request: Callable[[str], None] | None = None

    def add(self, name: str, data: bytes) -> str:
        """Serve ``data`` under ``name``; returns its base64 SHA-256, as a push carries it."""
        self.files[name] = data
        return b64sha256(data)

    def count(self, prefix: str = "/") -> Counter[str]:
        return Counter(hit.path for hit in self.hits if hit.path.startswith(prefix))

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/files/{name}", self._file),
                Route("/slow/{name}", self._slow),
                Route("/flaky/{name}", self._flaky),
                Route("/busy/{name}", self._busy),
                Route("/unavailable/{name}", self._unavailable),
                Route("/gated/{name}", self._gated),
                Route("/stream/{size:int}", self._stream),
                Route("/redirect/{hops:int}/{name}", self._redirect),
                Route("/redirect-to", self._redirect_to),
                Route("/status/{code:int}", self._status),
            ]
        )

    def _log(self, request: Request) -> tuple[int, str]:
        path = request.url.path
        self.hits.append(Hit(path, time.monotonic(), dict(request.headers)))
        if self.on_request is not None:
            self.on_request(path)
        return sum(1 for hit in self.hits if hit.path == path), request.path_params.get("name", "")

    def _body(self, name: str) -> Response:
        if name not in self.files:
            return Response(status_code=404)
        return Response(self.files[name], media_type="application/octet-stream")

    async def _file(self, request: Request) -> Response:
        _, name = self._log(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        return self._body(name)

    async def _slow(self, request: Request) -> Response:
        nth, name = self._log(request)
        if nth == 1:
            await asyncio.sleep(self.slow_seconds)  # the fault: longer than the read timeout
        return self._body(name)

    async def _flaky(self, request: Request) -> Response:
        nth, name = self._log(request)
        if nth <= self.failures:
            return Response(b"try later", status_code=500)
        return self._body(name)

    async def _busy(self, request: Request) -> Response:
        nth, name = self._log(request)
        if nth == 1:
            return Response(status_code=429, headers={"retry-after": "1"})
        return self._body(name)

    async def _unavailable(self, request: Request) -> Response:
        self._log(request)  # always down, asking for a retry much later
        return Response(status_code=503, headers={"retry-after": "30"})

    async def _gated(self, request: Request) -> Response:
        _, name = self._log(request)
        async with asyncio.timeout(30):  # a failed test never opens it: let the server stop
            await self.gate.wait()
        return self._body(name)

    async def _stream(self, request: Request) -> Response:
        """``size`` bytes; with ?length=1 a Content-Length, else chunked."""
        self._log(request)
        size = request.path_params["size"]
        if request.query_params.get("length"):
            return Response(b"x" * size)

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, size, 16384):
                yield b"x" * min(16384, size - start)

        return StreamingResponse(chunks())

    async def _redirect(self, request: Request) -> Response:
        _, name = self._log(request)
        hops = request.path_params["hops"]
        target = f"/redirect/{hops - 1}/{name}" if hops > 1 else f"/files/{name}"
        return RedirectResponse(target, status_code=302)

    async def _redirect_to(self, request: Request) -> Response:
        self._log(request)
        return RedirectResponse(request.query_params["url"], status_code=307)

    async def _status(self, request: Request) -> Response:
        self._log(request)
        return Response(status_code=request.path_params["code"])
