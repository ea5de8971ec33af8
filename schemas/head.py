"""A push record's leading fields, read without decoding the rest of the datum.

Every worker needs a record's ``messageId`` (dedupe) and most need its event time; decoding the
whole datum for those costs ~16 µs a record. push.avsc keeps them first on purpose, and
``schemas/_records.c`` reads them for a whole fetched batch in one call (~0.1 µs a record; the
same walk in Python was ~1.4, as much as aiokafka's own work per record). ``HeadReader.fits``
checks that layout, and a codec built for a schema laid out otherwise decodes the whole datum
instead of misreading it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, NamedTuple

from schemas._records import heads
from schemas.exceptions import CorruptRecord, UnknownSchema

# (name, type) of the fields the reader walks, in schema order.
LAYOUT: Final = (
    ("appId", ["null", "string"]),
    ("channelType", ["null", "int"]),
    ("messageId", "string"),
    ("timestamp", ["null", "long"]),
)
HEADER: Final = 10  # the single-object header: marker and fingerprint

Head = tuple[str, int | None]


class Heads(NamedTuple):
    """A batch's heads by column (a list per field costs less than a tuple per record)."""

    ids: list[str]  # the messageIds of the values that have a head, in order
    stamps: list[int | None]  # their event timestamps (s), None where a push has none
    failed: list[tuple[int, str]]  # (index in the batch, why it has no head), in order


class HeadReader:
    """``read(value) -> (messageId, timestamp or None)`` of a single-object encoded push."""

    def __init__(self, schema: dict[str, Any], header: bytes) -> None:
        if not self.fits(schema):
            raise ValueError(f"the schema does not start with the fields {LAYOUT}")
        if len(header) != HEADER:
            raise ValueError(f"a single-object header is {HEADER} bytes")
        self._header = header

    @staticmethod
    def fits(schema: dict[str, Any]) -> bool:
        found = tuple((field["name"], field["type"]) for field in schema["fields"][: len(LAYOUT)])
        return found == LAYOUT

    def read(self, data: bytes) -> Head:
        if data[:HEADER] != self._header:
            raise UnknownSchema(f"not a push record of this schema (header {data[:10].hex()})")
        ids, stamps, failed = heads(self._header, (data,))
        if failed:
            raise CorruptRecord(failed[0][1])
        return ids[0], stamps[0]

    def read_many(self, values: Sequence[bytes | None]) -> Heads:
        """``read`` for a batch, in one call."""
        return Heads(*heads(self._header, values))
