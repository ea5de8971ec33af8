"""The shared-token check: ``Authorization: Bearer <token>`` or ``?token=<token>``.

Providers often let a customer configure only a URL, hence the query parameter.
"""

from __future__ import annotations

import hmac
from urllib.parse import parse_qs

from uplink.settings import Secret


class TokenAuth:
    def __init__(self, token: Secret) -> None:
        self._token = token.reveal().encode()

    def allows(self, headers: dict[bytes, bytes], query_string: bytes) -> bool:
        """``headers`` as ASGI gives them: lower-case names, raw bytes."""
        scheme, _, credential = headers.get(b"authorization", b"").partition(b" ")
        if scheme.lower() == b"bearer" and credential.strip():
            offered = credential.strip()
        else:
            values = parse_qs(query_string.decode("latin-1")).get("token", [""])
            offered = values[-1].encode()
        # Constant time: the comparison must not tell an attacker how many bytes were right.
        return hmac.compare_digest(offered, self._token)
