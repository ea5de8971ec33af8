"""Per-push deadlines swept by one periodic timer, instead of a timer per push.

A timer per push (``asyncio.timeout``) costs a schedule and a cancel per push. Every push gets
the same timeout, so deadlines arrive in order: a dict in insertion order is a queue, and each
sweep looks only at the expired front. What a deadline bounds is the future a push awaits (its
delivery): the sweep fails it with ``DeadlineExceeded``, at most one ``tick`` late. Failing the
future rather than cancelling the task leaves the task alone, so a cancel from elsewhere
(shutdown, a client gone) stays a cancel.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ingress.exceptions import IngressError


class DeadlineExceeded(IngressError):
    """Set on a future whose deadline passed before it was done."""

    retriable = True


class Deadlines:
    def __init__(
        self,
        timeout: float,
        tick: float = 0.05,
        expired: Callable[[int], object] = lambda count: None,
    ) -> None:
        self.timeout = timeout
        self._tick = tick
        self._expired = expired  # told after a sweep that failed futures, with their count
        self._pending: dict[asyncio.Future[None], float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        if self._timer is None:
            self._loop = asyncio.get_running_loop()
            self._timer = self._loop.call_later(self._tick, self._sweep)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def add(self, future: asyncio.Future[None]) -> None:
        """Bound ``future`` by ``timeout`` seconds from now; ``discard`` it once awaited."""
        assert self._loop is not None, "deadlines not started"
        self._pending[future] = self._loop.time() + self.timeout

    def discard(self, future: asyncio.Future[None]) -> None:
        self._pending.pop(future, None)

    def _sweep(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        pending = self._pending
        expired = []
        for future, deadline in pending.items():
            if deadline > now:
                break  # insertion order is deadline order: the rest are later
            expired.append(future)
        failed = 0
        for future in expired:
            del pending[future]
            if not future.done():
                future.set_exception(DeadlineExceeded(f"deadline of {self.timeout:g}s passed"))
                failed += 1
        self._timer = self._loop.call_later(self._tick, self._sweep)
        if failed:
            self._expired(failed)
