"""Failures the worker waits out, and those it gives up on.

A transient failure (``TransientError``, a registry that does not answer) is retried with
exponential backoff and jitter, never skipped: nothing after the record is handled meanwhile.
A permanent one, or a datum that does not decode, sends the record to the worker's DLQ.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterator

from consumers.runtime.deadletters import DeadLetters
from consumers.runtime.exceptions import ConsumerError
from consumers.runtime.handler import Handler, Inbound
from consumers.runtime.metrics import WorkerMetrics
from consumers.runtime.outcomes import Outcome
from schemas import PushCodec, SchemaError
from uplink.exceptions import UplinkError
from uplink.settings import WorkerSettings

log = logging.getLogger(__name__)


class Retries:
    def __init__(
        self,
        settings: WorkerSettings,
        dead_letters: DeadLetters,
        metrics: WorkerMetrics,
        stopping: asyncio.Event,
    ) -> None:
        self._settings = settings
        self._dead_letters = dead_letters
        self._metrics = metrics
        self._stopping = stopping  # set: a registry outage is not waited out any more

    async def handle(
        self, handler: Handler, inbound: Inbound, error: ConsumerError | SchemaError
    ) -> Outcome:
        """After a failed ``handle``: retry a transient failure with backoff until it succeeds
        (returns what that ``handle`` returned), or dead-letter the record (returns None)."""
        delays = self._delays()
        while True:
            if isinstance(error, SchemaError):  # the handler decoded the datum: it is corrupt
                await self._dead_letters.send(inbound.record, f"undecodable: {error}")
                return None
            if not error.retriable:
                await self._dead_letters.send(inbound.record, str(error) or type(error).__name__)
                return None
            self._metrics.retries[inbound.tp] += 1
            delay = next(delays)
            log.warning(
                "transient failure at %s, retrying in %.1fs: %s",
                inbound.tp,
                delay,
                error,
                extra={
                    "topic": inbound.tp.topic,
                    "partition": inbound.tp.partition,
                    "offset": inbound.record.offset,
                },
            )
            await _sleep(delay)
            try:
                durable = await handler.handle(inbound)
            except (ConsumerError, SchemaError) as exc:
                error = exc
            else:
                self._metrics.processed[inbound.tp] += 1
                return durable

    async def learn(self, codec: PushCodec, values: list[bytes | None]) -> bool:
        """Whether writer schemas of ids met in ``values`` were learnt from the registry (then
        the batch is read again). While the registry does not answer, retried with backoff:
        a record is never dead-lettered for an outage, and nothing after it is handled."""
        delays = self._delays()
        while True:
            try:
                return await codec.learn(values)
            except UplinkError as exc:
                if not exc.retriable or self._stopping.is_set():
                    raise
                delay = next(delays)
                log.warning("writer schema not known, retrying in %.1fs: %s", delay, exc)
                await _sleep(delay)

    def _delays(self) -> Iterator[float]:
        delay = self._settings.retry_backoff
        while True:
            yield delay
            delay = min(delay * 2, self._settings.retry_backoff_max)


async def _sleep(delay: float) -> None:
    await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # jitter: half to all of it
