"""Logs as text or as one JSON object per line, with the fields a call passed in ``extra``."""

from __future__ import annotations

import logging
import logging.config

import orjson
import pytest

from uplink import logs
from uplink.cli.main import main


def test_json_lines_carry_the_message_level_and_extra_fields(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    saved = root.level, root.handlers[:]
    logging.config.dictConfig(logs.config("info", "json"))
    try:
        logging.getLogger("uplink.test").warning(
            "DLQ %s: %s", "t[0]@7", "bad", extra={"topic": "t", "partition": 0, "offset": 7}
        )
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("uplink.test").exception("failed")
    finally:
        for handler in root.handlers:
            handler.close()
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
    first, second = (orjson.loads(line) for line in capsys.readouterr().err.splitlines())
    assert first["message"] == "DLQ t[0]@7: bad"
    assert (first["level"], first["logger"]) == ("WARNING", "uplink.test")
    assert (first["topic"], first["partition"], first["offset"]) == ("t", 0, 7)
    assert first["time"].endswith("+00:00")
    assert "RuntimeError: boom" in second["exception"]


def test_an_unknown_log_format_stops_start_up_naming_the_setting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--log-format", "xml", "topics"]) == 78
    assert "UPLINK_LOG_FORMAT" in capsys.readouterr().err


def test_the_client_librarys_repeats_pass_once_an_interval_and_are_counted() -> None:
    now = [0.0]
    repeats = logs.RepeatFilter(interval=60, clock=lambda: now[0])

    def record(name: str, msg: str, *args: object) -> logging.LogRecord:
        return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)

    unable = "Unable connect to node with id %s: %s"
    assert repeats.filter(record("aiokafka", unable, 1, "refused"))
    for second in range(1, 60):
        now[0] = second
        assert not repeats.filter(record("aiokafka", unable, 1, f"refused {second}"))
    # Another message of the same logger, and any other logger, pass.
    assert repeats.filter(record("aiokafka", "Unable to update metadata from %s", [1]))
    assert repeats.filter(record("aiokafka-lookalike", unable, 1, "refused"))
    assert repeats.filter(record("uplink.reachability", "Kafka still unreachable"))
    assert repeats.suppressed == {"aiokafka": 59}
    now[0] = 60
    after = record("aiokafka", unable, 1, "refused")
    assert repeats.filter(after)
    assert after.getMessage() == (
        "Unable connect to node with id 1: refused [59 like it suppressed in 60s]"
    )


def test_the_config_installs_the_filter_and_the_metrics_read_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    saved = root.level, root.handlers[:]
    logging.config.dictConfig(logs.config("info", "text"))
    try:
        for _ in range(3):
            logging.getLogger("aiokafka").error("Unable to update metadata from %s", [1])
        (family,) = [logs.suppressed_family()]
    finally:
        for handler in root.handlers:
            handler.close()
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
    assert capsys.readouterr().err.count("Unable to update metadata") == 1
    assert [(s.labels, s.value) for s in family.samples] == [({"logger": "aiokafka"}, 2)]
