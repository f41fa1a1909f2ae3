"""Resolve what a study file refers to: ``"module:function"`` factories and relative paths.

Both ``[data]`` and ``[model]`` accept ``factory = "module:function"``; the module is looked up
next to the study file first (its folder goes on ``sys.path``), so a user can keep a
``my_models.py`` beside ``study.toml`` without packaging it. The folder stays on ``sys.path``
so that objects defined there can still be pickled by reference later in the process.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mc_engine.errors import UserInputError


def table_checker(spec: object, table: str, keys: tuple[str, ...], example: str,
                  source: str | None) -> Callable[[str, str], UserInputError]:
    """Check that a study-file table is a table with known keys; return its error maker.

    The returned ``fail(key, message)`` builds the one-line error for ``<table>.<key>``.
    """
    def fail(key: str, message: str) -> UserInputError:
        return UserInputError(message, source=source, key=f"{table}.{key}" if key else table)

    if not isinstance(spec, Mapping):
        raise fail("", f"expected a table such as [{table}] {example}, got {spec!r}")
    unknown = sorted(set(spec) - set(keys))
    if unknown:
        raise fail(unknown[0], f"unknown key; allowed: {', '.join(keys)}")
    return fail


def import_factory(ref: object, base_dir: Path, source: str | None, key: str,
                   kind: str = "function") -> Callable[..., Any]:
    """The callable named by ``ref`` ("module:function", dotted names allowed on both sides;
    ``kind`` names what is expected in messages: "module:Class")."""
    if not isinstance(ref, str) or ref.count(":") != 1:
        raise UserInputError(f"expected 'module:{kind}', got {ref!r}", source=source, key=key)
    module_name, attr_path = ref.split(":")
    if not module_name or not attr_path:
        raise UserInputError(f"expected 'module:{kind}', got {ref!r}", source=source, key=key)
    folder = str(Path(base_dir).resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    importlib.invalidate_caches()
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # any failure inside user code is a user input error
        raise UserInputError(
            f"cannot import module {module_name!r} ({type(exc).__name__}: {one_line(exc)}); "
            f"modules are looked up in {folder} and on the Python path",
            source=source, key=key) from exc
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise UserInputError(f"module {module_name!r} has no attribute {attr_path!r}",
                                 source=source, key=key)
        obj = getattr(obj, part)
    if not callable(obj):
        raise UserInputError(f"{ref!r} is not callable (it is a {type(obj).__name__})",
                             source=source, key=key)
    return obj


def call_factory(fn: Callable[..., Any], ref: str, source: str | None, key: str,
                 **kwargs: Any) -> Any:
    """Call a user factory (with no arguments unless given); its exceptions become one-line
    input errors."""
    try:
        return fn(**kwargs)
    except Exception as exc:  # any failure inside user code is a user input error
        raise UserInputError(f"{ref!r} raised {type(exc).__name__}: {one_line(exc)}",
                             source=source, key=key) from exc


def resolve_path(value: str, base_dir: Path) -> Path:
    """A path from a study file: relative paths are relative to the study file's folder."""
    path = Path(value)
    return path if path.is_absolute() else Path(base_dir) / path


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message squeezed onto one line (error messages must be one line)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
