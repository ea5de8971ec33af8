"""One place runs any worker: topics, start/stop order, metrics, signals, drain, GC tuning.

The wiring (``workers.py``) builds a worker process as an ``Assembly``; ``launch`` runs it
as ``uplink archive|media|router`` do, and ``run`` is the same without the process-wide parts
(signals, GC), for tests and benchmarks that drive a worker with ``count=``/``timeout=``.

Start order: the topics its topology creates are ensured; its resources start in order (the
producer of side records, stores and clients, the handlers); then its workers (consumer loops);
then the metrics port, so a port that answers means the worker is up. Stop order is the
reverse: each worker drains its handler, commits what is durable and leaves the group, then the
resources stop, the producer last.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from consumers.runtime import Worker
from uplink.metrics import MetricsServer
from uplink.process import tune_gc
from uplink.resources import Resource
from uplink.settings import KafkaSettings, Topics
from uplink.topics import ensure_topics
from uplink.topology import Topology


@dataclass
class Assembly:
    """One worker process as the wiring built it."""

    kafka: KafkaSettings
    topics: Topics
    workers: list[Worker]  # the first is the primary: ``count``/``timeout`` apply to it
    resources: list[Resource] = field(default_factory=list)  # started in order, stopped reversed
    topology: Topology | None = None  # what it creates; None: uplink's own topics
    registry: CollectorRegistry = field(
        default_factory=lambda: CollectorRegistry(auto_describe=False)
    )
    metrics_port: int | None = None

    def request_stop(self) -> None:
        """From a signal handler: every worker finishes its batch in hand, then stops."""
        for worker in self.workers:
            worker.request_stop()


@contextlib.asynccontextmanager
async def started(assembly: Assembly) -> AsyncIterator[Assembly]:
    """The assembly started in order (topics, resources, workers, metrics port), stopped in
    reverse on leaving the block, whatever ended it."""
    topology = assembly.topology
    await ensure_topics(assembly.kafka, assembly.topics, topology.creates if topology else None)
    async with contextlib.AsyncExitStack() as stack:
        for resource in assembly.resources:
            await stack.enter_async_context(resource)
        for worker in assembly.workers:
            await stack.enter_async_context(worker)
        if assembly.metrics_port is not None:
            await stack.enter_async_context(MetricsServer(assembly.registry, assembly.metrics_port))
        yield assembly


async def run(
    assembly: Assembly,
    *,
    count: int | None = None,
    timeout: float | None = None,
    ready: Callable[[], None] | None = None,
) -> int:
    """Run the assembly until its primary worker has seen ``count`` records, ``timeout``
    passed, a stop was requested, or a worker failed (raised here, after everything stopped).
    Returns the records the primary saw. ``ready`` is called once everything has started."""
    async with started(assembly):
        if ready is not None:
            ready()
        primary, *others = assembly.workers
        tasks = [asyncio.create_task(primary.run(count=count, timeout=timeout))]
        tasks += [asyncio.create_task(worker.run()) for worker in others]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        assembly.request_stop()  # one ended (done, a stop request, or an error): end them all
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        seen: int = outcomes[0]  # type: ignore[assignment]
        return seen


def launch(build: Callable[[], Assembly]) -> int:
    """Run a worker process to the end: SIGTERM or SIGINT stops it cleanly (exit code 0); an
    error is raised to the CLI, which names it and picks the exit code."""

    async def main() -> None:
        assembly = build()  # inside the loop: resources may bind to it
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, assembly.request_stop)
        tune_gc()  # what start-up allocated stays out of later collections
        await run(assembly)

    asyncio.run(main())
    return 0
