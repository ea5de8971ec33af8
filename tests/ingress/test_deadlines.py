"""The swept deadlines: a late future fails (about on time), others are left untouched."""

from __future__ import annotations

import asyncio

import pytest

from ingress.deadlines import DeadlineExceeded, Deadlines

pytestmark = pytest.mark.anyio


async def test_a_future_past_its_deadline_fails_within_a_tick_and_it_is_told() -> None:
    told: list[int] = []
    deadlines = Deadlines(timeout=0.2, tick=0.02, expired=told.append)
    deadlines.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    future: asyncio.Future[None] = loop.create_future()  # never done otherwise
    deadlines.add(future)
    try:
        with pytest.raises(DeadlineExceeded):
            await future
    finally:
        deadlines.stop()
    # One tick, plus slack for a loaded machine: far short of never.
    assert 0.2 <= loop.time() - started < 0.2 + 0.02 + 0.25
    assert told == [1]


async def test_a_future_done_in_time_is_untouched() -> None:
    told: list[int] = []
    deadlines = Deadlines(timeout=0.2, tick=0.02, expired=told.append)
    deadlines.start()
    loop = asyncio.get_running_loop()
    kept: asyncio.Future[None] = loop.create_future()
    left: asyncio.Future[None] = loop.create_future()
    try:
        deadlines.add(kept)
        deadlines.add(left)
        kept.set_result(None)
        deadlines.discard(kept)
        left.set_result(None)  # done, but still listed when its deadline passes
        await asyncio.sleep(0.3)
    finally:
        deadlines.stop()
    assert kept.result() is None and left.result() is None
    assert told == []


async def test_a_cancel_from_elsewhere_stays_a_cancel() -> None:
    deadlines = Deadlines(timeout=10, tick=0.02)
    deadlines.start()
    blocked = asyncio.Event()

    async def work() -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        deadlines.add(future)
        blocked.set()
        try:
            await future
        finally:
            deadlines.discard(future)

    task = asyncio.create_task(work())
    await blocked.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadlines.stop()
