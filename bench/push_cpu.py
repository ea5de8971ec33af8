"""CPU a push of the ingress on granian, variant against variant, in alternating rounds.

    .venv/bin/python -m bench.push_cpu --variant before=/tmp/base --variant after=. \
        [--variant rust=.,GRANIAN_TASK_IMPL=rust] [--rounds 4] [--duration 8] [--connections 64]

Each variant is a checkout (its ``.venv`` if it has one, else this one's) and optional
environment settings for its server (granian reads its options from ``GRANIAN_*``), or
``raw:plain``, ``raw:suspend``, ``raw:batched``: a raw RSGI app in the ingress's place (reads
the body and answers; after awaiting a future a loop callback resolves; after awaiting a future
a 2 ms timer resolves with every other pending one, as a produce response does). Every
variant runs as ``uplink ingress --server granian`` does (RSGI, uvloop, HTTP/1, one worker) on
one broker; wrk sends the spec's 13 pushes in rotation. The figure is the server's CPU time
over the pushes answered, steadier than pushes/s while others share the machine; each round
reverses the order of the one before. Writes its row and section ("Ingress CPU a push") into
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.ingress_load import granian_cmd, lua_script, wait_http, wrk
from bench.load import cpu_seconds
from bench.results import ROOT, command, run_line, write_run

# Raw RSGI apps served as if they were a checkout's ingress (ingress/rsgi.py:app_from_env).
RAW_APPS = """
import asyncio, os

HEADERS = [("content-type", "application/json")]


class Plain:
    async def __rsgi__(self, scope, proto):
        await proto()
        proto.response_bytes(200, HEADERS, b'{"messageId":"x"}')


class Suspend:
    async def __rsgi__(self, scope, proto):
        await proto()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        loop.call_soon(future.set_result, None)
        await future
        proto.response_bytes(200, HEADERS, b'{"messageId":"x"}')


class Batched:
    def __init__(self):
        self.pending = []
        self.loop = None

    def flush(self):
        pending, self.pending = self.pending, []
        for future in pending:
            future.set_result(None)
        self.loop.call_later(0.002, self.flush)

    async def __rsgi__(self, scope, proto):
        await proto()
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
            self.loop.call_later(0.002, self.flush)
        future = self.loop.create_future()
        self.pending.append(future)
        await future
        proto.response_bytes(200, HEADERS, b'{"messageId":"x"}')


def app_from_env():
    return {"plain": Plain, "suspend": Suspend, "batched": Batched}[os.environ["RAW_APP"]]()
"""


def raw_tree(directory: Path) -> Path:
    """A directory whose ``ingress.rsgi:app_from_env`` is one of RAW_APPS (``RAW_APP``)."""
    (directory / "ingress").mkdir(parents=True, exist_ok=True)
    (directory / "ingress" / "__init__.py").write_text("")
    (directory / "ingress" / "rsgi.py").write_text(RAW_APPS)
    return directory


def variant(text: str) -> tuple[str, Path, dict[str, str]]:
    name, _, rest = text.partition("=")
    tree, *settings = rest.split(",")
    if not name or not tree:
        raise argparse.ArgumentTypeError(f"{text!r}: NAME=TREE[,KEY=VALUE...]")
    path = Path(tree) if tree.startswith("raw:") else Path(tree).resolve()
    return name, path, dict(s.split("=", 1) for s in settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variant", type=variant, action="append", required=True)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())

    from uplink.broker import free_port, kafka_broker

    rounds: list[dict[str, dict[str, float]]] = []
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        bootstrap = stack.enter_context(kafka_broker(os.environ, data_dir=Path(tmp) / "kafka"))
        script = lua_script(Path(tmp))
        servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
        raw = raw_tree(Path(tmp) / "raw")
        try:
            for name, tree, settings in args.variant:
                if not tree.is_absolute():  # raw:APP
                    settings = {**settings, "RAW_APP": str(tree).removeprefix("raw:")}
                    tree = raw
                python = tree / ".venv" / "bin" / "python"
                port = free_port()
                process = subprocess.Popen(
                    granian_cmd(
                        "ingress.rsgi:app_from_env",
                        port,
                        True,
                        1,
                        str(python) if python.exists() else sys.executable,
                        # the command line's loop wins over granian's env: passed on
                        settings.get("GRANIAN_LOOP", "uvloop"),
                    ),
                    env={
                        **os.environ,
                        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                        "PYTHONPATH": str(tree),
                        "UPLINK_TOPIC_MESSAGES": f"bench.{name}",
                        "UPLINK_TOPIC_QUARANTINE": "bench.quarantine",
                        **settings,
                    },
                    cwd=tmp,
                )
                servers[name] = (process, f"http://127.0.0.1:{port}")
                wait_http(f"{servers[name][1]}/readyz")
                wrk(servers[name][1], script, 3, args.connections)  # warm-up
            for number in range(args.rounds):
                measured: dict[str, dict[str, float]] = {}
                order = list(servers.items())
                for name, (process, base) in order if number % 2 == 0 else reversed(order):
                    before = cpu_seconds(process.pid)
                    result = wrk(base, script, args.duration, args.connections)
                    used = cpu_seconds(process.pid) - before
                    result["cpu_us"] = 1e6 * used / max(result["requests"], 1)
                    measured[name] = result
                    print(name, json.dumps(result), flush=True)
                rounds.append(measured)
        finally:
            for process, _ in servers.values():
                process.send_signal(signal.SIGTERM)
                process.wait(30)
    write(rounds, args, load_before)


def write(
    rounds: list[dict[str, dict[str, float]]], args: argparse.Namespace, load_before: str
) -> None:
    names = [name for name, _, _ in args.variant]
    described = {
        name: (
            ("this checkout" if tree == ROOT else str(tree))
            if tree.is_absolute()
            else f"{tree} (a raw RSGI app, bench/push_cpu.py)"
        )
        + "".join(f", {k}={v}" for k, v in settings.items())
        for name, tree, settings in args.variant
    }
    lines = [
        run_line("; broker, servers and wrk all on this machine"),
        f"Load: wrk -t1 -c{args.connections} -d{args.duration}s per run, {args.rounds} rounds "
        f"alternating {', '.join(names)} (each round in the reverse order of the one before); the "
        "spec's 13 pushes in rotation; the ingress on granian (RSGI, uvloop, HTTP/1, 1 worker). "
        "CPU µs a push: the server's processes' CPU time over the requests answered. Load "
        f"average before: {load_before}, after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}.",
        "",
        "Variants: " + "; ".join(f"`{name}`: {described[name]}" for name in names) + ".",
        "",
        "| round | variant | CPU µs a push | requests/s | p50 ms | p99 ms | non-2xx |",
        "|---|---|---|---|---|---|---|",
    ]
    for number, measured in enumerate(rounds, 1):
        for name, r in measured.items():
            lines.append(
                f"| {number} | {name} | {r['cpu_us']:.1f} | {r['rps']:.0f} | {r['p50_ms']:.2f} | "
                f"{r['p99_ms']:.2f} | {int(r['non2xx'])} |"
            )
    lines += ["", "| variant | CPU µs a push (median) | range | requests/s (median) |"]
    lines.append("|---|---|---|---|")
    cpu = {n: [r[n]["cpu_us"] for r in rounds] for n in names}
    for name in names:
        lines.append(
            f"| {name} | {statistics.median(cpu[name]):.1f} | {min(cpu[name]):.1f} to "
            f"{max(cpu[name]):.1f} | {statistics.median(r[name]['rps'] for r in rounds):.0f} |"
        )
    first = names[0]
    deltas = [
        f"{name} {statistics.median(a[name]['cpu_us'] - a[first]['cpu_us'] for a in rounds):+.1f}"
        for name in names[1:]
    ]
    figure = (
        f"{first} {statistics.median(cpu[first]):.1f} µs of CPU a push on granian at "
        f"{args.connections} connections; against it, median of the rounds' differences: "
        + ", ".join(deltas)
    )
    lines += ["", f"Against `{first}`, each round's difference, median: {', '.join(deltas)} µs."]
    section = "\n".join(lines)
    write_run("Ingress CPU a push", figure=figure, command=command(), section=section)
    print(section)


if __name__ == "__main__":
    main()
