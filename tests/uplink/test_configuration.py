"""Each setting is declared once, the code reads what is declared and nothing else, and the
configuration reference is the declarations written out."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from consumers.archive.settings import ArchiveSettings
from consumers.media.settings import MediaSettings
from consumers.router.settings import RouterSettings
from tests.servers.pki import Authority
from uplink.cli.reference import page, variables
from uplink.console.settings import ConsoleSettings
from uplink.exceptions import ConfigError
from uplink.s3.settings import S3Settings
from uplink.settings import IngressSettings, LogSettings, WorkerSettings
from uplink.variables import HEADER, Secret

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("uplink", "ingress", "consumers", "schemas")
# Python constants whose names look like variables: not read from the environment.
# Names that are not uplink's variables: a SASL mechanism's, and one the AWS SDK's credential
# chain reads itself (named in a message, for the MSK IAM signer).
CONSTANTS = {"KAFKA_VERSION", "UPLINK_SOURCE", "AWS_MSK_IAM", "AWS_PROFILE"}


class RecordingEnviron(dict[str, str]):
    """An environment that notes every name looked up in it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.looked_up: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.looked_up.add(key)
        return super().get(key, default)


def every_process(environ: dict[str, str]) -> list[object]:
    """The settings of every process, as the CLI builds them."""
    return [
        IngressSettings.from_env(environ),
        *(WorkerSettings.from_env(worker, environ) for worker in ("archive", "media", "router")),
        RouterSettings.from_env(environ),
        ArchiveSettings.from_env(environ, "var/archive"),
        MediaSettings.from_env(environ, root="var/media"),
        S3Settings.from_env(environ),
        LogSettings.from_env(environ),
        ConsoleSettings.from_env(environ),
    ]


def test_the_committed_page_is_the_declarations() -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == page(), (
        "docs/configuration.md is not what the declarations say: "
        "python -m uplink.cli.reference > docs/configuration.md"
    )


def test_each_variable_is_declared_once() -> None:
    names = Counter(name for declared in variables() for name in declared.names)
    assert [name for name, count in names.items() if count > 1] == []
    assert len(names) > 80


def test_the_settings_read_every_declared_variable_and_no_other() -> None:
    environ = RecordingEnviron({"UPLINK_SCHEMA_REGISTRY_URL": "http://127.0.0.1:8081"})
    every_process(environ)
    assert environ.looked_up == {name for declared in variables() for name in declared.names}


def test_every_variable_the_code_names_is_declared() -> None:
    """Also those read around the settings (``environ.get("KAFKA_...")`` in the CLI) and those
    an error message tells the operator to set."""
    declared = {name for each in variables() for name in each.names}
    token = re.compile(r"\b(?:UPLINK|AWS|KAFKA)_[A-Z0-9_]+")
    undeclared: dict[str, str] = {}
    for package in PRODUCT:
        for source in sorted((ROOT / package).rglob("*.py")):
            for name in token.findall(source.read_text()):
                # A family such as UPLINK_META_* names no one variable.
                if name.endswith("_") or name in declared or name in CONSTANTS:
                    continue
                undeclared.setdefault(name, str(source.relative_to(ROOT)))
    assert undeclared == {}


def test_no_secret_shows_in_any_settings_object(tmp_path: Path) -> None:
    secrets = [declared for declared in variables() if declared.secret]
    assert {declared.name for declared in secrets} >= {
        "UPLINK_TOKEN",
        "UPLINK_KAFKA_SASL_PASSWORD",
        "UPLINK_META_APP_SECRET",
        "AWS_SECRET_ACCESS_KEY",
    }
    environ = {
        declared.name: f"X-Key: hidden-{n}" if declared.kind is HEADER else f"hidden-{n}"
        for n, declared in enumerate(secrets)
    }
    # What the secrets need beside them to be valid.
    environ |= {
        "UPLINK_SCHEMA_REGISTRY_URL": "http://127.0.0.1:8081",
        "UPLINK_SCHEMA_REGISTRY_USERNAME": "uplink",
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
    }
    # Kafka's: OAUTHBEARER's client secret, and a client key encrypted with its password.
    issued = Authority(tmp_path).issue(
        "uplink", password=environ["UPLINK_KAFKA_SSL_KEY_PASSWORD"].encode()
    )
    environ |= {
        "UPLINK_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "UPLINK_KAFKA_SASL_MECHANISM": "OAUTHBEARER",
        "UPLINK_KAFKA_SASL_OAUTH_TOKEN_URL": "https://issuer.example/token",
        "UPLINK_KAFKA_SASL_OAUTH_CLIENT_ID": "uplink",
        "UPLINK_KAFKA_SSL_CERTFILE": str(issued.cert),
        "UPLINK_KAFKA_SSL_KEYFILE": str(issued.key),
    }
    built = every_process(environ)
    shown = " ".join(repr(settings) + str(settings) for settings in built)
    assert "hidden-" not in shown
    assert shown.count(repr(Secret(""))) >= len(secrets)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("UPLINK_MEDIA_AUTH_HEADER", "hidden-bearer-without-a-name"),
        ("UPLINK_META_APP_SECRET", " , "),
    ],
)
def test_a_secret_that_cannot_be_parsed_is_named_but_not_shown(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        every_process({variable: value})
    assert caught.value.setting == variable
    assert value not in str(caught.value)


def test_a_bad_value_names_the_variable_it_was_read_from() -> None:
    with pytest.raises(ConfigError) as caught:
        S3Settings.from_env({"AWS_ENDPOINT_URL": "minio:9000"})
    assert caught.value.setting == "AWS_ENDPOINT_URL"
    with pytest.raises(ConfigError) as caught:
        S3Settings.from_env({"AWS_ENDPOINT_URL_S3": "minio:9000", "AWS_ENDPOINT_URL": "x"})
    assert caught.value.setting == "AWS_ENDPOINT_URL_S3"
    assert S3Settings.from_env({"AWS_DEFAULT_REGION": "eu-north-1"}).region == "eu-north-1"
    assert S3Settings.from_env({"AWS_REGION": "eu-west-3", "AWS_DEFAULT_REGION": "x"}).region == (
        "eu-west-3"
    )
