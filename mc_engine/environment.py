"""Settings of the environment the engine reads, checked before the libraries that read them
are imported (mc_engine's package import runs this first)."""

from __future__ import annotations

import os

from mc_engine.errors import UserInputError

#: Thread counts read when a library loads: Numba fails there on 0 (a 65-line traceback) and
#: warns on text; OpenMP (torch's libgomp) prints "Invalid value" and goes on. A comma list
#: (OpenMP's nested levels, "4,2") is allowed where the library takes one.
THREAD_SETTINGS = {"NUMBA_NUM_THREADS": "the threads Numba may use",
                   "OMP_NUM_THREADS": "OpenMP threads, torch's on the CPU"}


def _environment_problem() -> str | None:
    """Why the environment cannot run the engine (None: it can). A bad thread count is taken
    out of the environment before a library reads it, so that the CLI can say so in one
    line and exit 2 instead."""
    for name, what in THREAD_SETTINGS.items():
        value = os.environ.get(name)
        if value is None:
            continue
        parts = value.split(",") if name == "OMP_NUM_THREADS" else [value]
        try:
            if all(int(part) >= 1 for part in parts):
                continue
        except ValueError:
            pass
        del os.environ[name]
        return f"{name}: expected a positive integer ({what}), got {value!r}; unset it or " \
               f"set it to 1"
    return None


ENVIRONMENT_PROBLEM = _environment_problem()


def check_environment() -> None:
    """Raise UserInputError if the environment holds a setting the engine cannot run with."""
    if ENVIRONMENT_PROBLEM:
        raise UserInputError(ENVIRONMENT_PROBLEM)
