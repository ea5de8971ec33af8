"""Reading a request body under a size limit, while it streams in."""

from __future__ import annotations

from starlette.requests import ClientDisconnect
from starlette.types import Receive

from ingress.exceptions import BodyTooLarge


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole body, or BodyTooLarge as soon as it passes ``limit`` (nothing more is read)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        chunks.append(chunk)
        if size > limit:
            raise BodyTooLarge(limit, b"".join(chunks)[:limit])
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
