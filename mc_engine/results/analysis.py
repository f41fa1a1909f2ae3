"""Reading results back as pandas and reducing trials to per-(point, time) statistics."""

from __future__ import annotations

import math
import numbers
import tomllib
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mc_engine.errors import UserInputError
from mc_engine.fileio import check_path_fits, check_utf8_path
from mc_engine.results.conform import (
    fill_execution_defaults,
    fill_hardware_defaults,
    fill_metric_defaults,
    read_part,
)
from mc_engine.results.intervals import stein_interval
from mc_engine.results.metrics import METRICS
from mc_engine.results.schema import fixed_columns, hardware_columns
from mc_engine.results.store import (
    IDEAL_FILE,
    RESULT_COLUMNS,
    ROW_KEYS,
    STUDY_FILE,
    ResultStore,
    finite_rows,
    part_stamp,
    unique_rows,
    unreadable,
)

#: Row order of :func:`load_results`: deterministic whatever the order trials finished in.
SORT_KEYS = ["study", "point_id", "repeat", "t_inference_s"]


def load_results(path: str | Path) -> pd.DataFrame:
    """All result rows under ``path`` as a DataFrame sorted by point_id, repeat and time.

    ``path`` is a study's results folder, a folder of such folders (every study in it), or one
    Parquet file. The folder (a file's own folder) is remembered in ``df.attrs["results_dir"]``
    so that :func:`summarize` finds ``ideal.parquet`` without being told, and the columns of
    device-model parameters (those beyond the fixed schema) in ``df.attrs["device_params"]``.
    """
    path = Path(path)
    check_utf8_path(path)
    check_path_fits(path, source=str(path)[:80] + "...")
    if path.is_file():
        files = [path]
        problem = unreadable(path, RESULT_COLUMNS)
        if path.name == IDEAL_FILE or problem:
            what = "the ideal (digital) accuracy" if path.name == IDEAL_FILE else problem
            raise UserInputError(f"not a file of trial results ({what}); give a study's "
                                 f"results folder or one of its part-*.parquet files",
                                 source=str(path))
    else:
        stores = [ResultStore(path)]
        if not stores[0].parts() and path.is_dir():
            stores = [ResultStore(sub) for sub in sorted(path.iterdir()) if sub.is_dir()]
        files = [p for store in stores for p in store.parts()]
        for odd in (p for store in stores for p in store.not_files()
                    if p.name.startswith("part-")):
            warnings.warn(f"{odd}: named like a part file but not a file; left out",
                          stacklevel=2)
        files = _readable(files)
    if not files:
        raise UserInputError("no results here (expected part-*.parquet files written by "
                             "'mc-engine run')", source=str(path))
    _check_one_study_per_folder(files)
    tables = [read_part(f) for f in files]
    table = fill_metric_defaults(fill_execution_defaults(fill_hardware_defaults(
        pa.concat_tables(tables, promote_options="default"))))
    kept = finite_rows(table)
    rerun: set[tuple] = set()   # trials with a non-finite row: run again whole by a later run
    if kept.num_rows < table.num_rows:
        bad = table.filter(pc.invert(pc.fill_null(pc.is_finite(table.column("accuracy")),
                                                  False)))
        rerun = set(zip(*(bad.column(k).to_pylist() for k in ROW_KEYS[:3])))
        lost = len(_row_keys(bad) - _row_keys(kept))
        if lost:
            warnings.warn(f"{lost} rows under {path} have no finite accuracy; left out (the "
                          f"next 'mc-engine run' of the study runs their trials again)",
                          stacklevel=2)
    origin = np.repeat(np.arange(len(files)), [t.num_rows for t in tables])
    origin = origin[np.flatnonzero(_finite_mask(table))]
    table, dropped = unique_rows(kept)
    if len(dropped):
        repeated = kept.take(dropped)
        copied = [i for i, trial in zip(origin[dropped.to_numpy()], zip(
            *(repeated.column(k).to_pylist() for k in ROW_KEYS[:3]))) if trial not in rerun]
        if copied:
            names = sorted({str(files[i]) for i in copied})
            warnings.warn(f"{len(copied)} rows of {', '.join(names)} repeat rows of other part "
                          f"files (a part file copied?); each is counted once", stacklevel=2)
    df = table.to_pandas()
    df = df.sort_values(SORT_KEYS, kind="stable", ignore_index=True)
    df.attrs["results_dir"] = str(path if path.is_dir() else path.parent)
    fixed = fixed_columns()
    df.attrs["device_params"] = [c for c in df.columns if c not in fixed]
    df.attrs["first_round"] = first_rounds(Path(df.attrs["results_dir"]), df["study"].unique())
    return df


def first_rounds(folder: Path, studies) -> dict[str, int]:
    """The first round (``repeats``) of each of ``studies`` run with adaptive repeats, from the
    study.toml in ``folder`` or in ``folder/<study>``; studies with a fixed ``repeats`` (or
    whose study.toml is not there) are left out."""
    found = {}
    for name in studies:
        for path in (folder / STUDY_FILE, folder / str(name) / STUDY_FILE):
            if not path.is_file():
                continue
            try:
                study = tomllib.loads(path.read_text(encoding="utf-8"))["study"]
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError) as err:
                warnings.warn(f"{path}: unreadable ({' '.join(str(err).split())[:200]}); if "
                              f"study {name!r} has adaptive repeats, its intervals are the "
                              f"plain t interval, not Stein's", stacklevel=3)
                break
            if study.get("name") != name:
                continue
            if "target_ci" in study and isinstance(study.get("repeats"), int):
                found[str(name)] = study["repeats"]
            break
    return found


def _finite_mask(table: pa.Table) -> np.ndarray:
    return np.isfinite(table.column("accuracy").to_numpy(zero_copy_only=False).astype(float))


def _row_keys(table: pa.Table) -> set[tuple]:
    return set(zip(*(table.column(k).to_pylist() for k in ROW_KEYS)))


def _check_one_study_per_folder(files: list[Path]) -> None:
    """Refuse a study folder whose part files were written by different studies (their study
    stamps differ: a part file of another study copied in), naming the odd one out."""
    first: dict[Path, tuple[Path, str]] = {}
    for file in files:
        stamp = part_stamp(file)
        if stamp is None:
            continue
        seen = first.setdefault(file.parent, (file, stamp))
        if seen[1] != stamp:
            raise UserInputError(f"holds rows of another study than {seen[0].name} beside it "
                                 f"(their seed, inference times, model, data, mode or name "
                                 f"differ); move one of them out of {file.parent}",
                                 source=str(file))


def _readable(files: list[Path]) -> list[Path]:
    """The files that read as result tables; each other one is named in a warning."""
    kept = []
    for file in files:
        problem = unreadable(file, RESULT_COLUMNS)
        if problem:
            warnings.warn(f"{file}: {problem}; left out (the next 'mc-engine run' of the study "
                          f"sets it aside and runs its trials again)", stacklevel=3)
        else:
            kept.append(file)
    return kept


def load_ideal(path: str | Path) -> pd.DataFrame:
    """The ideal (digital, noise-free) accuracy (and loss, perplexity: NaN where not measured)
    per study: from ideal.parquet, a study's results folder or a folder of such folders."""
    path = Path(path)
    if path.is_file():
        files = [path]
    else:
        files = [f for f in [path / IDEAL_FILE, *sorted(path.glob(f"*/{IDEAL_FILE}"))]
                 if f.is_file()]
    if not files:
        raise UserInputError(f"no {IDEAL_FILE} here", source=str(path))
    return pd.concat([fill_metric_defaults(pq.read_table(f)).to_pandas() for f in files],
                     ignore_index=True)


def swept_columns(df: pd.DataFrame) -> list[str]:
    """Hardware columns (device parameters included), then a checkpoint axis, whose value
    differs between rows: what tells the points apart."""
    columns: list[str] = []
    for name in hardware_columns():
        columns.append(name)
        if name == "device":  # the device models' own parameters, as load_results found them
            columns += [c for c in df.attrs.get("device_params", ()) if c not in METRICS]
    columns.append("checkpoint")  # a checkpoint axis last: recipes side by side per point
    return [c for c in columns if c in df and df[c].nunique(dropna=False) > 1]


def summarize(df: pd.DataFrame,
              ideal: numbers.Real | str | Path | pd.DataFrame | None = None,
              first_round: int | Mapping[str, int] | None = None,
              metric: str = "accuracy") -> pd.DataFrame:
    """Per (hardware point, inference time): statistics of ``metric`` over the repeats.

    Rows are ordered by the swept parameter values, then point_id and time.
    Columns: study, point_id, the swept hardware columns (then ``checkpoint`` of a checkpoint
    axis, then ``layer`` in layer-sensitivity studies), t_inference_s, n, mean, std (ddof 1),
    [n_first, std_first], q05, q50, q95, ci95_lo / ci95_hi (95 % interval of the mean clipped
    to [0, 1]; NaN when n = 1), ci95_clipped (the raw interval reached past 0 or 1: too few
    repeats to locate the mean; see :mod:`mc_engine.results.intervals` for why this interval),
    ideal_accuracy and drop_from_ideal (ideal minus mean).

    The interval is Student's t over the n repeats for a fixed ``repeats``. With adaptive
    repeats it is Stein's two-stage interval: ``mean ± t(0.975, n_first − 1)·std_first/√n``,
    where n_first and std_first are the count and std of the first round (the repeats whose std
    alone chose n, :mod:`mc_engine.run.adaptive`), columns present only then (for points of a
    fixed-size study among them: n and std). ``first_round`` is the first round's size per study
    name (an int: every study), by default what :func:`load_results` read from each study.toml.

    ``ideal`` is a real number (numpy scalars included), a results folder or ideal.parquet path,
    a DataFrame with study and accuracy columns, or None: then the folder :func:`load_results`
    read is used when it has an ideal.parquet, else NaN.

    ``metric`` is ``accuracy`` or another metric column of the rows (``loss``, ``perplexity``,
    :mod:`mc_engine.results.metrics`): the statistics are of that column, the interval is
    clipped to its range, the ideal is ideal.parquet's column of that name, and for a metric that
    is better low the last column is ``rise_from_ideal`` (mean minus ideal) instead.
    """
    from mc_engine.results.metrics import metric as get_metric

    quantity = get_metric(metric, df, key="metric")
    swept = swept_columns(df) + (["layer"] if "layer" in df else [])
    keys = ["study", *swept, "point_id", "t_inference_s"]  # sorted by parameter values
    grouped = df.groupby(keys, sort=True, dropna=False)[metric]
    out = grouped.agg(n="count", mean="mean", std="std").reset_index()
    out = out[["study", "point_id", *swept, *out.columns[len(swept) + 2:]]]
    n0 = _first_round_of(df, first_round)
    if n0 is not None:
        first = df[df["repeat"] < n0].groupby(keys, sort=True, dropna=False)[metric]
        first = first.agg(n_first="count", std_first="std").reset_index()
        out = out.merge(first, on=keys, how="left")  # keeps out's order; NaN keys match
        out["n_first"] = out["n_first"].fillna(0).astype(int)
    for q in (5, 50, 95):
        out[f"q{q:02d}"] = grouped.quantile(q / 100).to_numpy()
    std, n_first = (out["std"], out["n"]) if n0 is None else (out["std_first"], out["n_first"])
    out["ci95_lo"], out["ci95_hi"], out["ci95_clipped"] = stein_interval(
        out["mean"], std, n_first, out["n"], quantity.lo, quantity.hi)
    out[f"ideal_{metric}"] = _ideal_per_study(out["study"], df, ideal, out["point_id"], metric)
    out[quantity.change_column] = quantity.change(out[f"ideal_{metric}"], out["mean"])
    return out


def _first_round_of(df: pd.DataFrame, first_round: int | Mapping[str, int] | None) -> \
        pd.Series | None:
    """Per row of ``df``, the first round of its study (a study with a fixed ``repeats``: more
    than any of its repeats, so that every repeat counts), or None when no study is adaptive."""
    if first_round is None:
        first_round = df.attrs.get("first_round", {})
    if isinstance(first_round, numbers.Integral) and not isinstance(first_round, bool):
        first_round = dict.fromkeys(df["study"].unique(), int(first_round))
    if not isinstance(first_round, Mapping) or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 2
            for v in first_round.values()):
        raise UserInputError(f"expected an integer >= 2 (the first round of adaptive repeats) or "
                             f"a mapping of study name to one, got {first_round!r}",
                             key="first_round")
    if not first_round:
        return None
    every = np.iinfo(np.int64).max
    return df["study"].map(lambda name: first_round.get(name, every)).astype(np.int64)


def _ideal_per_study(studies: pd.Series, df: pd.DataFrame,
                     ideal: numbers.Real | str | Path | pd.DataFrame | None,
                     points: pd.Series | None = None, metric: str = "accuracy") -> np.ndarray:
    if ideal is None:
        try:
            table = load_ideal(df.attrs["results_dir"])
        except (KeyError, UserInputError):
            return np.full(len(studies), math.nan)
        except (OSError, pa.ArrowException) as err:
            warnings.warn(f"{df.attrs['results_dir']}: {IDEAL_FILE} is unreadable "
                          f"({' '.join(str(err).split())[:200]}); the ideal accuracy is left out "
                          f"(the next 'mc-engine run' of the study computes it again)",
                          stacklevel=3)
            return np.full(len(studies), math.nan)
    elif isinstance(ideal, numbers.Real):
        return np.full(len(studies), float(ideal))
    else:
        table = ideal if isinstance(ideal, pd.DataFrame) else load_ideal(ideal)
    if metric != "accuracy" and metric not in table:   # an ideal.parquet without that metric
        return np.full(len(studies), math.nan)
    if not {"study", metric} <= set(table.columns):
        raise UserInputError(f"the ideal {metric} needs the columns study and {metric}, got "
                             f"{', '.join(map(str, table.columns))}", key="ideal")
    by_study = dict(zip(table["study"], table[metric]))
    if "checkpoint" in table and "checkpoint" in df:   # one ideal per checkpoint
        point_checkpoint = dict(zip(df["point_id"], df["checkpoint"]))
        by_pair = dict(zip(zip(table["study"], table["checkpoint"]), table[metric]))
        return np.array([by_pair.get((s, point_checkpoint.get(p)), by_study.get(s, math.nan))
                         for s, p in zip(studies, points)], dtype=float)
    return studies.map(by_study).astype(float).to_numpy()
