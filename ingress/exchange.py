"""One request and its answer, as the push and Meta endpoints see them on either server.

The endpoints read the headers, the query string and the body (under a size limit) and answer
once with a status, headers and a body. ``AsgiExchange`` does that over ASGI's ``receive`` and
``send`` (uvicorn); ``ingress.rsgi.RsgiExchange`` over granian's RSGI protocol object.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, Protocol

from starlette.types import Receive, Scope, Send

from ingress.body import read_body

Headers = list[tuple[bytes, bytes]]


class Exchange(Protocol):
    @property
    def headers(self) -> dict[bytes, bytes]:
        """Lower-case names, raw bytes (as ASGI gives them)."""
        ...

    @property
    def query_string(self) -> bytes: ...

    async def body(self, limit: int) -> bytes:
        """The whole body; BodyTooLarge past ``limit``, ClientDisconnect if the client left."""
        ...

    async def respond(self, status: int, headers: Headers, body: bytes) -> None: ...


class AsgiExchange:
    __slots__ = ("_receive", "_send", "headers", "query_string")

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.headers: dict[bytes, bytes] = dict(scope["headers"])
        self.query_string: bytes = scope["query_string"]
        self._receive = receive
        self._send = send

    def body(self, limit: int) -> Coroutine[Any, Any, bytes]:
        return read_body(self._receive, limit)

    async def respond(self, status: int, headers: Headers, body: bytes) -> None:
        send = self._send
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
