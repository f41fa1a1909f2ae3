"""Where progress goes: a terminal (a bar), a Jupyter notebook (a notebook bar) or a log (plain
lines); shared by the run's and the training's progress, and free of Dask and torch."""

from __future__ import annotations

import os
import sys
from typing import TextIO


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (its widgets show a notebook bar)."""
    shell = sys.modules.get("IPython")
    try:
        ip = shell.get_ipython() if shell is not None else None
    except Exception:   # an IPython that cannot tell
        return False
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def seconds_from_env(name: str, default: float) -> float:
    text = os.environ.get(name, "")
    try:
        value = float(text)
    except ValueError:
        return default
    return value if value >= 0 and value == value else default
