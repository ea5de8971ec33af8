"""A push record's leading fields, read without decoding the rest of the datum.

Every worker needs a record's ``messageId`` (dedupe) and most need its event time; decoding the
whole datum for those costs ~16 µs a record, reading the first four fields about one. push.avsc
keeps them first on purpose; ``HeadReader.fits`` checks that layout, and a codec built for a
schema laid out otherwise decodes the whole datum instead of misreading it.
"""

from __future__ import annotations

from typing import Any, Final

from schemas.exceptions import CorruptRecord, UnknownSchema

# (name, type) of the fields the reader walks, in schema order.
LAYOUT: Final = (
    ("appId", ["null", "string"]),
    ("channelType", ["null", "int"]),
    ("messageId", "string"),
    ("timestamp", ["null", "long"]),
)


def _long_at(data: bytes, pos: int) -> tuple[int, int]:
    """Avro's zig-zag varint at ``pos``: (value, position after it)."""
    byte = data[pos]
    pos += 1
    if byte < 0x80:
        return (byte >> 1) ^ -(byte & 1), pos
    result, shift = byte & 0x7F, 7
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise CorruptRecord("varint longer than 10 bytes")


class HeadReader:
    """``read(value) -> (messageId, timestamp or None)`` of a single-object encoded push."""

    def __init__(self, schema: dict[str, Any], header: bytes) -> None:
        if not self.fits(schema):
            raise ValueError(f"the schema does not start with the fields {LAYOUT}")
        self._header = header

    @staticmethod
    def fits(schema: dict[str, Any]) -> bool:
        found = tuple((field["name"], field["type"]) for field in schema["fields"][: len(LAYOUT)])
        return found == LAYOUT

    def read(self, data: bytes) -> tuple[str, int | None]:
        if data[:HEADER] != self._header:
            raise UnknownSchema(f"not a push record of this schema (header {data[:10].hex()})")
        try:
            return _fields(data)
        except (IndexError, UnicodeDecodeError) as exc:
            raise CorruptRecord(f"undecodable datum head: {exc!r}") from exc


HEADER = 10  # the single-object header: marker and fingerprint


def _fields(data: bytes) -> tuple[str, int | None]:
    # The hot path of every worker, once per record: the common encodings (a union's branch is one
    # byte, 0: null, 2: the value; lengths under 64 and ints under 64 are one byte; today's
    # timestamp in seconds is five) are read inline, anything longer through _long_at.
    branch = data[HEADER]  # appId
    if branch == 2:
        size = data[HEADER + 1]
        if size < 0x80 and not size & 1:
            pos = HEADER + 2 + (size >> 1)
        else:
            size, pos = _long_at(data, HEADER + 1)
            if size < 0:
                raise CorruptRecord("appId has a negative length")
            pos += size
    elif branch == 0:
        pos = HEADER + 1
    else:
        raise CorruptRecord(f"appId: no union branch byte {branch}")
    branch = data[pos]  # channelType
    if branch == 2:
        pos = pos + 2 if data[pos + 1] < 0x80 else _long_at(data, pos + 1)[1]
    elif branch == 0:
        pos += 1
    else:
        raise CorruptRecord(f"channelType: no union branch byte {branch}")
    size = data[pos]  # messageId
    if size < 0x80 and not size & 1:
        pos += 1
        end = pos + (size >> 1)
    else:
        size, pos = _long_at(data, pos)
        end = pos + size
        if size < 0:
            raise CorruptRecord("messageId has a negative length")
    if end >= len(data):  # the timestamp's branch byte follows
        raise CorruptRecord("messageId runs past the record")
    message_id = data[pos:end].decode()
    branch = data[end]  # timestamp
    if branch == 0:
        return message_id, None
    if branch != 2:
        raise CorruptRecord(f"timestamp: no union branch byte {branch}")
    five = data[end + 1 : end + 6]
    if len(five) == 5:
        b0, b1, b2, b3, b4 = five
        if b0 & b1 & b2 & b3 & 0x80 and b4 < 0x80:  # five bytes: 2^27 <= |seconds| < 2^34
            value = (
                (b0 & 0x7F) | (b1 & 0x7F) << 7 | (b2 & 0x7F) << 14 | (b3 & 0x7F) << 21 | b4 << 28
            )
            return message_id, (value >> 1) ^ -(value & 1)
    return message_id, _long_at(data, end + 1)[0]
