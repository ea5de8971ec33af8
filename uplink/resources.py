"""The lifecycle every uplink resource has: ``start()``/``stop()`` (both safe twice) and
``async with`` (or ``with``, for the brokers, which are driven from synchronous code), which
starts on entry and stops on exit, whatever ended the block."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Resource:
    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class BlockingResource:
    """``Resource`` for what is started and stopped from synchronous code: the local broker,
    the local cluster and the tests' container broker."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
