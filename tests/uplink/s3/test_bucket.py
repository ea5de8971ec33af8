"""The bucket client against a real S3 server (versitygw): create-only puts, HEAD, listing, and
start-up errors that name the setting."""

from __future__ import annotations

import dataclasses
import logging

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import Server
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


class Flaky:
    """A pass-through in front of the S3 server that answers the first ``failures`` requests
    of ``method`` with ``status`` (S3's 503 SlowDown, a 500): a fault the server cannot be made
    to produce. The Host header is passed on, so the client's signatures still hold."""

    def __init__(self, upstream: str, method: str, status: int, failures: int) -> None:
        self.upstream, self.method, self.status, self.left = upstream, method, status, failures
        self.seen: list[tuple[str, int]] = []

    def app(self) -> Starlette:
        async def forward(request: Request) -> Response:
            if request.method == self.method and self.left > 0:
                self.left -= 1
                self.seen.append((request.method, self.status))
                code = "SlowDown" if self.status == 503 else "InternalError"
                body = f"<Error><Code>{code}</Code><Message>try again</Message></Error>"
                return Response(body, status_code=self.status, media_type="application/xml")
            async with httpx.AsyncClient() as client:
                answer = await client.request(
                    request.method,
                    self.upstream + request.url.path,
                    params=request.url.query,
                    headers=request.headers.raw,
                    content=await request.body(),
                )
            self.seen.append((request.method, answer.status_code))
            headers = {  # a HEAD's length is the object's, not its empty body's
                k: v
                for k, v in answer.headers.items()
                if k.lower() != "content-length" or request.method == "HEAD"
            }
            return Response(answer.content, status_code=answer.status_code, headers=headers)

        return Starlette(
            routes=[
                Route("/{path:path}", forward, methods=["GET", "PUT", "HEAD", "POST", "DELETE"])
            ]
        )


@pytest.mark.parametrize(("method", "status", "failures"), [("PUT", 503, 3), ("HEAD", 500, 9)])
async def test_throttling_and_5xx_are_retried_with_backoff_until_the_store_answers(
    s3: S3Location,
    serve: Server,
    caplog: pytest.LogCaptureFixture,
    method: str,
    status: int,
    failures: int,
) -> None:
    assert s3.s3.endpoint is not None
    flaky = Flaky(s3.s3.endpoint, method, status, failures)
    through = dataclasses.replace(
        s3, s3=dataclasses.replace(s3.s3, endpoint=await serve(flaky.app()))
    )
    async with Bucket(s3, "test") as direct, Bucket(through, "UPLINK_ARCHIVE_DIR") as bucket:
        flaky.left = failures  # from here on: the start-up probe met its own faults
        flaky.seen.clear()
        key = s3.key("retried")
        if method == "PUT":
            assert await bucket.put_new(key, b"kept") is True
        else:
            assert await direct.put_new(key, b"kept") is True
            assert await bucket.size(key) == 4
        assert await direct.get(key) == b"kept"
    assert flaky.seen[:failures] == [(method, status)] * failures
    assert flaky.seen[failures] == (method, 200)
    if failures > 5:  # past obstore's own retries: ours, with a warning each time
        assert "retrying in" in caplog.text
