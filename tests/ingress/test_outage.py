"""A broker outage, scaled down from minutes to seconds: fast 503s once no broker answers, the
refused records withdrawn, a log that says it once, and no push refused that could be made
durable."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ingress.app import create_app
from schemas import PushCodec
from tests.conftest import Reader, Server, wait_ready
from tests.ingress.test_durability import Traffic
from uplink.broker import LocalBroker
from uplink.logs import RepeatFilter
from uplink.settings import IngressSettings, KafkaSettings, Topics

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

# Longer than the timeout, so the pushers' records time out twice before pushes are refused at
# once: those of the second round sit behind the batch the sender keeps retrying.
PRODUCE_TIMEOUT = 1.0
UNREACHABLE_AFTER = 2.5
REMINDER = 2.0  # the minute of production, scaled like the outage


class Lines(logging.Handler):
    """What the process would write to stderr, through the RepeatFilter its config installs;
    ``seen`` is set at every line, for awaiting one."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        self.seen = asyncio.Event()
        self.repeats = RepeatFilter(interval=60)
        self.addFilter(self.repeats)

    def emit(self, record: logging.LogRecord) -> None:
        record.getMessage()  # formats it, as a real handler would: a bad annotation fails here
        self.records.append(record)
        self.seen.set()

    def matching(self, text: str, since: int = 0) -> list[logging.LogRecord]:
        return [r for r in self.records[since:] if text in r.getMessage()]

    async def until(self, text: str, count: int, timeout: float = 60) -> None:
        async with asyncio.timeout(timeout):
            while len(self.matching(text)) < count:
                self.seen.clear()
                await self.seen.wait()


@pytest.fixture
def lines() -> Iterator[Lines]:
    root = logging.getLogger()
    handler = Lines()
    level = root.level
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_a_lost_broker_is_answered_at_once_and_its_refused_records_withdrawn(
    tmp_path: Path,
    serve: Server,
    topics: Topics,
    read_records: Reader,
    lines: Lines,
    own_broker: LocalBroker,
) -> None:
    # One partition: the refused records share it, so most of them sit in batches the sender
    # never took (the withdrawable kind) behind the one it keeps retrying.
    topics = dataclasses.replace(topics, messages_partitions=1)
    ingress = IngressSettings(
        kafka=KafkaSettings(
            bootstrap_servers=own_broker.bootstrap_servers,
            unreachable_after=UNREACHABLE_AFTER,
            outage_reminder=REMINDER,
        ),
        topics=topics,
        produce_timeout=PRODUCE_TIMEOUT,
        max_in_flight=64,
    )
    url = await serve(create_app(ingress))
    async with httpx.AsyncClient(timeout=30) as client:
        await wait_ready(client, url)
        traffic = Traffic(url, pace=0.05)
        async with traffic.running(pushers=16):
            await traffic.until("up", 200, 200)
            traffic.phase = "down"
            before_outage = len(lines.records)
            await asyncio.to_thread(own_broker.kill)
            killed = time.monotonic()
            await lines.until("Kafka unreachable", 1)
            # Past the first seconds: every push that entered the buffer before the
            # producer knew has had its answer.
            await traffic.until("down", 503, 1)
            async with asyncio.timeout(30):
                while time.monotonic() - killed < UNREACHABLE_AFTER + PRODUCE_TIMEOUT + 0.5:
                    await traffic.until("down", 503, traffic.count("down", 503) + 1)
            traffic.phase = "outage"
            early = samples((await client.get(f"{url}/metrics")).text)
            await lines.until("Kafka still unreachable", 2)
            late = samples((await client.get(f"{url}/metrics")).text)
            traffic.phase = "restarting"
            await asyncio.to_thread(own_broker.start)
            traffic.phase = "restarted"
            await traffic.until("restarted", 200, 200)
            await lines.until("Kafka reachable again", 1)
        final = samples((await client.get(f"{url}/metrics")).text)

    statuses = Counter((o.phase, o.status) for o in traffic.outcomes)
    assert set(o.status for o in traffic.outcomes) <= {200, 503}, statuses
    outage = [o for o in traffic.outcomes if o.phase == "outage"]
    assert outage and all(o.status == 503 and o.retry_after == "5" for o in outage), statuses
    # At once: none waited out a produce timeout, as a push the producer still tried would.
    # The bound is the timeout, not a latency target, so a loaded machine's pause does not fail it.
    seconds = sorted(o.seconds for o in outage)
    assert seconds[len(seconds) // 2] < PRODUCE_TIMEOUT / 4, seconds
    assert seconds[-1] < PRODUCE_TIMEOUT, seconds

    # Memory: the buffer did not grow while the outage went on, the refused records that
    # were never sent are gone, and only those were written after the broker came back.
    buffered = ("uplink_ingress_buffered_records", ())
    assert late[buffered] <= early[buffered], (early[buffered], late[buffered])
    withdrawn = final[("uplink_ingress_withdrawn_records_total", ())]
    timed_out = final[("uplink_ingress_shed_total", (("cause", "kafka"),))]
    assert final[("uplink_ingress_shed_total", (("cause", "unreachable"),))] >= len(outage)
    assert 0 < withdrawn <= timed_out, (withdrawn, timed_out)

    acknowledged = {o.message_id for o in traffic.outcomes if o.status == 200}
    refused = {o.message_id for o in traffic.outcomes if o.status == 503}
    codec = PushCodec()
    kept = Counter(
        codec.decode(record.value)["messageId"]
        for record in await read_records(
            topics.messages, bootstrap=own_broker.bootstrap_servers, timeout=60
        )
    )
    assert not acknowledged - set(kept), "acknowledged pushes lost"
    copies = sum(kept[m] for m in refused)
    assert copies <= timed_out - withdrawn, (copies, timed_out, withdrawn)

    # The log: said once, reminded, ended; the client's repeats each written once, counted.
    assert len(lines.matching("Kafka unreachable", before_outage)) == 1
    assert len(lines.matching("Kafka reachable again", before_outage)) == 1
    reminders = lines.matching("Kafka still unreachable", before_outage)
    assert len(reminders) >= 2
    gaps = [b.created - a.created for a, b in itertools.pairwise(reminders)]
    assert min(gaps) >= REMINDER - 0.1, gaps  # at most one an interval
    assert "pushes answered 503" in reminders[-1].getMessage()
    library = Counter(
        (r.name, r.levelno, str(r.msg))
        for r in lines.records[before_outage:]
        if r.name.startswith("aiokafka")
    )
    assert library and max(library.values()) == 1, library
    suppressed = sum(lines.repeats.suppressed.values())
    assert suppressed > 0
    exposed = sum(v for (name, _), v in final.items() if name == "uplink_log_suppressed_total")
    assert exposed >= suppressed


async def test_a_broker_back_within_the_window_refuses_no_push(
    tmp_path: Path, serve: Server, topics: Topics, own_broker: LocalBroker
) -> None:
    """Hung for less than ``unreachable_after``: the pushes it held are answered 200."""
    ingress = IngressSettings(
        kafka=KafkaSettings(bootstrap_servers=own_broker.bootstrap_servers, unreachable_after=3.0),
        topics=topics,
        produce_timeout=5.0,
    )
    url = await serve(create_app(ingress))
    async with httpx.AsyncClient(timeout=30) as client:
        await wait_ready(client, url)
        traffic = Traffic(url)
        async with traffic.running(pushers=8):
            await traffic.until("up", 200, 100)
            await asyncio.to_thread(own_broker.pause)
            await asyncio.sleep(1.5)  # the fault's length, not a wait for an event
            await asyncio.to_thread(own_broker.resume)
            traffic.phase = "resumed"
            await traffic.until("resumed", 200, 100)
    statuses = Counter((o.phase, o.status) for o in traffic.outcomes)
    assert {o.status for o in traffic.outcomes} == {200}, statuses
    # The pushes in flight when it hung waited for it, and got in.
    longest = max(o.seconds for o in traffic.outcomes)
    assert longest >= 1.0, longest


async def test_a_broker_restarted_under_traffic_takes_the_same_producer_again(
    tmp_path: Path, serve: Server, topics: Topics, own_broker: LocalBroker, lines: Lines
) -> None:
    """A controlled shutdown of the only broker leaves every partition without a leader while
    pushes keep coming: batches outlive aiokafka's TTL there. None of them may cost the
    producer a sequence number (ingress/accumulator.py): after the restart the same producer
    writes again, not one refused by the broker and replaced."""
    ingress = IngressSettings(
        kafka=KafkaSettings(
            bootstrap_servers=own_broker.bootstrap_servers, unreachable_after=UNREACHABLE_AFTER
        ),
        topics=topics,
        produce_timeout=PRODUCE_TIMEOUT,  # aiokafka's batch TTL: the request timeout, as long
    )
    url = await serve(create_app(ingress))
    async with httpx.AsyncClient(timeout=30) as client:
        await wait_ready(client, url)
        traffic = Traffic(url, pace=0.05)
        async with traffic.running(pushers=8):
            await traffic.until("up", 200, 100)
            traffic.phase = "down"
            await asyncio.to_thread(own_broker.stop)
            await lines.until("Kafka unreachable", 1)
            # Longer than the TTL with pushes arriving: batches expired while leaderless.
            await traffic.until("down", 503, traffic.count("down", 503) + 20)
            await asyncio.to_thread(own_broker.start)
            traffic.phase = "restarted"
            await traffic.until("restarted", 200, 200)
        final = samples((await client.get(f"{url}/metrics")).text)
    assert final[("uplink_ingress_producer_renewals_total", ())] == 0
    assert not lines.matching("refused the producer's sequence numbers")
