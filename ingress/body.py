"""Reading a request body under a size limit, while it streams in."""

from __future__ import annotations

from starlette.requests import Request

from ingress.exceptions import BodyTooLarge


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or BodyTooLarge as soon as it passes ``limit`` (nothing more is read)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        chunks.append(chunk)
        if size > limit:
            raise BodyTooLarge(limit, b"".join(chunks)[:limit])
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
