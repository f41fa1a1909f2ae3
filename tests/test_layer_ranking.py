"""``rank_layers`` compares the layer variants of a hardware point chip by chip: over the repeats
they all ran (adaptive repeats give each variant its own count), with a paired interval of the
gap between neighbouring ranks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mc_engine.errors import UserInputError
from mc_engine.results import rank_layers, summarize

IDEAL = 0.95


def layer_rows(repeats: dict[str, int], cost: dict[str, float], chips: np.ndarray,
               noise: float = 0.001, seed: int = 0) -> pd.DataFrame:
    """Rows of one hardware point of a layer-sensitivity study: repeat r of every variant is
    chip r (accuracy ``IDEAL − cost + chips[r]`` plus a little noise of its own)."""
    rng = np.random.default_rng(seed)
    frames = []
    for layer, n in repeats.items():
        frames.append(pd.DataFrame({
            "study": "s", "point_id": f"p-{layer}", "layer": layer, "repeat": np.arange(n),
            "seed": 1000 + np.arange(n), "t_inference_s": 0.0,
            "accuracy": IDEAL - cost[layer] + chips[:n] + rng.normal(0, noise, n)}))
    return pd.concat(frames, ignore_index=True)


def test_layers_with_different_repeat_counts_are_ranked_on_their_common_chips():
    # The chip-to-chip spread (0.03) dwarfs the layers' costs and the first 6 chips are the
    # good ones: layer "a" (adaptive: stopped after 6 repeats) costs 0.02, "b" (40 repeats)
    # 0.01. Means over each layer's own repeats rank "b" as the costlier one (its mean holds
    # the bad chips); paired over the 6 common chips, "a" costs 0.01 more, the interval says
    # so, and share_of_drop uses the all-analog variant's mean over the same chips.
    chips = np.concatenate([np.linspace(0.02, 0.03, 6), np.linspace(-0.06, 0.0, 34)])
    rows = layer_rows({"all": 8, "a": 6, "b": 40}, {"all": 0.05, "a": 0.02, "b": 0.01}, chips)
    unpaired = summarize(rows, ideal=IDEAL).set_index("layer")["mean"]
    assert unpaired["b"] < unpaired["a"]  # what ranking the summary's means would say
    ranking = rank_layers(rows, ideal=IDEAL)
    assert ranking["layer"].tolist() == ["a", "b"] and ranking["rank"].tolist() == [1, 2]
    assert (ranking["n"] == 6).all()
    a, b = ranking.itertuples(index=False)
    common = rows[rows["repeat"] < 6].groupby("layer")["accuracy"]
    assert a.mean == pytest.approx(common.mean()["a"], abs=1e-12)
    assert a.drop_from_ideal == pytest.approx(IDEAL - common.mean()["a"], abs=1e-12)
    assert a.share_of_drop == pytest.approx((IDEAL - common.mean()["a"])
                                            / (IDEAL - common.mean()["all"]), rel=1e-12)
    # The paired gap: mean and t interval of (b − a) over the common chips; the shared chip
    # spread cancels, so it holds the true 0.01 and excludes 0.
    gaps = (rows[(rows.layer == "b") & (rows.repeat < 6)]["accuracy"].to_numpy()
            - rows[rows.layer == "a"]["accuracy"].to_numpy())
    half = stats.t.ppf(0.975, 5) * gaps.std(ddof=1) / np.sqrt(6)
    assert a.gap_to_next == pytest.approx(gaps.mean(), abs=1e-12)
    assert (a.gap_ci95_lo, a.gap_ci95_hi) == pytest.approx((gaps.mean() - half,
                                                            gaps.mean() + half), abs=1e-12)
    assert 0 < a.gap_ci95_lo < 0.01 < a.gap_ci95_hi
    assert np.isnan([b.gap_to_next, b.gap_ci95_lo, b.gap_ci95_hi]).all()  # the last rank
    # Run with adaptive repeats (a first round of 5): Stein's interval of the gap, from the
    # first round's gaps and 4 degrees of freedom, over the 6 common repeats.
    stein = rank_layers(rows, ideal=IDEAL, first_round=5).iloc[0]
    half = stats.t.ppf(0.975, 4) * gaps[:5].std(ddof=1) / np.sqrt(6)
    assert stein.gap_to_next == pytest.approx(gaps.mean(), abs=1e-12)
    assert (stein.gap_ci95_lo, stein.gap_ci95_hi) == pytest.approx((gaps.mean() - half,
                                                                    gaps.mean() + half), abs=1e-12)


def test_ties_share_the_smaller_rank_and_every_point_and_time_is_ranked_apart():
    chips = np.zeros(5)
    one = layer_rows({"all": 5, "x": 5, "y": 5, "z": 5},
                     {"all": 0.1, "x": 0.03, "y": 0.03, "z": 0.01}, chips, noise=0.0)
    two = one.assign(adc_bits=8, point_id=one["point_id"] + "-8",
                     accuracy=one["accuracy"] + np.where(one["layer"] == "z", -0.05, 0.0))
    ranking = rank_layers(pd.concat([one.assign(adc_bits=6), two], ignore_index=True),
                          ideal=IDEAL)
    by_point = {bits: group for bits, group in ranking.groupby("adc_bits")}
    assert by_point[6]["rank"].tolist() == [1, 1, 3]
    assert by_point[6]["layer"].tolist()[2] == "z"
    assert by_point[8]["layer"].tolist()[0] == "z" and by_point[8]["rank"].tolist() == [1, 2, 2]


def test_a_summary_table_is_refused_by_name():
    rows = layer_rows({"all": 3, "a": 3}, {"all": 0.05, "a": 0.02}, np.zeros(3))
    with pytest.raises(UserInputError, match="df: rank_layers pairs the layers repeat by "
                                             "repeat"):
        rank_layers(summarize(rows, ideal=IDEAL))
