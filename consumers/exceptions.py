"""Errors of the consumer runtime. ``retriable`` decides between retry-with-backoff and the DLQ."""

from __future__ import annotations


class ConsumerError(Exception):
    retriable = False


class RecordError(ConsumerError):
    """This record can never be processed (undecodable, invalid, refused for good): DLQ it."""


class TransientError(ConsumerError):
    """Processing failed for now (a timeout, a 5xx): retry with backoff, never skip the record."""

    retriable = True
