"""The push writer: an HTTP body → a push record (push.avsc), its Kafka key and its framed bytes.

Normalisation is compiled once from the schema (schemas/converter.py); the ingress calls
``parse`` and ``encode`` on its hot path.
"""

from __future__ import annotations

from typing import Any, Final, cast

from schemas.body import JSON_KINDS, load_json
from schemas.converter import compile_converter, to_str
from schemas.exceptions import NotAPush
from schemas.framing import RecordWriter
from schemas.writers import load_push_schema

# Set by the ingress, never read from the JSON body (a body key "raw" must not override them).
INGRESS_FIELDS: Final = frozenset({"raw", "receivedAt", "source", "meta"})
UPLINK_SOURCE: Final = "uplink"  # push.avsc's `source` of the provider's pushes


class PushWriter(RecordWriter):
    """Turns a push body into a record and frames it for Kafka; build once, reuse."""

    def __init__(self, schema: dict[str, Any] | None = None) -> None:
        """``schema``: the record's schema, push.avsc by default."""
        source = load_push_schema() if schema is None else schema
        super().__init__(source)
        self._push = compile_converter(source, INGRESS_FIELDS)
        # push.avsc has it since v2; a custom schema may not.
        self._sourced = any(f["name"] == "source" for f in source["fields"])
        # An all-null Message, for pushes that carry only a top-level `type`.
        self._empty_message: dict[str, Any] | None = self._push({"message": {}}).get("message")

    def parse(self, raw: bytes, received_at_ms: int) -> dict[str, Any]:
        """A push body → record; raises NotAPush when the body is not a push at all."""
        if not raw:
            raise NotAPush("body is empty")
        body = load_json(raw)
        if type(body) is not dict:
            raise NotAPush(f"body is a JSON {JSON_KINDS.get(type(body))}, not an object")
        record: dict[str, Any] = self._push(body)
        message_id = record["messageId"]
        if message_id is None or not message_id.strip():
            raise NotAPush(_message_id_problem(body))
        if self._empty_message is not None:
            self._lift_top_level_type(body, record)
        record["raw"] = raw
        record["receivedAt"] = received_at_ms
        if self._sourced:
            record["source"] = UPLINK_SOURCE
        return record

    def convert(self, body: dict[str, Any]) -> dict[str, Any]:
        """The typed view of a push-shaped JSON object (no ingress fields set): for other
        formats mapped onto the push, such as Meta's webhook (schemas/meta.py)."""
        record: dict[str, Any] = self._push(body)
        return record

    def _lift_top_level_type(self, body: dict[str, Any], record: dict[str, Any]) -> None:
        # The spec's "unknown" example puts `type` at top level, with no message object.
        message = record["message"]
        if message is not None and message["type"] is not None:
            return
        top_type = to_str(body.get("type"))
        if top_type is None:
            return
        if message is None:
            message = record["message"] = dict(cast(dict[str, Any], self._empty_message))
        message["type"] = top_type

    @staticmethod
    def key(record: dict[str, Any]) -> bytes:
        """Kafka key: the conversation, `businessPhone:from.phone` (missing parts empty)."""
        sender = record.get("from")
        phone = sender.get("phone") if sender else None
        return f"{record.get('businessPhone') or ''}:{phone or ''}".encode()


def _message_id_problem(body: dict[str, Any]) -> str:
    key = "messageId"
    if key not in body:
        key = next((k for k in body if k.strip() == "messageId"), key)
    if key not in body:
        return "messageId is missing"
    value = body[key]
    if value is None:
        return "messageId is null"
    if type(value) is str:
        return "messageId is empty"
    return f"messageId is a JSON {JSON_KINDS.get(type(value))}, not a string or number"
