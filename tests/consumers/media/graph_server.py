"""A stand-in for Meta's Graph API and its media CDN, served by uvicorn on loopback.

``GET /{version}/{media_id}`` answers what the Graph API does (``url``, ``mime_type``, ``sha256``
in hex, ``file_size``, ``id``) for the bearer token it was given, and ``GET /cdn/{media_id}/{n}``
serves the bytes for that token too. ``refuse`` makes the first URLs handed out fail with a
status (an expired URL: 404, or 401/403), ``flaky`` makes the first downloads answer 503.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

VERSION = "v23.0"


@dataclass
class GraphServer:
    token: str
    files: dict[str, bytes] = field(default_factory=dict)  # media id → bytes
    refuse: list[int] = field(default_factory=list)  # status of the first downloads, in turn
    flaky: int = 0  # downloads answered 503 before refusals and files
    base: str = ""  # set once served: the URLs it hands out point at itself
    lookups: Counter[str] = field(default_factory=Counter)
    downloads: Counter[str] = field(default_factory=Counter)
    unauthorized: int = 0  # requests without our bearer token

    def add(self, media_id: str, data: bytes) -> str:
        """Serve ``data`` as ``media_id``; returns its hex SHA-256, as Meta's webhook has it."""
        self.files[media_id] = data
        return hashlib.sha256(data).hexdigest()

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route(f"/{VERSION}/{{media_id}}", self._media),
                Route("/cdn/{media_id}/{n:int}", self._cdn),
            ]
        )

    def _authorized(self, request: Request) -> bool:
        if request.headers.get("authorization") == f"Bearer {self.token}":
            return True
        self.unauthorized += 1
        return False

    async def _media(self, request: Request) -> Response:
        if not self._authorized(request):
            return JSONResponse({"error": {"message": "Invalid OAuth access token."}}, 401)
        media_id = request.path_params["media_id"]
        if media_id not in self.files:
            return JSONResponse({"error": {"message": f"Object {media_id} does not exist"}}, 404)
        self.lookups[media_id] += 1
        data = self.files[media_id]
        return JSONResponse(
            {
                "messaging_product": "whatsapp",
                "url": f"{self.base}/cdn/{media_id}/{self.lookups[media_id]}",
                "mime_type": "application/octet-stream",
                "sha256": hashlib.sha256(data).hexdigest(),
                "file_size": str(len(data)),
                "id": media_id,
            }
        )

    async def _cdn(self, request: Request) -> Response:
        if not self._authorized(request):
            return Response(status_code=401)
        media_id = request.path_params["media_id"]
        self.downloads[media_id] += 1
        if self.flaky > 0:
            self.flaky -= 1
            return Response(status_code=503)
        if self.refuse:
            return Response(status_code=self.refuse.pop(0))
        return Response(self.files[media_id], media_type="application/octet-stream")
