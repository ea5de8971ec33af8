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
    assert main(["--log-format", "xml", "topics"]) == 2
    assert "UPLINK_LOG_FORMAT" in capsys.readouterr().err
