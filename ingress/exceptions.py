"""The ingress's errors. ``retriable`` says whether the provider's retry may succeed (→ 503)."""

from __future__ import annotations

from uplink.exceptions import UplinkError


class IngressError(UplinkError):
    """Base of the ingress's errors."""


class NotDurable(IngressError):
    """The broker did not acknowledge the record: the push is not kept, the provider must retry."""

    retriable = True


class Overloaded(NotDurable):
    """Too many pushes already await the broker: shed this one rather than queue without bound."""


class Unreachable(NotDurable):
    """No broker has answered for a while: refused at once rather than after the timeout."""


class Refused(NotDurable):
    """Kafka refused our credentials or the write (an ACL): a configuration error on our side;
    503 all the same, so the provider's retries may land once it is fixed."""


class NotRegistered(NotDurable):
    """The push schema is not registered yet (a registry is configured): no record can be
    framed with its id, so none is written."""


class BodyTooLarge(IngressError):
    """The body passed the size limit; ``prefix`` holds the bytes read up to the limit."""

    def __init__(self, limit: int, prefix: bytes) -> None:
        super().__init__(f"body exceeds the limit of {limit} bytes")
        self.limit = limit
        self.prefix = prefix
