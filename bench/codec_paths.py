"""The push codec's paths, in µs of CPU, against fastavro and against another tree, in one run.

    .venv/bin/python -m bench.codec_paths [--against TREE] [--rounds 5] [--seconds 0.4]

Each round runs one fresh process per tree (this checkout, then ``--against``'s, a checkout of
another commit of uplink with its C extensions built), alternating; each process measures, on
the spec's example pushes (tests/examples): ``parse`` (body → record) and ``encode`` (record →
framed bytes), as the ingress does per push; ``heads`` (messageId and timestamp of a batch of
records, in C) and the router's ``viewer`` (its rule fields), per record, as the workers do; a
whole ``decode``; and ``PushCodec()`` itself (compiling the schemas). fastavro's own writer and
reader on the same records are the reference the codec's compiled paths replace. Medians of the
rounds; the ratio is this tree's over the other's. No broker, no network.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PATHS = (
    ("parse", "parse a body into a record (a push)"),
    ("encode", "encode a record, framed (a push)"),
    ("fastavro encode", "fastavro's schemaless_writer on the same records (a push)"),
    ("heads", "messageId and timestamp of a batch of 512, C (a record)"),
    ("view", "the router's view of its rule fields (a record)"),
    ("decode", "decode a whole record (a record)"),
    ("fastavro decode", "fastavro's schemaless_reader on the same records (a record)"),
    ("PushCodec()", "build the codec: compile its schemas (once a process)"),
)


# Why the compiled paths exist (schemas/encoder.py, view.py, head.py, converter.py and their C),
# with the figures measured when each replaced its predecessor; the comments there point here.
WHY = """\
What the figures stand for in schemas/: the ingress's **encode** is a program compiled from the
schema that one C call walks (schemas/encoder.py, _encoder.c); fastavro's writer validates each
`["null", record]` union against every branch, which made encoding the largest cost of a
request (measured when encoder.py was written: about 20 µs for a text push, over 100 µs for
contacts; as Python closures the compiled encoder still took about a hundred calls a push, a
tenth of a push's CPU). **parse** runs the converters compiled from the schema, their common
cases walked in C (converter.py, _converter.c; as closures alone about thirty calls a push).
The workers' **heads** read messageId and timestamp without decoding the datum (head.py,
_records.c): decoding the whole datum for them took ~16 µs a record, the same walk in Python
~1.4 µs (as much as aiokafka's own work per record), in C ~0.1 µs. The router's **view** reads
its rule fields only (view.py): fastavro's whole decode took ~14 µs a record, a view built of
one closure per field still ~5 µs of calls, hence views generated as Python source. The
archive's deflate (schemas/container.py) uses zlib-ng: the same format as zlib at the same
level in about half the time.
"""


def per_call_us(call: Any, items: list[Any], seconds: float) -> float:
    """CPU µs per item, calling ``call`` on each of ``items`` in turn for about ``seconds``."""
    done = 0
    start = time.process_time()
    while (elapsed := time.process_time() - start) < seconds:
        for item in items:
            call(item)
        done += len(items)
    return elapsed / done * 1e6


def measure(seconds: float, router_view: dict[str, Any]) -> dict[str, float]:
    """One tree's figures: run in a child process whose PYTHONPATH is that tree; the router's
    view is this tree's, handed over, so both trees read the same fields."""
    import io

    from fastavro import schemaless_reader, schemaless_writer

    from schemas import PushCodec

    bodies = [path.read_bytes() for path in sorted((ROOT / "tests" / "examples").glob("*.json"))]
    codec = PushCodec()
    records = [codec.parse(body, 1_700_000_000_000) for body in bodies]
    values = [codec.encode(record) for record in records]
    batch = (values * (512 // len(values) + 1))[:512]
    view = codec.viewer(router_view)
    size = len(codec.header)

    def fastavro_encode(record: dict[str, Any]) -> bytes:
        out = io.BytesIO()
        schemaless_writer(out, codec.schema, record)
        return out.getvalue()

    def fastavro_decode(value: bytes) -> Any:
        return schemaless_reader(io.BytesIO(value[size:]), codec.schema, None)

    def build(_: object) -> PushCodec:
        return PushCodec()

    return {
        "parse": per_call_us(lambda body: codec.parse(body, 1_700_000_000_000), bodies, seconds),
        "encode": per_call_us(codec.encode, records, seconds),
        "fastavro encode": per_call_us(fastavro_encode, records, seconds),
        "heads": per_call_us(codec.heads, [batch], seconds) / len(batch),
        "view": per_call_us(view, values, seconds),
        "decode": per_call_us(codec.decode, values, seconds),
        "fastavro decode": per_call_us(fastavro_decode, values, seconds),
        "PushCodec()": per_call_us(build, [None], seconds),
    }


def run_tree(tree: Path, seconds: float, router_view: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, __file__, "--child", "--seconds", str(seconds), "--view", router_view],
        env=env,
        cwd=tree,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    figures: dict[str, float] = json.loads(out)
    return figures


def _described(tree: Path) -> str:
    """A tree as its commit, when it is a git checkout; its path either way."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return str(tree)
    return f"{tree}, commit {commit}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", type=Path, help="another checkout of uplink, built")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.4, help="per path, per round")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--view", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.seconds, json.loads(args.view))))
        return
    # Here, not at the top: a child runs this file as a script with another tree on its path.
    from bench.results import command, run_line, write_run
    from consumers.router.rules import VIEW

    router_view = json.dumps(VIEW)

    trees = {"this tree": ROOT}
    if args.against is not None:
        trees["against"] = args.against.resolve()
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            runs[name].append(run_tree(tree, args.seconds, router_view))
    medians = {
        name: {path: statistics.median(r[path] for r in rounds) for path, _ in PATHS}
        for name, rounds in runs.items()
    }
    here = medians["this tree"]
    header = "| path | this tree, µs |"
    rule = "|---|---|"
    if args.against is not None:
        header += " against, µs | ratio |"
        rule += "---|---|"
    lines = [header, rule]
    for path, meaning in PATHS:
        row = f"| {path}: {meaning} | {here[path]:.2f} |"
        if args.against is not None:
            there = medians["against"][path]
            row += f" {there:.2f} | {here[path] / there:.2f} |"
        lines.append(row)
    table = "\n".join(lines)
    print(table)
    compared = [p for p, _ in PATHS if p not in ("fastavro encode", "fastavro decode")]
    figure = (
        f"encode {here['encode']:.2f} µs a push (fastavro {here['fastavro encode']:.1f}); "
        f"heads {here['heads']:.3f} µs a record, view {here['view']:.2f}, "
        f"decode {here['decode']:.1f} (fastavro {here['fastavro decode']:.1f})"
    )
    if args.against is not None:
        ratios = [here[p] / medians["against"][p] for p in compared]
        figure += (
            f"; against {args.against.name}: ratio {min(ratios):.2f} to {max(ratios):.2f}"
            " on the codec's paths"
        )
    where = (
        f". {args.rounds} alternating rounds of a process per tree, {args.seconds} s of CPU per"
        f" path per round; medians. The other tree: {_described(args.against)}"
        if args.against is not None
        else f". {args.rounds} rounds, {args.seconds} s of CPU per path per round; medians"
    )
    write_run(
        "Codec paths",
        figure=figure,
        command=command(),
        section=f"{run_line(where)}\n\n{table}\n\n{WHY}",
    )


if __name__ == "__main__":
    main()
