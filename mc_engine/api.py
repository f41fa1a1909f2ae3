"""The Python API: what ``mc-engine run`` does, from a notebook or a script (SALib style).

    import mc_engine
    df = mc_engine.run_study("studies/quickstart.toml")
    df = mc_engine.run_study({"study": {...}, "hardware": {...}, "sweep": {...}},
                             model=my_module, data=(x_test, y_test))

The same validation as the command line (every problem one :class:`UserInputError` naming the
key), the same results folder, resume and fingerprint checks; a model and test set given as
objects are fingerprinted (sha256 of the state_dict and of the arrays), so a re-run resumes
exactly when they are the same.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mc_engine.errors import UserInputError

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn

    from mc_engine.study import Study


def run_study(study: str | Path | Mapping[str, Any] | Study, *, model: nn.Module | None = None,
              data: tuple[Any, Any] | None = None, out: str | Path = "results",
              workers: int | None = None, scheduler: str | None = None, fresh: bool = False,
              backend: str | None = None, device: str | None = None,
              progress: bool = True, memory_limit: int | None = None) -> pd.DataFrame:
    """Run ``study`` (resuming: trials already in ``<out>/<name>/`` are skipped) and return its
    results, :func:`mc_engine.load_results` of that folder.

    ``study``: a study file, or a dict of its tables ({"study": {...}, "hardware": {...},
    "sweep": {...}, "model": {...}, "data": {...}}; relative paths in it are relative to the
    working directory). ``model``: an ``nn.Module`` to evaluate instead of a ``[model]``
    table, ``data``: ``(x_test, y_test)`` arrays or tensors instead of a ``[data]`` table (give
    one or the other, not both). ``workers``, ``scheduler``, ``fresh``, ``backend``, ``device``,
    ``memory_limit`` (bytes per worker): as ``mc-engine run``'s options. ``progress``: a bar
    (in a notebook, a notebook bar) or plain lines on stderr. Invalid input raises
    UserInputError; a run that cannot proceed (scheduler unreachable, no workers) raises
    :class:`mc_engine.run.RunError`.
    """
    from mc_engine.analog.execution import Execution
    from mc_engine.results import load_results
    from mc_engine.run import run_study as run
    from mc_engine.study import Study

    execution = Execution.parse(backend, device)
    parsed = study if isinstance(study, Study) else _study(study, model, data)
    inputs = None
    if model is not None or data is not None:
        from mc_engine.study.memory import load_in_memory

        inputs = load_in_memory(parsed, Path(out) / ".cache", model, data)
    outcome = run(parsed, out, workers=workers, scheduler=scheduler, fresh=fresh,
                  execution=execution, progress=progress, inputs=inputs,
                  memory_limit=memory_limit)
    return load_results(outcome.results_dir)


def _study(study: str | Path | Mapping[str, Any], model: object, data: object) -> Study:
    """The study of a file or a dict of tables, with stand-in [model]/[data] tables for the
    objects given in memory."""
    from mc_engine.study import parse_study
    from mc_engine.study.memory import data_table, model_table

    if isinstance(study, str | Path):
        path = Path(study)
        from mc_engine.study import load_study

        if model is None and data is None:
            return load_study(path)
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            return load_study(path)      # its own message for each of these
        source, base_dir = str(path), path.parent
    elif isinstance(study, Mapping):
        doc, source, base_dir = {k: v for k, v in study.items()}, "<study dict>", Path.cwd()
    else:
        raise UserInputError(f"expected a study file path or a dict of its tables, got "
                             f"{type(study).__name__}", key="study")
    for key, given, table in (("model", model, model_table), ("data", data, data_table)):
        if given is None:
            continue
        stand_in = table(given)      # checks the object's type first
        if key in doc:
            raise UserInputError(f"given twice: as the {key}= argument and as the [{key}] "
                                 f"table; leave the table out", source=source, key=key)
        doc[key] = stand_in
    return parse_study(doc, source=source, base_dir=base_dir)
