"""What PushCodec writes, independent Avro implementations read, and the other way round.

Implementations: Apache `avro` (Python, PyPI) and, when installed, Avro C's `avrocat` (Debian
avro-bin). The fingerprint is also recomputed here straight from the Avro spec.
"""

from __future__ import annotations

import datetime
import io
import json
import shutil
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import avro.io
import avro.schema
import orjson
import pytest
from fastavro.schema import to_parsing_canonical_form

from schemas import PushCodec, load_push_schema
from schemas.container import BlockFormat

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.json"))
AVSC = resources.files("schemas").joinpath("push.avsc").read_text(encoding="utf-8")
APACHE_SCHEMA = avro.schema.parse(AVSC)
CODEC = PushCodec()
RECEIVED_AT = 1_700_000_000_123
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)

# A push exercising every typed field at once, quirks included.
FULL_PUSH = orjson.dumps({
    "appId": "a", "channelType": "0", "messageId": 42, "timestamp": "1693396796",
    "eventType": "up-message-event", "businessPhone": 639518159038, "sendNum": 1, "wsCode": "ws",
    "from": {"phone": "91856321412", "name": "Zoë 🙂"},
    "message": {
        "type": "interactive",
        "text": {"body": "b"},
        "image": {"filePath": "p", "mimeType": "image/jpeg", "id": "1", "sha256": "s",
                  "caption": "c"},
        "video": {"filePath": "p", "mimeType": "m", "id": "2", "sha256": "s", "caption": "c",
                  "filename": "f"},
        "audio": {"filePath": "p", "mimeType": "m", "id": "3", "sha256": "s", "voice": True},
        "document": {"filename": "f", "filePath": "p", "mimeType": "m", "id": "4", "sha256": "s",
                     "caption": "c"},
        "sticker": {"filePath": "p", "mimeType": "image/webp", "animated": "false", "id": "5",
                    "sha256": "s"},
        "location": {"longitude": 114.05, "latitude": "22.6", "name": "n", "address": "a",
                     "url": "https://example.com/"},
        "unknown": {"code": 131051, "details": {"x": [1]}, "title": "t", "message": "m"},
        "unsupported": {"code": "c", "details": "d", "title": "t", "message": "m"},
        "interactive": {
            "type": "button_reply",
            "button_reply": {"id": "b", "title": "Yes"},
            "list_reply": {"id": "l", "title": "Row", "description": "d"},
            "nfm_reply": {"name": "flow", "body": "Sent", "response_json": "{}"},
            "header": {"type": "text", "text": "h"},
            "body": {"text": "b"},
            "footer": {"text": "f"},
            "action": {
                "button": "B",
                "buttons": [{"type": "reply", "reply": {"id": "1", "title": "A"}}],
                "sections": [{"title": "S",
                              "rows": [{"id": "r", "title": "R", "description": "D"}]}],
            },
        },
        "contacts": [{
            "addresses": [{"city": "c", "country": "c", "country_code": "cc", "state": "s",
                           "street": "s", "type": "HOME", "zip": 4800000}],
            "birthday": "2000-01-01",
            "emails": [{"email": "e@example.com", "type": "WORK"}],
            "name": {"first_name": "f", "formatted_name": "F", "last_name": "l", "middle_name": "m",
                     "prefix": "p", "suffix": "s"},
            "org": {"company": "c", "department": "d", "title": "t"},
            "phones": [{"phone": 91856321412, "type": "CELL", "department": "HOME",
                        "wa_id": "91856321412"}],
            "urls": [{"type": "WORK", "url": "https://example.com/"}],
        }],
        "context": {"from": "f", "id": "i", "forwarded": "true", "frequently_forwarded ": 0,
                    "referred_product": {"catalog_id": "c", "product_retailer_id": "p"}},
        "button": {"payload": "p", "text": "t"},
        "reaction": {"message_id": "m", "emoji": "👍"},
        "order": {"catalog_id": "c", "text": "t", "product_items": [
            {"product_retailer_id": "p", "quantity": "2", "item_price": 9.5, "currency": "EUR"}]},
        "errors": [{"code": 1, "details": "d", "title": "t", "message": "m"}],
        "referral": {"source_url": "u", "source_id": "i", "source_type": "ad", "headline": "h",
                     "body": "b", "media_type": "image", "image_url": "u", "video_url": "v",
                     "thumbnail_url": "t", "ctwa_clid": "c"},
        "system": {"body": "b", "identity": "i", "new_wa_id": "n", "wa_id": "w",
                   "type": "user_changed_number", "customer": "c"},
    },
})  # fmt: skip
BODIES = [path.read_bytes() for path in EXAMPLES] + [FULL_PUSH]
IDS = [path.stem for path in EXAMPLES] + ["full"]


def apache_read(datum: bytes) -> Any:
    reader = avro.io.DatumReader(APACHE_SCHEMA)
    return reader.read(avro.io.BinaryDecoder(io.BytesIO(datum)))


def apache_write(record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    avro.io.DatumWriter(APACHE_SCHEMA).write(record, avro.io.BinaryEncoder(out))
    return out.getvalue()


def with_datetime(record: dict[str, Any]) -> dict[str, Any]:
    """Apache avro maps timestamp-millis to an aware datetime, the codec keeps epoch millis."""
    millis = record["receivedAt"]
    return {**record, "receivedAt": EPOCH + datetime.timedelta(milliseconds=millis)}


def test_full_push_fills_every_typed_field() -> None:
    def nulls(value: Any, path: str) -> list[str]:
        if isinstance(value, dict):
            return [p for k, v in value.items() for p in nulls(v, f"{path}.{k}")]
        if isinstance(value, list):
            return [p for v in value for p in nulls(v, f"{path}[]")]
        return [path] if value is None else []

    # meta: only in records the ingress maps from Meta's webhook (tests/schemas/test_meta.py).
    assert nulls(CODEC.parse(FULL_PUSH, RECEIVED_AT), "") == [".meta"]


@pytest.mark.parametrize("body", BODIES, ids=IDS)
def test_apache_avro_reads_what_the_codec_writes(body: bytes) -> None:
    record = CODEC.parse(body, RECEIVED_AT)
    data = CODEC.encode(record)
    assert apache_read(data[10:]) == with_datetime(record)


@pytest.mark.parametrize("body", BODIES, ids=IDS)
def test_codec_reads_what_apache_avro_writes(body: bytes) -> None:
    record = CODEC.parse(body, RECEIVED_AT)
    datum = apache_write(with_datetime(record))
    assert datum == CODEC.encode(record)[10:]  # the binary encoding is deterministic
    assert CODEC.decode(CODEC.header + datum) == record


# --- fingerprint ------------------------------------------------------------------------------

_EMPTY64 = 0xC15D213AA4D7A795  # Avro spec, "Schema Fingerprints"


def _fp_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY64 & -(fp & 1))
        table.append(fp)
    return table


def crc64_avro(data: bytes) -> int:
    table = _fp_table()
    fp = _EMPTY64
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def test_fingerprint_is_the_specs_crc64_of_the_canonical_form_little_endian() -> None:
    canonical = to_parsing_canonical_form(CODEC.schema).encode()
    assert CODEC.fingerprint == crc64_avro(canonical).to_bytes(8, "little")


def test_fingerprint_matches_apache_avro() -> None:
    canonical = to_parsing_canonical_form(CODEC.schema)
    # Apache avro's Python canonical form keeps a logical long as {"type":"long"}; the spec
    # ([PRIMITIVES]) and the Java implementation reduce it to "long", as fastavro does.
    assert APACHE_SCHEMA.canonical_form.replace('{"type":"long"}', '"long"') == canonical
    # The canonical form has no logical types left, so there both agree, down to the bytes.
    assert avro.schema.parse(canonical).canonical_form == canonical
    assert avro.schema.parse(canonical).fingerprint("CRC-64-AVRO") == CODEC.fingerprint


def test_fingerprint_is_the_one_java_computes() -> None:
    # org.apache.avro.SchemaNormalization.parsingFingerprint64 (avro 1.12.0) on push.avsc, as
    # little-endian bytes. A change here is a change of the wire contract: consumers must know.
    # v1 was b2af516ff0b37bcb; v2 adds Meta's fields (issue 17).
    assert CODEC.fingerprint.hex() == "d7365c5054f220a8"


# --- Avro C (avrocat), when installed ---------------------------------------------------------


def _from_avro_json(schema: Any, value: Any) -> Any:
    """Avro's JSON encoding (unions wrapped as {"type": value}) → plain values, by the schema."""
    if schema.type == "union":
        if value is None:
            return None
        [branch] = [s for s in schema.schemas if s.type != "null"]
        [inner] = value.values()
        return _from_avro_json(branch, inner)
    if schema.type == "record":
        return {f.name: _from_avro_json(f.type, value[f.name]) for f in schema.fields}
    if schema.type == "array":
        return [_from_avro_json(schema.items, item) for item in value]
    if schema.type == "bytes":
        return value.encode("latin-1")  # the JSON encoding maps bytes to code points 0-255
    return value


def test_avro_c_reads_what_the_codec_writes(tmp_path: Path) -> None:
    # scripts/test installs it; a machine without it must say so rather than skip the check.
    assert shutil.which("avrocat"), "avrocat missing: apt-get install avro-bin"
    records = [CODEC.parse(body, RECEIVED_AT) for body in BODIES]
    path = tmp_path / "pushes.avro"
    fmt = BlockFormat(json.dumps(load_push_schema()), "null")
    path.write_bytes(fmt.header + fmt.block([CODEC.encode(record)[10:] for record in records]))
    shown = subprocess.run(["avrocat", str(path)], capture_output=True, check=True, timeout=60)
    lines = shown.stdout.decode().splitlines()
    assert [_from_avro_json(APACHE_SCHEMA, json.loads(line)) for line in lines] == records
