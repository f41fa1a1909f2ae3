"""Adaptive repeats: which trials the next round of a study with ``target_ci`` runs.

Stein's two-stage procedure (Stein 1945), so that the reported interval keeps its 95 %:

1. Round 1 runs repeats [0, n₀) of every point, n₀ = ``repeats`` (at least
   :data:`~mc_engine.study.spec.MIN_FIRST_ROUND`).
2. From the first round's sample std s₀ alone (per read time), the point's total is
   ``N = ⌈(t(0.975, n₀ − 1)·s₀ / target_ci)²⌉`` at the widest read time, at least n₀, at most
   ``max_repeats`` (:func:`stein_size`); round 2 runs repeats [n₀, N) and the point is done.

:func:`~mc_engine.results.summarize` then reports Stein's interval of the mean of all N
repeats, ``mean_N ± t(0.975, n₀ − 1)·s₀/√N``: its half-width is at most ``target_ci`` unless
``max_repeats`` capped N (then it is honestly wider), and for normal chip-to-chip spread it
covers the true mean exactly 95 % of the time whatever n₀ ≥ 2. That holds because N depends on
s₀ only, and for normal values s₀ is independent of every repeat's mean (first round and
later): no later repeat ever changes N, so nothing decides on the std it is reported with. The
rule it replaces (grow round after round until the t interval *of the repeats so far* is narrow
enough) stopped on the same std it reported, and a point whose chips happened to agree stopped
at once: it covered 91–93 % at n₀ = 3–5 (``tests/test_adaptive_coverage.py``).

Known limit, as for any interval built from the mean and std of a few chips
(:mod:`mc_engine.results.intervals`): for a strongly skewed spread (skewness −1.1: most chips
near the top, a tail of bad ones; Beta with mean 0.95 and std 0.03) it covered about 92 % at
n₀ = 5–16 in a simulation like that test's; the mild skew the test uses (−0.5) costs a few
tenths of a point.

The price of exact coverage is the t quantile of the first round: on average N is about
(t(0.975, n₀ − 1)/1.96)² times what a known std would need (2.0× at n₀ = 5, 1.5× at 8, 1.2×
at 16), so a first round of 8–16 is a good choice when a point needs many repeats.

The schedule is a function of the study and of the rows of the first round only. Repeats are
numbered and seeded as in a fixed-size study, so the rows are the same whatever the worker
count or finishing order, and a resume after an interruption (some repeats of a round on disk,
others not) first completes the round and then continues the same schedule.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mc_engine.results.intervals import LEVEL
from mc_engine.study import Study, Trial


def stein_size(first_round: np.ndarray, target_ci: float, max_repeats: int) -> np.ndarray:
    """Stein's total repeat count of points with these first-round accuracies.

    ``first_round`` is (..., n₀ repeats, times): one point's (n₀ x times) array gives an int, a
    stack of points an int array. Per point ``⌈(t(0.975, n₀ − 1)·s₀/target_ci)²⌉`` at its
    widest read time (s₀: sample std, ddof 1, of the n₀ repeats), at least n₀, at most
    ``max_repeats``.
    """
    from scipy import stats

    first_round = np.asarray(first_round, dtype=float)
    n0 = first_round.shape[-2]
    if n0 < 2:
        raise ValueError(f"Stein's procedure needs a first round of at least 2 repeats, got {n0}")
    std = first_round.std(axis=-2, ddof=1).max(axis=-1)
    # A tiny target_ci asks for more repeats than a float holds (inf): max_repeats caps it.
    with np.errstate(over="ignore", divide="ignore"):
        wanted = np.ceil((stats.t.ppf(0.5 + LEVEL / 2, n0 - 1) * std / target_ci) ** 2)
    size = np.clip(wanted, n0, max(n0, max_repeats)).astype(int)
    return size if size.ndim else int(size)


def next_trials(study: Study, rows: pd.DataFrame) -> list[Trial]:
    """The trials of the next round given the rows on disk (point_id, repeat, t_inference_s,
    accuracy); empty when every point is done."""
    n0 = study.repeats
    needed: dict[str, list[int]] = {}
    point_ids = {t.point_id for t in study.trials(range(1))}
    by_point = dict(tuple(rows.groupby("point_id"))) if len(rows) else {}
    for pid in point_ids:
        have = by_point.get(pid, rows.iloc[0:0])
        done = set(have["repeat"].unique())
        missing = [r for r in range(n0) if r not in done]
        if not missing:  # the first round is complete: its rows alone fix the total
            first = have[have["repeat"] < n0].pivot(index="repeat", columns="t_inference_s",
                                                    values="accuracy")
            total = stein_size(first.to_numpy(), study.target_ci, study.max_repeats)
            missing = [r for r in range(n0, total) if r not in done]
        if missing:
            needed[pid] = missing
    if not needed:
        return []
    top = max(max(r) for r in needed.values()) + 1
    wanted = {(pid, r) for pid, repeats in needed.items() for r in repeats}
    return [t for t in study.trials(range(top)) if (t.point_id, t.repeat) in wanted]
