"""One bucket (and prefix) of an S3-compatible store, through obstore.

obstore (object_store's Rust client) signs requests, retries 5xx, 429/503 throttling and
connection errors itself with exponential backoff and jitter; it gives up after a short while
here, and ``Bucket`` goes on trying with backoff and jitter of its own (logging each failure) for
as long as the store stays away: a worker waits for its store, it does not exit. Create-only
puts (``If-None-Match: *``) are what the archive's and the media store's exactly-once rests on.

Every method has a blocking twin (``_sync``) for the archive's writer thread.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import random
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import obstore
from obstore.exceptions import (
    AlreadyExistsError,
    BaseError,
    InvalidPathError,
    NotSupportedError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from obstore.store import S3Store

from uplink.exceptions import ConfigError, UplinkError
from uplink.resources import Resource
from uplink.s3.settings import S3Location

log = logging.getLogger(__name__)

T = TypeVar("T")

# Failures no retry mends: they stop the worker (and name the setting at start-up).
_PERMANENT = (PermissionDeniedError, UnauthenticatedError, InvalidPathError, NotSupportedError)


class StorageError(UplinkError):
    """The object store refused a request for good (credentials, permissions)."""


class StorageUnavailable(StorageError):
    """The object store could not be reached in time (start-up), or the bucket was closed
    while a request was still being retried."""

    retriable = True


@dataclass(frozen=True)
class Retries:
    """Our own retries, after obstore's: backoff doubling from ``backoff`` to ``backoff_max``,
    each delay jittered to half..all of it; None attempts: until the store answers."""

    backoff: float = 0.5
    backoff_max: float = 10.0
    attempts: int | None = None


@dataclass(frozen=True)
class Listed:
    key: str  # relative to the bucket, prefix included
    size: int


class Bucket(Resource):
    """``start()`` makes the client and checks the bucket answers to these credentials (a
    ConfigError names the setting if not); ``stop()`` ends retries in progress."""

    def __init__(self, location: S3Location, setting: str, retries: Retries = Retries()) -> None:
        self.location = location
        self._setting = setting  # the CLI flag / variable that named this location
        self._retries = retries
        self._store: S3Store | None = None
        self._closed = threading.Event()

    def __repr__(self) -> str:
        return f"Bucket({self.location})"

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._store is not None:
            return
        self._closed.clear()
        store = _client(self.location)
        try:
            stream = obstore.list(store, self.location.prefix or None, chunk_size=1)
            await anext(aiter(stream), None)
        except _PERMANENT as exc:
            raise ConfigError(
                "AWS_ACCESS_KEY_ID",
                f"{self.location} refused these credentials ({self._setting}): {_first_line(exc)}",
            ) from None
        except BaseError as exc:
            text = str(exc)
            if "NoSuchBucket" in text:
                raise ConfigError(
                    self._setting, f"bucket {self.location.bucket!r} does not exist"
                ) from None
            if "SignatureDoesNotMatch" in text or "InvalidAccessKeyId" in text or "403" in text:
                raise ConfigError(
                    "AWS_SECRET_ACCESS_KEY",
                    f"{self.location} refused these credentials ({self._setting}): "
                    f"{_first_line(exc)}",
                ) from None
            raise StorageUnavailable(f"{self.location}: {_first_line(exc)}") from None
        self._store = store
        await self._check_create_only()

    async def stop(self) -> None:
        self._closed.set()
        self._store = None

    async def _check_create_only(self) -> None:
        """A store that ignores ``If-None-Match: *`` answers 200 to a put of a taken key, and
        exactly-once is silently gone: refuse to start on one."""
        probe = self.location.key(".uplink", f"create-only-{uuid.uuid4().hex}")
        try:
            if not await self.put_new(probe, b"1"):
                raise StorageError(f"{self.location}: a new key was taken")
            if await self.put_new(probe, b"2"):
                self._store = None
                raise ConfigError(
                    self._setting,
                    f"{self.location} ignores If-None-Match: * (it overwrote a key): uplink "
                    "needs a store with conditional writes (AWS S3, MinIO, Ceph, R2, versitygw…)",
                )
        finally:
            if self._store is not None:
                await obstore.delete_async(self._store, probe)

    @property
    def store(self) -> S3Store:
        if self._store is None:
            raise RuntimeError(f"{self!r} not started")
        return self._store

    # --- requests ------------------------------------------------------------------------------

    async def put_new(self, key: str, data: bytes | Path) -> bool:
        """Create ``key`` with ``data`` unless it exists: True if this call created it, False if
        it was taken (by someone else, or by an earlier attempt of this call whose answer was
        lost: the caller looks at what is there)."""
        return await self._retried(f"PUT {key}", lambda: self._put_async(key, data))

    def put_new_sync(self, key: str, data: bytes | Path) -> bool:
        return self._retried_sync(f"PUT {key}", lambda: self._put(key, data))

    async def size(self, key: str) -> int | None:
        """The object's size (HEAD), None if there is none."""
        return await self._retried(f"HEAD {key}", lambda: self._head_async(key))

    def size_sync(self, key: str) -> int | None:
        return self._retried_sync(f"HEAD {key}", lambda: self._head(key))

    async def get(self, key: str) -> bytes:
        return await self._retried(f"GET {key}", lambda: self._get_async(key))

    def get_sync(self, key: str, length: int | None = None) -> bytes:
        """The object, or its first ``length`` bytes."""
        return self._retried_sync(f"GET {key}", lambda: self._get(key, length))

    async def listed(self, prefix: str) -> list[Listed]:
        """Every object whose key starts with ``prefix`` (prefix of the location included),
        sorted by key."""

        async def once() -> list[Listed]:
            found: list[Listed] = []
            async for chunk in obstore.list(self.store, prefix or None, chunk_size=1000):
                found.extend(Listed(meta["path"], meta["size"]) for meta in chunk)
            return found

        return sorted(await self._retried(f"LIST {prefix}", once), key=lambda item: item.key)

    # --- one attempt ---------------------------------------------------------------------------

    async def _put_async(self, key: str, data: bytes | Path) -> bool:
        try:
            await obstore.put_async(self.store, key, data, mode="create", use_multipart=False)
        except AlreadyExistsError:
            return False
        return True

    def _put(self, key: str, data: bytes | Path) -> bool:
        try:
            obstore.put(self.store, key, data, mode="create", use_multipart=False)
        except AlreadyExistsError:
            return False
        return True

    async def _head_async(self, key: str) -> int | None:
        try:
            return int((await obstore.head_async(self.store, key))["size"])
        except FileNotFoundError:
            return None

    def _head(self, key: str) -> int | None:
        try:
            return int(obstore.head(self.store, key)["size"])
        except FileNotFoundError:
            return None

    async def _get_async(self, key: str) -> bytes:
        result = await obstore.get_async(self.store, key)
        return bytes(await result.bytes_async())

    def _get(self, key: str, length: int | None) -> bytes:
        if length is None:
            return bytes(obstore.get(self.store, key).bytes())
        return bytes(obstore.get_range(self.store, key, start=0, length=length))

    # --- retries ---------------------------------------------------------------------------------

    async def _retried(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        delays = self._delays()
        while True:
            try:
                return await attempt()
            except _PERMANENT as exc:
                raise StorageError(f"{self.location}: {what}: {_first_line(exc)}") from None
            except (BaseError, OSError) as exc:
                if isinstance(exc, FileNotFoundError):
                    raise
                delay = self._next(delays, what, exc)
            await asyncio.sleep(delay)

    def _retried_sync(self, what: str, attempt: Callable[[], T]) -> T:
        delays = self._delays()
        while True:
            try:
                return attempt()
            except _PERMANENT as exc:
                raise StorageError(f"{self.location}: {what}: {_first_line(exc)}") from None
            except (BaseError, OSError) as exc:
                if isinstance(exc, FileNotFoundError):
                    raise
                delay = self._next(delays, what, exc)
            if self._closed.wait(delay):
                raise StorageUnavailable(f"{self.location}: {what}: closed while retrying")

    def _delays(self) -> _Delays:
        return _Delays(self._retries)

    def _next(self, delays: _Delays, what: str, exc: BaseException) -> float:
        if self._closed.is_set():
            raise StorageUnavailable(f"{self.location}: {what}: closed while retrying") from None
        delay = delays.next()
        if delay is None:
            raise StorageUnavailable(f"{self.location}: {what}: {_first_line(exc)}") from None
        log.warning(
            "%s: %s failed, retrying in %.1fs: %s", self.location, what, delay, _first_line(exc)
        )
        return delay


class _Delays:
    def __init__(self, retries: Retries) -> None:
        self._retries = retries
        self._delay = retries.backoff
        self._made = 0

    def next(self) -> float | None:
        self._made += 1
        attempts = self._retries.attempts
        if attempts is not None and self._made >= attempts:
            return None
        delay = self._delay * random.uniform(0.5, 1.0)
        self._delay = min(self._delay * 2, self._retries.backoff_max)
        return delay


def _client(location: S3Location) -> S3Store:
    """The obstore client; credentials only from the settings (or the chain obstore knows)."""
    s3 = location.s3
    config: Any = dict(s3.passed)
    config["region"] = s3.region
    config["virtual_hosted_style_request"] = s3.virtual_hosted
    if s3.endpoint is not None:
        config["endpoint"] = s3.endpoint
    if s3.access_key_id is not None and s3.secret_access_key is not None:
        config["access_key_id"] = s3.access_key_id
        config["secret_access_key"] = s3.secret_access_key.reveal()
    if s3.session_token is not None:
        config["session_token"] = s3.session_token.reveal()
    client: Any = {"connect_timeout": "5 seconds", "timeout": "60 seconds"}
    if s3.endpoint is not None and s3.endpoint.startswith("http://"):
        client["allow_http"] = True
    retry: Any = {
        "max_retries": 4,
        "retry_timeout": datetime.timedelta(seconds=15),
        "backoff": {
            "init_backoff": datetime.timedelta(milliseconds=100),
            "max_backoff": datetime.timedelta(seconds=2),
            "base": 2,
        },
    }
    return S3Store(location.bucket, config=config, client_options=client, retry_config=retry)


def _first_line(exc: BaseException) -> str:
    """obstore's message without its debug dump (which quotes the request's headers)."""
    return str(exc).split("\n", 1)[0][:300]
