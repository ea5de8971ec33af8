"""Load as the HTTP benchmarks make it with wrk, and what they measure of the server.

Every wrk script ends with ``REPORT``, its ``done`` hook, which prints the run's summary as one
JSON object after ``@@``; ``report`` reads it back from wrk's output.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

REPORT = r"""
done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '@@{"requests": %d, "seconds": %f, "non2xx": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "timeout": %d, "p50_ms": %f, "p99_ms": %f, "max_ms": %f}\n',
    summary.requests, summary.duration / 1e6, errors.status, errors.connect, errors.read,
    errors.write, errors.timeout, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000))
end
"""


def lua_list(name: str, values: list[str]) -> str:
    """Lua lines filling the table ``name`` with the strings ``values``, in order."""
    return "\n".join(f"{name}[{i + 1}] = {json.dumps(v)}" for i, v in enumerate(values))


def report(stdout: str) -> dict[str, float]:
    """The summary ``REPORT`` printed, with ``rps``: requests a second."""
    stats: dict[str, float] = json.loads(stdout.split("@@", 1)[1])
    stats["rps"] = stats["requests"] / stats["seconds"]
    return stats


def server_stats(pid: int) -> list[tuple[Path, list[str]]]:
    """/proc/<n>/stat of a server's process and its worker processes: (directory, fields)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):  # fields[1]: the parent
            found.append((stat.parent, fields))
    return found


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a server: its process and its worker processes."""
    ticks = sum(int(fields[11]) + int(fields[12]) for _, fields in server_stats(pid))
    return ticks / os.sysconf("SC_CLK_TCK")
