"""The per-partition dedupe window: is this messageId a repeat of an earlier record?

The decision is a pure function of the (messageId, timestamp) sequence fed in offset order, so a
worker that rebuilds the window from the partition after a crash, a rebalance or a replay decides
exactly as before (README, "Workers": dedupe).
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from itertools import accumulate, chain, islice
from operator import sub

# Bits 62 and 63 of a little-endian double hold the sign and the top exponent bit. Clearing both
# keeps 62 hash bits that always decode to a finite, non-negative float: no NaN, no -0.0, so two
# keys are equal exactly when their bits are. A float object costs 24 bytes against 32 for a
# 60-bit int.
_LOW62 = (1 << 62) - 1
_ESCAPE = 0xFFFF  # a clock step of 65.5 s or more, stored apart
_COMPACT_MIN = 4096
_NEVER = -(1 << 63)


def _keys(message_ids: Sequence[str]) -> array[float]:
    """Each id's key: 62 bits of the str's own hash (SipHash, computed in C), the bits
    reinterpreted as a float for the whole batch at once. 1M ids in a window give a ~2e-13
    chance that a new id reads as a duplicate.

    The hash is salted per process (PYTHONHASHSEED), which is all a window needs: it lives in
    one process and is rebuilt from the log by the process that judges with it. A collision,
    already that rare, is then not even repeated by a replay in another process."""
    bits = array("Q", [hash(message_id) & _LOW62 for message_id in message_ids])
    return array("d", bits.tobytes())


class DedupeWindow:
    """The messageIds of one partition seen within ``window_ms`` of record time.

    Feed every record of the partition, in offset order, to :meth:`seen` (or :meth:`remember`).

    **The rule.** Record ``j`` has the clock ``M_j = max(ts_0, ..., ts_j)``: the highest Kafka
    timestamp (ms) of the partition so far, so a timestamp that goes backwards reads as the current
    high one. Record ``j`` is a duplicate iff some earlier record ``i < j`` has the same messageId
    and ``M_j - M_i <= window_ms``. With increasing timestamps ``M`` is the timestamp itself: a
    duplicate has the same id as an earlier record at most ``window_ms`` older; a record exactly
    ``window_ms`` later still is one, one ms more is not. Every sighting counts, duplicates
    included, and an id whose every earlier sighting is outside the window is processed again.
    Wall-clock time is never read.

    Why a clock that never goes backwards: inside the window is then always a contiguous run of
    offsets, so eviction from the front of a FIFO is exact and the rule above is a closed formula
    of the sequence. The cost: a timestamp far in the future moves the clock for every record after
    it, forgetting everything before it at once and evicting nothing until real time catches up.

    **Rebuild.** For a worker whose committed position is ``c`` (records ``< c`` are done),
    ``remember()`` the records ``s .. c-1`` in order, where every record before ``s`` has a
    timestamp below ``ts_(c-1) - window_ms``; ``offsets_for_times(ts_(c-1) - window_ms)`` gives
    such an ``s`` (the first offset at or after that time), and any earlier ``s`` works too. Then
    every later decision is the same as the never-restarted window's: records before ``s`` have
    ``M < ts_(c-1) - window_ms``, outside every later window, and from ``s`` on the running max
    does not depend on them.

    Memory: an id is kept as a 62-bit hash (a float in a set, for C-speed membership),
    and eviction walks a FIFO of (hash, clock step since the previous sighting) kept in arrays:
    68 bytes per id at 1M ids, 99 at worst (``bench/dedupe_memory.py``; bench/RESULTS.md,
    "Dedupe window").
    """

    __slots__ = (
        "_clock",
        "_evict_after",
        "_extra",
        "_head",
        "_head_clock",
        "_ids",
        "_keys",
        "_long_head",
        "_long_steps",
        "_steps",
        "window_ms",
    )

    def __init__(self, window_ms: int = 3_600_000) -> None:
        if window_ms < 0:
            raise ValueError(f"window_ms must be >= 0, got {window_ms}")
        self.window_ms = window_ms
        self._ids: set[float] = set()
        # Ids sighted more than once in the window: live FIFO entries beyond the first. Only
        # retries land here, so it stays small, and evicting an old sighting keeps the id.
        self._extra: dict[float, int] = {}
        # The FIFO, in offset order: the id's hash, and how far the clock moved since the previous
        # sighting. The clock as a 2-byte step instead of 8 bytes is what keeps the worst case
        # (the set's table at 4 slots per id) under the budget.
        self._keys = array("d")
        self._steps = array("H")  # _ESCAPE: the step is the next one in _long_steps
        self._long_steps = array("Q")
        self._head = 0  # FIFO front: entries before it are evicted
        self._long_head = 0
        self._head_clock = _NEVER  # clock of the entry before the front
        self._clock = _NEVER  # the running max of timestamps: M
        self._evict_after = _NEVER  # the front's clock + window_ms: nothing to evict until then

    def seen(self, message_id: str, timestamp_ms: int) -> bool:
        """Judge one record (in offset order): True if it is a duplicate; either way remember it."""
        return self._seen_key(_keys((message_id,))[0], timestamp_ms)

    def _seen_key(self, key: float, timestamp_ms: int) -> bool:
        step = 0
        if timestamp_ms > self._clock:
            step = timestamp_ms - self._clock
            self._clock = timestamp_ms
            if timestamp_ms > self._evict_after:
                self._evict(timestamp_ms - self.window_ms)
        ids = self._ids
        duplicate = key in ids
        if duplicate:
            self._extra[key] = self._extra.get(key, 0) + 1
        else:
            ids.add(key)
        self._keys.append(key)
        if step < _ESCAPE:
            self._steps.append(step)
        else:
            self._steps.append(_ESCAPE)
            self._long_steps.append(step)
        return duplicate

    def seen_many(self, message_ids: Sequence[str], timestamps_ms: Sequence[int]) -> list[bool]:
        """:meth:`seen` for each record of a batch, in order (the answers are the same).

        The common batch — new ids only, no clock step of a minute or more — is judged with a
        few C-speed set and array operations instead of a call per record: ids that are neither
        in the window nor repeated within the batch are new whatever gets evicted meanwhile,
        and evicting once after the batch, up to its last clock, leaves what evicting before
        each record would have (the clock never goes backwards, eviction only removes).
        """
        if len(message_ids) != len(timestamps_ms):
            raise ValueError("one timestamp per messageId")
        keys = _keys(message_ids)
        fresh = set(keys)
        # The clock's steps: a batch's timestamps rarely go backwards, and then they are the
        # clock itself (a running max is a call per record).
        steps = list(map(sub, timestamps_ms, chain((self._clock,), timestamps_ms)))
        clock = timestamps_ms[-1] if steps else self._clock
        if steps and min(steps) < 0:
            clocks = list(accumulate(timestamps_ms, max, initial=self._clock))
            steps = list(map(sub, islice(clocks, 1, None), clocks))
            clock = clocks[-1]
        if (
            len(fresh) < len(keys)
            or not self._ids.isdisjoint(fresh)
            or (steps and max(steps) >= _ESCAPE)
        ):
            return [self._seen_key(key, ts) for key, ts in zip(keys, timestamps_ms, strict=True)]
        self._ids |= fresh
        self._keys.extend(keys)
        self._steps.extend(steps)
        self._clock = clock
        if self._clock > self._evict_after:
            self._evict(self._clock - self.window_ms)
        return [False] * len(keys)

    def remember(self, message_id: str, timestamp_ms: int) -> None:
        """Feed one record while rebuilding: the same as :meth:`seen`, without the answer."""
        self.seen(message_id, timestamp_ms)

    def __len__(self) -> int:
        """Distinct ids currently remembered."""
        return len(self._ids)

    def clear(self) -> None:
        """Forget everything, the clock included."""
        self._ids.clear()
        self._extra.clear()
        del self._keys[:]
        del self._steps[:]
        del self._long_steps[:]
        self._head = self._long_head = 0
        self._head_clock = self._clock = self._evict_after = _NEVER

    def _evict(self, bound: int) -> None:
        """Forget sightings whose clock is below ``bound``, oldest first. Called by seen()."""
        keys, steps, long_steps = self._keys, self._steps, self._long_steps
        ids, extra = self._ids, self._extra
        head, end, clock, long_head = self._head, len(keys), self._head_clock, self._long_head
        while head < end:
            step = steps[head]
            if step == _ESCAPE:
                step = long_steps[long_head]
                if clock + step >= bound:
                    break
                long_head += 1
            elif clock + step >= bound:
                break
            clock += step
            key = keys[head]
            head += 1
            count = extra.get(key) if extra else None
            if count is None:
                ids.remove(key)  # its last sighting in the window
            elif count == 1:
                del extra[key]
            else:
                extra[key] = count - 1
        # Reclaim evicted slots once they are 1/16 of the arrays: the waste stays small, and the
        # memmove costs at most 15 moved entries per evicted one.
        if head >= _COMPACT_MIN and 16 * head >= end:
            del keys[:head]
            del steps[:head]
            del long_steps[:long_head]
            head = long_head = 0
        self._head, self._head_clock, self._long_head = head, clock, long_head
        if head < len(keys):
            step = steps[head]
            front = clock + (long_steps[long_head] if step == _ESCAPE else step)
        else:
            front = self._clock  # the record being judged, about to be appended
        self._evict_after = front + self.window_ms
