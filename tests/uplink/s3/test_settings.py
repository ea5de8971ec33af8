"""Storage by URL: paths, file:// and s3:// taken, any other scheme refused naming the setting;
the AWS variables read as every S3 client reads them; secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.archive.settings import ArchiveSettings
from consumers.media.settings import MediaSettings
from uplink.cli.main import main
from uplink.exceptions import ConfigError
from uplink.s3.bucket import Bucket
from uplink.s3.settings import S3Location, S3Settings, location

AWS = {
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
    "AWS_REGION": "eu-west-1",
    "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI-very-secret",
    "AWS_SESSION_TOKEN": "session-token-secret",
}


def test_an_s3_url_is_a_bucket_and_prefix_with_the_aws_variables() -> None:
    where = location("s3://archive-bucket/uplink/archive/", "UPLINK_ARCHIVE_DIR", AWS)
    assert isinstance(where, S3Location)
    assert (where.bucket, where.prefix) == ("archive-bucket", "uplink/archive")
    assert where.key("t/dt=2023-11-15/x.avro") == "uplink/archive/t/dt=2023-11-15/x.avro"
    assert where.s3.endpoint == "http://127.0.0.1:9000"
    assert where.s3.region == "eu-west-1"
    assert where.s3.access_key_id == "AKIDEXAMPLE"
    assert not where.s3.virtual_hosted  # an endpoint of its own: path-style by default
    assert location("s3://b", "X", {}).s3.virtual_hosted  # AWS itself: virtual-hosted


def test_paths_and_file_urls_stay_local() -> None:
    assert location("var/archive", "X", {}) == Path("var/archive")
    assert location("file:///srv/archive", "X", {}) == Path("/srv/archive")


@pytest.mark.parametrize("url", ["gs://bucket/x", "ftp://host/x", "s3:///no-bucket", "s3://b/x?y"])
def test_other_schemes_and_malformed_s3_urls_are_refused_naming_the_setting(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ArchiveSettings.from_env({"UPLINK_ARCHIVE_DIR": url})
    assert caught.value.setting == "UPLINK_ARCHIVE_DIR"
    with pytest.raises(ConfigError) as caught:
        MediaSettings.from_env({}, root=url)
    assert caught.value.setting == "--media-dir"


def test_the_archive_refuses_an_unknown_scheme_at_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["archive", "--archive-dir", "gcs://bucket/archive"]) == 78
    assert "--archive-dir" in capsys.readouterr().err
    assert not list(tmp_path.iterdir()), "a local directory was made for the URL"


def test_path_style_is_an_option() -> None:
    assert not S3Settings.from_env({"UPLINK_S3_PATH_STYLE": "false", **AWS}).path_style
    assert S3Settings.from_env({"UPLINK_S3_PATH_STYLE": "true"}).path_style
    with pytest.raises(ConfigError, match="UPLINK_S3_PATH_STYLE"):
        S3Settings.from_env({"UPLINK_S3_PATH_STYLE": "sometimes"})


def test_a_key_without_its_secret_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        S3Settings.from_env({"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE"})
    assert caught.value.setting == "AWS_SECRET_ACCESS_KEY"


def test_secrets_never_show_in_reprs() -> None:
    where = location("s3://b/p", "X", AWS)
    assert isinstance(where, S3Location)
    shown = repr(where) + repr(ArchiveSettings(root=where)) + repr(Bucket(where, "X"))
    assert "wJalrXUtnFEMI" not in shown
    assert "session-token-secret" not in shown
