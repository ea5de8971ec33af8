"""The media worker's handler: fetch, verify and keep each media push's object, then announce it.

Records of a partition are processed concurrently, so one slow download does not hold up the
rest: ``handle`` starts a task (waiting for a free slot first, which is the backpressure) and
returns. Offsets complete out of order but are committed in order: ``flush`` answers, per
partition, the lowest offset still in flight (everything below it is finished: stored and
announced, or dead-lettered). A task that fails unexpectedly keeps its offset in flight, so no
commit ever passes it, and the next ``handle`` or ``flush`` raises ``HandlerFailed``, which stops
the worker. On revoke the partition's tasks are cancelled (their offsets were not committed; the
new owner redoes them, and finds the objects already stored).

Per record: an object already in the store is not fetched again (concurrent records with the
same digest wait for one another), else it is downloaded, verified and put; then a media event
goes to ``uplink.media.v1`` keyed like the source record. Permanent failures go to the DLQ.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition

from consumers.deadletters import DeadLetters
from consumers.exceptions import FetchFailed, HandlerFailed, RecordError
from consumers.fetch import Fetcher
from consumers.runtime import Inbound, Positions
from consumers.storage import MediaStore, Stored
from schemas import MediaCodec
from uplink.resources import Resource
from uplink.settings import KafkaSettings, MediaSettings, Topics
from uplink.topics import ensure_topics

log = logging.getLogger(__name__)

MEDIA_TYPES = frozenset({"image", "video", "audio", "document", "sticker"})


@dataclass(frozen=True)
class MediaRef:
    """What a push says about its media."""

    type: str
    url: str
    digest: bytes
    media_id: str | None
    mime_type: str | None
    filename: str | None
    caption: str | None


def media_of(push: dict[str, Any], base_url: str | None) -> MediaRef | None:
    """The push's media, None if it is not a media push; RecordError if it cannot be fetched."""
    message = push.get("message") or {}
    kind = message.get("type")
    if kind not in MEDIA_TYPES:
        return None
    media = message.get(kind)
    if not media:
        raise RecordError(f"a {kind} push without its {kind} object")
    path = media.get("filePath")
    if not path:
        raise RecordError(f"{kind} without filePath")
    digest_text = media.get("sha256")
    try:
        digest = base64.b64decode(digest_text or "", validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != 32:
        raise RecordError(f"{kind} sha256 {digest_text!r} is not base64 of 32 bytes")
    return MediaRef(
        type=kind,
        url=resolve_url(path, base_url),
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


class MediaEvents(Resource):
    """The producer of media events (acks=all, idempotent). ``start()``/``stop()``."""

    def __init__(self, kafka: KafkaSettings, topics: Topics) -> None:
        self._kafka = kafka
        self._topics = topics
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        if self._producer is None:
            await ensure_topics(self._kafka, self._topics)
            producer = AIOKafkaProducer(
                **self._kafka.client_options(), acks="all", enable_idempotence=True
            )
            await producer.start()
            self._producer = producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def send(self, key: bytes | None, value: bytes) -> None:
        """Returns once the broker has it."""
        if self._producer is None:
            raise RuntimeError("media events not started")
        await self._producer.send_and_wait(self._topics.media, value, key=key)


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


class MediaHandler:
    """The media ``Handler`` for the consumer runtime."""

    def __init__(
        self,
        settings: MediaSettings,
        fetcher: Fetcher,
        store: MediaStore,
        events: MediaEvents,
        dead_letters: DeadLetters,
        *,
        codec: MediaCodec | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._fetcher = fetcher
        self._store = store
        self._events = events
        self._dead_letters = dead_letters
        self._codec = codec or MediaCodec()
        self._clock = clock
        self._slots = asyncio.Semaphore(settings.max_pending)  # records in flight
        self._pending: dict[TopicPartition, dict[int, asyncio.Task[None]]] = {}
        self._digests = _Locks()
        self._failure: BaseException | None = None
        self.metrics = fetcher.metrics
        self.metrics.in_flight = self.in_flight

    # --- the Handler protocol ----------------------------------------------------------------

    async def handle(self, inbound: Inbound) -> Positions | None:
        self._raise_failure()
        ref = media_of(inbound.push, self._settings.base_url)
        if ref is None:
            return None  # not a media push: nothing to do
        await self._slots.acquire()
        if self._failure is not None:
            self._slots.release()
            self._raise_failure()
        tp, offset = inbound.tp, inbound.record.offset
        task = asyncio.create_task(
            self._process(inbound.record, inbound.push["messageId"], ref),
            name=f"media {tp.topic}[{tp.partition}]@{offset}",
        )
        self._pending.setdefault(tp, {})[offset] = task
        task.add_done_callback(lambda done: self._finished(tp, offset, done))
        return None

    async def flush(self, handled: Positions) -> Positions:
        self._raise_failure()
        positions: Positions = {}
        for tp, position in handled.items():
            pending = self._pending.get(tp)
            positions[tp] = min(pending) if pending else position
        return positions

    async def revoked(self, partitions: list[TopicPartition]) -> None:
        # Their offsets were not committed: the new owner redoes them (stored objects are not
        # fetched again). Cancelling lets the rebalance finish now rather than after a download.
        tasks = [
            task
            for tp in partitions
            for task in (self._pending.pop(tp, None) or {}).values()
            if not task.done()
        ]
        await _cancel(tasks)

    # --- lifecycle ---------------------------------------------------------------------------

    async def drain(self, timeout: float | None = None) -> None:
        """Wait for in-flight records (at most ``timeout`` s), then cancel the rest; their
        offsets stay uncommitted. Call before the worker's final commit."""
        tasks = [task for pending in self._pending.values() for task in pending.values()]
        tasks = [task for task in tasks if not task.done()]
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=timeout)
        if late:
            log.warning("%d downloads unfinished at stop: cancelled, not committed", len(late))
            await _cancel(list(late))

    def in_flight(self) -> int:
        return sum(len(pending) for pending in self._pending.values())

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
                    await self._dead_letters.send(record, f"{ref.type} {ref.url}: {exc}")
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
        await self._events.send(record.key, self._codec.encode(event))

    async def _fetch(self, digest: str, message_id: str, ref: MediaRef) -> Stored:
        spooled = self._store.spool()
        try:
            await self._fetcher.download(ref.url, spooled, ref.digest)
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

    def _finished(self, tp: TopicPartition, offset: int, task: asyncio.Task[None]) -> None:
        self._slots.release()
        if task.cancelled():
            return  # revoked or stopped: the offset stays uncommitted
        error = task.exception()
        if error is not None:
            # Stays pending, so no commit passes it; the next handle or flush stops the worker.
            log.error("%s failed", task.get_name(), exc_info=error)
            if self._failure is None:
                self._failure = error
            return
        pending = self._pending.get(tp)
        if pending is not None:
            pending.pop(offset, None)

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise HandlerFailed(f"a media task failed: {self._failure!r}") from self._failure


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
