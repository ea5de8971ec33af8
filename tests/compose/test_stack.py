"""docker-compose.yml as users deploy it, scaled (ingress 3, archive 2, media 2, router 2),
pushed through its load balancer while its parts fail: every push answered 200 is in the bucket's
archive exactly once.

One stack for the module (bringing it up is the expensive part); each scenario checks the whole
archive, so a scenario also proves the earlier ones' pushes were not archived again."""

from __future__ import annotations

import asyncio
import time

import pytest
from docker.models.containers import Container

from tests.compose.conftest import SINGLE
from tests.compose.load import Client, Tally, pushes, retry, send
from tests.compose.scenario import URL, Ledger, under_traffic, verify
from tests.compose.stack import Stack, scale

pytestmark = [pytest.mark.compose, pytest.mark.slow]

# HAProxy checks each replica every 5 s and takes it out after 2 failures (deploy/haproxy.cfg);
# the margin is for this loaded machine.
LB_DETECTS_WITHIN = 10.0 + 15.0
# After the scaling scenario the stack runs one archive container.
SCALED_BACK = {**SINGLE, "archive": 1}
# What `down` and `up` again need to show that offsets and the archive continue.
ONE_EACH = {"ingress": 1, "archive": 1, "media": 1, "router": 1}


@pytest.fixture(scope="module")
def ledger() -> Ledger:
    return Ledger()


def crash(container: Container) -> None:
    """SIGKILL to the container's process, as a crash or the kernel's OOM killer deals it.

    From inside the container, not through the engine: `docker kill` (and podman's) counts as
    the user stopping the container, which no restart policy undoes; a process that died is
    what `restart: unless-stopped` is for. Pid -1 is every process but PID 1 (the init, which
    then exits as its child did) and the caller.
    """
    # Not exec_run: it inspects the exec session after starting it, and the engine drops the
    # session with the container it just killed ("no such exec session", a 500).
    api = container.client.api
    session = api.exec_create(container.id, ["sh", "-c", "kill -s KILL -- -1"])
    api.exec_start(session["Id"], detach=True)


def await_restarted(container: Container, timeout: float = 180) -> None:
    """The engine started ``container`` again after its crash and its health check passes."""
    deadline = time.monotonic() + timeout
    while True:
        container.reload()
        state = container.attrs["State"]
        health = (state.get("Health") or {}).get("Status")
        if container.attrs.get("RestartCount", 0) >= 1 and health == "healthy":
            return
        assert time.monotonic() < deadline, (
            f"{container.name} not restarted and healthy {timeout:.0f} s after its crash: "
            f"{state.get('Status')}, health {health}, "
            f"{container.attrs.get('RestartCount')} restarts"
        )
        time.sleep(1)  # the engine's state, read again: it says nothing when a check passes


def test_an_ingress_killed_mid_traffic(stack: Stack, ledger: Ledger) -> None:
    """20,000 pushes, 2 % of them sent again (the provider's retry of a push whose 200 was
    lost); one ingress container's process SIGKILLed a quarter of the way through: the load
    balancer stops sending to it, the engine restarts it."""
    items = pushes(20_000, seed=22)
    resent = items[: len(items) // 50]
    # Each retry a few hundred pushes after its original, as the provider's come minutes later.
    stream = list(items)
    for offset, item in enumerate(resent):
        stream.insert(offset * 50 + 500, item)
    tally = Tally()
    victim = stack.running("ingress")[1]

    async def run() -> float:
        async with Client(URL) as http:
            sending = asyncio.create_task(send(http, stream, tally))
            await tally.after(5_000).wait()
            await asyncio.to_thread(crash, victim)
            killed_at = time.monotonic()
            await sending
            await retry(http, tally)
        return killed_at

    killed_at = asyncio.run(run())
    late = [t - killed_at for t in tally.error_times if t - killed_at > LB_DETECTS_WITHIN]
    assert not late, f"the LB still sent to the dead replica {max(late):.1f} s after the kill"
    assert len(tally.ok) == len(items)
    await_restarted(victim)
    verify(stack, ledger, tally, "an ingress SIGKILLed (of 3)")


def test_archive_scaled_to_4_and_back_to_1_under_traffic(stack: Stack, ledger: Ledger) -> None:
    async def rescale(tally: Tally) -> None:
        for archives in (4, 1):
            await asyncio.to_thread(stack.up, *scale({**SINGLE, "archive": archives}))
            assert len(stack.running("archive")) == archives

    tally = asyncio.run(under_traffic(seed=23, fault=rescale))
    assert not tally.failed
    verify(stack, ledger, tally, "archive scaled 2 → 4 → 1")


def test_the_broker_restarted_under_traffic(stack: Stack, ledger: Ledger) -> None:
    (kafka,) = stack.running("kafka")

    async def restart(tally: Tally) -> None:
        await asyncio.to_thread(kafka.restart, timeout=60)
        # Back when the load balancer's replicas are ready again (a produce acked).
        await asyncio.to_thread(stack.up, *scale(SCALED_BACK))

    tally = asyncio.run(under_traffic(seed=24, fault=restart))
    assert tally.unavailable > 0, "no 503 while the broker was down"
    assert not tally.failed
    verify(stack, ledger, tally, "the broker restarted")


def test_down_and_up_again_on_the_same_volumes(stack: Stack, ledger: Ledger) -> None:
    before = set(stack.archive_files())
    stack.down()
    stack.up(*scale(ONE_EACH))
    after_restart = set(stack.archive_files())
    assert before <= after_restart, "archive files lost with the containers"

    async def nothing(tally: Tally) -> None:
        return None

    tally = asyncio.run(under_traffic(seed=25, fault=nothing, after=1_000))
    assert not tally.failed
    verify(stack, ledger, tally, "down, then up on the same volumes")
    new = set(stack.archive_files()) - before
    assert new, "nothing archived after the restart"
