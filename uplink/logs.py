"""Logging for every uplink process: plain text for a terminal, one JSON object per line for
a log pipeline (``--log-format json`` or ``UPLINK_LOG_FORMAT=json``).

A JSON line carries the time, level, logger and message, plus whatever a call passed in
``extra=`` (``topic``, ``partition``, ``offset``, ...), so logs can be filtered by field.

The Kafka client's own messages pass a ``RepeatFilter``: while a broker is down aiokafka says
the same thing every retry, which would bury the one line uplink writes about the outage
(uplink/reachability.py).
"""

from __future__ import annotations

import datetime
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Final

import orjson
from prometheus_client.metrics_core import CounterMetricFamily

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


class RepeatFilter(logging.Filter):
    """Lets each message of the client library's loggers through once per ``interval``.

    A message is its logger, level and format string (its arguments vary: node ids, errors).
    The first passes; repeats within ``interval`` are dropped and counted by logger
    (``suppressed``, exposed as ``uplink_log_suppressed_total``); the first after it passes
    with how many were dropped. Other loggers pass untouched.
    """

    def __init__(
        self,
        prefixes: tuple[str, ...] = ("aiokafka",),
        interval: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._prefixes = prefixes
        self._interval = interval
        self._clock = clock
        self._windows: dict[tuple[str, int, str], tuple[float, int]] = {}
        self.suppressed: Counter[str] = Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if not any(name == p or name.startswith(p + ".") for p in self._prefixes):
            return True
        key = (name, record.levelno, str(record.msg))
        now = self._clock()
        window = self._windows.get(key)
        if window is not None and now - window[0] < self._interval:
            self._windows[key] = (window[0], window[1] + 1)
            self.suppressed[name] += 1
            return False
        self._windows[key] = (now, 0)
        if window is not None and window[1]:
            # The count travels with the record: both formats show it, the text in the message.
            record.repeats_suppressed = window[1]
            record.msg = f"{record.msg} [%d like it suppressed in %.0fs]"
            record.args = (*_arguments(record.args), window[1], now - window[0])
        return True


def _arguments(args: Any) -> tuple[Any, ...]:
    if args is None:
        return ()
    return args if isinstance(args, tuple) else (args,)


def repeat_filters() -> list[RepeatFilter]:
    """The RepeatFilters on the root logger's handlers (those ``config`` installed)."""
    return [
        f
        for handler in logging.getLogger().handlers
        for f in handler.filters
        if isinstance(f, RepeatFilter)
    ]


def suppressed_family() -> CounterMetricFamily:
    """``uplink_log_suppressed_total{logger}``: the client library's repeats not written."""
    counts: Counter[str] = Counter()
    for f in repeat_filters():
        counts.update(f.suppressed)
    family = CounterMetricFamily(
        "uplink_log_suppressed",
        "Repeated log messages of the Kafka client not written (rate-limited), by logger",
        labels=["logger"],
    )
    for name in sorted(counts):
        family.add_metric([name], counts[name])
    return family


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
        "filters": {"repeats": {"()": f"{__name__}.RepeatFilter"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "uplink",
                "filters": ["repeats"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        # The servers' loggers hand their records to the root's handler, in the same format.
        "loggers": {
            name: {"handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "_granian", "granian.access")
        },
    }
