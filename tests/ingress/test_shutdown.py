"""SIGTERM mid-traffic: `uplink ingress` stops accepting, answers what it took, flushes, exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import orjson
import pytest

from schemas import PushCodec
from tests.conftest import EXAMPLES, SERVERS, Reader, wait_ready
from uplink.broker import free_port
from uplink.settings import IngressSettings

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TEMPLATE = orjson.loads(EXAMPLES.joinpath("text.json").read_bytes())


@pytest.mark.parametrize("server", SERVERS)
async def test_sigterm_answers_in_flight_pushes_and_loses_none(
    server: str, ingress_settings: IngressSettings, read_records: Reader, tmp_path: Path
) -> None:
    topics = ingress_settings.topics
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": ingress_settings.kafka.bootstrap_servers,
        "UPLINK_TOPIC_MESSAGES": topics.messages,
        "UPLINK_TOPIC_QUARANTINE": topics.quarantine,
        "UPLINK_TOPIC_MEDIA": topics.media,
        "UPLINK_MESSAGES_PARTITIONS": str(topics.messages_partitions),
    }
    log_file = (tmp_path / "ingress.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "uplink.cli.main",
        "ingress",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--server",
        server,
        env=env,
        stderr=log_file,
    )
    url = f"http://127.0.0.1:{port}"
    answered: dict[str, int] = {}
    refused = 0
    stop = asyncio.Event()
    enough = asyncio.Event()  # mid-traffic: 500 pushes answered, the rest still coming

    async def pusher(worker: int) -> None:
        nonlocal refused
        async with httpx.AsyncClient(timeout=30) as client:
            for n in range(10_000):
                if stop.is_set():
                    return
                message_id = f"shutdown-{worker}-{n}"
                body = orjson.dumps({**TEMPLATE, "messageId": message_id})
                try:
                    response = await client.post(f"{url}/v1/uplink", content=body)
                except httpx.TransportError:
                    refused += 1  # not accepted: the provider retries it
                    return
                answered[message_id] = response.status_code
                if len(answered) >= 500:
                    enough.set()

    try:
        async with httpx.AsyncClient() as client:
            async with asyncio.timeout(60):
                while True:  # the subprocess's socket comes up: connection errors until then
                    try:
                        await wait_ready(client, url)
                        break
                    except httpx.TransportError:
                        await asyncio.sleep(0.1)
        pushers = [asyncio.create_task(pusher(w)) for w in range(16)]
        async with asyncio.timeout(60):
            await enough.wait()
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            code = await process.wait()
        stop.set()
        await asyncio.gather(*pushers)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        log_file.close()

    log = (tmp_path / "ingress.log").read_text()
    if server == "uvicorn":
        # uvicorn re-raises the SIGTERM it handled once shutdown is complete: the conventional
        # exit. The lifespan ran: producer flushed, closed.
        assert code == -signal.SIGTERM
        assert "Application shutdown complete" in log
    else:
        assert code == 0, log
        assert "ingress stopped: producer flushed and closed" in log
    assert set(answered.values()) <= {200, 503}, set(answered.values())
    acknowledged = {m for m, status in answered.items() if status == 200}
    codec = PushCodec()
    kept = {codec.decode(r.value)["messageId"] for r in await read_records(topics.messages)}
    assert acknowledged <= kept, f"{len(acknowledged - kept)} acknowledged pushes were lost"
