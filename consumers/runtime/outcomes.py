"""What a handler's hooks answer the runtime: values it acts on, never exceptions.

``handle`` returns an ``Outcome``; ``flush`` returns the positions safe to commit, or a
``Rewind``; a ``Pending``'s ``ready`` resolves to None or a ``Rewind``. Errors stay errors
(``exceptions.py``): what failed is retried, dead-lettered or stops the worker.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import NamedTuple

from aiokafka import TopicPartition

Positions = dict[TopicPartition, int]


class Rewind(NamedTuple):
    """Another writer had already done this work (the archive's key was taken), up to other
    positions than this one's. ``moved``: partitions to read again from these positions,
    everything before which is durable (commit them); ``durable``: positions of the other
    partitions of the same flush, durable as usual."""

    moved: Positions
    durable: Positions

    def __str__(self) -> str:
        return ", ".join(f"{tp.topic}[{tp.partition}]@{at}" for tp, at in self.moved.items())


class Pending(NamedTuple):
    """Positions that become safe to commit once ``ready`` is done (the archive's publish, on
    its writer thread), unless it ends in a ``Rewind``. The runtime commits them in the
    background, and before it calls the handler's ``handle`` or ``flush`` for their partitions
    again."""

    ready: Awaitable[Rewind | None]
    positions: Positions


class Postpone(NamedTuple):
    """This record is not due for ``seconds`` (a parked delivery): the runtime pauses its
    partition and reads it again from this record when it is due; other partitions go on."""

    seconds: float


Outcome = Positions | Pending | Postpone | None
