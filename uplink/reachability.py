"""Whether a Kafka broker has answered lately, and an outage's log: said once, reminded, ended.

A process tells ``answered()`` whenever a broker answers it (an acknowledgement, a metadata
response). While nothing does, a background probe asks; once no broker has answered for
``after`` seconds the cluster counts as lost: one WARNING then, a reminder every
``remind_every`` seconds with how long it has been and what ``summary()`` says was shed, and
one INFO when a broker answers again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from uplink.resources import Resource

log = logging.getLogger(__name__)


class Reachability(Resource):
    def __init__(
        self,
        probe: Callable[[float], Awaitable[bool]],
        *,
        after: float,
        remind_every: float = 60.0,
        summary: Callable[[], str] = lambda: "",
        what: str = "Kafka",
    ) -> None:
        self._probe = probe  # takes a timeout in seconds; True: a broker answered
        self._after = after
        self._remind_every = remind_every
        self._summary = summary
        self._what = what
        # Probe a quiet cluster often enough that a lost one is noticed within ``after``, and
        # answer again within about a tick of a broker's return.
        self._tick = min(after / 4, 0.5)
        self._last = time.monotonic()
        self._lost_at: float | None = None
        self._next_reminder = 0.0
        self._task: asyncio.Task[None] | None = None
        self._probing: asyncio.Task[None] | None = None

    @property
    def reachable(self) -> bool:
        """A broker answered within the last ``after`` seconds."""
        return time.monotonic() - self._last < self._after

    @property
    def silent_for(self) -> float:
        """Seconds since a broker last answered."""
        return time.monotonic() - self._last

    def answered(self) -> None:
        self._last = time.monotonic()

    async def start(self) -> None:
        if self._task is None:
            self._last = time.monotonic()
            self._task = asyncio.create_task(self._watch(), name=f"{self._what}-reachability")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, self._probing) if t is not None and not t.done()]
        self._task = self._probing = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._tick)
            probing = self._probing
            if probing is not None and probing.done():
                probing.result()  # a probe that raised is a bug: let it surface
                probing = self._probing = None
            if probing is None and self.silent_for >= self._tick:
                # A probe hung on a frozen broker must not hold the log's transitions back.
                self._probing = asyncio.create_task(self._ask())
            self._log_transitions()

    async def _ask(self) -> None:
        if await self._probe(self._after):
            self.answered()

    def _log_transitions(self) -> None:
        now = time.monotonic()
        if self._lost_at is None:
            if not self.reachable:
                self._lost_at = self._last
                self._next_reminder = now + self._remind_every
                log.warning(
                    "%s unreachable: no broker has answered for %.1fs", self._what, now - self._last
                )
        elif self.reachable:
            log.info(
                "%s reachable again after %s%s",
                self._what,
                _duration(self._last - self._lost_at),
                _clause(self._summary()),
            )
            self._lost_at = None
        elif now >= self._next_reminder:
            self._next_reminder = now + self._remind_every
            log.warning(
                "%s still unreachable, for %s%s",
                self._what,
                _duration(now - self._lost_at),
                _clause(self._summary()),
            )


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{seconds:.1f}s"


def _clause(summary: str) -> str:
    return f"; {summary}" if summary else ""
