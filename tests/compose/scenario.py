"""A fault under traffic and its verdict: pushes flow through the load balancer while the fault
runs, the provider's retries follow, then the whole archive is read back and every push ever
answered 200 must be in it exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.compose.load import Client, Tally, retry, send, traffic
from tests.compose.stack import LB, ROOT, Stack

URL = f"{LB}/v1/uplink"
# Pushes a second while a fault runs: steady load well below what the stack answers (about
# 1,000 a second here), so that a fault of minutes sends tens of thousands, not hundreds.
RATE = 200.0


@dataclass
class Ledger:
    """Every messageId a stack answered 200 so far, across its scenarios."""

    durable: set[str] = field(default_factory=set)


def fault_table() -> Path:
    """Where the scenarios' rows go (docs/compose.md quotes them)."""
    path = ROOT / "var" / "compose" / "faults.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


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
    async with Client(URL) as http:
        sending = asyncio.create_task(
            send(http, traffic(seed, stop, after_stop=after, limit=200_000), tally, rate=RATE)
        )
        await tally.after(after).wait()
        await fault(tally)
        stop.set()
        await sending
        await retry(http, tally)
    return tally
