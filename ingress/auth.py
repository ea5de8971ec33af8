"""The shared-token check: ``Authorization: Bearer <token>`` or ``?token=<token>``.

Providers often let a customer configure only a URL, hence the query parameter.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request

from uplink.settings import Secret


class TokenAuth:
    def __init__(self, token: Secret) -> None:
        self._token = token.reveal().encode()

    def allows(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, credential = header.partition(" ")
        if scheme.lower() == "bearer" and credential:
            offered = credential.strip()
        else:
            offered = request.query_params.get("token", "")
        # Constant time: the comparison must not tell an attacker how many bytes were right.
        return hmac.compare_digest(offered.encode(), self._token)
