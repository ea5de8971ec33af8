"""The scenarios' own HTTP client, against a real server on loopback: answers counted, and no
connection left to the garbage collector when its scenario ends mid-request."""

from __future__ import annotations

import asyncio

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.compose.load import Client, Tally, pushes, send
from tests.conftest import Server

pytestmark = pytest.mark.anyio


def receiver(hold: asyncio.Event, held: asyncio.Event) -> Starlette:
    """200 to a push; with ``hold`` cleared, every request waits for it (``held`` once one
    does)."""

    async def push(request: Request) -> Response:
        await request.body()
        if not hold.is_set():
            held.set()
            await hold.wait()
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/v1/uplink", push, methods=["POST"])])


async def test_every_answer_is_counted_over_kept_alive_connections(serve: Server) -> None:
    hold, held = asyncio.Event(), asyncio.Event()
    hold.set()
    url = await serve(receiver(hold, held))
    items = pushes(300, seed=1)
    tally = Tally()
    async with Client(f"{url}/v1/uplink") as client:
        await send(client, items, tally, concurrency=20)
        assert len(client._open) <= 20  # kept alive: a connection a worker, not one a push
    assert tally.sent == tally.answered_ok == 300
    assert tally.ok == {message_id for message_id, _ in items}
    assert not client._open


async def test_a_scenario_ended_mid_request_closes_its_connections(serve: Server) -> None:
    hold, held = asyncio.Event(), asyncio.Event()
    url = await serve(receiver(hold, held))
    tally = Tally()
    async with Client(f"{url}/v1/uplink") as client:
        sending = asyncio.create_task(send(client, pushes(50, seed=2), tally, concurrency=10))
        await held.wait()
        in_use = list(client._open)
        assert in_use
        sending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sending
    hold.set()
    assert not client._open
    assert all(connection.writer.transport.is_closing() for connection in in_use)
    assert tally.answered() == 0
