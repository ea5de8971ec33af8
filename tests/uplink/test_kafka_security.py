"""Kafka security settings: a half-set configuration stops start-up naming what is missing; the
OIDC token provider reuses its token and renews it before it expires."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.conftest import Server
from tests.servers.identity import Client, IdentityProvider
from tests.servers.pki import Authority
from uplink.cli.main import main
from uplink.exceptions import AuthenticationRefused, ConfigError
from uplink.settings import Secret, kafka_from_env
from uplink.tokens import OidcTokens

SASL = {"UPLINK_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}
OAUTH = {
    **SASL,
    "UPLINK_KAFKA_SASL_MECHANISM": "OAUTHBEARER",
    "UPLINK_KAFKA_SASL_OAUTH_TOKEN_URL": "https://issuer.example/token",
    "UPLINK_KAFKA_SASL_OAUTH_CLIENT_ID": "uplink",
    "UPLINK_KAFKA_SASL_OAUTH_CLIENT_SECRET": "s3cret",
}


@pytest.mark.parametrize(
    ("env", "named"),
    [
        (SASL, "UPLINK_KAFKA_SASL_MECHANISM"),
        ({**SASL, "UPLINK_KAFKA_SASL_MECHANISM": "GSSAPI"}, "UPLINK_KAFKA_SASL_MECHANISM"),
        ({**SASL, "UPLINK_KAFKA_SASL_MECHANISM": "scram-sha-512"}, "UPLINK_KAFKA_SASL_USERNAME"),
        (
            {**SASL, "UPLINK_KAFKA_SASL_MECHANISM": "PLAIN", "UPLINK_KAFKA_SASL_USERNAME": "u"},
            "UPLINK_KAFKA_SASL_PASSWORD",
        ),
        ({"UPLINK_KAFKA_SASL_MECHANISM": "PLAIN"}, "UPLINK_KAFKA_SECURITY_PROTOCOL"),
        (
            {k: v for k, v in OAUTH.items() if not k.endswith("SECRET")},
            "UPLINK_KAFKA_SASL_OAUTH_CLIENT_SECRET",
        ),
        ({**OAUTH, "UPLINK_KAFKA_SASL_OAUTH_TOKEN_URL": "ftp://x"}, "_OAUTH_TOKEN_URL"),
        ({**SASL, "UPLINK_KAFKA_SASL_MECHANISM": "AWS_MSK_IAM"}, "UPLINK_KAFKA_AWS_REGION"),
        ({"UPLINK_KAFKA_SSL_CAFILE": "/ca.pem"}, "UPLINK_KAFKA_SSL_CAFILE"),
        (
            {"UPLINK_KAFKA_SECURITY_PROTOCOL": "SSL", "UPLINK_KAFKA_SSL_KEYFILE": "/k.pem"},
            "UPLINK_KAFKA_SSL_CERTFILE",
        ),
        (
            {"UPLINK_KAFKA_SECURITY_PROTOCOL": "SSL", "UPLINK_KAFKA_SSL_CERTFILE": "/nowhere"},
            "UPLINK_KAFKA_SSL_CERTFILE",
        ),
    ],
)
def test_a_half_set_configuration_names_what_is_missing(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        kafka_from_env(env)


def test_the_cli_exits_78_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["topics"], {**SASL, "UPLINK_KAFKA_SASL_MECHANISM": "PLAIN"}) == 78
    assert "UPLINK_KAFKA_SASL_USERNAME" in capsys.readouterr().err


def test_client_certificates_and_their_key_password(tmp_path: Path) -> None:
    authority = Authority(tmp_path)
    issued = authority.issue("uplink", password=b"right")
    env = {
        "UPLINK_KAFKA_SECURITY_PROTOCOL": "SSL",
        "UPLINK_KAFKA_SSL_CAFILE": str(authority.cafile),
        "UPLINK_KAFKA_SSL_CERTFILE": str(issued.cert),
        "UPLINK_KAFKA_SSL_KEYFILE": str(issued.key),
    }
    with pytest.raises(ConfigError, match="UPLINK_KAFKA_SSL_KEY_PASSWORD"):
        kafka_from_env({**env, "UPLINK_KAFKA_SSL_KEY_PASSWORD": "wrong"})
    settings = kafka_from_env({**env, "UPLINK_KAFKA_SSL_KEY_PASSWORD": "right"})
    assert "right" not in repr(settings)
    context = settings.client_options()["ssl_context"]
    assert context.check_hostname  # on unless turned off
    off = kafka_from_env(
        {
            **env,
            "UPLINK_KAFKA_SSL_KEY_PASSWORD": "right",
            "UPLINK_KAFKA_SSL_CHECK_HOSTNAME": "false",
        }
    )
    assert not off.client_options()["ssl_context"].check_hostname


def test_msk_iam_takes_the_aws_sdks_region() -> None:
    env = {**SASL, "UPLINK_KAFKA_SASL_MECHANISM": "AWS_MSK_IAM", "AWS_DEFAULT_REGION": "eu-west-1"}
    settings = kafka_from_env(env)
    assert settings.aws_region == "eu-west-1"
    options = settings.client_options()
    assert options["sasl_mechanism"] == "OAUTHBEARER"  # MSK IAM is OAUTHBEARER on the wire
    assert kafka_from_env({**env, "UPLINK_KAFKA_AWS_REGION": "us-east-2"}).aws_region == "us-east-2"


@pytest.mark.anyio
async def test_oidc_tokens_are_shared_and_renewed_before_they_expire(serve: Server) -> None:
    issuer = IdentityProvider({"uplink": Client("s3cret", lifetime=100)})
    url = await serve(issuer.app()) + "/token"
    now = [0.0]
    tokens = OidcTokens(url, "uplink", Secret("s3cret"), "kafka", clock=lambda: now[0])
    first = await asyncio.gather(*(tokens.token() for _ in range(5)))
    assert len(set(first)) == 1 and issuer.issued["uplink"] == 1  # one fetch for all five
    now[0] = 79.0
    assert await tokens.token() == first[0]
    now[0] = 81.0  # past 80 % of its lifetime: the next one
    assert await tokens.token() != first[0]
    assert issuer.issued["uplink"] == 2
    refused = OidcTokens(url, "uplink", Secret("wrong"))
    with pytest.raises(AuthenticationRefused, match="invalid_client"):
        await refused.token()
