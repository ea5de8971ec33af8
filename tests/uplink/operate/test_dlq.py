"""``uplink dlq``: dead letters made for real by the router and the media worker, listed, shown,
re-driven once fixed and processed once; a second re-drive copies nothing."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import orjson
import pytest
from aiokafka import TopicPartition

from consumers.media.settings import MediaRetries, MediaSettings, MediaTimeouts
from consumers.router.redelivery import retry_group
from consumers.router.settings import RouterSettings
from schemas import MediaCodec, PushCodec
from tests.conftest import Reader, Server
from tests.consumers.media.server import MediaServer
from tests.consumers.media.test_handler import media_push
from tests.consumers.router.test_handler import (
    SECRET,
    Receiver,
    example_raw,
    make_rules,
    running_router,
    send_pushes,
    wait_until,
)
from tests.uplink.operate.conftest import OperateSettings, Uplink
from uplink.cli import launcher, workers
from uplink.kafka import KafkaClients
from uplink.settings import WorkerSettings

pytestmark = pytest.mark.anyio

CODEC = PushCodec()


def lines(text: str) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


def rules_for(url: str) -> str:
    return f"""
        [endpoint.crm]
        url = "{url}/hook"
        secret = "{SECRET}"
        [[rule]]
        name = "all"
        match = {{}}
        actions = [{{ post = "crm" }}]
        """


async def committed_past(
    settings: WorkerSettings, group: str, tp: TopicPartition, offset: int
) -> bool:
    """Whether ``group`` committed ``tp`` at ``offset`` or beyond."""
    admin = KafkaClients(settings.kafka).admin()
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group, partitions=[tp])
    finally:
        await admin.close()
    found = offsets.get(tp)
    return found is not None and found.offset >= offset


async def drained(settings: WorkerSettings, group: str, router: RouterSettings) -> bool:
    """Whether ``group`` committed every delay topic up to its end."""
    consumer = KafkaClients(settings.kafka).consumer()
    await consumer.start()
    try:
        tps = [TopicPartition(topic, 0) for topic in router.delay_topics]
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    for tp in tps:
        if ends[tp] and not await committed_past(settings, group, tp, ends[tp]):
            return False
    return True


async def test_router_dead_letters_are_listed_shown_and_redriven_once(
    operate_settings: OperateSettings, serve: Server, uplink: Uplink, read_records: Reader
) -> None:
    settings = operate_settings("router", commit_interval=0.2)
    router = RouterSettings(delays=(0.2, 0.5), delay_pattern=settings.topics.messages + ".d{step}")
    # Refuses each push's first POST (a 400: a bug on its side), accepts it once fixed.
    receiver = Receiver(failures=1, status=400)
    rules = make_rules(rules_for(await serve(receiver.app())))
    sent = await send_pushes(settings, [example_raw("text", f"dl-{n}") for n in range(3)])

    async with running_router(settings, router, rules):
        await read_records(settings.dlq, count=3, timeout=60)
        # Deliveries parked while their POST was in flight are settled by its answer in this
        # process: before it stops, the re-deliveries have read them all.
        await wait_until(lambda: drained(settings, retry_group(settings.group), router))
    listed = await uplink(settings, "dlq", "list", "--worker", "router", "--json")
    letters = lines(listed.out)
    assert listed.code == 0
    assert {row["messageId"] for row in letters} == set(sent)
    assert all("HTTP 400" in str(row["reason"]) and row["redriven"] is False for row in letters)
    assert all(str(row["origin"]).startswith(settings.topics.messages + "/0@") for row in letters)
    assert "read 3 records" in listed.err
    assert all(receiver.tries[m] == 1 for m in sent)  # a refusal is not sent again

    table = await uplink(settings, "dlq", "list", "--reason", "http 400", "--since", "1h")
    assert table.code == 0 and table.out.splitlines()[0].split()[:2] == ["REF", "TIME"]
    assert len(table.out.splitlines()) == 4

    ref = str(letters[0]["ref"])
    shown = await uplink(settings, "dlq", "show", ref, "--json")
    detail = lines(shown.out)[0]
    assert detail["push"]["messageId"] == letters[0]["messageId"]  # type: ignore[index]
    assert detail["key"] == "6395110022481:91856321412"  # the text example's conversation
    assert ["uplink-dlq-worker", "router"] in detail["headers"]

    dry = await uplink(settings, "dlq", "redrive", "--worker", "router", "--dry-run")
    assert dry.code == 0 and "3 would be re-driven, 0 already re-driven" in dry.out
    first = await uplink(settings, "dlq", "redrive", "--worker", "router", "--rate", "100")
    assert first.code == 0 and "3 re-driven, 0 already re-driven" in first.out
    again = await uplink(settings, "dlq", "redrive", "--worker", "router")
    assert again.code == 0 and "0 re-driven, 3 already re-driven" in again.out

    redrive = TopicPartition(settings.topics.redrive("router"), 0)
    async with running_router(settings, router, rules):  # its re-drive reader too
        await receiver.wait_for(lambda: all(receiver.accepted[m] == 1 for m in sent))
        await wait_until(lambda: committed_past(settings, f"{settings.group}-redrive", redrive, 3))
    assert all(receiver.tries[m] == 2 and receiver.accepted[m] == 1 for m in sent)
    relisted = lines((await uplink(settings, "dlq", "list", "--json")).out)
    assert len(relisted) == 3 and all(row["redriven"] is True for row in relisted)
    assert retry_group(settings.group) != f"{settings.group}-redrive"


async def test_a_refusal_that_arrives_after_its_delivery_was_parked_is_dead_lettered_at_once(
    operate_settings: OperateSettings, serve: Server, read_records: Reader
) -> None:
    settings = operate_settings("router", commit_interval=0.2)
    # The re-send would come 2 s after the commit; the refusal is dead-lettered well before.
    router = RouterSettings(
        delays=(2.0,), delay_pattern=settings.topics.messages + ".d{step}", flush_grace=0.05
    )
    receiver = Receiver(failures=1, status=400, hang=True)
    rules = make_rules(rules_for(await serve(receiver.app())))
    [message_id] = await send_pushes(settings, [example_raw("text", "late-refusal")])
    delay = TopicPartition(router.delay_topic(1), 0)
    async with running_router(settings, router, rules):
        await receiver.wait_for(lambda: receiver.tries[message_id] == 1)
        # Committed with the POST still in flight: parked in the delay topic.
        parked = await read_records(router.delay_topic(1), count=1, timeout=30)
        assert dict(parked[0].headers)["uplink-reason"] == b"still in flight at commit"
        released = asyncio.get_running_loop().time()
        receiver.release.set()
        [letter] = await read_records(settings.dlq, count=1, timeout=30)
        assert asyncio.get_running_loop().time() - released < 2.0
        assert b"HTTP 400" in dict(letter.headers)["uplink-dlq-reason"]
        # The parked copy comes due and is settled by that answer: not sent again.
        await wait_until(lambda: committed_past(settings, retry_group(settings.group), delay, 1))
    assert receiver.tries[message_id] == 1
    assert len(await read_records(settings.dlq, timeout=2)) == 1


async def test_a_late_answer_settles_the_parked_copy_in_another_router_process(
    operate_settings: OperateSettings, serve: Server, read_records: Reader
) -> None:
    settings = operate_settings("router", commit_interval=0.2)
    router = RouterSettings(
        delays=(0.5,), delay_pattern=settings.topics.messages + ".d{step}", flush_grace=0.05
    )
    # Each answers its first POST late: one a refusal, the other a success.
    refusing = Receiver(failures=1, status=400, hang=True)
    accepting = Receiver(failures=1, status=200, hang=True)
    rules = make_rules(
        f"""
        [endpoint.refusing]
        url = "{await serve(refusing.app())}/hook"
        secret = "{SECRET}"
        [endpoint.accepting]
        url = "{await serve(accepting.app())}/hook"
        secret = "{SECRET}"
        [[rule]]
        name = "all"
        match = {{}}
        actions = [{{ post = "refusing" }}, {{ post = "accepting" }}]
        """
    )
    [message_id] = await send_pushes(settings, [example_raw("text", "late-answers")])
    delay_topic = router.delay_topic(1)

    # The process that posts: its retry loop is not running, the next process's is.
    posting = workers.router(settings, router, rules)
    posting.workers.pop(1)
    ready = asyncio.Event()
    running = asyncio.create_task(launcher.run(posting, ready=ready.set))
    try:
        await refusing.wait_for(lambda: refusing.tries[message_id] == 1)
        await accepting.wait_for(lambda: accepting.tries[message_id] == 1)
        parked = await read_records(delay_topic, count=2, timeout=30)
        assert all(dict(r.headers)["uplink-reason"] == b"still in flight at commit" for r in parked)
        refusing.release.set()
        accepting.release.set()
        [letter] = await read_records(settings.dlq, count=1, timeout=30)
        assert b"HTTP 400" in dict(letter.headers)["uplink-dlq-reason"]
        *_, first, second = await read_records(delay_topic, count=4, timeout=30)
        settled = {dict(r.headers)["uplink-settled"] for r in (first, second)}
        assert settled == {b"refused", b"delivered"}
    finally:
        posting.request_stop()
        await running

    # Another process, with nothing in memory, comes to the parked copies when they are due.
    async with running_router(settings, router, rules):
        await wait_until(lambda: drained(settings, retry_group(settings.group), router))
    assert refusing.tries[message_id] == 1 and accepting.tries[message_id] == 1
    assert len(await read_records(settings.dlq, timeout=2)) == 1


async def test_a_media_dead_letter_is_redriven_once_the_host_is_allowed(
    operate_settings: OperateSettings,
    serve: Server,
    tmp_path: Path,
    uplink: Uplink,
    read_records: Reader,
) -> None:
    settings = operate_settings("media", commit_interval=0.2)
    server = MediaServer()
    base = await serve(server.app())
    sha = server.add("photo.jpg", os.urandom(2000))
    media = MediaSettings(
        root=tmp_path / "media",
        timeouts=MediaTimeouts(connect=2, read=2, attempt=20),
        retries=MediaRetries(attempts=2, backoff=0.01, backoff_max=0.05),
    )
    raw = media_push("image", "guarded", f"{base}/files/photo.jpg", sha)
    await send_pushes(settings, [raw])
    async with launcher.started(workers.media(settings, media)) as assembly:
        assert await assembly.workers[0].run(count=1, timeout=60) == 1
    [letter] = lines((await uplink(settings, "dlq", "list", "--json")).out)
    assert letter["worker"] == "media" and "refused 127.0.0.1" in str(letter["reason"])

    done = await uplink(settings, "dlq", "redrive", "--worker", "media", "--reason", "refused")
    assert "1 re-driven, 0 already re-driven" in done.out
    fixed = MediaSettings(
        root=media.root, allow_hosts=frozenset({"127.0.0.1"}), timeouts=media.timeouts
    )
    async with launcher.started(workers.media(settings, fixed)) as assembly:
        assert await assembly.workers[1].run(count=1, timeout=60) == 1
    [event] = await read_records(settings.topics.media, count=1, timeout=30)
    assert MediaCodec().decode(event.value or b"")["messageId"] == "guarded"
    again = await uplink(settings, "dlq", "redrive", "--worker", "media")
    assert "0 re-driven, 1 already re-driven" in again.out
    assert server.count("/files/photo.jpg") == {"/files/photo.jpg": 1}


async def test_bad_input_is_refused_with_a_line_naming_it(
    operate_settings: OperateSettings, uplink: Uplink
) -> None:
    settings = operate_settings("router")
    for argv, named in [
        (["dlq", "list", "--worker", "nobody"], "--worker: unknown worker 'nobody'"),
        (["dlq", "show", "router:x:1"], "REF: 'router:x:1' is not"),
        (["dlq", "list", "--since", "last tuesday"], "--since: 'last tuesday' is not a time"),
        (["dlq", "redrive"], "--worker"),
        (["quarantine", "show", "q:1"], "REF: 'q:1' is not"),
        (["trace", "m1", "--business", "1"], "--business/--from"),
    ]:
        ran = await uplink(settings, *argv)
        assert ran.code == 78, argv
        assert named in ran.err, (argv, ran.err)
