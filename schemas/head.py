"""A push record's leading fields, read without decoding the rest of the datum.

Every worker needs a record's ``messageId`` (dedupe) and most need its event time; decoding the
whole datum for those costs many times what reading its first fields does (bench/RESULTS.md,
"Codec paths"). push.avsc keeps them first on purpose (and the evolution policy keeps them there,
schemas/EVOLUTION.md), and ``schemas/_records.c`` reads them for a whole fetched batch in one
call, after any header of a known writer schema that has this layout (schemas/writers.py's
``HEAD_LAYOUT``), single-object or Confluent. ``HeadReader.fits`` checks that layout; a record
of a writer laid out otherwise is decoded whole instead of misread.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from schemas._records import heads
from schemas.exceptions import CorruptRecord, SchemaError, UnknownSchema
from schemas.writers import HEAD_LAYOUT, WriterSchemas, has_head_layout

Head = tuple[str, int | None]


class Heads(NamedTuple):
    """A batch's heads by column (a list per field costs less than a tuple per record)."""

    ids: list[str]  # the messageIds of the values that have a head, in order
    stamps: list[int | None]  # their event timestamps (s), None where a push has none
    failed: list[tuple[int, str]]  # (index in the batch, why it has no head), in order


class HeadReader:
    """``read_many(values)``: the heads of a batch of pushes of any known writer schema."""

    def __init__(self, writers: WriterSchemas) -> None:
        if not self.fits(writers.reader):
            raise ValueError(f"the schema does not start with the fields {HEAD_LAYOUT}")
        self._writers = writers

    @staticmethod
    def fits(schema: dict[str, Any]) -> bool:
        """Whether records of ``schema`` have heads this reader reads."""
        return has_head_layout(schema)

    def read_many(self, values: Sequence[bytes | None]) -> Heads:
        """(messageId, timestamp or None) of each value, by column, in one call."""
        writers = self._writers
        found = Heads(*heads(writers.head_headers, values))
        if found.failed and any(
            (writer := writers.get(values[index] or b"")) is not None and not writer.fits
            for index, _ in found.failed
        ):
            return decoded_heads(writers, values)  # a writer laid out otherwise: the slow way
        return found


def decoded_heads(writers: WriterSchemas, values: Sequence[bytes | None]) -> Heads:
    """``read_many`` value by value, decoding those of writers without the head layout."""
    found = Heads([], [], [])
    for index, value in enumerate(values):
        try:
            if value is None:
                raise CorruptRecord("no value")
            writer = writers.get(value)
            if writer is None:
                raise UnknownSchema(f"not a push record of this schema (header {value[:10].hex()})")
            if writer.fits:
                ids, stamps, failed = heads((writer.header,), (value,))
                if failed:
                    raise CorruptRecord(failed[0][1])
                message_id, stamp = ids[0], stamps[0]
            else:
                record = writer.read(value, len(writer.header))
                message_id, stamp = record["messageId"], record.get("timestamp")
        except SchemaError as exc:
            found.failed.append((index, str(exc)))
        else:
            found.ids.append(message_id)
            found.stamps.append(stamp)
    return found
