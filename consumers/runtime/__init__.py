"""The at-least-once consumer runtime every worker runs on.

``worker.py`` is the loop; it drives ``checkpoint.py`` (what is done, what may be committed,
when), ``assignment.py`` (what is kept per partition owned: dedupe windows, moves, postponed
partitions), ``retries.py`` (transient failures retried, permanent ones dead-lettered) and the
``Handler`` (``handler.py``), whose answers are the values of ``outcomes.py``.
"""

from consumers.runtime.deadletters import DeadLetters
from consumers.runtime.exceptions import ConsumerError, HandlerFailed, RecordError, TransientError
from consumers.runtime.handler import Handler, Inbound
from consumers.runtime.metrics import WorkerMetrics
from consumers.runtime.outcomes import Outcome, Pending, Positions, Postpone, Rewind
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
    "Rewind",
    "TransientError",
    "Worker",
    "WorkerMetrics",
    "rebuild_window",
]
