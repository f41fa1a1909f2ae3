"""Resolve what a study file refers to: ``"module:function"`` factories and relative paths.

Both ``[data]`` and ``[model]`` accept ``factory = "module:function"``; the module is looked up
next to the study file first (its folder goes on ``sys.path``), so a user can keep a
``my_models.py`` beside ``study.toml`` without packaging it. The folder stays on ``sys.path``
so that objects defined there can still be pickled by reference later in the process.
"""

from __future__ import annotations

import importlib
import io
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

from mc_engine.errors import UserInputError, did_you_mean


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
        raise fail(unknown[0], f"unknown key{did_you_mean(unknown[0], keys)}; allowed: "
                               f"{', '.join(keys)}")
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
        with _isolated(module_name):
            obj: Any = importlib.import_module(module_name)
    except _Exited as exc:
        raise UserInputError(f"importing module {module_name!r} called {exc}; a module named "
                             f"in a study file must not exit", source=source, key=key) from None
    except KeyboardInterrupt as exc:
        from mc_engine.signals import STOP
        if STOP.requested or type(exc) is not KeyboardInterrupt:
            raise                     # a real Ctrl-C or SIGTERM while importing
        raise UserInputError(f"importing module {module_name!r} raised KeyboardInterrupt "
                             f"itself (not a Ctrl-C); a module named in a study file must not",
                             source=source, key=key) from None
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
        with _isolated(ref):
            return fn(**kwargs)
    except _Exited as exc:
        raise UserInputError(f"{ref!r} called {exc} instead of returning", source=source,
                             key=key) from None
    except Exception as exc:  # any failure inside user code is a user input error
        raise UserInputError(f"{ref!r} raised {type(exc).__name__}: {one_line(exc)}",
                             source=source, key=key) from exc


class _Exited(Exception):
    """User code called ``sys.exit``; ``str()`` says how."""


@contextmanager
def _isolated(name: str) -> Iterator[None]:
    """Run user code apart from mc-engine's own command line and exit.

    The code sees ``sys.argv == [name]`` (a module that parses arguments at import finds none
    of mc-engine's), and its ``sys.exit`` (SystemExit, argparse's usage errors included)
    becomes an error here, quoting the last line the code printed, instead of ending mc-engine
    with the user code's status. What the code prints is passed on unless it exits.
    """
    saved = sys.argv
    sys.argv = [name]
    out, err = io.StringIO(), io.StringIO()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            yield
    except SystemExit as exc:
        said = [line for line in (err.getvalue() + out.getvalue()).splitlines() if line.strip()]
        last = f" after printing {one_line(Exception(said[-1]), 150)!r}" if said else ""
        raise _Exited(f"sys.exit({exc.code!r}){last}") from None
    finally:
        sys.argv = saved
    sys.stdout.write(out.getvalue())
    sys.stderr.write(err.getvalue())


def resolve_path(value: str, base_dir: Path) -> Path:
    """A path from a study file: relative paths are relative to the study file's folder."""
    path = Path(value)
    return path if path.is_absolute() else Path(base_dir) / path


def existing_file(value: str, base_dir: Path, fail: Callable[[str, str], UserInputError],
                  key: str, what: str) -> Path:
    """The file a study names at ``key`` (relative to its folder), which must exist and be a
    file: an empty string or a folder is refused by name."""
    if not value.strip():
        raise fail(key, f"empty path; expected {what}")
    path = resolve_path(value, base_dir)
    if path.is_dir():
        raise fail(key, f"{path} is a directory; expected {what}")
    if not path.is_file():
        raise fail(key, f"file {path} does not exist")
    return path


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message squeezed onto one line (error messages must be one line)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
