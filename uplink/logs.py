"""Logging for every uplink process: plain text for a terminal, one JSON object per line for
a log pipeline (``--log-format json`` or ``UPLINK_LOG_FORMAT=json``).

A JSON line carries the time, level, logger and message, plus whatever a call passed in
``extra=`` (``topic``, ``partition``, ``offset``, ...), so logs can be filtered by field.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any, Final

import orjson

FORMATS: Final = ("text", "json")
# Attributes every LogRecord has: anything else on a record came from ``extra=``.
_STANDARD: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in line:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def config(level: str, fmt: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for stderr at ``level`` in ``fmt`` (one of FORMATS).

    A dict rather than handlers set up here, so uvicorn applies the same to each worker process
    it spawns (its ``log_config``), its own loggers included.
    """
    if not isinstance(logging.getLevelName(level.upper()), int):
        raise ValueError(f"unknown log level {level!r}")
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter"}
        if fmt == "json"
        else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"uplink": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "uplink",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        # uvicorn's loggers hand their records to the root's handler, in the same format.
        "loggers": {
            name: {"handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }
