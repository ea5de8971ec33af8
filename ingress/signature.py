"""Meta's webhook signature: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>``.

Checked against every configured app secret, so a secret can be rotated: the new one is added,
Meta is switched over, the old one removed. Each comparison is constant time.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from uplink.settings import Secret

HEADER = b"x-hub-signature-256"
_PREFIX = b"sha256="


class SignatureCheck:
    def __init__(self, secrets: Sequence[Secret]) -> None:
        if not secrets:
            raise ValueError("a signature check needs at least one secret")
        self._keys = [secret.reveal().encode() for secret in secrets]

    def problem(self, headers: dict[bytes, bytes], body: bytes) -> str | None:
        """Why the body's signature is not good (None: it is), for the 401's reason.
        ``headers`` as ASGI gives them: lower-case names, raw bytes."""
        offered = headers.get(HEADER)
        if offered is None:
            return "X-Hub-Signature-256 is missing"
        scheme, _, digest = offered.strip().partition(b"=")
        if scheme.lower() + b"=" != _PREFIX or not digest:
            return "X-Hub-Signature-256 is not sha256=<hex>"
        digest = digest.lower()
        # Every key is tried, matched or not: the time taken does not say which one matched.
        matched = False
        for key in self._keys:
            expected = hmac.new(key, body, hashlib.sha256).hexdigest().encode()
            matched |= hmac.compare_digest(digest, expected)
        return None if matched else "X-Hub-Signature-256 does not match the body"
