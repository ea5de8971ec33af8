"""Test runs by name, ``uplink-test-<started>-<pid>`` (as scripts/test names its run), so that a
later run tells a run still going from one that was killed: a killed run's stacks stay on the
engine, and podman goes on forwarding their host ports (8080, 7070, …) to containers whose
processes are gone, so that the next stack's load balancer is never reached."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

PREFIX = "uplink-test-"
# <started>-<pid>, or an older run's bare <pid>.
_RUN = re.compile(rf"{PREFIX}(?:(?P<started>\d+)-)?(?P<pid>\d+)")
# A process started this long after its run's name was made is another one with the pid reused.
_SLACK = 5.0
_PROC = Path("/proc")


def run_name(pid: int | None = None, started: float | None = None) -> str:
    """This process's run name (or ``pid``'s, started at ``started``)."""
    pid = os.getpid() if pid is None else pid
    started = time.time() if started is None else started
    return f"{PREFIX}{int(started)}-{pid}"


def run_of(project: str) -> str:
    """The run a compose project of the tests belongs to: ``RUN-single`` → ``RUN``."""
    return project.rpartition("-")[0]


def alive(run: str) -> bool:
    """Is the process that named ``run`` still running? A name that is not a test run's is taken
    for alive: nothing of it is ours to remove."""
    match = _RUN.fullmatch(run)
    if match is None:
        return True
    started = _process_started(int(match["pid"]))
    if started is None:
        return False
    return match["started"] is None or started <= int(match["started"]) + _SLACK


def _process_started(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), or None when there is none."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except FileNotFoundError:
        return None
    # Field 22, counted after the command's closing parenthesis (the command may hold spaces).
    ticks = int(stat.rpartition(")")[2].split()[19])
    boot = next(
        int(line.split()[1])
        for line in (_PROC / "stat").read_text().splitlines()
        if line.startswith("btime ")
    )
    return boot + ticks / os.sysconf("SC_CLK_TCK")
