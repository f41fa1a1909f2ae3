"""95 % confidence intervals of a mean over Monte Carlo repeats (chips), kept inside their range.

The interval is Student's t over the repeats, ``mean ± t(0.975, n − 1)·std/√n``, clipped to the
range the quantity can take ([0, 1] for an accuracy, [−1, 1] for a difference of two), and
flagged when clipping happened. Why this one:

* It is exact when chip-to-chip spread is normal and close for the mild skew accuracies show:
  over simulated studies (chip accuracies drawn from a Beta distribution, then a binomial test
  set) it covers the true mean about 94 % of the time at n = 8 and 95 % at n = 50
  (``tests/test_intervals.py``).
* A bootstrap percentile interval over repeats stays inside [0, 1] by construction but is too
  narrow at small n: on such simulated studies it covers 87–88 % at n = 8.
* Clipping cannot lower the coverage (the true mean lies in the range, so the clipped-off part
  never held it), and the flag says that the raw interval ran past a bound, i.e. that too few
  repeats were run to locate the mean (a 2-repeat study spans most of [0, 1]).

Known limit: for strongly skewed spreads (most chips near 100 %, a long tail of bad ones) any
interval built from the mean and std of a few repeats under-covers; run more repeats there.
An interval needs n ≥ 2; with n = 1 it is NaN.

Adaptive repeats choose each point's n from its first round (Stein's two-stage procedure,
:mod:`mc_engine.run.adaptive`); their interval is :func:`stein_interval`, the t interval with
the first round's std and degrees of freedom over all n repeats: the ordinary t interval of
repeats whose count was chosen by looking at them would cover less than 95 %.
"""

from __future__ import annotations

import numpy as np

LEVEL = 0.95


def t_interval(mean: np.ndarray, std: np.ndarray, n: np.ndarray, lo: float = 0.0,
               hi: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower, upper, clipped) of the 95 % Student-t interval of the mean, elementwise.

    ``std`` is the sample std (ddof 1) of ``n`` values; the bounds are clipped to [lo, hi] and
    ``clipped`` is True where the unclipped interval reached past either. NaN where n < 2.
    """
    return stein_interval(mean, std, n, n, lo, hi)


def stein_interval(mean: np.ndarray, std_first: np.ndarray, n_first: np.ndarray, n: np.ndarray,
                   lo: float = 0.0, hi: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower, upper, clipped) of Stein's two-stage 95 % interval, elementwise.

    ``mean`` is the mean of all ``n`` values, of which the first ``n_first`` (the first round
    of adaptive repeats, whose std alone chose n) have sample std ``std_first``:
    ``mean ± t(0.975, n_first − 1)·std_first/√n``, clipped to [lo, hi] as :func:`t_interval`
    (which it is when n_first = n). Exact for normal values because n depends on std_first
    only (:mod:`mc_engine.run.adaptive`). NaN where n_first < 2.
    """
    from scipy import stats

    mean, std = np.asarray(mean, dtype=float), np.asarray(std_first, dtype=float)
    n_first, n = np.asarray(n_first, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        t_crit = np.where(n_first > 1,
                          stats.t.ppf(0.5 + LEVEL / 2, np.maximum(n_first - 1, 1)), np.nan)
        half = t_crit * std / np.sqrt(n)
    raw_lo, raw_hi = mean - half, mean + half
    clipped = (raw_lo < lo) | (raw_hi > hi)
    return np.clip(raw_lo, lo, hi), np.clip(raw_hi, lo, hi), clipped


def welch_interval(diff: np.ndarray, std_a: np.ndarray, std_b: np.ndarray, n: np.ndarray,
                   lo: float = -1.0, hi: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """95 % Welch interval of a difference of two means of ``n`` independent values each
    (sample stds ``std_a``, ``std_b``), clipped to [lo, hi]; NaN where n < 2."""
    from scipy import stats

    diff = np.asarray(diff, dtype=float)
    var_a = np.asarray(std_a, dtype=float) ** 2 / np.asarray(n, dtype=float)
    var_b = np.asarray(std_b, dtype=float) ** 2 / np.asarray(n, dtype=float)
    se = np.sqrt(var_a + var_b)
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        dof = np.where(se > 0, (var_a + var_b) ** 2 / ((var_a**2 + var_b**2) / (n - 1)), 1.0)
        half = np.where(n > 1, stats.t.ppf(0.5 + LEVEL / 2, dof) * se, np.nan)
    return np.clip(diff - half, lo, hi), np.clip(diff + half, lo, hi)


def interval_note(adaptive: bool) -> str:
    """One sentence on which interval ci95_lo/hi of :func:`~mc_engine.results.summarize` is."""
    if not adaptive:
        return "ci95: Student's t interval of the mean over the n repeats, clipped to [0, 1]."
    return ("ci95 of adaptive repeats: Stein's two-stage interval, mean ± t(0.975, n_first − 1)"
            "·std_first/√n, clipped to [0, 1] (the first round's n_first repeats and their std "
            "alone chose n; the std of all n repeats is not used).")
