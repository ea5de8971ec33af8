"""The at-least-once consumer runtime every worker runs on (see ``worker.py``)."""

from consumers.runtime.deadletters import DeadLetters
from consumers.runtime.exceptions import ConsumerError, HandlerFailed, RecordError, TransientError
from consumers.runtime.handler import Handler, Inbound, Outcome, Pending, Positions, Postpone
from consumers.runtime.metrics import WorkerMetrics
from consumers.runtime.tracker import Concurrent, InOrderCommits
from consumers.runtime.window import rebuild_window
from consumers.runtime.worker import Worker

__all__ = [
    "Concurrent",
    "ConsumerError",
    "DeadLetters",
    "Handler",
    "HandlerFailed",
    "InOrderCommits",
    "Inbound",
    "Outcome",
    "Pending",
    "Positions",
    "Postpone",
    "RecordError",
    "TransientError",
    "Worker",
    "WorkerMetrics",
    "rebuild_window",
]
