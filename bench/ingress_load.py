"""Load benchmark: the ingress against a bare Starlette endpoint, same server settings, same run.

    .venv/bin/python bench/ingress_load.py [--duration 15] [--connections 64] [--profile]

Both servers run under uvicorn (uvloop, httptools, one worker) on loopback; wrk posts the spec's
example pushes (unique messageIds) to each in turn; the broker runs on this machine too. Writes its
row and section into bench/RESULTS.md: the ratio, latencies and, with --profile, where an ingress
request spends its time (py-spy, sampled during a third load run).
"""

from __future__ import annotations

import argparse
import collections
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


def uvicorn_cmd(
    target: str, port: int, factory: bool, workers: int, python: str = sys.executable
) -> list[str]:
    cmd = [
        python,
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


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a server: its process and its worker processes."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):  # fields[1]: the parent
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


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
        "--against",
        type=Path,
        metavar="TREE",
        help="also run the ingress of another checkout (its own .venv), e.g. main, in the same "
        "rounds: a before/after on one machine at one time",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")

    sys.path.insert(0, str(ROOT))
    from uplink.broker import free_port, kafka_broker

    with (
        tempfile.TemporaryDirectory() as tmp,
        kafka_broker(os.environ, data_dir=Path(tmp) / "kafka") as bootstrap,
    ):
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
        try:
            candidates = [
                ("bare", "bare_app:app", False, None),
                ("ingress", "ingress.app:app_from_env", True, None),
            ]
            if args.against is not None:
                candidates.append(("against", "ingress.app:app_from_env", True, args.against))
            for name, target, factory, tree in candidates:
                port = free_port()
                python, path = sys.executable, ROOT
                if tree is not None:
                    python, path = str(tree.resolve() / ".venv" / "bin" / "python"), tree.resolve()
                process = subprocess.Popen(
                    uvicorn_cmd(target, port, factory, args.workers, python),
                    env={**env, "PYTHONPATH": f"{tmp}:{path}"},
                    cwd=tmp,
                )
                servers[name] = (process, f"http://127.0.0.1:{port}")
                wait_http(f"{servers[name][1]}/readyz")
                wrk(servers[name][1], script, 3, args.connections)  # warm-up
            # Alternate the two, several rounds: the machine is shared and drifts over a minute.
            for _ in range(args.rounds):
                measured = {}
                for name, (_, base) in servers.items():
                    cpu = cpu_seconds(servers[name][0].pid)
                    measured[name] = wrk(base, script, args.duration, args.connections)
                    # CPU per request: steadier than a rate while others share the machine.
                    used = cpu_seconds(servers[name][0].pid) - cpu
                    measured[name]["cpu_us"] = 1e6 * used / max(measured[name]["requests"], 1)
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
        write_results(rounds, hotspots, args)


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
        "alternating bare and ingress; the spec's 13 example pushes in rotation, unique "
        "messageIds, 50,000 senders; uvicorn, uvloop, httptools, "
        f"{args.workers} worker(s) each, no access log.",
        "",
        "| round | endpoint | requests/s | CPU µs a request | p50 ms | p99 ms | max ms | non-2xx "
        "| socket errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for number, measured in enumerate(rounds, 1):
        for name, r in measured.items():
            errors = int(r["connect"] + r["read"] + r["write"] + r["timeout"])
            label = {
                "bare": "bare Starlette (reads body, 200)",
                "ingress": "uplink ingress",
                "against": f"uplink ingress of {args.against}",
            }[name]
            lines.append(
                f"| {number} | {label} | {r['rps']:.0f} | {r['cpu_us']:.0f} | {r['p50_ms']:.2f} | "
                f"{r['p99_ms']:.2f} | {r['max_ms']:.1f} | {int(r['non2xx'])} | {errors} |"
            )
    lines += [
        "",
        f"**Ratio ingress / bare: {ratio:.1%}** (median of "
        f"{', '.join(f'{r:.1%}' for r in ratios)}; bar: {100 * BAR:.0f} %).",
        "",
    ]
    if args.against is not None:
        against = [r["against"]["rps"] / r["bare"]["rps"] for r in rounds]
        lines += [
            f"The ingress of {args.against}, in the same rounds: "
            f"{statistics.median(against):.1%} of the bare endpoint (median of "
            f"{', '.join(f'{r:.1%}' for r in against)}).",
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
