"""Writing the resolved study back as TOML (the standard library reads TOML but cannot write it).

Only what a study holds is supported: tables of strings, booleans, numbers (inf included), lists of
those and inline tables. ``tomllib.loads(dumps(doc)) == doc`` for such documents.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def dumps(tables: Mapping[str, Mapping[str, Any]], header: str = "",
          table_arrays: Mapping[str, list[Mapping[str, Any]]] | None = None) -> str:
    """TOML text for ``{table name: {key: value}}`` plus arrays of tables (``[[name]]``)."""
    lines = [f"# {_printable(line)}" if line else "#" for line in header.splitlines()]
    for name, table in tables.items():
        lines += ["", f"[{name}]"] + [f"{_key(k)} = {_value(v)}" for k, v in table.items()]
    for name, items in (table_arrays or {}).items():
        for table in items:
            lines += ["", f"[[{name}]]"] + [f"{_key(k)} = {_value(v)}" for k, v in table.items()]
    return "\n".join(lines).lstrip("\n") + "\n"


def _printable(text: str) -> str:
    """``text`` with every character a TOML comment cannot hold (control characters, and the
    lone surrogates that stand for undecodable bytes of a file name) as a Python escape."""
    return "".join(c if c.isprintable() or c == "\t" else ascii(c)[1:-1] for c in text)


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _string(text: str) -> str:
    """A TOML basic string: JSON escapes every control character TOML forbids raw except DEL."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
