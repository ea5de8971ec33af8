"""docker-compose.yml as users deploy it, scaled (ingress 3, archive 2, media 2, router 2),
pushed through its load balancer while its parts fail: every push answered 200 is in the bucket's
archive exactly once.

One stack for the module (bringing it up is the expensive part); each scenario checks the whole
archive, so a scenario also proves the earlier ones' pushes were not archived again."""

from __future__ import annotations

import asyncio
import collections
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import pytest

from tests.compose.conftest import fault_table
from tests.compose.load import Tally, client, pushes, retry, send, traffic
from tests.compose.stack import LB, Stack, scale

pytestmark = [pytest.mark.compose, pytest.mark.slow]

SCALE = {"ingress": 3, "archive": 2, "media": 2, "router": 2}
URL = f"{LB}/v1/uplink"
# HAProxy checks each replica every 5 s and takes it out after 2 failures (deploy/haproxy.cfg);
# the margin is for this loaded machine.
LB_DETECTS_WITHIN = 10.0 + 15.0


@dataclass
class Ledger:
    """Every messageId the stack answered 200 so far, across scenarios."""

    durable: set[str] = field(default_factory=set)


@pytest.fixture(scope="module")
def stack(docker_host: str, run_name: str) -> Iterator[Stack]:
    stack = Stack(project=f"{run_name}-single", docker_host=docker_host)
    try:
        stack.up(*scale(SCALE))
        yield stack
    finally:
        # Also after a failed test or a failed `up`: nothing of the run stays behind.
        stack.down("-v")
        left = stack.containers()
        stack.close()
        assert not left, "containers left behind"


@pytest.fixture(scope="module")
def ledger() -> Ledger:
    return Ledger()


def verify(stack: Stack, ledger: Ledger, tally: Tally, fault: str) -> None:
    """Every push ever answered 200 archived, none twice; the scenario's row of the table."""
    ledger.durable |= tally.ok
    counts = stack.await_archived(ledger.durable)
    lost = ledger.durable - counts.keys()
    duplicated = {message_id for message_id, n in counts.items() if n > 1}
    with fault_table().open("a") as table:
        table.write(
            f"| {fault} | {tally.sent} | {tally.answered_ok} | {tally.unavailable} "
            f"| {tally.errors} | {len(lost)} | {len(duplicated)} |\n"
        )
    assert not lost, f"{len(lost)} pushes answered 200 are not in the archive"
    assert not duplicated, f"{len(duplicated)} pushes archived more than once"


async def under_traffic(
    seed: int, fault: Callable[[Tally], Awaitable[None]], after: int = 1_500
) -> Tally:
    """Pushes flowing while ``fault`` runs (once ``after`` of them were answered) and for
    ``after`` more once it returned; then the provider's retries of what failed."""
    tally = Tally()
    stop = asyncio.Event()
    async with client() as http:
        sending = asyncio.create_task(
            send(http, URL, traffic(seed, stop, after_stop=after, limit=200_000), tally)
        )
        await tally.after(after).wait()
        await fault(tally)
        stop.set()
        await sending
        await retry(http, URL, tally)
    return tally


def test_an_ingress_killed_mid_traffic(stack: Stack, ledger: Ledger) -> None:
    """20,000 pushes, 2 % of them sent again (the provider's retry of a push whose 200 was
    lost); one ingress container SIGKILLed a quarter of the way through."""
    items = pushes(20_000, seed=22)
    resent = items[: len(items) // 50]
    # Each retry a few hundred pushes after its original, as the provider's come minutes later.
    stream = list(items)
    for offset, item in enumerate(resent):
        stream.insert(offset * 50 + 500, item)
    tally = Tally()
    victim = stack.running("ingress")[1]

    async def run() -> float:
        async with client() as http:
            sending = asyncio.create_task(send(http, URL, stream, tally))
            await tally.after(5_000).wait()
            await asyncio.to_thread(victim.kill, "SIGKILL")
            killed_at = time.monotonic()
            await sending
            await retry(http, URL, tally)
        return killed_at

    killed_at = asyncio.run(run())
    late = [t - killed_at for t in tally.error_times if t - killed_at > LB_DETECTS_WITHIN]
    assert not late, f"the LB still sent to the dead replica {max(late):.1f} s after the kill"
    assert len(tally.ok) == len(items)
    verify(stack, ledger, tally, "an ingress SIGKILLed (of 3)")


def test_archive_scaled_to_4_and_back_to_1_under_traffic(stack: Stack, ledger: Ledger) -> None:
    async def rescale(tally: Tally) -> None:
        for archives in (4, 1):
            await asyncio.to_thread(stack.up, *scale({**SCALE, "archive": archives}))
            assert len(stack.running("archive")) == archives

    tally = asyncio.run(under_traffic(seed=23, fault=rescale))
    assert not tally.failed
    verify(stack, ledger, tally, "archive scaled 2 → 4 → 1")


def test_the_broker_restarted_under_traffic(stack: Stack, ledger: Ledger) -> None:
    (kafka,) = stack.running("kafka")

    async def restart(tally: Tally) -> None:
        await asyncio.to_thread(kafka.restart, timeout=60)
        # Back when the load balancer's replicas are ready again (a produce acked).
        await asyncio.to_thread(stack.up, *scale({**SCALE, "archive": 1}))

    tally = asyncio.run(under_traffic(seed=24, fault=restart))
    assert tally.unavailable > 0, "no 503 while the broker was down"
    assert not tally.failed
    verify(stack, ledger, tally, "the broker restarted")


ARCHIVE_FILE = re.compile(r"(?P<partition>\d+)[^/]*?(?P<offset>\d+)\D*$")


def first_offsets(files: list[str]) -> dict[str, list[str]]:
    by_directory: dict[str, list[str]] = collections.defaultdict(list)
    for name in files:
        by_directory[name.rsplit("/", 1)[0]].append(name.rsplit("/", 1)[1])
    return by_directory


def test_down_and_up_again_on_the_same_volumes(stack: Stack, ledger: Ledger) -> None:
    before = set(stack.archive_files())
    stack.down()
    stack.up(*scale({**SCALE, "archive": 1}))
    after_restart = set(stack.archive_files())
    assert before <= after_restart, "archive files lost with the containers"

    async def nothing(tally: Tally) -> None:
        return None

    tally = asyncio.run(under_traffic(seed=25, fault=nothing, after=1_000))
    assert not tally.failed
    verify(stack, ledger, tally, "down, then up on the same volumes")
    new = set(stack.archive_files()) - before
    assert new, "nothing archived after the restart"
