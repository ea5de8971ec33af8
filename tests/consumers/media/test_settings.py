"""MediaSettings: read from UPLINK_MEDIA_* at the edge, bad values name their variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.media.settings import MediaSettings
from uplink.cli.main import main
from uplink.exceptions import ConfigError
from uplink.settings import Secret


def test_defaults_and_the_environment_with_explicit_values_winning() -> None:
    defaults = MediaSettings.from_env({"UPLINK_MEDIA_DIR": "/srv/media"})
    assert defaults.root == Path("/srv/media")
    assert (defaults.concurrency, defaults.max_bytes) == (32, 100 * 1024 * 1024)
    settings = MediaSettings.from_env(
        {
            "UPLINK_MEDIA_DIR": "/srv/media",
            "UPLINK_MEDIA_BASE_URL": "https://Media.Provider.example:8443/v1/",
            "UPLINK_MEDIA_CONCURRENCY": "64",
            "UPLINK_MEDIA_ALLOW_HOSTS": "127.0.0.1, Files.Internal ",
            "UPLINK_MEDIA_AUTH_HEADER": "Authorization: Bearer abc:def",
            "UPLINK_MEDIA_READ_TIMEOUT": "2.5",
            "UPLINK_MEDIA_ATTEMPTS": "3",
        },
        root=Path("/elsewhere"),
        concurrency=8,
    )
    assert settings.root == Path("/elsewhere")
    assert settings.concurrency == 8
    assert settings.allow_hosts == frozenset({"127.0.0.1", "files.internal"})
    assert settings.auth_header == ("Authorization", Secret("Bearer abc:def"))
    assert settings.auth_targets == frozenset({"media.provider.example"})
    assert settings.timeouts.read == 2.5
    assert settings.retries.attempts == 3
    assert "abc:def" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({}, "UPLINK_MEDIA_DIR"),
        ({"UPLINK_MEDIA_DIR": "d", "UPLINK_MEDIA_CONCURRENCY": "0"}, "UPLINK_MEDIA_CONCURRENCY"),
        ({"UPLINK_MEDIA_DIR": "d", "UPLINK_MEDIA_MAX_BYTES": "big"}, "UPLINK_MEDIA_MAX_BYTES"),
        ({"UPLINK_MEDIA_DIR": "d", "UPLINK_MEDIA_BASE_URL": "ftp://x/"}, "UPLINK_MEDIA_BASE_URL"),
        ({"UPLINK_MEDIA_DIR": "d", "UPLINK_MEDIA_AUTH_HEADER": "x"}, "UPLINK_MEDIA_AUTH_HEADER"),
        ({"UPLINK_MEDIA_DIR": "d", "UPLINK_MEDIA_ATTEMPTS": "0"}, "UPLINK_MEDIA_ATTEMPTS"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as caught:
        MediaSettings.from_env(env)
    assert caught.value.setting == setting


def test_uplink_media_without_a_directory_stops_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("UPLINK_MEDIA_DIR", raising=False)
    assert main(["media"]) == 78
    assert "UPLINK_MEDIA_DIR" in capsys.readouterr().err
