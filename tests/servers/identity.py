"""An OIDC issuer for the OAUTHBEARER tests: a JWKS and a client-credentials token endpoint,
served by uvicorn on loopback from a thread of its own (the broker fetches the JWKS at start-up,
before any test's event loop runs).

Tokens are RS256 JWTs (``sub`` the client id, ``aud`` and ``iss`` as the broker expects).
Each client has a secret and a token lifetime; ``forged`` clients get tokens signed with a key
the JWKS does not publish, which the broker refuses.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import uvicorn
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from uplink.broker import free_port
from uplink.resources import BlockingResource

AUDIENCE = "kafka"


@dataclass
class Client:
    secret: str
    lifetime: float = 3600.0  # seconds
    forged: bool = False


@dataclass
class IdentityProvider(BlockingResource):
    clients: dict[str, Client] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    issued: Counter[str] = field(default_factory=Counter)  # tokens, by client id

    def __post_init__(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/jwks"

    @property
    def token_url(self) -> str:
        return f"{self.issuer}/token"

    def app(self) -> Starlette:
        numbers = self._key.public_key().public_numbers()
        jwks = {
            "keys": [
                {
                    "kty": "RSA",
                    "kid": "k1",
                    "use": "sig",
                    "alg": "RS256",
                    "n": _b64(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
                    "e": _b64(numbers.e.to_bytes(3, "big")),
                }
            ]
        }

        async def keys(request: Request) -> Response:
            return JSONResponse(jwks)

        async def token(request: Request) -> Response:
            # A form body: read as the standard library reads query strings.
            form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
            if form.get("grant_type") != "client_credentials":
                return JSONResponse({"error": "unsupported_grant_type"}, 400)
            client_id, secret = _basic(request.headers.get("authorization", ""))
            client = self.clients.get(client_id)
            if client is None or client.secret != secret:
                return JSONResponse({"error": "invalid_client"}, 401)
            self.issued[client_id] += 1
            scope = str(form.get("scope") or "")
            return JSONResponse(
                {
                    "access_token": self.token(client_id, client, scope),
                    "token_type": "Bearer",
                    "expires_in": int(client.lifetime),
                }
            )

        return Starlette(
            routes=[Route("/jwks", keys, methods=["GET"]), Route("/token", token, methods=["POST"])]
        )

    def token(self, subject: str, client: Client, scope: str = "") -> str:
        now = int(time.time())
        header = {"alg": "RS256", "typ": "JWT", "kid": "k1"}
        claims = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": subject,
            "iat": now,
            "exp": now + int(client.lifetime),
            "jti": uuid.uuid4().hex,  # each token its own, also two issued in one second
            **({"scope": scope} if scope else {}),
        }
        signing = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        key = self._forger if client.forged else self._key
        signature = key.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing}.{_b64(signature)}"

    def start(self) -> None:
        config = uvicorn.Config(
            self.app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        server = self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=server.run, name="identity", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the identity provider did not start on {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self._server = self._thread = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _basic(header: str) -> tuple[str, str]:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return "", ""
    user, _, password = base64.b64decode(encoded).decode().partition(":")
    return user, password
