"""The reliability table: the cluster fault tests run once (a three-broker local cluster, the
ingress and the workers as their own processes), each recording its fault, load and outcome;
their rows go into bench/RESULTS.md. Not a benchmark with a baseline: the bar is the promise,
no push answered 200 lost, none twice.

    .venv/bin/python -m bench.reliability [pytest arguments, e.g. -k killed]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.results import ROOT, command, run_line, write_run

BENCHMARK = "Reliability on a three-broker cluster"
COLUMNS = (
    "fault",
    "load",
    "answered 200",
    "503s",
    "longest answer s",
    "lost",
    "duplicated",
    "503 but kept",
    "note",
)


def main(arguments: list[str]) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "figures.json"
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-m", "cluster", "tests/cluster", "-q", *arguments],
            cwd=ROOT,
            env={**os.environ, "UPLINK_RELIABILITY_OUT": str(out)},
            check=False,
        )
        seconds = time.monotonic() - started
        if not out.exists():
            print("the cluster tests recorded no figures", file=sys.stderr)
            return 1
        rows = json.loads(out.read_text())
    lost = sum(row["lost"] for row in rows)
    twice = sum(row["duplicated"] for row in rows)
    table = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
        *(
            "| "
            + " | ".join(
                str(row[key])
                for key in (
                    "fault",
                    "load",
                    "answered_200",
                    "answered_503",
                    "longest_answer",
                    "lost",
                    "duplicated",
                    "kept_after_503",
                    "note",
                )
            )
            + " |"
            for row in rows
        ),
    ]
    section = "\n".join(
        [
            run_line(
                "; three KRaft nodes on loopback (Kafka's default failure detection: a broker "
                "fenced 9 s after its last heartbeat), topics with replication factor 3 and "
                "min.insync.replicas=2, `uplink ingress` (UPLINK_PRODUCE_TIMEOUT=2) and the "
                "workers as their own processes"
            ),
            f"The cluster tests (`pytest -m cluster`, {seconds:.0f} s, exit {result.returncode}): "
            "16 concurrent pushers, unique messageIds, no retries of a 503 (so any repeat "
            "in the topic would be the producer's).",
            "",
            *table,
            "",
            "Lost: answered 200 and not in the topic (or the archive). Duplicated: in the topic "
            "more than once. 503 but kept: the idempotent producer kept retrying the batch "
            "after the ingress had answered 503, and the broker took it; the provider's retry "
            "of such a push is a duplicate the workers drop by messageId.",
        ]
    )
    met = result.returncode == 0 and lost == 0 and twice == 0
    write_run(
        BENCHMARK,
        figure=(
            f"{len(rows)} faults, {sum(row['answered_200'] for row in rows):,} pushes answered "
            f"200: {lost} lost, {twice} duplicated; longest answer "
            f"{max(row['longest_answer'] for row in rows):.2f} s"
        ),
        bar="no 200 lost, none twice",
        met=met,
        command=command(),
        section=section,
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
