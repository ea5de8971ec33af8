"""Answers of the hot paths (``/v1/uplink``, ``/v1/meta``) as two raw ASGI messages.

No Response object per push: building one cost a tenth of a request's CPU (bench/RESULTS.md,
"Ingress load").
"""

from __future__ import annotations

from starlette.types import Send

JSON_HEADERS = [(b"content-type", b"application/json")]


async def respond(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
