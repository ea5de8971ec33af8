"""Per-push deadlines swept by one periodic timer, instead of a timer per push.

``asyncio.timeout`` schedules and cancels a timer for every push, a cost the ingress benchmark
shows (docs/benchmarks.md). Every push gets the same timeout, so deadlines arrive in order: a
dict in insertion order is a queue, and each sweep looks only at the expired front. A push is
cancelled at most one ``tick`` after its deadline.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from ingress.exceptions import IngressError


class DeadlineExceeded(IngressError):
    """Raised in a task whose deadline passed (instead of its CancelledError)."""

    retriable = True


class Deadlines:
    def __init__(self, timeout: float, tick: float = 0.05) -> None:
        self.timeout = timeout
        self._tick = tick
        self._pending: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._tick, self._sweep)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for task, deadline in list(self._pending.items()):
            if deadline > now:
                break  # insertion order is deadline order
            del self._pending[task]
            self._expired.add(task)
            task.cancel()
        self._timer = loop.call_later(self._tick, self._sweep)

    def __call__(self) -> _Scope:
        """``async with deadlines():`` bounds the block by ``timeout`` seconds."""
        return _Scope(self)


class _Scope:
    __slots__ = ("_deadlines", "_task")

    def __init__(self, deadlines: Deadlines) -> None:
        self._deadlines = deadlines
        self._task: asyncio.Task[object] | None = None

    async def __aenter__(self) -> None:
        task = asyncio.current_task()
        assert task is not None, "deadlines bound tasks"
        self._task = task
        deadlines = self._deadlines
        deadlines._pending[task] = task.get_loop().time() + deadlines.timeout

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task = self._task
        assert task is not None
        deadlines = self._deadlines
        deadlines._pending.pop(task, None)
        if task in deadlines._expired:
            deadlines._expired.discard(task)
            # The sweep's cancel arrives at the task's next resumption, so it is the exception
            # here; a cancel from elsewhere as well (shutdown) keeps propagating as one.
            if exc_type is asyncio.CancelledError and task.uncancel() == 0:
                raise DeadlineExceeded(f"deadline of {deadlines.timeout:g}s passed") from None
