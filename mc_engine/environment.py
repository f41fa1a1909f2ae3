"""Settings of the environment the engine reads, checked before the libraries that read them
are imported (mc_engine's package import runs this first)."""

from __future__ import annotations

import os

from mc_engine.errors import UserInputError


def _environment_problem() -> str | None:
    """Why the environment cannot run the engine (None: it can). Numba reads NUMBA_NUM_THREADS
    when it is imported, and fails there on 0 (a long traceback) or warns on text; a bad value
    is taken out of the environment before it is, so that the CLI can say so in one line."""
    value = os.environ.get("NUMBA_NUM_THREADS")
    if value is None:
        return None
    try:
        if int(value) >= 1:
            return None
    except ValueError:
        pass
    del os.environ["NUMBA_NUM_THREADS"]
    return f"NUMBA_NUM_THREADS: expected a positive integer (the threads Numba may use), got " \
           f"{value!r}; unset it or set it to 1"


ENVIRONMENT_PROBLEM = _environment_problem()


def check_environment() -> None:
    """Raise UserInputError if the environment holds a setting the engine cannot run with."""
    if ENVIRONMENT_PROBLEM:
        raise UserInputError(ENVIRONMENT_PROBLEM)
