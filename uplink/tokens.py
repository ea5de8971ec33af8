"""OAUTHBEARER token providers: an OIDC client-credentials grant, and AWS MSK's IAM signer.

aiokafka asks its provider for a token at every connection it opens; a provider hands out the
token it holds until most of its lifetime has passed, then fetches the next one, so a
reconnection after the broker closed an expired session gets a fresh token. One fetch at a time:
connections opened together share it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import httpx
from aiokafka.abc import AbstractTokenProvider
from aiokafka.errors import KafkaConnectionError

from uplink.exceptions import AuthenticationRefused
from uplink.variables import Secret

log = logging.getLogger(__name__)

# Renewed once this share of a token's lifetime has passed: well before the broker ends its
# session, with time left to retry a failed fetch.
_RENEW_AT = 0.8
_UNSTATED_LIFETIME = 300.0  # seconds, when the issuer does not say (expires_in is optional)


class _Cached(AbstractTokenProvider):  # type: ignore[misc]
    """A token and when to renew it; ``_fetch`` returns a token and its lifetime (seconds)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._token: str | None = None
        self._renew_at = 0.0
        self._fetching: asyncio.Task[str] | None = None
        self.fetched = 0  # tokens fetched so far

    async def token(self) -> str:
        if self._token is not None and self._clock() < self._renew_at:
            return self._token
        fetching = self._fetching
        if fetching is None or fetching.done() or fetching.get_loop() is not _loop():
            fetching = self._fetching = asyncio.ensure_future(self._renew())
        return await asyncio.shield(fetching)

    async def _renew(self) -> str:
        started = self._clock()
        token, lifetime = await self._fetch()
        self._token, self._renew_at = token, started + lifetime * _RENEW_AT
        self.fetched += 1
        log.debug("OAUTHBEARER token fetched, renewed in %.0fs", lifetime * _RENEW_AT)
        return token

    async def _fetch(self) -> tuple[str, float]:
        raise NotImplementedError


def _loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


class OidcTokens(_Cached):
    """Tokens of an OIDC client-credentials grant (RFC 6749 4.4; the client authenticated with
    HTTP basic auth, as section 2.3.1 asks every server to accept). An issuer that refuses the
    client (4xx) is ``AuthenticationRefused``; one that cannot be reached, or fails (5xx), is a
    connection error aiokafka retries."""

    def __init__(
        self,
        url: str,
        client_id: str,
        secret: Secret,
        scope: str | None = None,
        *,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(clock)
        self.url = url
        self._client_id = client_id
        self._secret = secret
        self._scope = scope
        self._timeout = timeout

    async def _fetch(self) -> tuple[str, float]:
        form = {
            "grant_type": "client_credentials",
            **({"scope": self._scope} if self._scope else {}),
        }
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as client:
                answer = await client.post(
                    self.url, data=form, auth=(self._client_id, self._secret.reveal())
                )
        except httpx.HTTPError as exc:
            raise KafkaConnectionError(f"token endpoint {self.url}: {exc!r}") from exc
        if 400 <= answer.status_code < 500:
            raise AuthenticationRefused(
                f"the token endpoint {self.url} refused client {self._client_id!r} "
                f"({answer.status_code} {_error(answer)})",
                "UPLINK_KAFKA_SASL_OAUTH_CLIENT_ID, _CLIENT_SECRET and _SCOPE",
            )
        if answer.status_code != 200:
            raise KafkaConnectionError(f"token endpoint {self.url}: {answer.status_code}")
        try:
            body = answer.json()
            token = body["access_token"]
            lifetime = float(body.get("expires_in") or _UNSTATED_LIFETIME)
        except (ValueError, KeyError, TypeError) as exc:
            raise AuthenticationRefused(
                f"the token endpoint {self.url} answered no access token ({exc!r})",
                "UPLINK_KAFKA_SASL_OAUTH_TOKEN_URL",
            ) from None
        return str(token), lifetime


def _error(answer: httpx.Response) -> str:
    """The OAuth error code of a refusal (RFC 6749 5.2), or the start of its body."""
    try:
        return str(answer.json().get("error", ""))
    except ValueError:
        return answer.text[:100]


class MskIamTokens(_Cached):
    """AWS MSK IAM tokens: a SigV4-presigned ``kafka-cluster:Connect`` URL, made by AWS's
    signer library from the AWS SDK's credential chain (environment, profile, web identity,
    container or instance role)."""

    def __init__(
        self,
        region: str,
        *,
        sign: Callable[[str], tuple[str, int]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(clock)
        self.region = region
        if sign is None:
            from aws_msk_iam_sasl_signer import MSKAuthTokenProvider

            sign = MSKAuthTokenProvider.generate_auth_token
        self._sign = sign

    async def _fetch(self) -> tuple[str, float]:
        # botocore's credential chain blocks (files, the instance metadata service).
        signing: Awaitable[tuple[str, int]] = asyncio.to_thread(self._sign, self.region)
        try:
            token, expiry_ms = await signing
        except (ValueError, AttributeError) as exc:
            # The signer's "AWS Credentials can not be empty", or no credentials at all (None):
            # a configuration error, not an outage.
            raise AuthenticationRefused(
                f"no AWS credentials to sign the MSK IAM token ({exc})",
                "the AWS SDK's credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID, a role)",
            ) from None
        except Exception as exc:  # botocore's: a role or the metadata service out of reach
            raise KafkaConnectionError(f"signing the MSK IAM token failed: {exc!r}") from exc
        return token, max(expiry_ms / 1000 - time.time(), 1.0)
