"""Paired comparison of two hardware points over repeats that share device draws.

Repeat r of every hardware point of a study runs from the same trial seed (``trial_seed`` depends
on the study seed and the repeat only, docs/physics.md), so repeat r of two points is the same
simulated chip population member under two configurations: the same programming noise, drift
exponents and read noise where the physics allows (common random numbers). The difference
``other − baseline`` taken repeat by repeat then cancels the chip-to-chip spread the two points
share, and its interval is narrower than the interval of a difference of two independent means
(the *unpaired* interval, shown beside it for that reason):

    Var(mean of paired differences) = (σ_b² + σ_o² − 2·cov(b, o)) / n
    Var(difference of means, unpaired) = (σ_b² + σ_o²) / n
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mc_engine.errors import UserInputError
from mc_engine.results.intervals import t_interval, welch_interval

#: Columns that tell one simulated point apart (``checkpoint`` only with a checkpoint axis,
#: ``layer`` only in layer-sensitivity studies; point_id already covers both).
IDENTITY = ("study", "point_id", "checkpoint", "layer")
#: Rows of the two points are paired on these: the same repeat drawn from the same seed.
PAIR_ON = ["repeat", "seed", "t_inference_s"]
COLUMNS = ["t_inference_s", "n", "baseline_mean", "other_mean", "diff_mean", "diff_ci95_lo",
           "diff_ci95_hi", "unpaired_ci95_lo", "unpaired_ci95_hi"]


def compare(df: pd.DataFrame, baseline: Mapping[str, Any],
            other: Mapping[str, Any], metric: str = "accuracy") -> pd.DataFrame:
    """``metric`` (default accuracy; ``loss``, ``perplexity`` where the rows have them) of
    ``other`` minus ``baseline``, paired repeat by repeat, at each inference time.

    ``baseline`` and ``other`` select one point each by column values (``{"adc_bits": 7}``;
    any column: a swept parameter, ``checkpoint``, ``study``, ``point_id``, ``layer``); values
    may be given as text, as on the command line, and are read as the column's type; a
    checkpoint may be named by its full path as in the results, its file name or its stem
    (``digits-mlp-hwa.pt``, ``digits-mlp-hwa``). Rows pair
    on (repeat, seed): only repeats both points ran from the same seed count. One row per
    inference time: t_inference_s, n (pairs), baseline_mean, other_mean, diff_mean (mean of
    other − baseline), diff_ci95_lo/hi (95 % t interval of the mean paired difference, within
    [−1, 1]) and unpaired_ci95_lo/hi (Welch's interval of the difference of the two means over
    the same repeats, as if they had been independent chips). For a metric that is better low
    (loss, perplexity) a positive difference means ``other`` is worse; the intervals are
    clipped to the range of a difference of that metric.
    """
    from mc_engine.results.metrics import metric as get_metric

    quantity = get_metric(metric, df, key="metric")
    source = df.attrs.get("results_dir")
    rows = {role: _select(df, selection, role, source)
            for role, selection in (("baseline", baseline), ("other", other))}
    if _identity(rows["baseline"]) == _identity(rows["other"]):
        raise UserInputError("baseline and other select the same point; change a value in one "
                             "of them", source=source, key="other")
    pair_on = [c for c in PAIR_ON if c in df]   # part files of old versions lack a seed
    pairs = rows["baseline"][pair_on + [metric]].merge(
        rows["other"][pair_on + [metric]], on=pair_on, suffixes=("_b", "_o"))
    if pairs.empty:
        times = [sorted(set(rows[r]["t_inference_s"])) for r in ("baseline", "other")]
        if not set(times[0]) & set(times[1]):
            from mc_engine.study import format_duration

            shown = [", ".join(format_duration(t) for t in ts[:6]) for ts in times]
            raise UserInputError(f"the two points were read at different inference times "
                                 f"(baseline at {shown[0]}; other at {shown[1]}), so no "
                                 f"reading pairs with one of the other; compare points read "
                                 f"at a time they share", source=source, key="other")
        raise UserInputError("the two points share no repeat run from the same seed, so they "
                             "cannot be paired (results of studies with different [study] seed?)",
                             source=source, key="other")
    pairs["diff"] = pairs[f"{metric}_o"] - pairs[f"{metric}_b"]
    per_time = pairs.groupby("t_inference_s", sort=True).agg(
        n=("diff", "count"), baseline_mean=(f"{metric}_b", "mean"),
        other_mean=(f"{metric}_o", "mean"), diff_mean=("diff", "mean"), diff_std=("diff", "std"),
        b_std=(f"{metric}_b", "std"), o_std=(f"{metric}_o", "std")).reset_index()
    lo, hi = quantity.diff_bounds
    per_time["diff_ci95_lo"], per_time["diff_ci95_hi"], _ = t_interval(
        per_time["diff_mean"], per_time["diff_std"], per_time["n"], lo, hi)
    per_time["unpaired_ci95_lo"], per_time["unpaired_ci95_hi"] = welch_interval(
        per_time["diff_mean"], per_time["b_std"], per_time["o_std"], per_time["n"], lo, hi)
    return per_time[COLUMNS]


def parse_selection(items: Sequence[str], role: str) -> dict[str, str]:
    """``["adc_bits=7", "w_noise=0.02"]`` (the command line's form) as a dict of text values."""
    selection: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserInputError(f"expected COLUMN=VALUE (e.g. adc_bits=8), got {item!r}",
                                 key=f"--{role}")
        if key.strip() in selection:
            raise UserInputError(f"{key.strip()!r} given twice ({key.strip()}="
                                 f"{selection[key.strip()]} and {item!r}); give each column "
                                 f"once", key=f"--{role}")
        selection[key.strip()] = value.strip()
    return selection


def _select(df: pd.DataFrame, selection: Mapping[str, Any], role: str,
            source: str | None) -> pd.DataFrame:
    """The rows of the one point ``selection`` picks; a clear error when it picks none or
    several."""
    if not selection:
        raise UserInputError("give at least one COLUMN=VALUE to pick a point", source=source,
                             key=role)
    mask = np.ones(len(df), dtype=bool)
    for column, value in selection.items():
        if column not in df:
            raise UserInputError(f"unknown column {column!r}; results have: "
                                 f"{', '.join(df.columns)}", source=source,
                                 key=f"{role}.{column}")
        if column == "checkpoint":
            mask &= _checkpoint_matches(df[column], value, f"{role}.{column}", source)
            continue
        mask &= (df[column] == _as_column_type(df[column], value, f"{role}.{column}",
                                               source)).to_numpy()
    rows = df[mask]
    if rows.empty:
        column = next(iter(selection))
        present = ", ".join(map(str, sorted(df[column].unique())[:12]))
        raise UserInputError(f"no rows match {dict(selection)}; {column} in the results: "
                             f"{present}", source=source, key=role)
    identity = [c for c in IDENTITY if c in rows]
    if rows[identity].drop_duplicates().shape[0] > 1:
        differing = [c for c in rows.columns if c not in PAIR_ON and c not in identity
                     and c not in ("accuracy", "loss", "perplexity", "n_correct",
                                   "n_samples", "wall_s")
                     and rows[c].nunique(dropna=False) > 1] or identity
        raise UserInputError(f"{dict(selection)} matches several points; add a value for "
                             f"{', '.join(differing)} to pick one", source=source, key=role)
    return rows


def _checkpoint_matches(column: pd.Series, value: Any, key: str,
                        source: str | None) -> np.ndarray:
    """Rows whose checkpoint is ``value``: the path as recorded, else its file name or its stem
    (``digits-mlp-hwa.pt`` or ``digits-mlp-hwa`` for ``../checkpoints/digits-mlp-hwa.pt``);
    a short name that fits two different checkpoints is refused, naming them."""
    from pathlib import PurePath

    text = str(value)
    exact = (column == text).to_numpy()
    if exact.any():
        return exact
    paths = {c: PurePath(str(c)) for c in column.unique()}
    fits = [c for c, p in paths.items() if text in (p.name, p.stem)]
    if len(fits) > 1:
        raise UserInputError(f"{text!r} names several checkpoints ({', '.join(map(str, fits))}); "
                             f"give the path as the results record it", source=source, key=key)
    return (column == fits[0]).to_numpy() if fits else exact


def _identity(rows: pd.DataFrame) -> tuple:
    return tuple(rows[c].iloc[0] for c in IDENTITY if c in rows)


def _as_column_type(column: pd.Series, value: Any, key: str, source: str | None) -> Any:
    """``value`` as the column's type: text from the command line becomes a number or bool."""
    if not isinstance(value, str) or column.dtype == object or \
            pd.api.types.is_string_dtype(column.dtype):
        return value
    try:
        if pd.api.types.is_bool_dtype(column.dtype):
            if value.lower() not in ("true", "false"):
                raise ValueError(value)
            return value.lower() == "true"
        if pd.api.types.is_integer_dtype(column.dtype):
            return int(value)
        return float(value)
    except ValueError:
        raise UserInputError(f"expected a {column.dtype} value, got {value!r}", source=source,
                             key=key) from None
