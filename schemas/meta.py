"""Meta's WhatsApp Cloud API webhook → records: one per event of a POST.

A POST holds ``entry[].changes[]``. For ``field: "messages"`` each ``value.messages[]`` item
becomes a push record (push.avsc, the same schema as the provider's pushes, so every worker
serves both), each ``value.statuses[]`` item a status record (status.avsc), and whatever else a
change carries — another field (account_update, message_template_status_update, ...), or keys
of a messages value beside those (value.errors) — a Meta event record (meta_event.avsc). Every
record keeps the whole POST in ``raw`` and its event's position in ``meta``. The mapping is the
README's table ("Meta's webhook").

The typed views are best effort, as for the provider's pushes: a value of the wrong type is null
there and still in raw. What is not a webhook at all (not a JSON object, no ``entry`` list, a
change without ``field`` or ``value``, a message without ``id``, a status without ``id`` or
``status``) raises NotAWebhook, with the place that is wrong.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Final, cast

import orjson

from schemas.body import JSON_KINDS, load_json
from schemas.codec import PushCodec
from schemas.converter import compile_converter, to_str
from schemas.exceptions import NotAPush
from schemas.framing import Framing
from schemas.writers import released_schemas

META_SOURCE: Final = "meta"  # push.avsc's `source` of the records mapped from Meta's webhook
MEDIA_TYPES: Final = ("image", "video", "audio", "document", "sticker")
# Keys of a messages change's value that the message and status records account for.
_MESSAGING_KEYS: Final = frozenset(
    {"messaging_product", "metadata", "contacts", "messages", "statuses"}
)
_SET_BY_INGRESS: Final = frozenset({"eventId", "businessPhone", "meta", "raw", "receivedAt"})


class NotAWebhook(NotAPush):
    """The POST is signed but is not a Meta webhook (the ingress answers 400, quarantines it)."""


def _load(name: str) -> dict[str, Any]:
    text = resources.files("schemas").joinpath(name).read_text(encoding="utf-8")
    return cast(dict[str, Any], json.loads(text))


def load_status_schema() -> dict[str, Any]:
    return _load("status.avsc")


def load_meta_event_schema() -> dict[str, Any]:
    return _load("meta_event.avsc")


class StatusCodec(Framing):
    """Frames status records (status.avsc); build once, reuse."""

    def __init__(self) -> None:
        source = load_status_schema()
        super().__init__(source, released_schemas("status"))
        self.convert = compile_converter(source, _SET_BY_INGRESS)

    @staticmethod
    def key(record: dict[str, Any]) -> bytes:
        """The conversation, as a push's key: businessPhone:recipient_id."""
        return f"{record.get('businessPhone') or ''}:{record.get('recipient_id') or ''}".encode()


class MetaEventCodec(Framing):
    """Frames Meta event records (meta_event.avsc); build once, reuse."""

    def __init__(self) -> None:
        super().__init__(load_meta_event_schema(), released_schemas("meta_event"))

    @staticmethod
    def key(record: dict[str, Any]) -> bytes:
        """The business account: one account's events stay in order."""
        return (record["meta"]["wabaId"] or "").encode()


@dataclass
class Webhook:
    """The records of one POST, in the order of their events."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.messages) + len(self.statuses) + len(self.events)


class MetaWebhook:
    """Parses a webhook POST into its records; build once, reuse."""

    def __init__(self, pushes: PushCodec, statuses: StatusCodec) -> None:
        self._pushes = pushes
        self._statuses = statuses

    def parse(self, raw: bytes, received_at_ms: int) -> Webhook:
        if not raw:
            raise NotAWebhook("body is empty")
        try:
            body = load_json(raw)
        except NotAPush as exc:
            raise NotAWebhook(exc.reason) from None
        if type(body) is not dict:
            raise NotAWebhook(f"body is a JSON {JSON_KINDS.get(type(body))}, not an object")
        entries = body.get("entry")
        if type(entries) is not list:
            raise NotAWebhook(_wrong("entry", entries, "a list"))
        webhook = Webhook()
        origin = {"object": to_str(body.get("object"))}
        for e, entry in enumerate(entries):
            where = f"entry[{e}]"
            if type(entry) is not dict:
                raise NotAWebhook(_wrong(where, entry, "an object"))
            changes = entry.get("changes")
            if type(changes) is not list:
                raise NotAWebhook(_wrong(f"{where}.changes", changes, "a list"))
            for c, change in enumerate(changes):
                at = f"{where}.changes[{c}]"
                if type(change) is not dict:
                    raise NotAWebhook(_wrong(at, change, "an object"))
                kind, value = change.get("field"), change.get("value")
                if type(kind) is not str or not kind:
                    raise NotAWebhook(_wrong(f"{at}.field", kind, "a non-empty string"))
                if type(value) is not dict:
                    raise NotAWebhook(_wrong(f"{at}.value", value, "an object"))
                metadata = value.get("metadata")
                metadata = metadata if type(metadata) is dict else {}
                here = {
                    **origin,
                    "wabaId": to_str(entry.get("id")),
                    "phoneNumberId": to_str(metadata.get("phone_number_id")),
                    "field": kind,
                    "entry": e,
                    "change": c,
                }
                stamp = (raw, received_at_ms)
                if kind == "messages":
                    business = to_str(metadata.get("display_phone_number"))
                    self._messages(webhook, value, here, business, f"{at}.value", stamp)
                    if set(value) <= _MESSAGING_KEYS:
                        continue
                webhook.events.append(_event(entry, kind, value, here, stamp))
        return webhook

    def _messages(
        self,
        webhook: Webhook,
        value: dict[str, Any],
        here: dict[str, Any],
        business: str | None,
        at: str,
        stamp: tuple[bytes, int],
    ) -> None:
        raw, received_at = stamp
        names = _profile_names(value.get("contacts"))
        for i, message in enumerate(_items(value, "messages", at)):
            message_id = _required(message, "id", f"{at}.messages[{i}]")
            sender = to_str(message.get("from"))
            record = self._pushes.convert(
                {
                    "messageId": message_id,
                    "timestamp": message.get("timestamp"),
                    "channelType": 0,
                    "businessPhone": business,
                    "from": {"phone": sender, "name": names.get(sender or "", names.get(""))},
                    "message": _message(message),
                }
            )
            record.update(
                raw=raw, receivedAt=received_at, source=META_SOURCE, meta={**here, "index": i}
            )
            webhook.messages.append(record)
        for i, status in enumerate(_items(value, "statuses", at)):
            where = f"{at}.statuses[{i}]"
            wamid = _required(status, "id", where)
            state = _required(status, "status", where)
            record = self._statuses.convert({**status, "errors": _errors(status.get("errors"))})
            record.update(
                eventId=f"{wamid}:{state}:{to_str(status.get('timestamp')) or ''}",
                businessPhone=business,
                meta={**here, "index": i},
                raw=raw,
                receivedAt=received_at,
            )
            webhook.statuses.append(record)


def _message(message: dict[str, Any]) -> dict[str, Any]:
    """A Meta message object in the push's Message shape: keys are mostly the same; media's
    mime_type is mimeType, an error's error_data.details is details, and the first error of an
    unsupported or unknown message is also its `unsupported`/`unknown` object, as the provider
    sends it."""
    out = {k: v for k, v in message.items() if k not in ("from", "id", "timestamp")}
    for kind in MEDIA_TYPES:
        media = out.get(kind)
        if type(media) is dict and "mime_type" in media and "mimeType" not in media:
            out[kind] = {**media, "mimeType": media["mime_type"]}
    errors = _errors(message.get("errors"))
    if errors is not None:
        out["errors"] = errors
        type_ = to_str(message.get("type"))
        if type_ in ("unsupported", "unknown") and type_ not in out and type(errors) is list:
            out[type_] = errors[0] if errors else None
    return out


def _errors(errors: Any) -> Any:
    """Meta's errors with error_data.details lifted to details (what the schemas type)."""
    if type(errors) is not list:
        return errors
    lifted = []
    for error in errors:
        if type(error) is dict and "details" not in error:
            data = error.get("error_data")
            if type(data) is dict and "details" in data:
                error = {**error, "details": data["details"]}
        lifted.append(error)
    return lifted


def _profile_names(contacts: Any) -> dict[str, str | None]:
    """wa_id → profile name; "" → the name when there is one contact (a forwarded copy of Meta's
    payload may drop wa_id)."""
    names: dict[str, str | None] = {}
    if type(contacts) is not list:
        return names
    for contact in contacts:
        if type(contact) is not dict:
            continue
        profile = contact.get("profile")
        name = to_str(profile.get("name")) if type(profile) is dict else None
        names[to_str(contact.get("wa_id")) or ""] = name
    if len(contacts) == 1 and names:
        names.setdefault("", next(iter(names.values())))
    return names


def _items(value: dict[str, Any], key: str, at: str) -> list[dict[str, Any]]:
    items = value.get(key)
    if items is None:
        return []
    if type(items) is not list:
        raise NotAWebhook(_wrong(f"{at}.{key}", items, "a list"))
    for i, item in enumerate(items):
        if type(item) is not dict:
            raise NotAWebhook(_wrong(f"{at}.{key}[{i}]", item, "an object"))
    return items


def _required(item: dict[str, Any], key: str, where: str) -> str:
    text = to_str(item.get(key))
    if text is None or not text.strip():
        raise NotAWebhook(_wrong(f"{where}.{key}", item.get(key), "a non-empty string"))
    return text


def _event(
    entry: dict[str, Any],
    kind: str,
    value: dict[str, Any],
    here: dict[str, Any],
    stamp: tuple[bytes, int],
) -> dict[str, Any]:
    try:
        text = orjson.dumps(value).decode()
    except (TypeError, ValueError):  # an int beyond 64 bits from the lenient parser
        text = json.dumps(value, ensure_ascii=False)
    time = entry.get("time")
    digest = hashlib.sha256(text.encode()).hexdigest()
    return {
        "eventId": f"{kind}:{here['wabaId'] or ''}:{to_str(time) or ''}:{digest}",
        "time": time if type(time) is int and -(2**63) <= time < 2**63 else None,
        "field": kind,
        "value": text,
        "meta": {**here, "index": 0},
        "raw": stamp[0],
        "receivedAt": stamp[1],
    }


def _wrong(where: str, value: Any, expected: str) -> str:
    if value is None:
        return f"{where} is missing (expected {expected})"
    return f"{where} is a JSON {JSON_KINDS.get(type(value))}, expected {expected}"
