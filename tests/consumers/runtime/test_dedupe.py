"""The dedupe window: the rule in DedupeWindow's docstring, checked against a naive model."""

from __future__ import annotations

import math
import random
import time
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.runtime.dedupe import DedupeWindow, _keys

HOUR = 3_600_000
T0 = 1_764_000_000_000  # a realistic Kafka timestamp (ms)

Record = tuple[str, int]  # (messageId, timestamp_ms), in offset order


def judge(window: DedupeWindow, records: list[Record]) -> list[bool]:
    return [window.seen(message_id, ts) for message_id, ts in records]


def naive(records: list[Record], window_ms: int) -> list[bool]:
    """The rule, written out in O(n²): M is the running max of timestamps."""
    clocks = [max(ts for _, ts in records[: j + 1]) for j in range(len(records))]
    return [
        any(records[i][0] == records[j][0] and clocks[j] - clocks[i] <= window_ms for i in range(j))
        for j in range(len(records))
    ]


def rebuild_start(records: list[Record], committed: int, window_ms: int) -> int:
    """Kafka's offsets_for_times(ts(committed - 1) - window): the first offset at or after it."""
    target = records[committed - 1][1] - window_ms
    return next(i for i, (_, ts) in enumerate(records) if ts >= target)


# Ids from a small alphabet so repeats are common; timestamps mostly increasing, with occasional
# small backwards jumps (producers' clocks differ by a little) and rare gaps over 65.5 s (stored
# apart from the short steps).
steps = st.one_of(
    st.integers(0, 40),
    st.integers(0, 40),
    st.integers(0, 40),
    st.integers(-30, -1),
    st.integers(-30, 40) | st.integers(65_000, 70_000),
)
sequences = st.lists(st.tuples(st.sampled_from("abcdef"), steps), max_size=80).map(
    lambda pairs: [
        (message_id, T0 + sum(step for _, step in pairs[: n + 1]))
        for n, (message_id, _) in enumerate(pairs)
    ]
)
windows = st.integers(0, 150) | st.integers(65_000, 140_000)
# Mostly new ids (as live traffic is), so whole batches take seen_many's fast path, with windows
# short enough that they evict in the middle of a batch.
mostly_new = st.lists(st.tuples(st.integers(0, 500).map(str), steps), max_size=120).map(
    lambda pairs: [
        (message_id, T0 + sum(step for _, step in pairs[: n + 1]))
        for n, (message_id, _) in enumerate(pairs)
    ]
)


def test_repeat_within_the_window_is_a_duplicate() -> None:
    window = DedupeWindow()
    assert judge(window, [("m1", T0), ("m2", T0 + 1), ("m1", T0 + 9 * 60_000)]) == [
        False,
        False,
        True,
    ]


def test_repeat_after_the_window_is_processed_again() -> None:
    window = DedupeWindow()
    assert judge(window, [("m1", T0), ("m1", T0 + HOUR + 1)]) == [False, False]


def test_boundary_exactly_window_ms_later_is_a_duplicate() -> None:
    assert judge(DedupeWindow(1000), [("m", T0), ("m", T0 + 1000)]) == [False, True]
    assert judge(DedupeWindow(1000), [("m", T0), ("m", T0 + 1001)]) == [False, False]
    assert judge(DedupeWindow(0), [("m", T0), ("m", T0), ("m", T0 + 1)]) == [False, True, False]


def test_window_is_configurable() -> None:
    records = [("m", T0), ("m", T0 + 2 * HOUR)]
    assert judge(DedupeWindow(), records) == [False, False]
    assert judge(DedupeWindow(3 * HOUR), records) == [False, True]
    with pytest.raises(ValueError):
        DedupeWindow(-1)


def test_record_time_only_never_wall_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_clock() -> float:
        raise AssertionError("the window read a clock")

    for name in ("time", "time_ns", "monotonic", "monotonic_ns", "perf_counter"):
        monkeypatch.setattr(time, name, no_clock)
    # Fed within microseconds of each other, hours apart in record time, and decades in the past.
    window = DedupeWindow()
    records = [("m", 0), ("m", 5 * HOUR), ("m", 5 * HOUR + 1), ("m", 7 * HOUR)]
    assert judge(window, records) == [False, False, True, False]


def test_every_sighting_counts() -> None:
    # The 50-minute repeat is itself an earlier offset with the id, 30 minutes before the third.
    minute = 60_000
    window = DedupeWindow()
    assert judge(window, [("m", T0), ("m", T0 + 50 * minute), ("m", T0 + 80 * minute)]) == [
        False,
        True,
        True,
    ]
    assert window.seen("m", T0 + 141 * minute) is False


def test_backwards_timestamp_reads_as_the_highest_so_far() -> None:
    # b's clock is a's (T0 + 100), not its own timestamp: 1100 later is exactly one window.
    window = DedupeWindow(1000)
    assert judge(window, [("a", T0 + 100), ("b", T0), ("b", T0 + 1100)]) == [False, False, True]
    # x at T0 is forgotten once the clock passes T0 + 1000, even if a later record goes back.
    window = DedupeWindow(1000)
    assert judge(window, [("x", T0), ("y", T0 + 1010), ("x", T0 + 995)]) == [False, False, False]


def test_long_gaps_between_records() -> None:
    # Steps of 65.5 s or more are stored apart from the 2-byte ones: check they still add up.
    window = DedupeWindow(100_000)
    records = [("m", T0), ("x", T0 + 70_000), ("y", T0 + 99_999), ("m", T0 + 100_000)]
    assert judge(window, records) == [False, False, False, True]
    assert window.seen("x", T0 + 170_001) is False  # x's sighting at +70,000 is 100,001 ago
    assert window.seen("y", T0 + 170_001) is True
    assert window.seen("y", T0 + 2 * 86_400_000) is False  # all forgotten, then start again
    assert len(window) == 1


def test_odd_input_does_not_crash() -> None:
    window = DedupeWindow()
    assert judge(window, [("", -1), ("\ud800", -(2**63)), ("é" * 1000, 2**63 - 1), ("", 0)]) == [
        False,
        False,
        False,
        False,
    ]


def test_eviction_bounds_len_and_storage() -> None:
    window = DedupeWindow(10_000)
    for i in range(100_000):
        window.seen(f"id-{i}", T0 + i * 1000)
        assert len(window) <= 11
    assert len(window) == 11
    # The FIFO is compacted, not just advanced: evicted slots do not pile up.
    assert len(window._keys) <= 11 + 4096
    window.clear()
    assert len(window) == 0
    assert window.seen("id-99999", T0 + 99_999_000) is False


def test_long_run_with_compaction_matches_last_sighting_model() -> None:
    # Increasing timestamps make M the timestamp itself, so the rule is "last sighting at most
    # window_ms ago": an O(n) model, for a run long enough to compact the FIFO many times.
    rnd = random.Random(7)
    window_ms, ts = 200_000, T0
    last: dict[str, int] = {}
    window = DedupeWindow(window_ms)
    for _ in range(60_000):
        ts += rnd.choice((0, 1, 5, 20, 70_000)) if rnd.random() < 0.999 else 300_000
        message_id = f"id-{rnd.randrange(3000)}"
        expected = message_id in last and ts - last[message_id] <= window_ms
        assert window.seen(message_id, ts) is expected
        last[message_id] = ts
    assert len(window) == sum(ts - seen <= window_ms for seen in last.values())


def test_remember_is_seen_without_the_answer() -> None:
    a, b = DedupeWindow(), DedupeWindow()
    a.seen("m", T0)
    b.remember("m", T0)
    assert a.seen("m", T0 + 1) is b.seen("m", T0 + 1) is True


def test_distinct_ids_are_not_duplicates() -> None:
    window = DedupeWindow()
    assert not any(window.seen(uuid.uuid4().hex, T0) for _ in range(100_000))
    assert len(window) == 100_000


def test_keys_are_finite_non_negative_and_stable() -> None:
    ids = [uuid.uuid4().hex for _ in range(10_000)]
    keys = _keys(ids)
    assert all(math.isfinite(k) and math.copysign(1.0, k) == 1.0 for k in keys)
    wamid = "wamid.HBgLMTIzNDU2Nzg5MDEVAgASGBQzQTc1"
    assert _keys([wamid])[0] == _keys([wamid])[0]
    assert [_keys([i])[0] for i in ids[:100]] == list(keys[:100])  # a batch keys as one by one


@settings(max_examples=500)
@given(sequences, windows)
def test_matches_naive_model(records: list[Record], window_ms: int) -> None:
    assert judge(DedupeWindow(window_ms), records) == naive(records, window_ms)


@settings(max_examples=500)
@given(sequences, windows, st.data())
def test_rebuild_decides_as_the_window_that_never_stopped(
    records: list[Record], window_ms: int, data: st.DataObject
) -> None:
    """A worker committed at position c (records < c done) rebuilds, then judges records >= c.

    "Records from one window before" = offsets s .. c-1, where s is what Kafka's
    offsets_for_times(ts(c-1) - window_ms) returns: the first offset whose timestamp is >= that.
    Any earlier start is as good (it only adds records that the rule forgets anyway).
    """
    committed = data.draw(st.integers(0, len(records)), label="committed")
    expected = judge(DedupeWindow(window_ms), records)[committed:]

    start = rebuild_start(records, committed, window_ms) if committed else 0
    for begin in {start, data.draw(st.integers(0, start), label="earlier start")}:
        rebuilt = DedupeWindow(window_ms)
        for message_id, ts in records[begin:committed]:
            rebuilt.remember(message_id, ts)
        assert judge(rebuilt, records[committed:]) == expected


@settings(max_examples=200)
@given(sequences, windows, st.data())
def test_rebuild_from_too_late_only_forgets(
    records: list[Record], window_ms: int, data: st.DataObject
) -> None:
    """Any start (e.g. retention took the early records) only misses duplicates, never invents
    one: a message is never dropped wrongly, at worst processed again."""
    committed = data.draw(st.integers(1, len(records)) if records else st.just(0))
    expected = judge(DedupeWindow(window_ms), records)[committed:]
    begin = data.draw(st.integers(0, committed))
    rebuilt = DedupeWindow(window_ms)
    for message_id, ts in records[begin:committed]:
        rebuilt.remember(message_id, ts)
    got = judge(rebuilt, records[committed:])
    assert all(e or not g for e, g in zip(expected, got, strict=True))


@settings(max_examples=500)
@given(sequences | mostly_new, windows, st.data())
def test_seen_many_answers_as_seen_one_by_one(
    records: list[Record], window_ms: int, data: st.DataObject
) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(records)), max_size=6)))
    batched = DedupeWindow(window_ms)
    answers: list[bool] = []
    for start, end in zip([0, *cuts], [*cuts, len(records)], strict=True):
        chunk = records[start:end]
        answers += batched.seen_many([m for m, _ in chunk], [ts for _, ts in chunk])
    one_by_one = DedupeWindow(window_ms)
    assert answers == judge(one_by_one, records) == naive(records, window_ms)
    # And it is left in the same state: the next records are judged alike.
    after = [(m, ts + 1) for m, ts in records[-20:]]
    after += [(m, ts + window_ms) for m, ts in records[:5]]
    assert judge(batched, after) == judge(one_by_one, after)
    assert len(batched) == len(one_by_one)


def test_seen_many_a_live_batch_new_ids_in_order() -> None:
    window = DedupeWindow(HOUR)
    ids = [uuid.uuid4().hex for _ in range(1000)]
    assert window.seen_many(ids[:500], [T0 + n for n in range(500)]) == [False] * 500
    assert window.seen_many(ids[500:], [T0 + 500 + n for n in range(500)]) == [False] * 500
    retried = [ids[3], uuid.uuid4().hex, ids[999]]
    assert window.seen_many(retried, [T0 + 2000] * 3) == [True, False, True]
    assert len(window) == 1001
