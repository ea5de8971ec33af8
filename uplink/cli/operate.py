"""The operator verbs: ``dlq``, ``quarantine``, ``trace``, ``conversation``.

Each is a thin shell over ``uplink.operate``: settings read from the environment here, a
readable table on stdout by default (``--json``: one JSON object a line), and on stderr how far
it read. Bad input (an unknown worker, a malformed reference, a time it cannot parse) is a
ConfigError naming it: exit 78, as every verb of ``uplink``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from schemas import PushCodec
from uplink.exceptions import ConfigError
from uplink.kafka import KafkaClients
from uplink.operate.conversation import conversation
from uplink.operate.deadletters import (
    WORKERS,
    DeadLetterQueues,
    Filter,
    Ref,
    check_worker,
    show_row,
)
from uplink.operate.quarantine import DEFAULT_INGRESS, Quarantine, QuarantineRef
from uplink.operate.readers import Readers
from uplink.operate.records import decode_push
from uplink.operate.trace import Tracer, conversation_key
from uplink.operate.window import Scan, parse_duration, parse_time
from uplink.registry.client import SchemaRegistry, SubjectSchemas, subject
from uplink.settings import Secret, kafka_from_env, registry_from_env, topics_from_env

EXIT_NOT_FOUND = 1


def _emit(rows: Sequence[dict[str, Any]], as_json: bool, columns: Sequence[str]) -> None:
    out = sys.stdout
    if as_json:
        for row in rows:
            out.write(orjson.dumps(row).decode() + "\n")
        out.flush()
        return
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    widths = [min(w, 60) for w in widths]
    out.write("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    out.write("\n")
    for r in cells:
        line = "  ".join(v[:w].ljust(w) for v, w in zip(r, widths, strict=True))
        out.write(line.rstrip() + "\n")
    out.flush()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return " ".join(str(value).split())


def _read(scan: Scan) -> None:
    if not scan.ranges:
        return  # refused before reading anything
    print(f"uplink: {scan.describe()}", file=sys.stderr)


@contextlib.asynccontextmanager
async def _codec(environ: dict[str, str]) -> AsyncIterator[PushCodec]:
    """The codec of the pushes: any released writer schema, either framing; with a registry,
    writer schemas of the ids met are fetched from it."""
    registry = registry_from_env(environ)
    if registry is None:
        yield PushCodec()
        return
    topics = topics_from_env(environ)
    async with SchemaRegistry(registry) as client:
        yield PushCodec(lookup=SubjectSchemas(client, subject(topics.messages)))


def _since(text: str, option: str = "--since") -> int | None:
    """``all``: from the topics' beginning (only when asked); else a time."""
    return None if text == "all" else parse_time(text, option)


def groups_option(pairs: list[str] | None) -> dict[str, str] | None:
    """``--group WORKER=GROUP``, repeated: the groups to report on (default uplink-<worker>
    of each worker)."""
    if not pairs:
        return None
    groups: dict[str, str] = {}
    for pair in pairs:
        worker, _, group = pair.partition("=")
        if not group:
            raise ConfigError("--group", f"{pair!r} is not WORKER=GROUP")
        groups[check_worker(worker, "--group")] = group
    return groups


# --- dlq ------------------------------------------------------------------------------------


def _dlq(args: argparse.Namespace) -> int:
    env = args.environ
    kafka, topics = kafka_from_env(env), topics_from_env(env)
    scan = Scan()
    worker = check_worker(args.worker) if args.worker else None
    since = _since(args.since)

    async def run() -> int:
        async with _codec(env) as codec, Readers(KafkaClients(kafka)) as readers:
            queues = DeadLetterQueues(readers, topics, codec, scan)
            if args.action == "list":
                match = Filter(worker, args.reason, since)
                rows = [letter.row() async for letter in queues.letters(match, args.limit)]
                _emit(rows, args.json, ["ref", "time", "reason", "origin", "messageId", "redriven"])
                return 0
            if args.action == "show":
                if not args.ref:
                    raise ConfigError(
                        "REF", "name the dead letter: uplink dlq show WORKER:P:OFFSET"
                    )
                letter = await queues.show(Ref.parse(args.ref))
                if letter is None:
                    print(f"uplink: no dead letter at {args.ref}", file=sys.stderr)
                    return EXIT_NOT_FOUND
                push, problem = await decode_push(codec, letter.record.value)
                _show(show_row(letter, push, problem), args.json)
                return 0
            if worker is None:
                raise ConfigError("--worker", "redrive needs --worker (archive, media or router)")
            report = await queues.redrive(
                Filter(worker, args.reason, since), args.dry_run, args.rate, args.limit
            )
            if args.json:
                _emit([report.row()], True, [])
            if args.dry_run and report.first:
                _emit([x.row() for x in report.first], args.json, ["ref", "time", "reason"])
            print(report.summary(), file=sys.stderr if args.json else sys.stdout)
            return 0

    try:
        return asyncio.run(run())
    finally:
        _read(scan)


def _show(row: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(orjson.dumps(row).decode())
        return
    for name, value in row.items():
        if name == "headers":
            print("headers:")
            for key, text in value:
                print(f"  {key}: {text}")
        elif name in ("push", "body"):
            text = (
                value
                if isinstance(value, str)
                else orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
            )
            print(f"{name}:\n{text}")
        else:
            print(f"{name}: {_cell(value)}")


# --- quarantine -----------------------------------------------------------------------------


def _quarantine(args: argparse.Namespace) -> int:
    env = args.environ
    kafka, topics = kafka_from_env(env), topics_from_env(env)
    scan = Scan()
    since = _since(args.since)

    async def run() -> int:
        async with Readers(KafkaClients(kafka)) as readers:
            return await verb(Quarantine(readers, topics, scan))

    async def verb(quarantine: Quarantine) -> int:
        if args.action == "list":
            rows = [b.row() async for b in quarantine.bodies(args.reason, since, args.limit)]
            _emit(rows, args.json, ["ref", "time", "reason", "bytes", "preview"])
            return 0
        refs = [QuarantineRef.parse(text) for text in args.refs]
        if args.action == "show":
            if len(refs) != 1:
                raise ConfigError(
                    "REF", "name one body: uplink quarantine show quarantine:P:OFFSET"
                )
            body = await quarantine.show(refs[0])
            if body is None:
                print(f"uplink: nothing quarantined at {refs[0]}", file=sys.stderr)
                return EXIT_NOT_FOUND
            _show(body.detail(), args.json)
            return 0
        if not refs and args.reason is None:
            raise ConfigError("REF", "repost needs references or --reason TEXT")
        bodies = []
        for ref in refs:
            body = await quarantine.show(ref)
            if body is None:
                print(f"uplink: nothing quarantined at {ref}", file=sys.stderr)
                return EXIT_NOT_FOUND
            bodies.append(body)
        if not refs:
            bodies = [b async for b in quarantine.bodies(args.reason, since, args.limit)]
        token = args.token or env.get("UPLINK_TOKEN")
        answers = await quarantine.repost(
            bodies, args.to, Secret(token) if token else None, args.dry_run
        )
        _emit([a.row() for a in answers], args.json, ["ref", "status", "answer"])
        sent = [a for a in answers if a.status is not None]
        return 0 if all(a.status == 200 for a in sent) else EXIT_NOT_FOUND

    try:
        return asyncio.run(run())
    finally:
        _read(scan)


# --- trace, conversation --------------------------------------------------------------------


def _trace(args: argparse.Namespace) -> int:
    env = args.environ
    kafka, topics = kafka_from_env(env), topics_from_env(env)
    scan = Scan()
    if (args.business is None) != (args.sender is None):
        raise ConfigError("--business/--from", "give both phones of the conversation, or neither")
    key = conversation_key(args.business, args.sender) if args.business else None
    window = int(parse_duration(args.window, "--window") * 1000)
    if args.around is not None:
        around = parse_time(args.around, "--around")
        since, until = around - window, around + window
    else:
        since, until = int(time.time() * 1000) - window, None
    outputs = router_outputs(env, args.rules, args.output or [])

    async def run() -> int:
        async with _codec(env) as codec, Readers(KafkaClients(kafka)) as readers:
            tracer = Tracer(readers, topics, codec, groups_option(args.group), scan=scan)
            found = await tracer.trace(args.message_id, since, until, key, outputs)
        if args.json:
            _emit([found.row()], True, [])
        else:
            _print_trace(found.row())
        return 0 if found.found else EXIT_NOT_FOUND

    try:
        return asyncio.run(run())
    finally:
        _read(scan)


def router_outputs(
    env: Mapping[str, str], rules_file: str | None = None, extra: Sequence[str] = ()
) -> list[str]:
    """Where the router may have put a push: its delay topics (its settings name them) and the
    output topics of its rules file (``--rules``, else the router's own UPLINK_ROUTER_RULES)."""
    from consumers.router.rules import load_rules
    from consumers.router.settings import RouterSettings

    router = RouterSettings.from_env(env, rules=rules_file)
    outputs = list(extra)
    if router.rules:
        outputs += sorted(load_rules(Path(router.rules), env).topics)
    return [*dict.fromkeys([*outputs, *router.delay_topics])]


def _print_trace(row: dict[str, Any]) -> None:
    if not row["found"] and not row["statuses"]:
        print(f"{row['messageId']}: not found in the window")
        return
    for seen in row["found"]:
        print(
            f"{row['messageId']}: {seen['topic']}[{seen['partition']}]@{seen['offset']} "
            f"at {seen['time']}"
        )
        _emit(seen["groups"], False, ["group", "state", "detail"])
    for media in row["media"]:
        print(f"media: {media['type']} {media['uri']} sha256 {media['sha256']} ({media['at']})")
    for output in row["outputs"]:
        target = f" -> {output['endpoint']}" if output["endpoint"] else ""
        if output["settled"]:
            target += f" (its first attempt's late answer: {output['settled']})"
        print(f"router: {output['topic']}[{output['partition']}]@{output['offset']}{target}")
    for status in row["statuses"]:
        errors = f" ({'; '.join(e for e in status['errors'] if e)})" if status["errors"] else ""
        print(
            f"status: {status['status']} at {status['time']} for {status['recipient']}{errors} "
            f"({status['at']})"
        )


def _conversation(args: argparse.Namespace) -> int:
    env = args.environ
    kafka, topics = kafka_from_env(env), topics_from_env(env)
    scan = Scan()
    since = parse_time(args.since, "--since")

    async def run() -> int:
        groups = groups_option(args.group) or {w: f"uplink-{w}" for w in WORKERS}
        async with (
            _codec(env) as codec,
            Readers(KafkaClients(kafka)) as readers,
            readers.reader(scan) as reader,
        ):
            chat = await conversation(
                reader, codec, groups, topics, args.business, args.sender, since
            )
        _emit(
            [line.row() for line in chat.lines],
            args.json,
            ["time", "type", "text", "media", "messageId", "status"],
        )
        return 0

    try:
        return asyncio.run(run())
    finally:
        _read(scan)


# --- parsers --------------------------------------------------------------------------------


def add_verbs(verbs: Any) -> None:
    """Register the operator verbs on ``uplink``'s subparsers."""
    group_help = "WORKER=GROUP, repeated: the groups to report on (default uplink-<worker>)"
    since_help = "only records since: a duration ago (2h, 30m, 1d), an ISO time, or epoch ms"
    dlq = verbs.add_parser(
        "dlq",
        help="dead letters: list, show REF, redrive (once the cause is fixed)",
        description="REF is <worker>:<partition>:<offset>, as `dlq list` prints it.",
    )
    dlq.add_argument("action", choices=["list", "show", "redrive"])
    dlq.add_argument("ref", nargs="?", help="show: the dead letter")
    dlq.add_argument("--worker", help=f"one of {', '.join(WORKERS)} (list: default all)")
    dlq.add_argument("--reason", help="only dead letters whose reason contains TEXT")
    dlq.add_argument("--since", default="24h", help=since_help + "; `all`: the whole DLQ (24h)")
    dlq.add_argument("--limit", type=int, default=None, help="at most N dead letters")
    dlq.add_argument("--dry-run", action="store_true", help="redrive: count and show, copy none")
    dlq.add_argument("--rate", type=float, default=None, help="redrive: at most N a second")
    dlq.add_argument("--json", action="store_true", help="one JSON object a line")
    dlq.set_defaults(run=_dlq)

    quarantine = verbs.add_parser(
        "quarantine",
        help="bodies the ingress refused: list, show REF, repost REF... | --reason TEXT",
    )
    quarantine.add_argument("action", choices=["list", "show", "repost"])
    quarantine.add_argument("refs", nargs="*", help="quarantine:<partition>:<offset>")
    quarantine.add_argument("--reason", help="only bodies whose reason contains TEXT")
    quarantine.add_argument("--since", default="24h", help=since_help + "; or `all` (24h)")
    quarantine.add_argument("--limit", type=int, default=None)
    quarantine.add_argument("--to", default=DEFAULT_INGRESS, help="repost: the ingress's URL")
    quarantine.add_argument("--token", help="repost: the ingress's token (default UPLINK_TOKEN)")
    quarantine.add_argument("--dry-run", action="store_true")
    quarantine.add_argument("--json", action="store_true", help="one JSON object a line")
    quarantine.set_defaults(run=_quarantine)

    trace = verbs.add_parser("trace", help="where a push is, and whether each group processed it")
    trace.add_argument("message_id", metavar="MESSAGE_ID")
    trace.add_argument("--business", help="the business phone: only its partition is read")
    trace.add_argument("--from", dest="sender", help="the sender's phone (with --business)")
    trace.add_argument("--around", help="a time near the push (default: the last --window)")
    trace.add_argument("--window", default="24h", help="how far around it to look (24h)")
    trace.add_argument(
        "--rules",
        help="the router's rules file: look in its output topics (default UPLINK_ROUTER_RULES)",
    )
    trace.add_argument("--output", action="append", help="an output topic to look in")
    trace.add_argument("--group", action="append", help=group_help)
    trace.add_argument("--json", action="store_true", help="one JSON object")
    trace.set_defaults(run=_trace)

    chat = verbs.add_parser("conversation", help="a conversation's pushes, in order")
    chat.add_argument("business", metavar="BUSINESS")
    chat.add_argument("sender", metavar="FROM")
    chat.add_argument("--since", default="24h", help=since_help + " (default 24h)")
    chat.add_argument("--group", action="append", help=group_help)
    chat.add_argument("--json", action="store_true", help="one JSON object a line")
    chat.set_defaults(run=_conversation)
