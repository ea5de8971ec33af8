"""A view of chosen fields of an Avro datum, read without decoding the rest.

The router's rules read a dozen fields of a push (type, sender, text, a few flags); fastavro
decodes all of its fields into dicts for them, the router's largest cost. A push is mostly nulls,
so walking the datum and stepping over what is not wanted is several times cheaper — if the walk
is straight-line code, since calls would cost more than the walk: so the reader is generated once
per shape as Python source (the way fastavro and attrs compile theirs), and a run of null fields
is one byte comparison. Figures: bench/RESULTS.md, "Codec paths".

A *shape* says what to read: a record's shape is a dict of field name → ``True`` (the field's
whole value, decoded) or a nested shape (a record field read as a view; ``{}`` reads only whether
it is there). The view has the datum's layout with only the shape's fields, so code written for
the decoded record (``push.get("message")``) reads it the same. Reading stops after the last
field the shape names: the rest of the datum is not checked.

Supported: the types push.avsc uses — null, boolean, int, long, string, bytes, records, arrays
(of types that take a byte at least) and unions of null with one other type; anything else,
or a shape naming a missing field, fails when the view is compiled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Union

from schemas.compiler import Array, Nullable, Primitive, Record, Type, resolve
from schemas.exceptions import CorruptRecord

Shape = Mapping[str, Union[bool, "Shape"]]


def _long_at(data: bytes, pos: int) -> tuple[int, int]:
    """Avro's zig-zag varint at ``pos``: (value, position after it)."""
    byte = data[pos]
    pos += 1
    if byte < 0x80:
        return (byte >> 1) ^ -(byte & 1), pos
    result, shift = byte & 0x7F, 7
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise CorruptRecord("varint longer than 10 bytes")


def _size(data: bytes, pos: int) -> tuple[int, int]:
    """A length (a long past its one-byte form): (length, position after it)."""
    size, pos = _long_at(data, pos)
    if size < 0:
        raise CorruptRecord("negative length")
    return size, pos


def _count(data: bytes, pos: int) -> tuple[int, int]:
    """An array block's item count (negative: its byte size follows, skipped here). Every item
    takes a byte at least, so a count beyond the datum is corrupt (and would loop for long)."""
    count, pos = _long_at(data, pos)
    if count < 0:
        count = -count
        pos = _size(data, pos)[1]
    if count > len(data):
        raise CorruptRecord(f"an array block of {count} items in a datum of {len(data)} bytes")
    return count, pos


def _no_branch(branch: int) -> CorruptRecord:
    return CorruptRecord(f"no union branch {branch}")


def _branch_bytes(node: Nullable) -> tuple[int, int]:
    """The bytes a union's branch index is written as (zig-zag): (null's, the other's)."""
    return (0, 2) if node.null_index == 0 else (2, 0)


def _null_first(node: Type) -> bool:
    return isinstance(node, Nullable) and node.null_index == 0


def _kind(node: Type) -> str:
    return node.name if isinstance(node, Primitive) else type(node).__name__.lower()


class _Source:
    """Python source being written, with fresh local names."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._depth = 1
        self._names = 0
        self.constants: dict[str, Any] = {}

    def __call__(self, line: str) -> None:
        self.lines.append("    " * self._depth + line)

    @contextmanager
    def block(self, header: str) -> Iterator[None]:
        self(header)
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1

    def name(self, prefix: str) -> str:
        self._names += 1
        return f"{prefix}{self._names}"

    def constant(self, value: Any) -> str:
        name = self.name("K")
        self.constants[name] = value
        return name


class _ViewCode:
    """Writes a view's reading code, walking the schema's type tree (schemas/compiler.py)."""

    def __init__(self) -> None:
        self.out = _Source()

    # --- reading: code that leaves the value in `target` and moves `pos` past it -------------

    def read(self, node: Type, shape: Shape | bool, target: str, *, whole: bool = True) -> None:
        out = self.out
        if isinstance(node, Nullable):
            null, other = _branch_bytes(node)
            out("b = data[pos]")
            with out.block(f"if b == {null}:"):
                out(f"{target} = None")
                out("pos += 1")
            with out.block(f"elif b == {other}:"):
                out("pos += 1")
                self.read(node.type, shape, target)
            with out.block("else:"):
                out("raise _no_branch(b)")
            return
        if shape is not True and (not isinstance(node, Record) or not isinstance(shape, Mapping)):
            raise ValueError(f"a shape {shape!r} for a {_kind(node)}")
        if isinstance(node, Record):
            if shape is True:
                shape = {field.name: True for field in node.fields}
            assert isinstance(shape, Mapping)
            self._record(node, shape, target, whole=whole)
            return
        if isinstance(node, Array):
            items, item = out.name("items"), out.name("item")
            out(f"{items} = []")
            array = node

            def one() -> None:
                self.read(array.items, True, item)
                out(f"{items}.append({item})")

            self._blocks(one)
            out(f"{target} = {items}")
            return
        kind = node.name
        if kind in ("string", "bytes"):
            out("n = data[pos]")
            with out.block("if n < 0x80 and not n & 1:"):
                out("pos += 1")
                out("n >>= 1")
            with out.block("else:"):
                out("n, pos = _size(data, pos)")
            value = "data[pos:pos + n]"
            out(f"{target} = {value}.decode()" if kind == "string" else f"{target} = {value}")
            out("pos += n")
        elif kind in ("int", "long"):
            out("n = data[pos]")
            with out.block("if n < 0x80:"):
                out(f"{target} = (n >> 1) ^ -(n & 1)")
                out("pos += 1")
            with out.block("else:"):
                out(f"{target}, pos = _long_at(data, pos)")
        elif kind == "boolean":
            out(f"{target} = data[pos] == 1")
            out("pos += 1")
        else:  # null
            out(f"{target} = None")

    def _record(
        self, record: Record, shape: Mapping[str, Any], target: str, *, whole: bool
    ) -> None:
        out = self.out
        fields = record.fields
        names = [field.name for field in fields]
        missing = sorted(set(shape) - set(names))
        if missing:
            raise ValueError(f"{record.name} has no field {missing}")
        last = len(fields) if whole or not shape else max(map(names.index, shape)) + 1
        view = out.name("view")
        out(f"{view} = {{}}")
        run: list[Type] = []  # fields stepped over together: a zero byte each when null
        for field in fields[:last]:
            name, kind = field.name, field.type
            if name not in shape and _null_first(kind):
                run.append(kind)
                continue
            self._skip_run(run)
            if name in shape:
                self.read(kind, shape[name], f"{view}[{name!r}]")
            else:
                self.skip(kind)
        self._skip_run(run)
        out(f"{target} = {view}")

    # --- skipping: code that moves `pos` past a value ----------------------------------------

    def skip(self, node: Type) -> None:
        out = self.out
        if isinstance(node, Nullable):
            null, other = _branch_bytes(node)
            out("b = data[pos]")
            with out.block(f"if b == {null}:"):
                out("pos += 1")
            with out.block(f"elif b == {other}:"):
                out("pos += 1")
                self.skip(node.type)
            with out.block("else:"):
                out("raise _no_branch(b)")
            return
        if isinstance(node, Record):
            run: list[Type] = []
            for field in node.fields:
                if _null_first(field.type):
                    run.append(field.type)
                else:
                    self._skip_run(run)
                    self.skip(field.type)
            self._skip_run(run)
            return
        if isinstance(node, Array):
            items = node.items
            self._blocks(lambda: self.skip(items))
            return
        kind = node.name
        if kind in ("string", "bytes"):
            out("n = data[pos]")
            with out.block("if n < 0x80 and not n & 1:"):
                out("pos += 1 + (n >> 1)")
            with out.block("else:"):
                out("n, pos = _size(data, pos)")
                out("pos += n")
        elif kind in ("int", "long"):
            with out.block("while data[pos] & 0x80:"):
                out("pos += 1")
            out("pos += 1")
        elif kind == "boolean":
            out("pos += 1")

    def _skip_run(self, run: list[Type]) -> None:
        """Step over nullable fields: when all are null, their bytes are zeros."""
        out = self.out
        if len(run) > 1:
            with out.block(f"if data.startswith({out.constant(bytes(len(run)))}, pos):"):
                out(f"pos += {len(run)}")
            with out.block("else:"):
                for kind in run:
                    self.skip(kind)
        elif run:
            self.skip(run[0])
        run.clear()

    def _blocks(self, item: Callable[[], Any]) -> None:
        """An array's blocks, ``item`` writing the code for one item."""
        out = self.out
        count = out.name("count")
        with out.block("while True:"):
            out(f"{count}, pos = _count(data, pos)")
            with out.block(f"if {count} == 0:"):
                out("break")
            with out.block(f"for _ in range({count}):"):
                item()


def compile_view(schema: dict[str, Any], shape: Shape) -> Callable[[bytes, int], dict[str, Any]]:
    """A function (datum bytes, offset of the datum) → the view of ``shape``, for a plain
    (unparsed) JSON record schema; raises CorruptRecord for a datum it cannot walk."""
    if not shape:
        raise ValueError("an empty shape: nothing to read")
    code = _ViewCode()
    code.read(resolve(schema), shape, "result", whole=False)
    source = "\n".join(["def read(data, pos):", *code.out.lines, "    return result, pos"])
    namespace: dict[str, Any] = {
        "_long_at": _long_at,
        "_size": _size,
        "_count": _count,
        "_no_branch": _no_branch,
        **code.out.constants,
    }
    exec(compile(source, f"<view of {schema.get('name', 'record')}>", "exec"), namespace)
    read: Callable[[bytes, int], tuple[dict[str, Any], int]] = namespace["read"]

    def view(data: bytes, pos: int) -> dict[str, Any]:
        try:
            value, end = read(data, pos)
        except (IndexError, UnicodeDecodeError) as exc:
            raise CorruptRecord(f"undecodable datum: {exc!r}") from exc
        if end > len(data):
            raise CorruptRecord("the datum ends before its fields do")
        return value

    return view
