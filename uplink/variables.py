"""Environment variables, each declared once: on the settings field it fills.

A declaration says the variable's name, its kind (how its text is parsed and whether it is a
secret), its default (the field's), which processes read it, one line of meaning and what a
valid value is. The settings classes are read from their declarations (``read``), check their
values against them (``validate``), and the configuration reference (``docs/configuration.md``,
``python -m uplink.cli.reference``) is written from them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from uplink.exceptions import ConfigError

T = TypeVar("T")

# The processes a variable can be read by: the CLI's verbs that run (``uplink dev`` runs them
# all, so it reads every variable); ``replay`` is ``uplink archive cat`` and ``replay``;
# ``console`` is the web console (``uplink console``).
PROCESSES = ("ingress", "archive", "media", "router", "topics", "replay", "console")
ALL = PROCESSES
WORKERS = ("archive", "media", "router")
INGRESS = ("ingress",)
CONSOLE = ("console",)

_DECLARED = "uplink.variable"


class Secret:
    """A string that never shows itself in reprs, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Kind:
    """How a variable's text becomes a value; ``name`` is the type the reference shows."""

    name: str
    parse: Callable[[str], Any]
    secret: bool = False


def boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true or false")


def _secrets(text: str) -> tuple[Secret, ...]:
    """Comma-separated secrets, e.g. the new app secret and the old one while rotating."""
    secrets = tuple(Secret(part.strip()) for part in text.split(",") if part.strip())
    if not secrets:
        raise ValueError("no secret in it")
    return secrets


def _hosts(text: str) -> frozenset[str]:
    return frozenset(host.strip().lower() for host in text.split(",") if host.strip())


def _header(text: str) -> tuple[str, Secret]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip() or not value.strip():
        raise ValueError("expected 'Header-Name: value'")
    return name.strip(), Secret(value.strip())


def _seconds_list(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in text.split(",") if part.strip())


def _milliseconds(text: str) -> int:
    return int(float(text) * 1000)  # operators think in seconds, the code in record time (ms)


TEXT = Kind("text", str)
UPPER = Kind("text", str.upper)  # names compared upper-case (a security protocol)
INTEGER = Kind("integer", int)
BYTES = Kind("bytes", int)
SECONDS = Kind("seconds", float)
MILLISECONDS = Kind("seconds", _milliseconds)  # read in seconds, kept in milliseconds
BOOLEAN = Kind("boolean", boolean)
PATH = Kind("path", str)
DIRECTORY = Kind("path", Path)
URL = Kind("URL", str)
BASE_URL = Kind("URL", lambda text: text.rstrip("/"))
LOCATION = Kind("path or s3:// URL", str)
HOSTS = Kind("host list", _hosts)
SECONDS_LIST = Kind("seconds list", _seconds_list)
SECRET = Kind("text", Secret, secret=True)
SECRETS = Kind("text list", _secrets, secret=True)
HEADER = Kind("header", _header, secret=True)


def positive(value: float) -> str | None:
    return None if value > 0 else f"must be > 0, got {value}"


def at_least_zero(value: float) -> str | None:
    return None if value >= 0 else "must be >= 0"


def http_url(value: str) -> str | None:
    parts = urlsplit(value)
    if parts.scheme.lower() not in {"http", "https"} or not parts.hostname:
        return f"{value!r} is not http(s)://"
    return None


@dataclass(frozen=True)
class Variable:
    """One environment variable: everything the code and the reference know of it."""

    name: str
    kind: Kind
    readers: tuple[str, ...]
    meaning: str
    default: Any = MISSING  # the field's; MISSING: required (or computed, see ``shown``)
    shown: str | None = None  # the default as the reference writes it, when not the value itself
    check: Callable[[Any], str | None] | None = None  # a problem with a value, or None
    also: tuple[str, ...] = ()  # read in this order when ``name`` is unset
    flag: str | None = None  # the command-line flag that wins over it

    @property
    def secret(self) -> bool:
        return self.kind.secret

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.also)

    def read(self, environ: Mapping[str, str]) -> Any:
        """The parsed, checked value, or None when unset (or empty); a bad value names the
        variable it came from, and shows the text unless it is a secret's."""
        for name in self.names:
            raw = environ.get(name)
            if raw is None or raw == "":
                continue
            try:
                value = self.kind.parse(raw.strip())
            except ValueError as exc:
                shown = "the value (a secret, not shown)" if self.secret else repr(raw)
                raise ConfigError(name, f"cannot parse {shown}: {exc}") from None
            self.validate(value, name)
            return value
        return None

    def validate(self, value: Any, name: str | None = None) -> None:
        """Raise a ConfigError naming ``name`` (default: the declared one) if ``value`` is
        not valid."""
        if value is None or self.check is None:
            return
        problem = self.check(value)
        if problem is not None:
            raise ConfigError(name or self.name, problem)


def variable(
    name: str,
    kind: Kind,
    readers: tuple[str, ...],
    meaning: str,
    *,
    default: Any = MISSING,
    shown: str | None = None,
    check: Callable[[Any], str | None] | None = None,
    also: tuple[str, ...] = (),
    flag: str | None = None,
) -> Any:
    """A dataclass field declared as filled by environment variable ``name``."""
    unknown = set(readers) - set(PROCESSES)
    if unknown:
        raise ValueError(f"{name}: unknown processes {sorted(unknown)}")
    declared = Variable(name, kind, readers, meaning, default, shown, check, also, flag)
    return field(default=default, metadata={_DECLARED: declared})


def declared(cls: type) -> Iterator[tuple[Field[Any], Variable]]:
    """The fields of settings class ``cls`` that a variable fills, with their declarations."""
    for each in fields(cls):
        declaration = each.metadata.get(_DECLARED)
        if declaration is not None:
            yield each, declaration


def declaration(cls: type, name: str) -> Variable:
    """The declaration of ``cls``'s field ``name``."""
    for each, declared_by in declared(cls):
        if each.name == name:
            return declared_by
    raise KeyError(f"{cls.__name__}.{name} is not filled by a variable")


def read(
    cls: type[T],
    environ: Mapping[str, str],
    *,
    defaults: Mapping[str, Any] | None = None,
    given: Mapping[str, Any] | None = None,
    explicit: Mapping[str, Any] | None = None,
) -> T:
    """``cls`` from its declared variables in ``environ``. ``defaults`` replace the fields' own
    (a worker's commit policy); what the environment sets wins over them; ``given`` (values
    the caller built, such as nested settings; None: none) and then ``explicit`` (command-line
    flags and keyword arguments; None: not given) win over the environment."""
    values: dict[str, Any] = dict(defaults or {})
    for each, declared_by in declared(cls):
        value = declared_by.read(environ)
        if value is not None:
            values[each.name] = value
    for overriding in (given or {}, explicit or {}):
        values.update({k: v for k, v in overriding.items() if v is not None})
    return cls(**values)


def validate(settings: Any) -> None:
    """Check every declared field of ``settings`` (a dataclass instance) against its
    declaration; called from ``__post_init__``, so explicit values are checked too."""
    for each, declared_by in declared(type(settings)):
        declared_by.validate(getattr(settings, each.name))
