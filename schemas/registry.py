"""The codec's registry client: writer schemas of records framed with registry ids (or with
single-object fingerprints of a newer release), fetched when first met.

The HTTP side is uplink/registry/client.py's ``SubjectSchemas``; this side decides which ids to
ask for, remembers what the registry does not have, and says why a record's writer is unknown.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from schemas.writers import MARKER, WriterSchemas, schema_id_of
from uplink.exceptions import UplinkError


class SchemaLookup(Protocol):
    """Where writer schemas of registry ids come from (uplink/registry/client.py's
    ``SubjectSchemas``): the JSON text of an id, and every version of the subject."""

    async def schema(self, schema_id: int) -> str: ...

    async def versions(self) -> list[tuple[int, str]]: ...


class RegistryClient:
    """Adds the writer schemas a batch needs to ``writers``, from ``lookup`` (None: no registry
    is configured, and nothing is fetched)."""

    def __init__(self, writers: WriterSchemas, lookup: SchemaLookup | None = None) -> None:
        self._writers = writers
        self._lookup = lookup

    async def learn(self, values: Sequence[bytes | None]) -> bool:
        """Fetch the writer schemas of values framed with ids (or single-object fingerprints)
        not known yet; True if one was learnt (read the batch again). Raises
        RegistryUnavailable (retriable) while the registry does not answer; an id it does not
        have is remembered as missing, and its records are dead-lettered."""
        if self._lookup is None:
            return False
        writers = self._writers
        learnt = False
        for schema_id in sorted(writers.unknown_ids(values)):
            try:
                text = await self._lookup.schema(schema_id)
            except UplinkError as exc:
                if exc.retriable:
                    raise
                writers.missing(schema_id)
                continue
            writers.add(schema_id, text)
            learnt = True
        if writers.unknown_fingerprints(values):
            # The registry has no lookup by fingerprint: a newer writer's versions are few.
            for schema_id, text in await self._lookup.versions():
                writers.add(schema_id, text)
            learnt = True
            writers.missing_fingerprints(values)  # not in the registry either: not asked again
        return learnt

    def why_unknown(self, value: bytes) -> str | None:
        """Which writer schema a value not known carries, and where it could be found; None
        for a value whose header names no schema."""
        schema_id = schema_id_of(value)
        if schema_id is not None:
            where = (
                "not in the schema registry"
                if self._lookup is not None
                else "no schema registry configured: set UPLINK_SCHEMA_REGISTRY_URL"
            )
            return f"unknown writer schema: registry id {schema_id} ({where})"
        if value[:2] == MARKER:
            fingerprint = bytes(value[2:10]).hex()
            return f"unknown writer schema: fingerprint {fingerprint} (a newer release?)"
        return None
