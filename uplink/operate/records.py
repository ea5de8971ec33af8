"""What the operator verbs show of a record: its headers by name, its push decoded to JSON."""

from __future__ import annotations

import base64
from typing import Any

import orjson

from schemas import PushCodec, SchemaError
from uplink.operate.window import Record

Headers = list[tuple[str, bytes]]


def last_header(headers: Headers | tuple[tuple[str, bytes], ...] | None, name: str) -> str | None:
    """The header's last value: a record dead-lettered again keeps its earlier headers (its
    history) before the newest."""
    found: str | None = None
    for key, value in headers or ():
        if key == name:
            found = value.decode("utf-8", "replace")
    return found


def all_headers(headers: Headers | tuple[tuple[str, bytes], ...] | None, name: str) -> list[str]:
    return [v.decode("utf-8", "replace") for k, v in headers or () if k == name]


def header_texts(record: Record) -> list[list[str]]:
    """Every header as [name, text] (bytes that are not UTF-8: base64, prefixed)."""
    shown: list[list[str]] = []
    for key, value in record.headers or ():
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            text = "base64:" + base64.b64encode(value).decode()
        shown.append([key, text])
    return shown


async def decode_push(codec: PushCodec, value: bytes | None) -> tuple[Any, str | None]:
    """(the push as the provider sent it, parsed from its ``raw`` bytes; or None and why not).
    Writer schemas of registry ids not known yet are fetched first (with a registry)."""
    if value is None:
        return None, "no value"
    try:
        await codec.learn([value])
        record = codec.decode(value)
    except SchemaError as exc:
        return None, str(exc)
    raw: bytes = record["raw"]
    try:
        return orjson.loads(raw), None
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace"), None


def message_id_of(codec: PushCodec, value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        message_id, _ = codec.head(value)
    except SchemaError:
        return None
    return message_id
