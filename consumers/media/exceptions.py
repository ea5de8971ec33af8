"""Errors of the media worker: a download that fails for good, or for now."""

from __future__ import annotations

from consumers.runtime.exceptions import RecordError, TransientError


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


class URLExpired(FetchFailed):
    """A short-lived media URL (Meta's, from the Graph API) was refused (401, 403, 404) or
    outlived its validity: resolve the media id again and retry with the new URL."""
