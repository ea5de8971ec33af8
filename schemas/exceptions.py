"""Errors raised by the push codec.

One base class, so a caller can treat "this is not something we can turn into / read back
from a push record" as a single case (quarantine on ingress, DLQ on a consumer).
"""

from __future__ import annotations

from uplink.exceptions import UplinkError


class SchemaError(UplinkError):
    """Base of every error the schemas package raises."""


class NotAPush(SchemaError):
    """The HTTP body is not an Uplink Message Push (the ingress answers 400 and quarantines it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnknownSchema(SchemaError):
    """A record value is not framed with a writer schema this codec knows."""

    def __init__(
        self, message: str, fingerprint: bytes | None = None, schema_id: int | None = None
    ) -> None:
        super().__init__(message)
        # The writer fingerprint (single-object) or registry id (Confluent) found on the wire
        # (None when the framing itself is wrong), so an operator can tell which schema
        # version produced the record.
        self.fingerprint = fingerprint
        self.schema_id = schema_id


class CorruptRecord(SchemaError):
    """The framing matches our schema but the Avro datum after it does not decode."""
