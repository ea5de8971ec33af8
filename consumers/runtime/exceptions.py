"""Errors of the consumer runtime. ``retriable`` decides between retry-with-backoff and the DLQ."""

from __future__ import annotations

from uplink.exceptions import UplinkError


class ConsumerError(UplinkError):
    """A record's processing failed: the runtime retries it (``retriable``) or dead-letters it."""


class RecordError(ConsumerError):
    """This record can never be processed (undecodable, invalid, refused for good): DLQ it."""


class TransientError(ConsumerError):
    """Processing failed for now (a timeout, a 5xx): retry with backoff, never skip the record."""

    retriable = True


class HandlerFailed(UplinkError):
    """A handler's background work failed unexpectedly: not a record's fault, so not a
    ConsumerError; it stops the worker, and nothing past the failed record is committed. A
    restart redoes the work from the committed position."""

    retriable = True
