"""Media by id, as Meta's webhook carries it: resolved through the Graph API, then downloaded.

``GET {graph_url}/{version}/{media-id}`` with ``Authorization: Bearer <access token>`` answers
``{"url": ..., "mime_type": ..., "sha256": <hex>, "file_size": ..., "id": ...}``. The URL is
valid for a few minutes and wants the same bearer token; the download goes through the Fetcher
(its address guard, size cap, retries and hash check). When the URL is refused (401, 403, 404)
or outlives its validity, the id is resolved again, up to ``RESOLUTIONS`` times.

The Graph request goes through the same address guard as every download: the Graph URL is
configured, but a private address still has to be allow-listed (UPLINK_MEDIA_ALLOW_HOSTS).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import orjson

from consumers.media.digest import sha256_bytes
from consumers.media.exceptions import FetchFailed, FetchRetriable, URLExpired
from consumers.media.fetch import Downloaded, Fetcher, retry_after
from consumers.media.guard import AddressGuard
from consumers.media.settings import MediaSettings
from uplink.http import HttpClients
from uplink.resources import Resource
from uplink.settings import MetaSettings, Secret

log = logging.getLogger(__name__)

RESOLUTIONS = 3  # URLs tried for one download: the first, and two re-resolutions


@dataclass(frozen=True)
class Resolved:
    url: str
    sha256: str | None  # hex, as the Graph API gives it
    mime_type: str | None


class GraphMedia(Resource):
    """Resolves Meta media ids and downloads them; ``start()``/``stop()`` or ``async with``."""

    def __init__(
        self,
        meta: MetaSettings,
        token: Secret,
        settings: MediaSettings,
        fetcher: Fetcher,
        guard: AddressGuard,
        *,
        clients: HttpClients | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._base = f"{meta.graph_url.rstrip('/')}/{meta.graph_version}/"
        self._ttl = meta.media_url_ttl
        self._token = token
        self._settings = settings
        self._fetcher = fetcher
        self._guard = guard
        self._clients = clients if clients is not None else HttpClients()
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._client: httpx.AsyncClient | None = None
        self.resolutions = 0  # Graph API lookups that returned a URL

    async def start(self) -> None:
        if self._client is None:
            timeouts = self._settings.timeouts
            self._client = self._clients(
                timeout=httpx.Timeout(timeouts.read, connect=timeouts.connect),
                limits=httpx.Limits(max_connections=self._settings.per_host),
            )

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def download(self, media_id: str, sink: Path, expected: bytes) -> Downloaded:
        """Media ``media_id`` into ``sink``, its SHA-256 checked against ``expected``."""
        for resolution in range(1, RESOLUTIONS + 1):
            resolved = await self.resolve(media_id)
            graph_digest = sha256_bytes(resolved.sha256)
            if graph_digest is not None and graph_digest != expected:
                raise FetchFailed(
                    f"the Graph API's sha256 {resolved.sha256} is not the webhook's "
                    f"{expected.hex()}"
                )
            try:
                return await self._fetcher.download(
                    resolved.url,
                    sink,
                    expected,
                    bearer=self._token,
                    expires=time.monotonic() + self._ttl,
                )
            except URLExpired as exc:
                if resolution == RESOLUTIONS:
                    raise FetchFailed(f"{resolution} URLs of media {media_id}: {exc}") from exc
                log.info("media %s: URL refused (%s), resolving it again", media_id, exc)
        raise AssertionError("unreachable")  # the loop returns or raises

    async def resolve(self, media_id: str) -> Resolved:
        """The media's short-lived URL; retries what may pass, FetchFailed for what will not."""
        retries = self._settings.retries
        attempt = 0
        while True:
            attempt += 1
            try:
                resolved = await self._lookup(media_id)
            except FetchRetriable as exc:
                if attempt >= retries.attempts:
                    raise FetchFailed(f"Graph API: gave up after {attempt} tries: {exc}") from exc
                delay = min(retries.backoff * 2.0 ** (attempt - 1), retries.backoff_max)
                delay *= self._rng.uniform(0.5, 1.0)
                if exc.retry_after is not None:
                    delay = min(max(exc.retry_after, 0.0), retries.retry_after_max)
                await self._sleep(delay)
                continue
            self.resolutions += 1
            return resolved

    async def _lookup(self, media_id: str) -> Resolved:
        client = self._client
        if client is None:
            raise RuntimeError("Graph media resolver not started")
        url = httpx.URL(self._base + quote(media_id, safe=""))
        target = await self._guard.check(url)
        headers = {
            "host": url.netloc.decode("ascii"),
            "authorization": f"Bearer {self._token.reveal()}",
        }
        try:
            response = await client.get(target.connect, headers=headers)
        except httpx.TimeoutException as exc:
            raise FetchRetriable(f"Graph API timed out: {type(exc).__name__}") from exc
        except httpx.RequestError as exc:
            raise FetchRetriable(f"Graph API: {type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if status == 429 or status >= 500:
            raise FetchRetriable(
                f"Graph API: HTTP {status}", retry_after(response.headers.get("retry-after"))
            )
        if status != 200:
            # 401/403: the access token is wrong or lacks the permission; 404: no such media
            # (Meta keeps it 30 days). Nothing a retry changes: the DLQ, with Meta's reason.
            raise FetchFailed(f"Graph API: HTTP {status} for media {media_id}: {_reason(response)}")
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise FetchFailed(f"Graph API: the answer is not JSON: {exc}") from exc
        found = body.get("url") if isinstance(body, dict) else None
        if not isinstance(found, str) or not found:
            raise FetchFailed(f"Graph API: no url for media {media_id}")
        digest = body.get("sha256")
        mime = body.get("mime_type")
        return Resolved(
            found,
            digest if isinstance(digest, str) and digest else None,
            mime if isinstance(mime, str) else None,
        )


def _reason(response: httpx.Response) -> str:
    """Meta's error message (``{"error": {"message": ...}}``), else the body's start."""
    try:
        error = orjson.loads(response.content).get("error") or {}
        return str(error.get("message") or error)[:200]
    except (orjson.JSONDecodeError, AttributeError):
        return response.text[:200]
