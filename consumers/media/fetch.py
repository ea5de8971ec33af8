"""Downloading one media object: streamed to a file, size-capped, hashed as it streams, retried.

Timeouts, connection errors, 5xx and 429 are retried with exponential backoff, each delay drawn
between half and all of it (a 429's or 503's Retry-After is honoured, capped); a 4xx, an oversize
body, a refused address, too many redirects, a sha256 that does not match after
``hash_attempts`` downloads, or running out of attempts raise ``FetchFailed`` with the reason.
Redirects are followed here, not by httpx, so the address guard sees every hop.

A download holds a slot of the worker's ``concurrency`` and one of its origin's (scheme, host,
port) ``per_host`` only while it is in progress, taking its origin's first: a sleeping retry
holds neither, and a busy host's queue holds none of the worker's, so a failing or slow host
does not stall the others.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import hashlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from consumers.media.exceptions import FetchFailed, FetchRetriable, URLExpired
from consumers.media.guard import AddressGuard
from consumers.media.metrics import MediaMetrics
from consumers.media.settings import MediaSettings
from uplink.http import HttpClients
from uplink.resources import Resource
from uplink.settings import Secret

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
REDIRECTS = frozenset({301, 302, 303, 307, 308})
# httpx's connection pool slows down sharply as it grows (encode/httpx#3215; bench/RESULTS.md,
# "Media throughput"), so each origin gets ceil(per_host / 8) clients of at most 8 connections.
CLIENT_CONNECTIONS = 8


@dataclass(frozen=True)
class Downloaded:
    size: int
    digest: bytes  # SHA-256 of the bytes written
    content_type: str | None


@dataclass
class _Shard:
    client: httpx.AsyncClient
    active: int = 0  # requests in progress on it


@dataclass
class _Origin:
    limit: asyncio.Semaphore  # per_host downloads at once
    shards: list[_Shard]
    users: int = 0  # attempts holding or waiting for it: it is not closed under them


# Origins whose clients (and their idle connections) are kept. filePath comes from outside, so
# the set of origins is unbounded: beyond this, the least recently used idle ones are closed.
MAX_ORIGINS = 64


def retry_after(value: str | None, now: datetime.datetime | None = None) -> float | None:
    """Seconds from a Retry-After header: delay-seconds or an HTTP-date; None if unusable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    now = now or datetime.datetime.now(datetime.UTC)
    return max((when - now).total_seconds(), 0.0)


def sends_auth(settings: MediaSettings, first: httpx.URL, hop: httpx.URL) -> bool:
    """Whether a request to ``hop``, in a redirect chain that began at ``first``, carries the
    provider's auth header: only to the configured hosts, and never over plain http once the
    chain began on https (a redirect must not move the secret into the clear)."""
    if settings.auth_header is None or hop.host not in settings.auth_targets:
        return False
    return hop.scheme == "https" or first.scheme != "https"


class Fetcher(Resource):
    """Downloads media over a few pooled httpx clients per origin (``CLIENT_CONNECTIONS``), made by
    the ``HttpClients`` factory it is handed. ``start()``/``stop()`` or ``async with``."""

    def __init__(
        self,
        settings: MediaSettings,
        guard: AddressGuard,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        metrics: MediaMetrics | None = None,
        max_origins: int = MAX_ORIGINS,
        clients: HttpClients | None = None,
    ) -> None:
        self._settings = settings
        self._clients = clients if clients is not None else HttpClients()
        self._guard = guard
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.metrics = metrics if metrics is not None else MediaMetrics()
        self._origins: dict[str, _Origin] = {}  # least recently used first
        self._max_origins = max_origins
        self._downloads = asyncio.Semaphore(settings.concurrency)
        self._started = False

    async def start(self) -> None:
        self._started = True

    async def stop(self) -> None:
        self._started = False
        origins, self._origins = self._origins, {}
        for origin in origins.values():
            for shard in origin.shards:
                await shard.client.aclose()

    async def download(
        self,
        url: str,
        sink: Path,
        expected: bytes,
        *,
        bearer: Secret | None = None,
        expires: float | None = None,
    ) -> Downloaded:
        """Fetch ``url`` into ``sink`` (overwritten) until its SHA-256 is ``expected``.

        A short-lived URL (Meta's) comes with its ``bearer`` token, sent to the URL's own host
        only, and ``expires`` (time.monotonic()): an attempt that would start after it, or a
        401, 403 or 404, raises URLExpired, for the caller to resolve the URL again."""
        retries = self._settings.retries
        parsed = httpx.URL(url)
        attempt = mismatches = 0
        while True:
            attempt += 1
            if expires is not None and time.monotonic() >= expires:
                raise URLExpired(f"the URL expired before attempt {attempt}")
            try:
                got = await self._attempt(parsed, sink, bearer)
            except FetchRetriable as exc:
                if attempt >= retries.attempts:
                    raise FetchFailed(f"gave up after {attempt} attempts: {exc}") from exc
                self.metrics.retries += 1
                delay = self._backoff(attempt)
                if exc.retry_after is not None:
                    delay = min(max(exc.retry_after, 0.0), retries.retry_after_max)
                log.info("retrying %s in %.2fs (attempt %d): %s", parsed, delay, attempt, exc)
                await self._sleep(delay)
                continue
            if got.digest == expected:
                return got
            mismatches += 1
            if mismatches >= retries.hash_attempts:
                raise FetchFailed(
                    f"sha256 mismatch: expected {expected.hex()}, got {got.digest.hex()} "
                    f"({mismatches} downloads of {got.size} bytes)"
                )
            await self._sleep(self._backoff(mismatches))

    def _backoff(self, attempt: int) -> float:
        retries = self._settings.retries
        delay = min(retries.backoff * 2.0 ** (attempt - 1), retries.backoff_max)
        return float(delay * self._rng.uniform(0.5, 1.0))

    @property
    def origins(self) -> int:
        """Origins whose clients are open."""
        return len(self._origins)

    async def _attempt(self, url: httpx.URL, sink: Path, bearer: Secret | None) -> Downloaded:
        origin = await self._use(f"{url.scheme}://{url.netloc.decode('ascii').lower()}")
        try:
            return await self._attempt_at(origin, url, sink, bearer)
        finally:
            origin.users -= 1

    async def _attempt_at(
        self, origin: _Origin, url: httpx.URL, sink: Path, bearer: Secret | None
    ) -> Downloaded:
        async with origin.limit, self._downloads:
            # The least busy client: under the origin's limit, it always has a free connection.
            shard = min(origin.shards, key=lambda candidate: candidate.active)
            shard.active += 1
            try:
                async with asyncio.timeout(self._settings.timeouts.attempt):
                    return await self._follow(shard.client, url, sink, bearer)
            except TimeoutError as exc:
                raise FetchRetriable(f"timed out: {exc or type(exc).__name__}") from exc
            except httpx.TimeoutException as exc:
                raise FetchRetriable(f"timed out: {type(exc).__name__}") from exc
            except httpx.RequestError as exc:  # connection, protocol, a body that won't decode
                raise FetchRetriable(f"{type(exc).__name__}: {exc}") from exc
            finally:
                shard.active -= 1

    async def _use(self, key: str) -> _Origin:
        """The origin's clients, marked in use (the caller decrements ``users``); opened if
        need be, closing the least recently used idle origins beyond ``max_origins``."""
        if not self._started:
            raise RuntimeError("fetcher not started")
        origin = self._origins.pop(key, None)
        if origin is None:
            per_host = self._settings.per_host
            connections = min(per_host, CLIENT_CONNECTIONS)
            count = math.ceil(per_host / connections)
            shards = [_Shard(self._client(connections)) for _ in range(count)]
            origin = _Origin(asyncio.Semaphore(per_host), shards)
        self._origins[key] = origin  # the most recently used, last
        origin.users += 1
        if len(self._origins) > self._max_origins:
            idle = [k for k, o in self._origins.items() if o.users == 0]
            for stale in idle[: len(self._origins) - self._max_origins]:
                # Out of the table before the await: a new user opens a fresh origin.
                for shard in self._origins.pop(stale).shards:
                    await shard.client.aclose()
        return origin

    def _client(self, connections: int) -> httpx.AsyncClient:
        timeouts = self._settings.timeouts
        return self._clients(
            timeout=httpx.Timeout(
                connect=timeouts.connect,
                read=timeouts.read,
                write=timeouts.read,
                pool=timeouts.attempt,
            ),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )

    async def _follow(
        self, client: httpx.AsyncClient, url: httpx.URL, sink: Path, bearer: Secret | None
    ) -> Downloaded:
        first = url
        for _ in range(self._settings.max_redirects + 1):
            target = await self._guard.check(url)
            headers = {"host": url.netloc.decode("ascii")}
            auth = self._settings.auth_header
            if bearer is not None:
                # Only to the host the Graph API named, never downgraded to plain http.
                if url.host == first.host and (url.scheme == "https" or first.scheme != "https"):
                    headers["authorization"] = f"Bearer {bearer.reveal()}"
            elif auth is not None and sends_auth(self._settings, first, url):
                headers[auth[0]] = auth[1].reveal()
            request = client.build_request("GET", target.connect, headers=headers)
            response = await client.send(request, stream=True)
            try:
                location = response.headers.get("location")
                if response.status_code in REDIRECTS and location:
                    try:
                        url = url.join(location)
                    except httpx.InvalidURL as exc:
                        raise FetchFailed(f"redirect to an invalid URL: {exc}") from exc
                    continue
                if bearer is not None and response.status_code in (401, 403, 404):
                    raise URLExpired(f"HTTP {response.status_code}")
                self._raise_for_status(response)
                return await self._save(response, sink)
            finally:
                await response.aclose()
        raise FetchFailed(f"more than {self._settings.max_redirects} redirects")

    @staticmethod
    def _raise_for_status(response: httpx.Response) -> None:
        status = response.status_code
        if status == 429 or status >= 500:
            raise FetchRetriable(f"HTTP {status}", retry_after(response.headers.get("retry-after")))
        if not 200 <= status < 300 or status == 204:
            raise FetchFailed(f"HTTP {status}")

    async def _save(self, response: httpx.Response, sink: Path) -> Downloaded:
        limit = self._settings.max_bytes
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise FetchFailed(f"oversize: {declared} bytes declared, the limit is {limit}")
        hasher = hashlib.sha256()
        size = 0
        # Creating a file blocks on the disk: in a thread, not on the loop.
        # The writes that follow are small and go to the page cache; the store fsyncs, threaded.
        out = await asyncio.to_thread(sink.open, "wb")
        with out:
            async for chunk in response.aiter_bytes(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise FetchFailed(f"oversize: more than {limit} bytes")
                hasher.update(chunk)
                out.write(chunk)
        return Downloaded(size, hasher.digest(), response.headers.get("content-type"))
