"""What the ingress's push fast path saves: ASGI dispatch through Starlette against IngressApp.

    .venv/bin/python -m bench.push_dispatch [--calls 50000] [--rounds 5]

The same endpoint behind both: it reads the body, suspends once (as a push does while it
awaits the broker's ack) and sends its answer. Starlette routes it through its middleware stack
and router; ``ingress.app.IngressApp`` hands ``POST /v1/uplink`` straight to it. No network, no
Kafka: the difference is the dispatch alone, in µs of CPU per push. Alternating rounds, medians.
Writes its row and section into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import cast

import uvloop
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bench.pushes import EXAMPLES
from bench.results import command, run_line, write_run
from ingress.app import PUSH_PATH, IngressApp
from ingress.push import PushEndpoint

BODY = (EXAMPLES / "text.json").read_bytes()


class Endpoint:
    """An ASGI app object, as ``ingress.push.PushEndpoint`` is (Starlette mounts it as it is)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await asyncio.sleep(0)  # one suspension, as a push awaiting its acknowledgement
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b'{"messageId":"x"}'})


async def per_call_us(app: ASGIApp, calls: int) -> float:
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": PUSH_PATH,
        "raw_path": PUSH_PATH.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8080),
    }
    request: Message = {"type": "http.request", "body": BODY, "more_body": False}

    async def receive() -> Message:
        return request

    async def send(message: Message) -> None:
        pass

    started = time.process_time()
    for _ in range(calls):
        await app(dict(scope), receive, send)
    return (time.process_time() - started) * 1e6 / calls


async def measure(calls: int, rounds: int) -> dict[str, list[float]]:
    endpoint = Endpoint()
    routes = [Route(PUSH_PATH, endpoint, methods=["POST"])]
    apps: dict[str, ASGIApp] = {
        "Starlette middleware stack and router": Starlette(routes=routes),
        # Only the endpoint's ASGI face is used here (not the RSGI server's ``handle``).
        "IngressApp fast path": IngressApp(cast(PushEndpoint, endpoint), routes=routes),
    }
    for app in apps.values():
        await per_call_us(app, calls // 10)  # warm-up
    results: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(rounds):
        for name, app in apps.items():
            results[name].append(await per_call_us(app, calls))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    results = uvloop.run(measure(args.calls, args.rounds))
    medians = {name: statistics.median(values) for name, values in results.items()}
    starlette, fast = medians.values()
    lines = [
        f"{run_line()} {args.calls:,} calls a round, {args.rounds} alternating rounds, "
        "uvloop, in one process: an ASGI endpoint that reads the body, suspends once and "
        "answers, behind each dispatch. CPU time (process_time) per call.",
        "",
        "| dispatch | µs a push (median) | rounds |",
        "|---|---|---|",
        *(
            f"| {name} | {medians[name]:.2f} | {', '.join(f'{v:.2f}' for v in values)} |"
            for name, values in results.items()
        ),
        "",
        f"**The fast path saves {starlette - fast:.1f} µs a push ({1 - fast / starlette:.0%} of "
        "the dispatch with the endpoint).**",
    ]
    section = "\n".join(lines)
    write_run(
        "Push dispatch",
        figure=f"IngressApp's fast path {fast:.2f} µs a push against {starlette:.2f} through "
        f"Starlette's stack (median of {args.rounds}): {starlette - fast:.1f} µs saved",
        command=command(),
        section=section,
    )
    print(section)


if __name__ == "__main__":
    main()
