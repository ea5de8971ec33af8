"""A conversation's pushes in order: its key picks its one partition, which is read over the
window; each push with its type, text or caption, media reference and what the groups did.
Meta's statuses of the business's own messages to the customer share the conversation's key
(``StatusCodec.key``), as the media worker's events of its pushes do: read the same way."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from schemas import MediaCodec, PushCodec, SchemaError
from schemas.meta import StatusCodec
from uplink.operate.trace import conversation_key, media_event, partition_of
from uplink.operate.window import Record, TopicReader, iso
from uplink.settings import Topics

_MEDIA = ("image", "video", "audio", "document", "sticker")


@dataclass(frozen=True)
class Line:
    record: Record
    push: dict[str, Any] | None
    status: str

    def row(self) -> dict[str, Any]:
        push = self.push or {}
        message = push.get("message") or {}
        kind = message.get("type")
        text = (message.get("text") or {}).get("body")
        media = None
        for name in _MEDIA:
            part = message.get(name)
            if part:
                text = text or part.get("caption")
                media = part.get("filePath") or part.get("id")
                kind = kind or name
        stamp = push.get("timestamp")  # seconds, as the provider sends it
        return {
            "time": iso(stamp * 1000 if isinstance(stamp, int) else self.record.timestamp),
            "type": kind,
            "text": text,
            "media": media,
            "messageId": push.get("messageId"),
            "offset": self.record.offset,
            "status": self.status,
        }


@dataclass(frozen=True)
class Conversation:
    lines: list[Line]  # the newest pushes, in the order they were received
    matched: int  # pushes of the conversation in the window (more than lines: cut)
    # messageId → what the media worker stored of it (asked with ``media``)
    media: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # the newest status of each of the business's own messages (asked with ``statuses``)
    statuses: list[dict[str, Any]] = field(default_factory=list)


async def conversation(
    reader: TopicReader,
    codec: PushCodec,
    groups: Mapping[str, str],
    topics: Topics,
    business: str,
    sender: str,
    since_ms: int,
    limit: int | None = None,
    media: bool = False,
    statuses: bool = False,
) -> Conversation:
    """The conversation's pushes since ``since_ms`` (the newest ``limit`` of them), in the
    order they were received, each with what ``groups`` (worker → group) made of it; with
    ``media``, what the media worker stored of them, and with ``statuses``, the newest status
    of each of the business's messages to ``sender`` (sent, delivered, read, failed), in the
    order of their first. All keyed by the conversation: one partition of each topic, read in
    one go while the groups' positions are asked."""
    key = conversation_key(business, sender)
    existing = await reader.topics() if media or statuses else set()
    wanted = [topics.messages]
    wanted += [topics.media] if media and topics.media in existing else []
    wanted += [topics.statuses] if statuses and topics.statuses in existing else []
    chosen = {topic: [partition_of(key, await reader.partitions(topic))] for topic in wanted}
    positions = asyncio.ensure_future(
        reader.committed(groups, TopicPartition(topics.messages, chosen[topics.messages][0]))
    )
    # Keys are compared as they come; only the pushes shown are decoded.
    kept: deque[Record] = deque(maxlen=limit)
    matched = 0
    stored: list[dict[str, Any]] = []
    ticks = _Ticks()
    media_codec = MediaCodec()
    try:
        async for record in reader.read_all(chosen, since_ms):
            if record.key != key:
                continue
            if record.topic == topics.messages:
                kept.append(record)
                matched += 1
            elif record.topic == topics.media:
                event = media_event(media_codec, record)
                if event is not None:
                    stored.append(event)
            else:
                ticks.add(record)
    finally:
        committed = await positions
    lines: list[Line] = []
    for record in kept:
        try:
            await codec.learn([record.value])
            push: dict[str, Any] | None = codec.decode(record.value or b"")
        except SchemaError:
            push = None
        behind = [w for w, at in committed.items() if at is None or at <= record.offset]
        status = "processed" if not behind else "pending: " + ", ".join(behind)
        lines.append(Line(record, push, status if push is not None else "undecodable"))
    shown = {str(line.row()["messageId"]) for line in lines}
    by_push: dict[str, list[dict[str, Any]]] = {}
    for event in stored:
        if str(event["messageId"]) in shown:
            by_push.setdefault(str(event["messageId"]), []).append(event)
    return Conversation(lines, matched, by_push, list(ticks.newest.values()))


class _Ticks:
    """The newest status of each message, with the time of its first."""

    def __init__(self) -> None:
        self.codec = StatusCodec()
        self.newest: dict[str, dict[str, Any]] = {}

    def add(self, record: Record) -> None:
        try:
            status = self.codec.decode(record.value or b"")
        except SchemaError:
            return
        stamp = status.get("timestamp")
        first = self.newest.get(status["id"], {}).get("time")
        self.newest[status["id"]] = {
            "id": status["id"],
            "status": status.get("status"),
            "time": first or iso(stamp * 1000 if isinstance(stamp, int) else record.timestamp),
        }
