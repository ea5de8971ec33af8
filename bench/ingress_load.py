"""Load benchmark: the ingress against a bare Starlette endpoint, same server settings, same run.

    .venv/bin/python bench/ingress_load.py [--duration 15] [--connections 64] [--profile]
    .venv/bin/python bench/ingress_load.py --registry    # Confluent framing against without


Both servers run under uvicorn (uvloop, httptools, one worker) on loopback; wrk posts the spec's
example pushes (unique messageIds) to each in turn; the broker runs on this machine too. Writes its
row and section into bench/RESULTS.md: the ratio, latencies and, with --profile, where an ingress
request spends its time (py-spy, sampled during a third load run). With ``--registry``, the
two servers are instead the ingress as configured by default (single-object encoding) and the
ingress with ``UPLINK_SCHEMA_REGISTRY_URL`` (a local Apicurio Registry; the schema registered at
start-up, the Confluent framing on every record), on topics of their own: what the registry costs
the hot path.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from results import command, run_line, write_run  # bench/results.py: bench/ is on sys.path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "tests" / "examples"
BAR = 0.60  # of the bare endpoint: the target of an open issue (it was 40 %)

# wrk script: rotate through the spec's examples, each with a unique messageId; report as JSON.
LUA = r"""
local bodies = {}
%(bodies)s
local n = 0
local prefix = tostring(math.random(1, 1e9))
request = function()
  n = n + 1
  local body = string.gsub(bodies[(n %% #bodies) + 1], "@ID@", prefix .. "-" .. n, 1)
  -- a campaign is answered by many different people: one conversation (key) each
  body = string.gsub(body, "@PHONE@", tostring(910000000000 + (n %% 50000)), 1)
  return wrk.format("POST", "/v1/uplink", {["Content-Type"] = "application/json"}, body)
end
done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '@@{"requests": %%d, "seconds": %%f, "non2xx": %%d, "connect": %%d, "read": %%d, ' ..
    '"write": %%d, "timeout": %%d, "p50_ms": %%f, "p99_ms": %%f, "max_ms": %%f}\n',
    summary.requests, summary.duration / 1e6, errors.status, errors.connect, errors.read,
    errors.write, errors.timeout, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000))
end
"""

BARE_APP = """
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

async def push(request: Request) -> Response:
    await request.body()
    return Response(b'{"messageId":"x"}', media_type="application/json")

async def ready(request: Request) -> Response:
    return Response(b"ready")

app = Starlette(routes=[Route("/v1/uplink", push, methods=["POST"]), Route("/readyz", ready)])
"""


def lua_script(directory: Path) -> Path:
    bodies = []
    for path in sorted(EXAMPLES.glob("*.json")):
        push = json.loads(path.read_bytes())
        push["messageId"] = "@ID@"
        push["from"]["phone"] = "@PHONE@"
        bodies.append(json.dumps(push, ensure_ascii=False))
    lines = "\n".join(f"bodies[{i + 1}] = {json.dumps(b)}" for i, b in enumerate(bodies))
    script = directory / "push.lua"
    script.write_text(LUA % {"bodies": lines})
    return script


def uvicorn_cmd(target: str, port: int, factory: bool, workers: int) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        target,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
        "--workers",
        str(workers),
    ]
    return cmd + (["--factory"] if factory else [])


def wait_http(url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not become ready")


def wrk(url: str, script: Path, duration: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    stats: dict[str, float] = json.loads(out.split("@@", 1)[1])
    stats["rps"] = stats["requests"] / stats["seconds"]
    return stats


def profile(pid: int, seconds: int, out: Path) -> list[tuple[str, float, float]]:
    """py-spy samples of the ingress process: per function, % of samples on the stack and own."""
    subprocess.run(
        [
            shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
            "record",
            "-p",
            str(pid),
            "-d",
            str(seconds),
            "-f",
            "raw",
            "-o",
            str(out),
            "-r",
            "200",
            "--nonblocking",
        ],
        check=True,
        capture_output=True,
    )
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        seen = set()
        for frame in stack.split(";"):
            name = frame.split(" (")[0]
            where = frame.split(" (")[1].split(":")[0] if " (" in frame else ""
            label = f"{name} ({Path(where).parent.name}/{Path(where).name})" if where else name
            if label not in seen:
                inclusive[label] += n
                seen.add(label)
        own[label] += n  # the last frame is the one running
    top = {label for label, _ in own.most_common(25)}
    return sorted(
        ((label, 100.0 * inclusive[label] / total, 100.0 * own[label] / total) for label in top),
        key=lambda row: -row[2],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers, for both")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--registry",
        action="store_true",
        help="compare the ingress with a schema registry (Confluent framing) to without",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")

    sys.path.insert(0, str(ROOT))
    from uplink.broker import free_port, kafka_broker
    from uplink.registry.local import LocalRegistry, RegistryServerSettings

    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        bootstrap = stack.enter_context(kafka_broker(os.environ, data_dir=Path(tmp) / "kafka"))
        registry_url = ""
        if args.registry:
            registry = LocalRegistry(RegistryServerSettings(port=free_port()))
            registry_url = stack.enter_context(registry).url
        script = lua_script(Path(tmp))
        (Path(tmp) / "bare_app.py").write_text(BARE_APP)
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "PYTHONPATH": f"{tmp}:{ROOT}",
            "UPLINK_TOPIC_MESSAGES": "bench.messages",
            "UPLINK_TOPIC_QUARANTINE": "bench.quarantine",
            "UPLINK_TOPIC_MEDIA": "bench.media",
        }
        servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
        rounds: list[dict[str, dict[str, float]]] = []
        hotspots: list[tuple[str, float, float]] = []
        ingress = "ingress.app:app_from_env"
        contenders = (
            [("bare", "bare_app:app", False, env), ("ingress", ingress, True, env)]
            if not args.registry
            else [
                ("ingress", ingress, True, {**env, "UPLINK_TOPIC_MESSAGES": "bench.plain"}),
                (
                    "registry",
                    ingress,
                    True,
                    {
                        **env,
                        "UPLINK_TOPIC_MESSAGES": "bench.confluent",
                        "UPLINK_SCHEMA_REGISTRY_URL": registry_url,
                    },
                ),
            ]
        )
        try:
            for name, target, factory, server_env in contenders:
                port = free_port()
                process = subprocess.Popen(
                    uvicorn_cmd(target, port, factory, args.workers), env=server_env, cwd=tmp
                )
                servers[name] = (process, f"http://127.0.0.1:{port}")
                wait_http(f"{servers[name][1]}/readyz")
                wrk(servers[name][1], script, 3, args.connections)  # warm-up
            # Alternate the two, several rounds: the machine is shared and drifts over a minute.
            # Each round reverses the order of the one before, so a drift favours neither.
            for number in range(args.rounds):
                measured = {}
                order = list(servers.items())
                for name, (_, base) in order if number % 2 == 0 else reversed(order):
                    measured[name] = wrk(base, script, args.duration, args.connections)
                    print(name, json.dumps(measured[name]), flush=True)
                rounds.append(measured)
            if args.profile and args.workers == 1:  # py-spy follows the one server process
                process, base = servers["ingress"]
                load = subprocess.Popen(
                    [
                        "wrk",
                        "-t1",
                        f"-c{args.connections}",
                        f"-d{args.duration + 2}s",
                        "-s",
                        str(script),
                        base,
                    ],
                    stdout=subprocess.DEVNULL,
                )
                time.sleep(1)
                hotspots = profile(process.pid, args.duration - 2, Path(tmp) / "profile.txt")
                load.wait()
        finally:
            for process, _ in servers.values():
                process.send_signal(signal.SIGTERM)
                process.wait(30)
    if args.registry:
        write_registry_results(rounds, args)
    else:
        write_results(rounds, hotspots, args)


def rounds_table(
    rounds: list[dict[str, dict[str, float]]], what: str, labels: dict[str, str]
) -> list[str]:
    """The rounds as a Markdown table, one row per server and round."""
    lines = [
        f"| round | {what} | requests/s | p50 ms | p99 ms | max ms | non-2xx | socket errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for number, measured in enumerate(rounds, 1):
        for name, r in measured.items():
            errors = int(r["connect"] + r["read"] + r["write"] + r["timeout"])
            lines.append(
                f"| {number} | {labels[name]} | {r['rps']:.0f} | {r['p50_ms']:.2f} | "
                f"{r['p99_ms']:.2f} | {r['max_ms']:.1f} | {int(r['non2xx'])} | {errors} |"
            )
    return lines


def write_registry_results(
    rounds: list[dict[str, dict[str, float]]], args: argparse.Namespace
) -> None:
    ratios = [r["registry"]["rps"] / r["ingress"]["rps"] for r in rounds]
    ratio = statistics.median(ratios)
    p50 = [r["registry"]["p50_ms"] / r["ingress"]["p50_ms"] for r in rounds]
    lines = [
        run_line("; broker, registry (Apicurio 3.3.3), servers and wrk all on this machine"),
        f"Load: wrk -t1 -c{args.connections} -d{args.duration}s per run, {args.rounds} rounds "
        "alternating (each round in the reverse order of the one before) the ingress without a "
        "registry (single-object encoding) and with "
        "`UPLINK_SCHEMA_REGISTRY_URL` (schema registered at start-up, Confluent framing), each on "
        "its own topic; the spec's 13 example pushes in rotation, unique messageIds; uvicorn, "
        f"uvloop, httptools, {args.workers} worker(s) each, no access log.",
        "",
        *rounds_table(
            rounds,
            "ingress",
            {"ingress": "single-object (no registry)", "registry": "Confluent (registry)"},
        ),
    ]
    lines += [
        "",
        f"**Throughput with the registry / without: {ratio:.1%}** (median of "
        f"{', '.join(f'{r:.1%}' for r in ratios)}); p50 latency with / without: median "
        f"{statistics.median(p50):.2f}x. The registry is asked once, at start-up: a push's "
        "work differs only in the 5-byte header its encoder was compiled with.",
        "",
    ]
    write_run(
        "Ingress with the schema registry",
        figure=f"Confluent framing at {100 * ratio:.1f} % of single-object throughput "
        f"(median of {len(ratios)}, range {100 * min(ratios):.1f} to {100 * max(ratios):.1f} %)",
        bar="no measurable cost (within the rounds' noise)",
        met=min(ratios) <= 1.0 <= max(ratios) or ratio >= 0.97,
        command=command(),
        section="\n".join(lines),
    )
    print("\n".join(lines))


def write_results(
    rounds: list[dict[str, dict[str, float]]],
    hotspots: list[tuple[str, float, float]],
    args: argparse.Namespace,
) -> None:
    ratios = [r["ingress"]["rps"] / r["bare"]["rps"] for r in rounds]
    ratio = statistics.median(ratios)
    lines = [
        run_line("; broker, servers and wrk all on this machine"),
        f"Load: wrk -t1 -c{args.connections} -d{args.duration}s per run, {args.rounds} rounds "
        "alternating bare and ingress (each round in the reverse order of the one before); the "
        "spec's 13 example pushes in rotation, unique "
        "messageIds, 50,000 senders; uvicorn, uvloop, httptools, "
        f"{args.workers} worker(s) each, no access log.",
        "",
        *rounds_table(
            rounds,
            "endpoint",
            {"bare": "bare Starlette (reads body, 200)", "ingress": "uplink ingress"},
        ),
    ]
    lines += [
        "",
        f"**Ratio ingress / bare: {ratio:.1%}** (median of "
        f"{', '.join(f'{r:.1%}' for r in ratios)}; bar: {100 * BAR:.0f} %).",
        "",
    ]
    if hotspots:
        lines += [
            "Where an ingress request spends its time (py-spy at 200 Hz during a separate load "
            "run; `own` = the function itself was running, `on stack` = it or its callees; the "
            "25 functions with the most own samples):",
            "",
            "| function | own % | on stack % |",
            "|---|---|---|",
        ]
        lines += [f"| `{label}` | {mine:.1f} | {total:.1f} |" for label, total, mine in hotspots]
        lines.append("")
    section = "\n".join(lines)
    write_run(
        "Ingress load",
        figure=f"ingress at {100 * ratio:.1f} % of a bare Starlette endpoint at "
        f"{args.connections} connections (median of {len(ratios)}, range "
        f"{100 * min(ratios):.1f} to {100 * max(ratios):.1f} %)",
        bar=f"{100 * BAR:.0f} % of the bare endpoint (open issue)",
        met=ratio >= BAR,
        command=command(),
        section=section,
    )
    print(section)


if __name__ == "__main__":
    main()
