"""The overview's state rule and its charts, on samples made here (no broker)."""

from __future__ import annotations

from uplink.console.charts import sparkline
from uplink.console.sampler import STUCK_SECONDS, Sample, Sampler
from uplink.kafka import KafkaClients
from uplink.settings import KafkaSettings

TOPIC = "messages"


def sample(at: float, end: int, position: int | None) -> Sample:
    committed = {} if position is None else {0: position}
    return Sample(at, {(TOPIC, 0): 0}, {(TOPIC, 0): end}, {"g": committed})


def sampler(*samples: Sample) -> Sampler:
    watched = Sampler(KafkaClients(KafkaSettings()), TOPIC, {"router": "g"}, [TOPIC])
    watched.samples.extend(samples)
    return watched


def test_a_group_caught_up_is_green_whatever_came_before() -> None:
    view = sampler(sample(0, 10, 2), sample(30, 10, 10)).group("router")
    assert view is not None and (view.state, view.lag) == ("green", 0)


def test_a_group_committing_with_its_lag_falling_is_green_and_growing_amber() -> None:
    falling = sampler(sample(0, 100, 10), sample(10, 110, 60)).group("router")
    assert falling is not None and falling.state == "green" and falling.moving == {0: True}
    growing = sampler(sample(0, 100, 90), sample(10, 200, 95)).group("router")
    assert growing is not None and growing.state == "amber"
    assert "grew from 10 to 105" in growing.why


def test_records_waiting_without_a_commit_turn_red_after_a_minute() -> None:
    brief = sampler(sample(0, 100, 50), sample(20, 100, 50)).group("router")
    assert brief is not None and brief.state == "amber"
    stuck = sampler(sample(0, 100, 50), sample(STUCK_SECONDS + 1, 100, 50)).group("router")
    assert stuck is not None and stuck.state == "red" and stuck.moving == {0: False}
    never = sampler(sample(0, 5, None)).group("router")
    assert never is not None and never.state == "red" and "never committed" in never.why


def test_the_rate_is_records_a_second_over_the_samples_kept() -> None:
    rate, series = sampler(sample(0, 0, 0), sample(10, 50, 0), sample(20, 250, 0)).rate(TOPIC)
    assert rate == 12.5 and series == [5.0, 20.0]


def test_a_sparkline_is_numbers_only_and_its_label_escaped() -> None:
    svg = str(sparkline([0, 5, 10], "<b>lag</b>"))
    assert svg.startswith("<svg") and "&lt;b&gt;lag&lt;/b&gt;" in svg
    assert 'points="0.0,30.0 80.0,16.0 160.0,2.0"' in svg
    assert "points=" in str(sparkline([], "empty"))
