"""The router's rules: a TOML file compiled once into frozen rules of plain predicates.

A rules file (see example_rules.toml beside this module, and docs/router.md)::

    [default]                     # a push no rule matched: to a topic, or dropped and counted
    topic = "uplink.router.unmatched.v1"

    [endpoint.crm]                # HTTP endpoints, referred to by name from rules
    url = "https://crm.example.com/hooks/whatsapp"
    secret_env = "CRM_SECRET"     # the HMAC key, read from this environment variable
    timeout = 5.0                 # seconds per attempt
    concurrency = 8               # attempts in flight

    [[rule]]
    name = "support"
    match = { type = ["text", "interactive"], text = "(?i)help|support" }
    actions = [{ topic = "support.v1" }, { post = "crm" }]
    continue = false              # stop at this rule when it matches (the default)

Conditions of one table must all hold; ``all``, ``any`` and ``not`` nest tables. Rules are tried
in order, every matching rule's actions apply until one that does not ``continue``.
Every problem is reported as a ``RulesError`` naming the rule and what is wrong.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

from consumers.router.exceptions import RulesError
from schemas.view import Shape
from uplink.settings import Secret

Push = Mapping[str, Any]
Predicate = Callable[[Push], bool]


def example_rules() -> Path:
    """The example rules file shipped in this package: ``uplink dev``'s default, and a start."""
    return Path(str(resources.files(__package__).joinpath("example_rules.toml")))


RULE_HEADER = "uplink-rule"  # on every routed record: the rule that sent it
MEDIA_TYPES = ("image", "video", "audio", "document", "sticker")
# Every field a condition reads: the router reads only these of a record (schemas/view.py).
# tests/consumers/router/test_rules.py checks each condition judges this view as the decoded push.
VIEW: Shape = {
    "source": True,
    "appId": True,
    "eventType": True,
    "businessPhone": True,
    "from": {"phone": True},
    "message": {
        "type": True,
        "text": {"body": True},
        **{kind: {} for kind in MEDIA_TYPES},  # only whether it is there
        "interactive": {"button_reply": True, "list_reply": True},
        "context": {"forwarded": True, "frequently_forwarded": True},
    },
}
# Topic names Kafka accepts.
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


# --- actions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToTopic:
    topic: str

    def __str__(self) -> str:
        return f"topic:{self.topic}"


@dataclass(frozen=True)
class PostTo:
    endpoint: str

    def __str__(self) -> str:
        return f"http:{self.endpoint}"


@dataclass(frozen=True)
class Drop:
    def __str__(self) -> str:
        return "drop"


Action = ToTopic | PostTo | Drop


@dataclass(frozen=True)
class Endpoint:
    name: str
    url: str
    secret: Secret
    timeout: float = 5.0
    concurrency: int = 8


@dataclass(frozen=True)
class Output:
    """One action of one rule, with what the router needs per record computed once."""

    rule: str
    action: Action
    label: str  # the destination, for metrics: "topic:x", "http:y", "drop"
    rule_header: tuple[str, bytes]


def _output(rule: str, action: Action) -> Output:
    return Output(rule, action, str(action), (RULE_HEADER, rule.encode()))


@dataclass(frozen=True)
class Rule:
    name: str
    matches: Predicate
    actions: tuple[Action, ...]
    proceed: bool  # `continue` in the file: evaluation goes on after a match
    outputs: tuple[Output, ...] = ()

    def __post_init__(self) -> None:
        if not self.outputs:
            object.__setattr__(self, "outputs", tuple(_output(self.name, a) for a in self.actions))


class Routing(NamedTuple):
    """What happens to one push: its outputs in rule order (the default's when no rule
    matched), and the rules it matched."""

    outputs: tuple[Output, ...]
    matched: tuple[str, ...]

    @property
    def posts(self) -> bool:
        """Whether any output is an HTTP delivery."""
        return any(type(output.action) is PostTo for output in self.outputs)

    @property
    def dropped(self) -> bool:
        return all(type(output.action) is Drop for output in self.outputs)

    @property
    def pairs(self) -> list[tuple[str, Action]]:
        return [(output.rule, output.action) for output in self.outputs]


DEFAULT = "default"


@dataclass(frozen=True)
class Rules:
    rules: tuple[Rule, ...]
    default: Action
    endpoints: Mapping[str, Endpoint]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_unmatched", Routing((_output(DEFAULT, self.default),), ()))

    def route(self, push: Push) -> Routing:
        outputs: tuple[Output, ...] = ()
        matched: tuple[str, ...] = ()
        for rule in self.rules:
            if rule.matches(push):
                matched += (rule.name,)
                outputs += rule.outputs
                if not rule.proceed:
                    break
        if not matched:
            unmatched: Routing = self._unmatched  # type: ignore[attr-defined]
            return unmatched
        return Routing(outputs, matched)

    @property
    def topics(self) -> frozenset[str]:
        """Every topic a routed record may be produced to."""
        actions = [self.default, *(a for rule in self.rules for a in rule.actions)]
        return frozenset(a.topic for a in actions if isinstance(a, ToTopic))


# --- loading ---------------------------------------------------------------------------------


def load_rules(path: Path, environ: Mapping[str, str]) -> Rules:
    """Read and compile a rules file; ``environ`` supplies the endpoints' ``secret_env``."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RulesError(str(path), f"cannot read: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RulesError(str(path), f"not valid TOML: {exc}") from None
    return compile_rules(data, environ, source=str(path))


def compile_rules(data: Mapping[str, Any], environ: Mapping[str, str], source: str) -> Rules:
    _only(data, {"default", "endpoint", "rule"}, source)
    endpoints_table = data.get("endpoint", {})
    if not isinstance(endpoints_table, dict):
        raise RulesError(source, "[endpoint] must be a table of named endpoints")
    endpoints = {
        name: _endpoint(name, table, environ, f"{source}: endpoint {name!r}")
        for name, table in endpoints_table.items()
    }
    default_table = data.get("default", {"drop": True})
    default = _action(default_table, endpoints, f"{source}: [default]")
    raw_rules = data.get("rule", [])
    if not isinstance(raw_rules, list) or not all(isinstance(r, dict) for r in raw_rules):
        raise RulesError(source, "rules are [[rule]] tables")
    rules: list[Rule] = []
    names: set[str] = set()
    for number, table in enumerate(raw_rules, 1):
        name = table.get("name")
        where = f"{source}: rule #{number}"
        if not isinstance(name, str) or not name.strip():
            raise RulesError(where, "needs a name (a non-empty string)")
        where = f"{source}: rule {name!r}"
        if name in names:
            raise RulesError(where, "the name is used by an earlier rule")
        if name == DEFAULT:
            raise RulesError(where, f"{DEFAULT!r} is reserved for pushes no rule matched")
        names.add(name)
        rules.append(_rule(name, table, endpoints, where))
    return Rules(tuple(rules), default, endpoints)


def _rule(name: str, table: dict[str, Any], endpoints: dict[str, Endpoint], where: str) -> Rule:
    _only(table, {"name", "match", "actions", "continue"}, where)
    match = table.get("match")
    if not isinstance(match, dict):
        raise RulesError(where, "needs a match table (use match = {} to match every push)")
    actions = table.get("actions")
    if not isinstance(actions, list) or not actions:
        raise RulesError(where, "needs actions, a non-empty list")
    compiled = tuple(
        _action(action, endpoints, f"{where}: actions[{i}]") for i, action in enumerate(actions)
    )
    if any(isinstance(a, Drop) for a in compiled) and len(compiled) > 1:
        raise RulesError(where, "drop cannot be combined with other actions")
    proceed = table.get("continue", False)
    if not isinstance(proceed, bool):
        raise RulesError(where, "continue must be true or false")
    return Rule(name, _condition(match, f"{where}: match"), compiled, proceed)


def _action(table: Any, endpoints: dict[str, Endpoint], where: str) -> Action:
    if not isinstance(table, dict) or len(table) != 1:
        raise RulesError(
            where, 'an action is one of {topic = "..."}, {post = "..."}, {drop = true}'
        )
    [(kind, value)] = table.items()
    if kind == "topic":
        if not isinstance(value, str) or not _TOPIC.fullmatch(value):
            raise RulesError(where, f"{value!r} is not a valid Kafka topic name")
        return ToTopic(value)
    if kind == "post":
        if value not in endpoints:
            known = ", ".join(sorted(endpoints)) or "none defined"
            raise RulesError(where, f"unknown endpoint {value!r} (endpoints: {known})")
        return PostTo(value)
    if kind == "drop":
        if value is not True:
            raise RulesError(where, "drop must be true")
        return Drop()
    raise RulesError(where, f"unknown action {kind!r} (topic, post or drop)")


def _endpoint(name: str, table: Any, environ: Mapping[str, str], where: str) -> Endpoint:
    if not isinstance(table, dict):
        raise RulesError(where, "must be a table")
    _only(table, {"url", "secret_env", "secret", "timeout", "concurrency"}, where)
    url = table.get("url")
    if not isinstance(url, str) or not re.match(r"https?://[^/\s]+", url):
        raise RulesError(where, "needs url, an http:// or https:// URL")
    if ("secret_env" in table) == ("secret" in table):
        raise RulesError(where, "needs exactly one of secret_env (preferred) or secret")
    if "secret_env" in table:
        variable = table["secret_env"]
        value = environ.get(variable) if isinstance(variable, str) else None
        if not value:
            raise RulesError(where, f"secret_env: environment variable {variable!r} is not set")
    else:
        value = table["secret"]
        if not isinstance(value, str) or not value:
            raise RulesError(where, "secret must be a non-empty string")
    timeout = table.get("timeout", 5.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise RulesError(where, "timeout must be a number of seconds > 0")
    concurrency = table.get("concurrency", 8)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency <= 0:
        raise RulesError(where, "concurrency must be an integer > 0")
    return Endpoint(name, url, Secret(value), float(timeout), concurrency)


def _only(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise RulesError(
            where, f"unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})"
        )


# --- conditions ------------------------------------------------------------------------------


def _condition(table: Any, where: str) -> Predicate:
    """All of a table's conditions, each compiled once into a closure over the decoded push."""
    if not isinstance(table, dict):
        raise RulesError(where, "a condition is a table")
    predicates: list[Predicate] = []
    for key, value in table.items():
        compile_one = _CONDITIONS.get(key)
        if compile_one is None:
            allowed = ", ".join(_CONDITIONS)
            raise RulesError(where, f"unknown condition {key!r} (conditions: {allowed})")
        predicates.append(compile_one(value, f"{where}.{key}"))
    if not predicates:
        return _always
    return _all_of(predicates)


def _all_of(predicates: list[Predicate]) -> Predicate:
    # Unrolled for the usual two or three conditions: a generator per push costs more.
    if len(predicates) == 1:
        return predicates[0]
    if len(predicates) == 2:
        a, b = predicates
        return lambda push: a(push) and b(push)
    if len(predicates) == 3:
        a, b, c = predicates
        return lambda push: a(push) and b(push) and c(push)
    conditions = tuple(predicates)

    def matches(push: Push) -> bool:
        for predicate in conditions:
            if not predicate(push):
                return False
        return True

    return matches


def _always(push: Push) -> bool:
    return True


def _strings(value: Any, where: str) -> frozenset[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise RulesError(where, "must be a string or a non-empty list of strings")
    return frozenset(values)


def _field_in(*path: str) -> Callable[[Any, str], Predicate]:
    def compile_one(value: Any, where: str) -> Predicate:
        wanted = _strings(value, where)
        if len(path) == 1:
            [key] = path
            return lambda push: push.get(key) in wanted

        def matches(push: Push) -> bool:
            node: Any = push
            for key in path:
                node = node.get(key) if node is not None else None
            return node in wanted

        return matches

    return compile_one


SOURCES = ("uplink", "meta")  # push.avsc's `source`; null (records before v2) is uplink


def _source(value: Any, where: str) -> Predicate:
    wanted = _strings(value, where)
    unknown = sorted(wanted - set(SOURCES))
    if unknown:
        raise RulesError(where, f"unknown source {unknown[0]!r} (sources: {', '.join(SOURCES)})")
    return lambda push: (push.get("source") or "uplink") in wanted


def _message_type(value: Any, where: str) -> Predicate:
    wanted = _strings(value, where)

    def matches(push: Push) -> bool:
        message = push.get("message")
        return message is not None and message.get("type") in wanted

    return matches


def _from_prefix(value: Any, where: str) -> Predicate:
    prefixes = tuple(_strings(value, where))
    if not all(p.isdigit() for p in prefixes):
        raise RulesError(where, "phone prefixes are digits only, no '+'")

    def matches(push: Push) -> bool:
        sender = push.get("from")
        phone = sender.get("phone") if sender is not None else None
        return phone is not None and phone.startswith(prefixes)

    return matches


def texts(push: Push) -> list[str]:
    """The text a person typed or chose: the text body and a button or list reply (title, id)."""
    message = push.get("message")
    if message is None:
        return []
    found: list[str] = []
    text = message.get("text")
    if text is not None and text.get("body") is not None:
        found.append(text["body"])
    interactive = message.get("interactive")
    if interactive is not None:
        for kind in ("button_reply", "list_reply"):
            reply = interactive.get(kind)
            if reply is not None:
                found.extend(v for v in (reply.get("title"), reply.get("id")) if v is not None)
    return found


def _text(value: Any, where: str) -> Predicate:
    if not isinstance(value, str):
        raise RulesError(where, "must be a regular expression (a string)")
    try:
        pattern = re.compile(value)
    except re.error as exc:
        raise RulesError(where, f"invalid regular expression {value!r}: {exc}") from None
    search = pattern.search
    return lambda push: any(search(text) for text in texts(push))


def _flag(test: Predicate) -> Callable[[Any, str], Predicate]:
    def compile_one(value: Any, where: str) -> Predicate:
        if not isinstance(value, bool):
            raise RulesError(where, "must be true or false")
        if value:
            return test
        return lambda push: not test(push)

    return compile_one


def has_media(push: Push) -> bool:
    message = push.get("message")
    return message is not None and any(message.get(kind) is not None for kind in MEDIA_TYPES)


def forwarded(push: Push) -> bool:
    message = push.get("message")
    context = message.get("context") if message is not None else None
    return context is not None and bool(
        context.get("forwarded") or context.get("frequently_forwarded")
    )


def _combined(combine: Callable[[Any], bool]) -> Callable[[Any, str], Predicate]:
    def compile_one(value: Any, where: str) -> Predicate:
        if not isinstance(value, list) or not value:
            raise RulesError(where, "must be a non-empty list of condition tables")
        parts = tuple(_condition(item, f"{where}[{i}]") for i, item in enumerate(value))
        return lambda push: combine(p(push) for p in parts)

    return compile_one


def _negated(value: Any, where: str) -> Predicate:
    inner = _condition(value, where)
    return lambda push: not inner(push)


_CONDITIONS: dict[str, Callable[[Any, str], Predicate]] = {
    "source": _source,
    "appId": _field_in("appId"),
    "businessPhone": _field_in("businessPhone"),
    "eventType": _field_in("eventType"),
    "type": _message_type,
    "fromPrefix": _from_prefix,
    "text": _text,
    "hasMedia": _flag(has_media),
    "forwarded": _flag(forwarded),
    "all": _combined(all),
    "any": _combined(any),
    "not": _negated,
}
