"""Adaptive repeats keep their 95 %: over many simulated points, each sized by Stein's rule from
its first round (``stein_size``, what the runner calls) and summarised as a study's rows
(``summarize``, Stein's interval), the interval covers the true mean 95 % of the time.

The rule it replaced (rounds until the t interval *of the repeats so far* was within the
target, growing at most 4x a round) stopped on the std it reported. On these simulated points
(three seeds each, same targets) it covered 91.4–91.6 % (normal, n0 = 3), 92.4–92.7 % (normal,
n0 = 5), 93.2–93.8 % (Beta, n0 = 5) and 93.7–94.0 % (Beta, n0 = 8); Stein's rule 94.8–95.1 %,
94.8–95.0 %, 94.5–94.7 % and 94.6–95.2 %. It asks for more chips (mean n 31 against 20 in the
normal n0 = 5 case, 74 against 20 at n0 = 3: the t quantile of a small first round), which is
the price of the guarantee, and why studies need a first round of at least 5.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mc_engine.results import summarize
from mc_engine.run.adaptive import stein_size

N_POINTS = 10_000
MAX_REPEATS = 400


def normal_chips(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Chip accuracies with a normal spread (mean 0.8, std 0.02): Stein's rule is exact here."""
    return rng.normal(0.8, 0.02, size), 0.8


def beta_chips(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """As ``tests/test_intervals.py``: each chip's accuracy Beta-distributed (mean 0.9, std
    0.03, skewed toward 1: skewness −0.5), then measured on 500 test samples."""
    mean, sd = 0.9, 0.03
    k = mean * (1 - mean) / sd**2 - 1
    return rng.binomial(500, rng.beta(mean * k, (1 - mean) * k, size)) / 500, mean


def simulated_study(chips, n0: int, target: float, seed: int) -> tuple[pd.DataFrame, float]:
    """N_POINTS points of one study, each run as the runner does: a first round of n0 chips,
    then up to ``stein_size`` of its first round; the rows as ``load_results`` gives them."""
    pool, mean = chips(np.random.default_rng(seed), (N_POINTS, MAX_REPEATS))
    size = stein_size(pool[:, :n0, None], target, MAX_REPEATS)  # one read time
    ran = np.arange(MAX_REPEATS) < size[:, None]
    point, repeat = np.nonzero(ran)
    rows = pd.DataFrame({"study": "sim", "point_id": point.astype(str), "repeat": repeat,
                         "t_inference_s": 0.0, "accuracy": pool[ran]})
    return rows, mean


@pytest.mark.parametrize(("chips", "n0", "low"), [
    (normal_chips, 3, 0.943), (normal_chips, 5, 0.943), (beta_chips, 5, 0.938),
    (beta_chips, 8, 0.938)])
def test_steins_interval_covers_the_true_mean_95_percent_of_the_time(chips, n0, low):
    # 10 000 points: the coverage estimate has a standard error of sqrt(.95*.05/1e4) = 0.22 %,
    # so 94.3-95.7 % is +-3.2 standard errors of the exact 95 % under a normal spread (seeds
    # fixed; a correct rule fails it with probability < 0.2 %). The skewed Beta spread costs
    # Stein's interval a few tenths (measured 94.5-95.2 % over three seeds), hence 93.8 %
    # there, 3 standard errors below. Bugs land below: the old rule 91.4-92.7 % (normal), the
    # t interval of all n repeats instead of Stein's 92.2-92.7 % (normal, n0 = 5), the
    # normal quantile far lower.
    target = 0.01
    rows, mean = simulated_study(chips, n0, target, seed=n0)
    summary = summarize(rows, ideal=1.0, first_round=n0)
    assert len(summary) == N_POINTS and (summary["n_first"] == n0).all()
    assert (summary["n"] >= n0).all() and summary["n"].max() > 4 * n0  # the sizes vary
    capped = summary["n"] == MAX_REPEATS
    half = (summary["ci95_hi"] - summary["ci95_lo"]) / 2
    assert (half[~capped] <= target * (1 + 1e-9)).all()  # within the target unless capped
    covered = (summary["ci95_lo"] <= mean) & (mean <= summary["ci95_hi"])
    assert low <= covered.mean() <= 0.96
