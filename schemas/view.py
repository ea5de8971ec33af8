"""A view of chosen fields of an Avro datum, read without decoding the rest.

The router's rules read a dozen fields of a push (type, sender, text, a few flags); fastavro
decodes all of its ~150 fields into dicts for them, ~14 µs a record and the router's largest
cost. A push is mostly nulls, so walking the datum and stepping over what is not wanted is
several times cheaper: a run of null fields is one byte comparison.

A *shape* says what to read: a record's shape is a dict of field name → ``True`` (the field's
whole value, decoded) or a nested shape (a record field read as a view; ``{}`` reads only whether
it is there). The view has the datum's layout with only the shape's fields, so code written for
the decoded record (``push.get("message")``) reads it the same. Reading stops after the last
field the shape names: the rest of the datum is not checked.

Supported: the types push.avsc uses — null, boolean, int, long, string, bytes, records, arrays
and unions of null with one other type; a shape naming a missing field fails when compiled.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Union

from schemas.exceptions import CorruptRecord
from schemas.head import _long_at

Shape = Mapping[str, Union[bool, "Shape"]]
Skip = Callable[[bytes, int], int]
Read = Callable[[bytes, int], tuple[Any, int]]


def _skip_long(data: bytes, pos: int) -> int:
    while data[pos] & 0x80:
        pos += 1
    return pos + 1


def _skip_sized(data: bytes, pos: int) -> int:
    size = data[pos]
    if size < 0x80 and not size & 1:  # the common case: a length under 64, one byte
        return pos + 1 + (size >> 1)
    size, pos = _long_at(data, pos)
    if size < 0:
        raise CorruptRecord("negative length")
    return pos + size


def _skip_boolean(data: bytes, pos: int) -> int:
    return pos + 1


def _skip_null(data: bytes, pos: int) -> int:
    return pos


def _read_long(data: bytes, pos: int) -> tuple[Any, int]:
    return _long_at(data, pos)


def _read_bytes(data: bytes, pos: int) -> tuple[Any, int]:
    size, pos = _long_at(data, pos)
    end = pos + size
    if size < 0 or end > len(data):
        raise CorruptRecord("a value runs past the datum")
    return data[pos:end], end


def _read_string(data: bytes, pos: int) -> tuple[Any, int]:
    value, end = _read_bytes(data, pos)
    return value.decode(), end


def _read_boolean(data: bytes, pos: int) -> tuple[Any, int]:
    return data[pos] == 1, pos + 1


def _read_null(data: bytes, pos: int) -> tuple[Any, int]:
    return None, pos


_SKIPS: dict[str, Skip] = {
    "null": _skip_null,
    "boolean": _skip_boolean,
    "int": _skip_long,
    "long": _skip_long,
    "string": _skip_sized,
    "bytes": _skip_sized,
}
_READS: dict[str, Read] = {
    "null": _read_null,
    "boolean": _read_boolean,
    "int": _read_long,
    "long": _read_long,
    "string": _read_string,
    "bytes": _read_bytes,
}


def _block(data: bytes, pos: int) -> tuple[int, int]:
    """An array block's item count; every item of the types supported takes a byte at least,
    so a count beyond the datum's length is corrupt (and would loop for long)."""
    count, pos = _long_at(data, pos)
    if abs(count) > len(data):
        raise CorruptRecord(f"an array block of {count} items in a datum of {len(data)} bytes")
    return count, pos


def _nullable(branches: list[Any]) -> Any:
    """T of a ``["null", T]`` union (the only unions supported)."""
    if len(branches) != 2 or branches[0] != "null":
        raise ValueError(f"only [null, T] unions are supported, got {branches!r}")
    return branches[1]


class _Compiler:
    def __init__(self) -> None:
        self._records: dict[str, dict[str, Any]] = {}

    def collect(self, schema: Any) -> None:
        """Remember every record definition (each is written out once, where first used)."""
        if isinstance(schema, list):
            for branch in schema:
                self.collect(branch)
        elif isinstance(schema, dict):
            if schema.get("type") == "record":
                self._records.setdefault(schema["name"], schema)
                for field in schema["fields"]:
                    self.collect(field["type"])
            elif schema.get("type") == "array":
                self.collect(schema["items"])

    def _resolve(self, schema: Any) -> Any:
        if isinstance(schema, str) and schema not in _SKIPS:
            try:
                return self._records[schema.rpartition(".")[2]]
            except KeyError:
                raise ValueError(f"unknown named type {schema!r}") from None
        return schema

    def _kind(self, schema: Any) -> str:
        if isinstance(schema, str):
            return schema
        if isinstance(schema, list):
            return "union"
        kind = schema["type"]
        if not isinstance(kind, str) or kind not in (*_SKIPS, "record", "array"):
            raise ValueError(f"unsupported Avro type {kind!r}")
        return kind

    # --- skipping ----------------------------------------------------------------------------

    def skip(self, schema: Any) -> Skip:
        schema = self._resolve(schema)
        kind = self._kind(schema)
        if kind in _SKIPS:
            return _SKIPS[kind]
        if kind == "union":
            return self._skip_union(self.skip(_nullable(schema)))
        if kind == "array":
            return self._skip_array(self.skip(schema["items"]))
        # A record, skipped whole: a run of nullable fields that are all null is one comparison.
        steps = self._steps(schema, {}, whole=True)
        walk = _walk
        return lambda data, pos: walk(steps, data, pos, None)[1]

    @staticmethod
    def _skip_union(other: Skip) -> Skip:
        def skip(data: bytes, pos: int) -> int:
            branch = data[pos]
            if branch == 0:
                return pos + 1
            if branch == 2:
                return other(data, pos + 1)
            raise CorruptRecord(f"no union branch {branch}")

        return skip

    @staticmethod
    def _skip_array(item: Skip) -> Skip:
        def skip(data: bytes, pos: int) -> int:
            while True:
                count, pos = _block(data, pos)
                if count == 0:
                    return pos
                if count < 0:  # a block that gives its size in bytes: jump over it
                    size, pos = _long_at(data, pos)
                    if size < 0:
                        raise CorruptRecord("negative block size")
                    pos += size
                    continue
                for _ in range(count):
                    pos = item(data, pos)

        return skip

    # --- reading -----------------------------------------------------------------------------

    def read(self, schema: Any, shape: Shape | bool, *, whole: bool = True) -> Read:
        """``whole=False`` (the outermost record only) stops after the last field in ``shape``."""
        schema = self._resolve(schema)
        kind = self._kind(schema)
        if kind == "union":
            return self._read_union(self.read(_nullable(schema), shape))
        if shape is True:
            return self._read_whole(schema, kind)
        if kind != "record" or not isinstance(shape, Mapping):
            raise ValueError(f"a shape {shape!r} for a {kind}")
        steps = self._steps(schema, shape, whole=whole)
        walk = _walk
        return lambda data, pos: walk(steps, data, pos, {})

    def _read_whole(self, schema: Any, kind: str) -> Read:
        if kind in _READS:
            return _READS[kind]
        if kind == "array":
            return self._read_array(self.read(schema["items"], True))
        return self.read(schema, {f["name"]: True for f in schema["fields"]})

    @staticmethod
    def _read_union(other: Read) -> Read:
        def read(data: bytes, pos: int) -> tuple[Any, int]:
            branch = data[pos]
            if branch == 0:
                return None, pos + 1
            if branch == 2:
                return other(data, pos + 1)
            raise CorruptRecord(f"no union branch {branch}")

        return read

    @staticmethod
    def _read_array(item: Read) -> Read:
        def read(data: bytes, pos: int) -> tuple[Any, int]:
            items: list[Any] = []
            while True:
                count, pos = _block(data, pos)
                if count == 0:
                    return items, pos
                if count < 0:
                    count = -count
                    pos = _skip_long(data, pos)  # the block's size in bytes: not needed
                for _ in range(count):
                    value, pos = item(data, pos)
                    items.append(value)

        return read

    # --- records -----------------------------------------------------------------------------

    def _steps(
        self, schema: dict[str, Any], shape: Shape, *, whole: bool
    ) -> list[tuple[str | None, Any]]:
        """The record's fields (``whole``) or those up to the last one ``shape`` names, as
        steps: (name, read) for a field the view holds, (None, skip) for one it steps over, and
        (None, (nulls, skips)) for a run of nullable fields stepped over (one comparison with
        ``nulls`` when all are null)."""
        fields = schema["fields"]
        names = [f["name"] for f in fields]
        missing = set(shape) - set(names)
        if missing:
            raise ValueError(f"{schema['name']} has no field {sorted(missing)}")
        last = len(names) - 1 if whole else max(names.index(name) for name in shape)
        steps: list[tuple[str | None, Any]] = []
        run: list[Skip] = []

        def close_run() -> None:
            if len(run) > 1:
                steps.append((None, (bytes(len(run)), tuple(run))))
            elif run:
                steps.append((None, run[0]))
            run.clear()

        for field in fields[: last + 1]:
            name, kind = field["name"], field["type"]
            if name in shape:
                close_run()
                steps.append((name, self.read(kind, shape[name])))
            elif isinstance(kind, list):
                run.append(self.skip(kind))
            else:
                close_run()
                steps.append((None, self.skip(kind)))
        close_run()
        return steps


def _walk(
    steps: list[tuple[str | None, Any]], data: bytes, pos: int, view: dict[str, Any] | None
) -> tuple[Any, int]:
    for name, step in steps:
        if name is not None:
            view[name], pos = step(data, pos)  # type: ignore[index]
        elif type(step) is tuple:
            nulls, skips = step
            if data.startswith(nulls, pos):
                pos += len(nulls)
            else:
                for skip in skips:
                    pos = skip(data, pos)
        else:
            pos = step(data, pos)
    return view, pos


def compile_view(schema: dict[str, Any], shape: Shape) -> Callable[[bytes, int], dict[str, Any]]:
    """A function (datum bytes, offset of the datum) → the view of ``shape``, for a plain
    (unparsed) JSON record schema; raises CorruptRecord for a datum it cannot walk."""
    if not shape:
        raise ValueError("an empty shape: nothing to read")
    compiler = _Compiler()
    compiler.collect(schema)
    read = compiler.read(schema, shape, whole=False)

    def view(data: bytes, pos: int) -> dict[str, Any]:
        try:
            value, end = read(data, pos)
        except (IndexError, UnicodeDecodeError) as exc:
            raise CorruptRecord(f"undecodable datum: {exc!r}") from exc
        if end > len(data):
            raise CorruptRecord("the datum ends before its fields do")
        return value  # type: ignore[no-any-return]

    return view
