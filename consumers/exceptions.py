"""Errors of the consumer runtime. ``retriable`` decides between retry-with-backoff and the DLQ."""

from __future__ import annotations


class ConsumerError(Exception):
    retriable = False


class RecordError(ConsumerError):
    """This record can never be processed (undecodable, invalid, refused for good): DLQ it."""


class TransientError(ConsumerError):
    """Processing failed for now (a timeout, a 5xx): retry with backoff, never skip the record."""

    retriable = True


class FetchFailed(RecordError):
    """A media download that can never succeed (4xx, oversize, refused, wrong sha256, or the
    retries ran out): the record goes to the DLQ with this reason."""


class FetchRetriable(TransientError):
    """A download attempt failed for now (timeout, connection, 5xx, 429); ``retry_after`` is the
    server's Retry-After in seconds, when it sent one."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class RefusedURL(FetchFailed):
    """A media URL this worker will not fetch: not http(s), or an address not on the internet."""


class HandlerFailed(Exception):
    """A handler's background work failed unexpectedly: not a record's fault, so not a
    ConsumerError; it stops the worker, and nothing past the failed record is committed."""
