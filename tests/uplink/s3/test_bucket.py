"""The bucket client against a real S3 server (versitygw): create-only puts, HEAD, listing, and
start-up errors that name the setting."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from uplink.exceptions import ConfigError
from uplink.s3.bucket import Bucket
from uplink.s3.settings import S3Location
from uplink.settings import Secret

pytestmark = pytest.mark.anyio


async def test_a_put_creates_only_and_a_taken_key_says_so(s3: S3Location) -> None:
    async with Bucket(s3, "UPLINK_ARCHIVE_DIR") as bucket:
        key = s3.key("one")
        assert await bucket.size(key) is None
        assert await bucket.put_new(key, b"first") is True
        assert await bucket.put_new(key, b"second") is False  # 412 from the server
        assert await bucket.get(key) == b"first"
        assert await bucket.size(key) == 5
        assert bucket.put_new_sync(s3.key("two"), b"22") is True
        assert bucket.put_new_sync(s3.key("two"), b"x") is False
        assert bucket.get_sync(s3.key("two"), 1) == b"2"
        assert [item.key for item in await bucket.listed(s3.key(""))] == [key, s3.key("two")]


async def test_wrong_credentials_stop_start_up_naming_the_setting(
    s3: S3Location, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = dataclasses.replace(
        s3, s3=dataclasses.replace(s3.s3, secret_access_key=Secret("not-the-secret-123"))
    )
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConfigError) as caught:
        await Bucket(wrong, "UPLINK_ARCHIVE_DIR").start()
    assert caught.value.setting.startswith("AWS_")
    assert "UPLINK_ARCHIVE_DIR" in str(caught.value)
    assert "not-the-secret-123" not in str(caught.value) + caplog.text


async def test_a_missing_bucket_stops_start_up_naming_the_setting(s3: S3Location) -> None:
    missing = dataclasses.replace(s3, bucket="no-such-bucket")
    with pytest.raises(ConfigError) as caught:
        await Bucket(missing, "UPLINK_MEDIA_DIR").start()
    assert caught.value.setting == "UPLINK_MEDIA_DIR"
    assert "no-such-bucket" in str(caught.value)
