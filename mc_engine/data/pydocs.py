"""The embedded text corpus ``pydocs``: the docstrings of Python's own standard library.

A language-model example needs text that every machine has without a download: the docstrings
of a fixed list of pure-Python standard-library modules, read from their source files with
:mod:`ast` (nothing is imported, so no module's import-time side effects run), in source order
(module, then each class and function as it appears). The same Python minor version ships the
same sources, so every machine with it builds the same corpus; the version is recorded with the
data (``Dataset.version``, part of the data fingerprint). Whole modules go to one split: every
fifth module of the sorted list is held out as the test split, the rest train, so no test text
was seen in training.

Characters are tokens: a character's code point when it is ASCII (0–127, ``VOCAB`` tokens),
``?`` otherwise. A split's modules are joined, separated by a blank line, and cut into
non-overlapping windows of ``seq_len + 1`` characters: the model reads ``seq_len`` characters
and predicts the next one at each of them. The token streams are cached (``pydocs-py3.X.npz``
in the results' ``.cache``) so that later loads skip the parsing.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mc_engine.fileio import atomic_write

#: Pure-Python modules of the standard library (3.10 to 3.13), sorted; a package contributes
#: its ``__init__.py``. A module the installation lacks is skipped.
MODULES = (
    "abc", "argparse", "ast", "base64", "bdb", "bisect", "calendar", "cmd", "code", "codecs",
    "collections", "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime",
    "difflib", "doctest", "enum", "fileinput", "fnmatch", "fractions", "ftplib", "functools",
    "getopt", "gettext", "glob", "gzip", "heapq", "hmac", "html", "imaplib", "inspect",
    "ipaddress", "json", "locale", "logging", "mailbox", "mimetypes", "numbers", "operator",
    "optparse", "pathlib", "pdb", "pickle", "pickletools", "pkgutil", "platform", "pprint",
    "pydoc", "queue", "random", "re", "sched", "secrets", "selectors", "shlex", "shutil",
    "smtplib", "socket", "socketserver", "statistics", "string", "subprocess", "tarfile",
    "tempfile", "textwrap", "threading", "timeit", "tokenize", "traceback", "types", "typing",
    "uuid", "warnings", "weakref", "zipfile")
#: Every TEST_EVERY-th module of MODULES (the 5th, 10th, ...) is in the test split.
TEST_EVERY = 5
#: Tokens: ASCII code points; anything else becomes ``?``.
VOCAB = 128
UNKNOWN = ord("?")
DEFAULT_SEQ_LEN = 64
_DEFINITIONS = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def python_version() -> str:
    """The minor version whose sources make the corpus ("3.11")."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def split_of(index: int) -> str:
    """The split of the ``index``-th module of :data:`MODULES`."""
    return "test" if index % TEST_EVERY == TEST_EVERY - 1 else "train"


def module_source(name: str) -> Path | None:
    """The source file of a standard-library module (its package's ``__init__.py``), or None
    when this installation lacks it; found by path, without importing anything."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in (stdlib / f"{name}.py", stdlib / name / "__init__.py"):
        if path.is_file():
            return path
    return None


def docstrings(source: str) -> Iterator[str]:
    """The docstrings of a module's source, in source order (cleaned as ``inspect.cleandoc``)."""
    def visit(node: ast.AST) -> Iterator[str]:
        if isinstance(node, _DEFINITIONS):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                yield doc
        for child in ast.iter_child_nodes(node):
            yield from visit(child)

    yield from visit(ast.parse(source))


def module_text(name: str) -> str | None:
    """The docstrings of one module joined by blank lines (None: no such module here)."""
    path = module_source(name)
    if path is None:
        return None
    return "\n\n".join(docstrings(path.read_text(encoding="utf-8")))


def encode(text: str) -> np.ndarray:
    """Character tokens of ``text``: ASCII code points, ``?`` for every other character."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    return np.where(codes < VOCAB, codes, UNKNOWN).astype(np.uint8)


def decode(tokens: np.ndarray) -> str:
    """The text of character tokens (for looking at samples)."""
    return bytes(np.asarray(tokens, dtype=np.uint8)).decode("ascii")


@functools.cache
def streams() -> dict[str, np.ndarray]:
    """The train and test token streams, each its split's modules joined by a blank line (built
    once per process; callers copy what they keep)."""
    texts: dict[str, list[str]] = {"train": [], "test": []}
    for index, name in enumerate(MODULES):
        text = module_text(name)
        if text:
            texts[split_of(index)].append(text)
    return {split: encode("\n\n".join(parts)) for split, parts in texts.items()}


def _cache_key() -> str:
    """What the cached streams were built from: the Python version and the module list."""
    return hashlib.sha256(f"{sys.version}|{MODULES}|{TEST_EVERY}".encode()).hexdigest()


def cached_streams(cache_dir: Path | None) -> dict[str, np.ndarray]:
    """:func:`streams`, read from ``cache_dir/pydocs-py3.X.npz`` when it holds this Python's
    corpus (else built and written there; ``cache_dir`` None: built, not cached)."""
    if cache_dir is None:
        return streams()
    file = Path(cache_dir) / f"pydocs-py{python_version()}.npz"
    try:
        with np.load(file, allow_pickle=False) as npz:
            if str(npz["key"]) == _cache_key():
                return {"train": npz["train"], "test": npz["test"]}
    except (OSError, KeyError, ValueError):
        pass                                  # absent, unreadable or stale: rebuild
    built = streams()
    Path(cache_dir).mkdir(parents=True, exist_ok=True)

    def write(temp: Path) -> None:
        with open(temp, "wb") as handle:
            np.savez(handle, key=np.array(_cache_key()), **built)

    atomic_write(file, write)
    return built


def pydocs_tokens(split: str, seq_len: int = DEFAULT_SEQ_LEN,
                  cache_dir: Path | None = None) -> np.ndarray:
    """The ``split`` ("train" or "test") as int64 windows of ``seq_len + 1`` characters
    (N × (seq_len + 1)); the last partial window is dropped."""
    stream = cached_streams(cache_dir)[split]
    n = len(stream) // (seq_len + 1)
    return stream[:n * (seq_len + 1)].reshape(n, seq_len + 1).astype(np.int64)
