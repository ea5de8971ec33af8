"""The push reader: records of any known writer schema → their heads, views and whole records."""

from __future__ import annotations

from collections.abc import Sequence

from schemas.exceptions import CorruptRecord, UnknownSchema
from schemas.framing import RecordReader
from schemas.head import HeadReader, Heads, decoded_heads
from schemas.registry import RegistryClient
from schemas.writers import WriterSchemas


class PushReader(RecordReader):
    """Reads push records of the writer schemas in ``writers``; ``registry`` says why a
    record's writer is not among them."""

    def __init__(self, writers: WriterSchemas, registry: RegistryClient) -> None:
        super().__init__(writers)
        self._registry = registry
        self._heads = HeadReader(writers) if HeadReader.fits(writers.reader) else None

    def head(self, data: bytes) -> tuple[str, int | None]:
        """(messageId, timestamp or None) of a record, without decoding the rest of it.

        Checks the framing and the leading fields only: a datum corrupt further on passes.
        """
        if self._heads is not None:
            ids, stamps, failed = self.heads((data,))
            if failed:
                why = failed[0][1]
                known = self.writers.get(data) is not None
                raise CorruptRecord(why) if known else UnknownSchema(why)
            return ids[0], stamps[0]
        record = self.decode(data)
        return record["messageId"], record.get("timestamp")

    def heads(self, values: Sequence[bytes | None]) -> Heads:
        """``head`` of each value of a fetched batch, in one call, by column; for a value with
        none, why (the reason a worker dead-letters it with)."""
        if self._heads is not None:
            found = self._heads.read_many(values)
            if found.failed:
                self._explain(values, found.failed)
            return found
        return decoded_heads(self.writers, values)  # a schema laid out otherwise: decoded

    def _explain(self, values: Sequence[bytes | None], failed: list[tuple[int, str]]) -> None:
        """A value of a writer schema not known says which, and where it could be found."""
        for position, (index, why) in enumerate(failed):
            value = values[index]
            if value is None or self.writers.get(value) is not None:
                continue
            failed[position] = (index, self._registry.why_unknown(value) or why)
