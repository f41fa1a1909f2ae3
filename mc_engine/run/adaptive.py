"""Adaptive repeats: which trials the next round of a study with ``target_ci`` runs.

Rounds go on per point (per layer variant in a layer-sensitivity study) until the 95 % interval
half-width of its mean accuracy is at most ``target_ci`` at every read time, or it has
``max_repeats`` repeats: cheap stable points stop early, noisy ones get more chips.

The schedule is a function of the study and of the rows of its first repeats only: round 1 is
repeats [0, n₀) with n₀ = ``repeats``; once a point has all of [0, n) its next size is
:func:`next_size` of the accuracies of exactly those repeats. Repeats are numbered and seeded as
in a fixed-size study, so the rows are the same whatever the worker count or finishing order, and
a resume after an interruption (some repeats of a round on disk, others not) first completes the
round and then continues the same schedule.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from mc_engine.results.intervals import t_interval
from mc_engine.study import Study, Trial

#: A round grows a point at most this many times: an estimate from few repeats can be far off.
MAX_GROWTH = 4


def half_widths(accuracy: np.ndarray) -> np.ndarray:
    """Half-width of the 95 % t interval of the mean per column of (repeats x times) values;
    NaN with fewer than two repeats."""
    n = accuracy.shape[0]
    std = accuracy.std(axis=0, ddof=1) if n > 1 else np.full(accuracy.shape[1], np.nan)
    lo, hi, _ = t_interval(np.zeros_like(std), std, np.full_like(std, n), -np.inf, np.inf)
    return (hi - lo) / 2


def next_size(accuracy: np.ndarray, target_ci: float, max_repeats: int) -> int:
    """How many repeats a point with these (repeats x times) accuracies should have.

    Its current count when every half-width is at most ``target_ci`` or it has ``max_repeats``;
    otherwise the count the widest interval asks for (half-widths shrink as 1/√n:
    n·(h/target)², rounded up), at least one more, at most MAX_GROWTH times as many, at most
    ``max_repeats``. A single repeat has no interval: it doubles.
    """
    n = accuracy.shape[0]
    if n >= max_repeats:
        return n
    widest = half_widths(accuracy).max()
    if n >= 2 and widest <= target_ci:
        return n
    wanted = 2 * n if n < 2 else math.ceil(n * (widest / target_ci) ** 2)
    return min(max_repeats, MAX_GROWTH * n, max(n + 1, wanted))


def next_trials(study: Study, rows: pd.DataFrame) -> list[Trial]:
    """The trials of the next round given the rows on disk (point_id, repeat, t_inference_s,
    accuracy); empty when every point is done."""
    needed: dict[str, list[int]] = {}
    point_ids = {t.point_id for t in study.trials(range(1))}
    by_point = dict(tuple(rows.groupby("point_id"))) if len(rows) else {}
    for pid in point_ids:
        have = by_point.get(pid, rows.iloc[0:0])
        done = set(have["repeat"].unique())
        size = study.repeats
        while True:
            missing = [r for r in range(size) if r not in done]
            if missing:
                needed[pid] = missing
                break
            first = have[have["repeat"] < size]
            accuracy = first.pivot(index="repeat", columns="t_inference_s",
                                   values="accuracy").to_numpy()
            grown = next_size(accuracy, study.target_ci, study.max_repeats)
            if grown == size:
                break
            size = grown
    if not needed:
        return []
    top = max(max(r) for r in needed.values()) + 1
    wanted = {(pid, r) for pid, repeats in needed.items() for r in repeats}
    return [t for t in study.trials(range(top)) if (t.point_id, t.repeat) in wanted]
