"""The media worker's handler: fetch, verify and keep each media push's object, then announce it.

Records of a partition are processed concurrently, so one slow download does not hold up the
rest: ``handle`` starts a task (waiting for a free slot first, which is the backpressure) and
returns. Offsets complete out of order but are committed in order (``InOrderCommits``): ``flush``
answers, per partition, the lowest offset still in flight (everything below it is finished:
stored and announced, or dead-lettered); a task that fails unexpectedly stops the worker with
nothing committed past it. On revoke the partition's tasks are cancelled (their offsets were not
committed; the new owner redoes them, and finds the objects already stored).

Per record: an object already in the store is not fetched again (concurrent records with the
same digest wait for one another), else it is downloaded, verified and put; then a media event
goes to ``uplink.media.v1`` keyed like the source record. Permanent failures go to the DLQ.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from aiokafka import ConsumerRecord

from consumers.media.digest import sha256_bytes
from consumers.media.exceptions import FetchFailed
from consumers.media.fetch import Fetcher
from consumers.media.graph import GraphMedia
from consumers.media.settings import MediaSettings
from consumers.media.storage import MediaStore, Stored
from consumers.runtime.deadletters import DeadLetters
from consumers.runtime.exceptions import RecordError
from consumers.runtime.handler import Inbound
from consumers.runtime.tracker import Concurrent, InOrderCommits
from schemas import MediaCodec
from schemas.meta import META_SOURCE
from uplink.kafka import Producer

log = logging.getLogger(__name__)

MEDIA_TYPES = frozenset({"image", "video", "audio", "document", "sticker"})


@dataclass(frozen=True)
class MediaRef:
    """What a push says about its media."""

    type: str
    url: str | None  # None: Meta's media, fetched by media_id through the Graph API
    digest: bytes
    media_id: str | None
    mime_type: str | None
    filename: str | None
    caption: str | None


def media_of(push: dict[str, Any], base_url: str | None) -> MediaRef | None:
    """The push's media, None if it is not a media push; RecordError if it cannot be fetched.

    The provider's pushes say where the media is (``filePath``) and its base64 sha256; Meta's
    (``source`` meta) carry a media id to resolve through the Graph API and a hex sha256."""
    message = push.get("message") or {}
    kind = message.get("type")
    if kind not in MEDIA_TYPES:
        return None
    media = message.get(kind)
    if not media:
        raise RecordError(f"a {kind} push without its {kind} object")
    path = media.get("filePath")
    by_id = not path and push.get("source") == META_SOURCE
    if by_id and not media.get("id"):
        raise RecordError(f"{kind} from Meta without a media id")
    if not path and not by_id:
        raise RecordError(f"{kind} without filePath")
    digest_text = media.get("sha256")
    digest = sha256_bytes(digest_text)
    if digest is None:
        raise RecordError(f"{kind} sha256 {digest_text!r} is not hex or base64 of 32 bytes")
    return MediaRef(
        type=kind,
        url=None if by_id else resolve_url(path, base_url),
        digest=digest,
        media_id=media.get("id"),
        mime_type=media.get("mimeType"),
        filename=media.get("filename"),
        caption=media.get("caption"),
    )


def resolve_url(path: str, base_url: str | None) -> str:
    """A full URL as it is; a path against the provider's media base URL."""
    try:
        url = httpx.URL(path)
    except httpx.InvalidURL as exc:
        raise RecordError(f"filePath is not a URL: {exc}") from exc
    if url.is_absolute_url:
        return str(url)
    if base_url is None:
        raise RecordError(
            f"filePath {path!r} is relative and UPLINK_MEDIA_BASE_URL is not configured"
        )
    return str(httpx.URL(base_url.rstrip("/") + "/").join(path.lstrip("/")))


class _Locks:
    """One lock per digest while anyone holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    async def acquire(self, key: str) -> None:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            await lock.acquire()
        except BaseException:
            self._forget(key)
            raise

    def release(self, key: str) -> None:
        self._locks[key][0].release()
        self._forget(key)

    def _forget(self, key: str) -> None:
        lock, users = self._locks[key]
        if users == 1:
            del self._locks[key]
        else:
            self._locks[key] = (lock, users - 1)


class MediaHandler(Concurrent):
    """The media ``Handler`` for the consumer runtime."""

    def __init__(
        self,
        settings: MediaSettings,
        fetcher: Fetcher,
        store: MediaStore,
        events: Producer,
        topic: str,
        dead_letters: DeadLetters,
        *,
        codec: MediaCodec | None = None,
        clock: Callable[[], float] = time.time,
        graph: GraphMedia | None = None,
    ) -> None:
        self._settings = settings
        self._fetcher = fetcher
        self._graph = graph  # Meta's media by id; None without UPLINK_META_ACCESS_TOKEN
        self._store = store
        self._events = events  # of media events, to ``topic``
        self._topic = topic
        self._dead_letters = dead_letters
        self._codec = codec or MediaCodec()
        self._clock = clock
        # Records in flight are bounded; at stop, downloads get drain_timeout to finish.
        super().__init__(InOrderCommits(settings.max_pending, "media task"), settings.drain_timeout)
        self._digests = _Locks()
        self.metrics = fetcher.metrics
        self.metrics.in_flight = self._tracker.in_flight

    # --- the Handler protocol ----------------------------------------------------------------

    async def handle(self, inbound: Inbound) -> None:
        self._tracker.check()
        ref = media_of(inbound.push, self._settings.base_url)
        if ref is None:
            return None  # not a media push: nothing to do
        if ref.url is None and self._graph is None:
            raise RecordError(
                f"{ref.type} {ref.media_id} from Meta, but UPLINK_META_ACCESS_TOKEN is not set: "
                "no Graph API to fetch it by id"
            )
        tp, offset = inbound.tp, inbound.record.offset
        await self._tracker.start(
            tp,
            offset,
            self._process(inbound.record, inbound.push["messageId"], ref),
            name=f"media {tp.topic}[{tp.partition}]@{offset}",
        )
        return None

    # --- one record --------------------------------------------------------------------------

    async def _process(
        self, record: ConsumerRecord[bytes, bytes], message_id: str, ref: MediaRef
    ) -> None:
        digest = ref.digest.hex()
        await self._digests.acquire(digest)
        try:
            stored = await self._store.find(digest)
            if stored is not None:
                self.metrics.outcomes["already_stored"] += 1
            else:
                started = time.perf_counter()
                try:
                    stored = await self._fetch(digest, message_id, ref)
                except FetchFailed as exc:
                    where = ref.url or f"Meta media {ref.media_id}"
                    await self._dead_letters.send(record, f"{ref.type} {where}: {exc}")
                    self.metrics.outcomes["dead_lettered"] += 1
                    return
                self.metrics.download_seconds.observe(time.perf_counter() - started)
                self.metrics.outcomes["fetched"] += 1
                self.metrics.bytes += stored.size
        finally:
            self._digests.release(digest)
        event = {
            "messageId": message_id,
            "mediaId": ref.media_id,
            "type": ref.type,
            "sha256": digest,
            "size": stored.size,
            "mimeType": ref.mime_type,
            "filename": ref.filename,
            "uri": stored.uri,
            "fetchedAt": int(self._clock() * 1000),
        }
        await self._events.send(self._topic, self._codec.encode(event), key=record.key)

    async def _fetch(self, digest: str, message_id: str, ref: MediaRef) -> Stored:
        spooled = self._store.spool()
        try:
            if ref.url is not None:
                await self._fetcher.download(ref.url, spooled, ref.digest)
            elif self._graph is not None and ref.media_id is not None:  # handle() checked both
                await self._graph.download(ref.media_id, spooled, ref.digest)
            else:
                raise FetchFailed("Meta media without an id or a Graph API to resolve it")
            sidecar = {
                "sha256": digest,
                "mimeType": ref.mime_type,
                "filename": ref.filename,
                "caption": ref.caption,
                "mediaId": ref.media_id,
                "messageId": message_id,
                "type": ref.type,
            }
            return await self._store.put(digest, spooled, sidecar)
        finally:
            self._store.discard(spooled)
