"""Who may look, and who may act.

With no token (a loopback bind only: ``ConsoleSettings`` refuses any other) everyone on this
machine may look. With one, a request carries it as ``Authorization: Bearer`` or as the
session cookie the login form sets (HttpOnly, SameSite=Strict: another site's page cannot send
it); any other request is answered 401 with the login form. Actions are POSTs that also carry
a CSRF token: an HMAC of the session under a key this process draws at start, so a page of
another origin, which cannot read ours, cannot forge a form.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from uplink.settings import Secret

COOKIE = "uplink_console"
OPEN_PATHS = frozenset({"/login", "/healthz"})


@dataclass(frozen=True)
class Visitor:
    """Who a request comes from, for the action log and the CSRF token."""

    session: str  # the session cookie's value, "bearer", or "loopback"
    address: str

    def __str__(self) -> str:
        kind = {"loopback": "loopback (no token)", "bearer": "bearer token"}.get(
            self.session, "token session"
        )
        return f"{kind} from {self.address}"


class Keys:
    def __init__(self, token: Secret | None) -> None:
        self.token = token
        self._csrf_key = secrets.token_bytes(32)

    def session_value(self) -> str:
        """The cookie's value: derived from the token, so the cookie never holds the token."""
        assert self.token is not None
        return hmac.new(
            self.token.reveal().encode(), b"uplink console session", hashlib.sha256
        ).hexdigest()

    def token_matches(self, given: str) -> bool:
        return self.token is not None and hmac.compare_digest(
            given.encode(), self.token.reveal().encode()
        )

    def visitor(self, request: Request) -> Visitor | None:
        """Who is asking, or None when the request may not see the console."""
        address = request.client.host if request.client else "?"
        if self.token is None:
            return Visitor("loopback", address)
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() == "bearer" and self.token_matches(given.strip()):
            return Visitor("bearer", address)
        cookie = request.cookies.get(COOKIE)
        if cookie is not None and hmac.compare_digest(cookie, self.session_value()):
            return Visitor(cookie, address)
        return None

    def csrf(self, visitor: Visitor) -> str:
        return hmac.new(self._csrf_key, visitor.session.encode(), hashlib.sha256).hexdigest()

    def csrf_matches(self, visitor: Visitor, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self.csrf(visitor).encode())


class Guard:
    """ASGI middleware: a request without the token gets 401 (the login form), except the
    login form itself and /healthz; the visitor is kept in the scope for the pages."""

    def __init__(self, app: ASGIApp, keys: Keys, unauthorized: ASGIApp) -> None:
        self._app = app
        self._keys = keys
        self._unauthorized = unauthorized

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        request = Request(scope)
        visitor = self._keys.visitor(request)
        scope.setdefault("state", {})["visitor"] = visitor
        if visitor is None and scope["path"] not in OPEN_PATHS:
            await self._unauthorized(scope, receive, send)
            return
        await self._app(scope, receive, send)


async def form(request: Request) -> dict[str, list[str]]:
    """An urlencoded form's fields, each with every value given."""
    body = await request.body()
    fields: dict[str, list[str]] = {}
    for name, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        fields.setdefault(name, []).append(value)
    return fields
