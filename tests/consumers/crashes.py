"""What the crash tests share: a group's committed progress, a worker process killed with
SIGKILL at random moments once it made some, restarted each time, and the last run to the end."""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import Mapping, Sequence
from typing import BinaryIO

import httpx
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupCoordinatorNotAvailableError

from uplink.broker import free_port
from uplink.settings import WorkerSettings


async def committed_total(admin: AIOKafkaAdminClient, group: str) -> int:
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    except GroupCoordinatorNotAvailableError:
        return 0  # the group's coordinator is still loading: nothing committed yet
    return sum(meta.offset for meta in offsets.values() if meta.offset >= 0)


async def committed(settings: WorkerSettings) -> int:
    """The sum of the group's committed offsets, now."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()
    try:
        return await committed_total(admin, settings.group)
    finally:
        await admin.close()


async def committed_past(admin: AIOKafkaAdminClient, group: str, mark: int) -> int:
    """Poll the group's committed offsets (the broker has no push for this) until past ``mark``."""
    while (total := await committed_total(admin, group)) <= mark:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    return total


async def serving(url: str) -> None:
    """Poll ``url`` until it answers 200 (a starting process has no way to announce it)."""
    async with httpx.AsyncClient() as client:
        while True:
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            await asyncio.sleep(0.05)


async def kill_at_random_moments(
    command: Sequence[str],
    env: Mapping[str, str],
    log: BinaryIO,
    admin: AIOKafkaAdminClient,
    group: str,
    *,
    total: int,
    kills: int,
    rng: random.Random,
    max_delay: float,
) -> int:
    """Run ``command`` and SIGKILL it up to ``kills`` times, each time once its group committed
    more than before, after a random delay; returns the kills made before all ``total``
    records were committed."""
    made = 0
    while made < kills:
        before = await committed_total(admin, group)
        if before >= total:
            break  # everything got committed before the planned kills ran out
        process = await asyncio.create_subprocess_exec(*command, env=dict(env), stderr=log)
        try:
            async with asyncio.timeout(90):  # kill only once it made progress
                await committed_past(admin, group, before)
            await asyncio.sleep(rng.uniform(0, max_delay))
        finally:
            process.kill()
            await process.wait()
        made += 1
    return made


async def run_to_the_end(
    command: Sequence[str],
    env: Mapping[str, str],
    log: BinaryIO,
    admin: AIOKafkaAdminClient,
    group: str,
    *,
    total: int,
) -> None:
    """Run ``command`` until it serves its metrics and its group committed all ``total`` records,
    then SIGTERM it: it must exit cleanly (0).

    Everything may already be committed when it starts (the last killed run can finish the
    work, or its transaction can commit after the kill), so the SIGTERM waits for the metrics
    port: a signal that lands while the interpreter is still importing ends any process with
    -15, before it has anything to finish."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *command, env={**env, "UPLINK_METRICS_PORT": str(port)}, stderr=log
    )
    try:
        async with asyncio.timeout(120):
            await serving(f"http://127.0.0.1:{port}/metrics")
            await committed_past(admin, group, total - 1)
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):  # the media worker lets downloads in flight finish
            assert await process.wait() == 0
