"""The downloader against a real HTTP server on loopback (uvicorn serving a misbehaving app)."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from consumers.media.exceptions import FetchFailed, FetchRetriable, RefusedURL
from consumers.media.fetch import Fetcher, retry_after, sends_auth
from consumers.media.guard import AddressGuard
from consumers.media.settings import MediaRetries, MediaSettings, MediaTimeouts
from tests.conftest import Server
from tests.consumers.media.server import MediaServer
from uplink.settings import Secret

pytestmark = pytest.mark.anyio

BODY = os.urandom(100 * 1024)
DIGEST = hashlib.sha256(BODY).digest()

FetcherFactory = Callable[..., Awaitable[Fetcher]]


def media_settings(root: Path, **overrides: Any) -> MediaSettings:
    """Fast retries and short timeouts; loopback allowed (the test server lives there)."""
    settings = MediaSettings(
        root=root,
        allow_hosts=frozenset({"127.0.0.1"}),
        timeouts=MediaTimeouts(connect=2, read=0.3, attempt=10),
        retries=MediaRetries(attempts=4, backoff=0.01, backoff_max=0.05, retry_after_max=5),
    )
    return dataclasses.replace(settings, **overrides)


@pytest.fixture
async def media_server(serve: Server) -> tuple[MediaServer, str]:
    media = MediaServer()
    media.add("a.jpg", BODY)
    return media, await serve(media.app())


@pytest.fixture
async def make_fetcher(tmp_path: Path) -> AsyncIterator[FetcherFactory]:
    started: list[Fetcher] = []

    async def make(**overrides: Any) -> Fetcher:
        settings = media_settings(tmp_path, **overrides)
        fetcher = Fetcher(settings, AddressGuard(settings.allow_hosts))
        await fetcher.start()
        started.append(fetcher)
        return fetcher

    yield make
    for fetcher in started:
        await fetcher.stop()


async def test_a_file_is_streamed_to_disk_with_its_sha256(
    tmp_path: Path, media_server: tuple[MediaServer, str], make_fetcher: FetcherFactory
) -> None:
    media, base = media_server
    fetcher = await make_fetcher()
    got = await fetcher.download(f"{base}/files/a.jpg", tmp_path / "out", DIGEST)
    assert (got.size, got.digest) == (len(BODY), DIGEST)
    assert (tmp_path / "out").read_bytes() == BODY
    assert media.count() == {"/files/a.jpg": 1}


async def test_a_slow_server_times_out_then_succeeds_on_retry(
    tmp_path: Path, media_server: tuple[MediaServer, str], make_fetcher: FetcherFactory
) -> None:
    media, base = media_server
    fetcher = await make_fetcher()  # read timeout 0.3 s, the first answer takes 1 s
    got = await fetcher.download(f"{base}/slow/a.jpg", tmp_path / "out", DIGEST)
    assert got.digest == DIGEST
    assert media.count() == {"/slow/a.jpg": 2}


async def test_500s_are_retried_until_the_file_comes(
    tmp_path: Path, media_server: tuple[MediaServer, str], make_fetcher: FetcherFactory
) -> None:
    media, base = media_server
    fetcher = await make_fetcher()
    got = await fetcher.download(f"{base}/flaky/a.jpg", tmp_path / "out", DIGEST)
    assert got.digest == DIGEST
    assert media.count() == {"/flaky/a.jpg": 3}  # two 500s, then the file


async def test_retries_run_out_with_the_last_reason(
    tmp_path: Path, media_server: tuple[MediaServer, str], make_fetcher: FetcherFactory
) -> None:
    media, base = media_server
    fetcher = await make_fetcher()
    with pytest.raises(FetchFailed, match=r"gave up after 4 attempts: HTTP 503"):
        await fetcher.download(f"{base}/status/503", tmp_path / "out", DIGEST)
    assert media.count() == {"/status/503": 4}


async def test_404_is_permanent_at_once(
    tmp_path: Path, media_server: tuple[MediaServer, str], make_fetcher: FetcherFactory
) -> None:
    media, base = media_server
    fetcher = await make_fetcher()
    with pytest.raises(FetchFailed, match="HTTP 404") as caught:
        await fetcher.download(f"{base}/files/gone.jpg", tmp_path / "out", DIGEST)
    assert not caught.value.retriable
    assert media.count() == {"/files/gone.jpg": 1}


async def test_429_waits_for_retry_after(
    tmp_path: Path, media_server: tuple[MediaServer, str], make_fetcher: FetcherFactory
) -> None:
    media, base = media_server
    fetcher = await make_fetcher()  # its own backoff is at most 0.05 s
    got = await fetcher.download(f"{base}/busy/a.jpg", tmp_path / "out", DIGEST)
    assert got.digest == DIGEST
    first, second = media.hits
    assert second.at - first.at >= 1.0  # Retry-After: 1


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
    assert retry_after("7", now) == 7.0
    assert retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now) == 30.0
    assert retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0  # in the past: now
    assert retry_after("soon", now) is None
    assert retry_after(None, now) is None


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "chunked"])
async def test_an_oversize_body_is_refused(
    tmp_path: Path,
    media_server: tuple[MediaServer, str],
    make_fetcher: FetcherFactory,
    length: bool,
) -> None:
    media, base = media_server
    fetcher = await make_fetcher(max_bytes=50_000)
    query = "?length=1" if length else ""
    with pytest.raises(FetchFailed, match="oversize"):
        await fetcher.download(f"{base}/stream/200000{query}", tmp_path / "out", DIGEST)
    assert len(media.hits) == 1  # permanent: not retried
    written = tmp_path / "out"
    assert not written.exists() or written.stat().st_size <= 50_000


async def test_redirects_are_followed_up_to_the_cap(
    tmp_path: Path, media_server: tuple[MediaServer, str], make_fetcher: FetcherFactory
) -> None:
    media, base = media_server
    fetcher = await make_fetcher(max_redirects=3)
    got = await fetcher.download(f"{base}/redirect/3/a.jpg", tmp_path / "out", DIGEST)
    assert got.digest == DIGEST
    with pytest.raises(FetchFailed, match="more than 3 redirects"):
        await fetcher.download(f"{base}/redirect/4/a.jpg", tmp_path / "out", DIGEST)
    assert media.count("/files/") == {"/files/a.jpg": 1}  # only the first one got there


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:{port}/files/a.jpg",  # loopback under a name not allow-listed
        "http://127.0.0.2:{port}/files/a.jpg",
        "http://[::1]:{port}/files/a.jpg",
        "http://10.1.2.3/files/a.jpg",
        "http://192.168.1.1/files/a.jpg",
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:10.0.0.1]/files/a.jpg",
        "ftp://127.0.0.1/files/a.jpg",
        "file:///etc/passwd",
    ],
)
async def test_private_ranges_and_other_schemes_are_refused_without_a_request(
    tmp_path: Path, media_server: tuple[MediaServer, str], make_fetcher: FetcherFactory, url: str
) -> None:
    media, base = media_server
    fetcher = await make_fetcher()
    port = httpx.URL(base).port
    with pytest.raises(RefusedURL):
        await fetcher.download(url.format(port=port), tmp_path / "out", DIGEST)
    assert media.hits == []


async def test_a_redirect_into_a_private_range_is_refused(
    tmp_path: Path, media_server: tuple[MediaServer, str], make_fetcher: FetcherFactory
) -> None:
    media, base = media_server
    fetcher = await make_fetcher()
    port = httpx.URL(base).port
    target = f"http://localhost:{port}/files/a.jpg"
    with pytest.raises(RefusedURL, match="localhost"):
        await fetcher.download(f"{base}/redirect-to?url={target}", tmp_path / "out", DIGEST)
    assert media.count() == {"/redirect-to": 1}  # the hop itself was never requested


async def test_a_wrong_sha256_is_refetched_then_permanent(
    tmp_path: Path, media_server: tuple[MediaServer, str], make_fetcher: FetcherFactory
) -> None:
    media, base = media_server
    fetcher = await make_fetcher(retries=MediaRetries(backoff=0.01, hash_attempts=2))
    with pytest.raises(FetchFailed, match=f"sha256 mismatch: expected {'00' * 32}"):
        await fetcher.download(f"{base}/files/a.jpg", tmp_path / "out", bytes(32))
    assert media.count() == {"/files/a.jpg": 2}


async def test_the_auth_header_goes_to_the_provider_host_only(
    tmp_path: Path, serve: Server, make_fetcher: FetcherFactory
) -> None:
    provider, other = MediaServer(), MediaServer()
    provider.add("a.jpg", BODY)
    other.add("a.jpg", BODY)
    provider_base = await serve(provider.app())
    other_base = await serve(other.app())
    fetcher = await make_fetcher(
        auth_header=("X-Media-Token", Secret("s3cret")),
        auth_hosts=frozenset({"127.0.0.1"}),
        allow_hosts=frozenset({"127.0.0.1", "localhost"}),
    )
    await fetcher.download(f"{provider_base}/files/a.jpg", tmp_path / "out", DIGEST)
    other_port = httpx.URL(other_base).port
    await fetcher.download(
        f"{provider_base}/redirect-to?url=http://localhost:{other_port}/files/a.jpg",
        tmp_path / "out",
        DIGEST,
    )
    assert [hit.headers.get("x-media-token") for hit in provider.hits] == ["s3cret", "s3cret"]
    assert [hit.headers.get("x-media-token") for hit in other.hits] == [None]
    assert other.hits[0].headers["host"] == f"localhost:{other_port}"  # pinned, same Host


async def test_dns_failure_is_transient() -> None:
    async def broken(host: str, port: int) -> list[str]:
        raise OSError("resolver down")  # a fault we cannot cause for real on this machine

    with pytest.raises(FetchRetriable, match="cannot resolve"):
        await AddressGuard(frozenset(), resolver=broken).check(httpx.URL("http://example.com/"))


@pytest.mark.parametrize(
    ("first", "hop", "sent"),
    [
        ("https://media.provider.example/a", "https://media.provider.example/b", True),
        ("http://media.provider.example/a", "http://media.provider.example/b", True),
        ("http://media.provider.example/a", "https://media.provider.example/b", True),
        # A redirect from https to plain http on the provider's own host: not in the clear.
        ("https://media.provider.example/a", "http://media.provider.example/b", False),
        ("https://media.provider.example/a", "https://cdn.example/b", False),  # another host
        ("https://media.provider.example/a", "https://media.provider.example:8443/b", True),
    ],
)
def test_the_auth_header_never_leaves_its_hosts_or_https(first: str, hop: str, sent: bool) -> None:
    settings = MediaSettings(
        root=Path("unused"),
        base_url="https://media.provider.example/",
        auth_header=("Authorization", Secret("Bearer s3cret")),
    )
    assert sends_auth(settings, httpx.URL(first), httpx.URL(hop)) is sent
    unset = dataclasses.replace(settings, auth_header=None)
    assert not sends_auth(unset, httpx.URL(first), httpx.URL(hop))


async def test_idle_origins_beyond_the_limit_are_closed_and_reopened_when_needed(
    serve: Server, tmp_path: Path
) -> None:
    servers = [MediaServer() for _ in range(4)]
    bases = []
    for server in servers:
        server.add("a.jpg", BODY)
        bases.append(await serve(server.app()))
    settings = MediaSettings(root=tmp_path, allow_hosts=frozenset({"127.0.0.1"}))
    async with Fetcher(settings, AddressGuard(settings.allow_hosts), max_origins=2) as fetcher:
        for base in bases:  # four origins (ports), one after the other
            await fetcher.download(f"{base}/files/a.jpg", tmp_path / "out", DIGEST)
            assert fetcher.origins <= 2
        await fetcher.download(f"{bases[0]}/files/a.jpg", tmp_path / "out", DIGEST)  # reopened
        assert fetcher.origins == 2
    assert [len(server.hits) for server in servers] == [2, 1, 1, 1]
