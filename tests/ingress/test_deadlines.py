"""The swept deadlines: late work is interrupted (about on time), other cancels pass through."""

from __future__ import annotations

import asyncio

import pytest

from ingress.deadlines import DeadlineExceeded, Deadlines

pytestmark = pytest.mark.anyio


async def test_work_past_its_deadline_is_interrupted_within_a_tick() -> None:
    deadlines = Deadlines(timeout=0.2, tick=0.02)
    deadlines.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(DeadlineExceeded):
            async with deadlines():
                await loop.create_future()  # never done
    finally:
        deadlines.stop()
    assert 0.2 <= loop.time() - started < 0.2 + 0.02 + 0.1  # one tick, plus scheduling slack


async def test_work_within_its_deadline_is_untouched_and_the_task_stays_usable() -> None:
    deadlines = Deadlines(timeout=0.2, tick=0.02)
    deadlines.start()
    try:
        async with deadlines():
            await asyncio.sleep(0)
        await asyncio.sleep(0.3)  # past the deadline: no stray cancel reaches the task
    finally:
        deadlines.stop()


async def test_a_cancel_from_elsewhere_stays_a_cancel() -> None:
    deadlines = Deadlines(timeout=10, tick=0.02)
    deadlines.start()
    blocked = asyncio.Event()

    async def work() -> None:
        async with deadlines():
            blocked.set()
            await asyncio.get_running_loop().create_future()

    task = asyncio.create_task(work())
    await blocked.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadlines.stop()
