"""Out-of-order completion, in-order commits: no broker needed (the tracker is plain asyncio)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition

from consumers.runtime import HandlerFailed, InOrderCommits

pytestmark = pytest.mark.anyio

TP = TopicPartition("t", 0)


async def test_the_position_is_the_lowest_offset_still_in_flight() -> None:
    tracker = InOrderCommits(limit=10)
    gates = {offset: asyncio.Event() for offset in (5, 6, 7)}

    async def work(offset: int) -> None:
        await gates[offset].wait()

    for offset in gates:
        await tracker.start(TP, offset, work(offset), name=f"w{offset}")
    assert tracker.position(TP, handled=8) == 5
    gates[6].set()
    gates[7].set()
    async with asyncio.timeout(5):
        while tracker.in_flight() > 1:  # noqa: ASYNC110  # 6 and 7 finishing
            await asyncio.sleep(0)
    assert tracker.position(TP, handled=8) == 5  # 6 and 7 are done, 5 is not: no commit past it
    gates[5].set()
    await tracker.drain(timeout=5)
    assert tracker.position(TP, handled=8) == 8


async def test_a_failed_task_holds_its_offset_and_stops_the_next_call() -> None:
    tracker = InOrderCommits(limit=10, what="download")

    async def boom() -> None:
        raise OSError("disk gone")

    await tracker.start(TP, 3, boom(), name="boom")
    await tracker.drain(timeout=5)
    with pytest.raises(HandlerFailed, match="a download failed: OSError"):
        tracker.position(TP, handled=4)

    async def fine() -> None:
        return None

    with pytest.raises(HandlerFailed):
        await tracker.start(TP, 4, fine(), name="after")


async def test_start_waits_for_a_free_slot() -> None:
    tracker = InOrderCommits(limit=1)
    gate = asyncio.Event()

    async def held() -> None:
        await gate.wait()

    async def quick() -> None:
        return None

    await tracker.start(TP, 0, held(), name="held")
    second = asyncio.create_task(tracker.start(TP, 1, quick(), name="quick"))
    done, _ = await asyncio.wait([second], timeout=0.05)
    assert not done  # backpressure: the only slot is taken
    gate.set()
    await asyncio.wait_for(second, 5)
    await tracker.drain(timeout=5)
    assert tracker.in_flight() == 0


async def test_cancel_and_drain_leave_unfinished_work_uncommitted() -> None:
    tracker = InOrderCommits(limit=10)
    other = TopicPartition("t", 1)

    async def forever() -> None:
        await asyncio.Event().wait()

    await tracker.start(TP, 1, forever(), name="a")
    await tracker.start(other, 9, forever(), name="b")
    await tracker.cancel([TP])  # revoked: forgotten, its next owner redoes it
    assert tracker.position(TP, handled=2) == 2
    await tracker.drain(timeout=0.01)  # stopping: cancelled, and still not past it
    assert tracker.position(other, handled=10) == 9
