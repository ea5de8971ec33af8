"""A request body as JSON: loaded leniently, and named by kind in the reasons a body is refused."""

from __future__ import annotations

import json
import re
from typing import Any, Final

import orjson

from schemas.exceptions import NotAPush

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
JSON_KINDS: Final[dict[type, str]] = {
    dict: "object",
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def load_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        strict_error = error
    # Rare path. orjson refuses a few bodies that are still JSON (RFC 8259): a leading UTF-8
    # BOM, escaped lone surrogates ("\ud800"), numbers beyond a double. Those are quirks, not
    # reasons to reject a push, so retry with the standard library before giving up.
    if not raw.strip(b" \t\r\n"):
        raise NotAPush("body is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise NotAPush(f"body is not valid UTF-8 (byte {error.start})") from None
    try:
        value = json.loads(text.removeprefix("\ufeff"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise NotAPush(f"body is not JSON: {strict_error}") from None
    return _replace_lone_surrogates(value)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _replace_lone_surrogates(root: Any) -> Any:
    """Make every string UTF-8 encodable (Avro strings are UTF-8); iterative, so depth is free."""

    def fix(text: str) -> str:
        return _LONE_SURROGATE.sub("\ufffd", text)

    if type(root) is str:
        return fix(root)
    pending = [root]
    while pending:
        node = pending.pop()
        if type(node) is dict:
            if any(_LONE_SURROGATE.search(key) for key in node):
                items = list(node.items())
                node.clear()
                node.update((fix(key), value) for key, value in items)
            for key, value in node.items():
                if type(value) is str:
                    node[key] = fix(value)
                elif type(value) in (dict, list):
                    pending.append(value)
        elif type(node) is list:
            for index, value in enumerate(node):
                if type(value) is str:
                    node[index] = fix(value)
                elif type(value) in (dict, list):
                    pending.append(value)
    return root
