"""A conversation's pushes in order: its key picks its one partition, which is read over the
window; each push with its type, text or caption, media reference and what the groups did.
Meta's statuses of the business's own messages to the customer share the conversation's key
(``StatusCodec.key``): ``statuses`` reads them the same way."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition

from schemas import PushCodec, SchemaError
from schemas.meta import StatusCodec
from uplink.operate.trace import conversation_key, partition_of
from uplink.operate.window import Record, TopicReader, iso

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


async def conversation(
    reader: TopicReader,
    codec: PushCodec,
    groups: Mapping[str, str],
    topic: str,
    business: str,
    sender: str,
    since_ms: int,
    limit: int | None = None,
) -> Conversation:
    """The conversation's pushes since ``since_ms`` (the newest ``limit`` of them), in the
    order they were received, each with what ``groups`` (worker → group) made of it."""
    key = conversation_key(business, sender)
    partitions = await reader.partitions(topic)
    partition = partition_of(key, partitions)
    committed = await reader.committed(groups, TopicPartition(topic, partition))
    # Keys are compared as they come; only the pushes shown are decoded.
    kept: deque[Record] = deque(maxlen=limit)
    matched = 0
    async for record in reader.read(topic, since_ms, partitions=[partition]):
        if record.key == key:
            kept.append(record)
            matched += 1
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
    return Conversation(lines, matched)


async def statuses(
    reader: TopicReader, topic: str, business: str, recipient: str, since_ms: int
) -> list[dict[str, Any]]:
    """The newest status of each of the business's messages to ``recipient`` since
    ``since_ms`` (sent, delivered, read, failed), in the order of their first status."""
    if topic not in await reader.topics():
        return []
    key = conversation_key(business, recipient)
    partition = partition_of(key, await reader.partitions(topic))
    codec = StatusCodec()
    newest: dict[str, dict[str, Any]] = {}
    async for record in reader.read(topic, since_ms, partitions=[partition]):
        if record.key != key:
            continue
        try:
            status = codec.decode(record.value or b"")
        except SchemaError:
            continue
        stamp = status.get("timestamp")
        first = newest.get(status["id"], {}).get("time")
        newest[status["id"]] = {
            "id": status["id"],
            "status": status.get("status"),
            "time": first or iso(stamp * 1000 if isinstance(stamp, int) else record.timestamp),
        }
    return list(newest.values())
