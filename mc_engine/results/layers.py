"""Ranking the layers of a layer-sensitivity study by the accuracy each costs alone.

Repeat r of every layer variant of a hardware point runs from the same seed, and a layer draws
the same devices and noise alone as with the others analog, so repeat r of two variants is the
same simulated chip (common random numbers). The ranking therefore compares the variants over
the repeats they all have, repeat by repeat: with adaptive repeats each variant has its own
count, and means over different chip sets would mix the chip-to-chip spread into the order.
The interval of a paired difference over the n common repeats is the one that says whether two
neighbouring ranks are told apart (see :mod:`mc_engine.results.compare` for why pairing
narrows it). With adaptive repeats n is the smallest of the variants' Stein sizes, a function of
the first round only, so the gap's interval is Stein's too: the first round's gaps give its std
and n₀ − 1 degrees of freedom, and it stays exact for normal spreads.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from mc_engine.errors import UserInputError
from mc_engine.results.analysis import _first_round_of, _ideal_per_study, swept_columns
from mc_engine.results.intervals import stein_interval

COLUMNS = ["rank", "layer", "n", "mean", "drop_from_ideal", "share_of_drop", "gap_to_next",
           "gap_ci95_lo", "gap_ci95_hi"]


def rank_layers(df: pd.DataFrame,
                ideal: numbers.Real | str | Path | pd.DataFrame | None = None,
                first_round: int | Mapping[str, int] | None = None) -> pd.DataFrame:
    """Layers of a layer-sensitivity study ranked by the accuracy they cost alone.

    From the result rows (:func:`~mc_engine.results.load_results`; ``ideal`` and
    ``first_round`` as for :func:`~mc_engine.results.summarize`): per hardware point and read
    time, each layer (that layer analog, the others digital) over the n repeats that every
    variant of the point has (the all-analog one included), paired on (repeat, seed).

    Columns: study, the swept ones, t_inference_s, rank (1 for the lowest mean accuracy, i.e.
    the largest drop: ranked so even without a known ideal; ties share the smaller rank),
    layer, n, mean (over those repeats), drop_from_ideal, share_of_drop (that drop over the
    all-analog one on the same repeats), gap_to_next (mean over the repeats of the next-ranked
    layer's accuracy minus this one's: how much more this layer costs) and gap_ci95_lo/hi (its
    paired 95 % t interval, within [−1, 1]; NaN for the last rank or n < 2; with adaptive
    repeats Stein's, from the gaps of the first round, whose stds alone chose n). Layers that
    cost most are the ones to keep digital or give more bits. Empty without a ``layer`` column.
    """
    from mc_engine.study.spec import ALL_LAYERS

    if "repeat" not in df or "accuracy" not in df:
        raise UserInputError("rank_layers pairs the layers repeat by repeat: give it the result "
                             "rows (load_results), not summarize's table", key="df")
    hardware = swept_columns(df)
    where = ["study", *hardware, "t_inference_s"]
    if "layer" not in df:
        return pd.DataFrame(columns=[*where, *COLUMNS])
    points = df[["study", "point_id"]].drop_duplicates()
    ideal_of = dict(zip(zip(points["study"], points["point_id"]),
                        _ideal_per_study(points["study"], df, ideal, points["point_id"])))
    pair_on = ["repeat", "seed"] if "seed" in df else ["repeat"]
    first_rounds = _first_round_of(df, first_round)
    frames = []
    for key, group in df.groupby(where, sort=True, dropna=False):
        wide = group.pivot_table(index=pair_on, columns="layer", values="accuracy",
                                 aggfunc="first").dropna()  # the repeats every variant has
        layers = [c for c in wide.columns if c != ALL_LAYERS]
        if not layers or wide.empty:
            continue
        # One model per group (study and checkpoint are in ``where``): one ideal.
        point_ideal = ideal_of[(group["study"].iloc[0], group["point_id"].iloc[0])]
        mean = wide[layers].mean()
        order = mean.sort_values(kind="stable").index  # lowest accuracy first
        ranked = pd.DataFrame({"rank": mean[order].rank(method="min").astype(int).to_numpy(),
                               "layer": list(order), "n": len(wide),
                               "mean": mean[order].to_numpy()})
        ranked["drop_from_ideal"] = point_ideal - ranked["mean"]
        total = point_ideal - wide[ALL_LAYERS].mean() if ALL_LAYERS in wide else np.nan
        ranked["share_of_drop"] = ranked["drop_from_ideal"] / total
        gaps = wide[list(order[1:])].to_numpy() - wide[list(order[:-1])].to_numpy()
        # Stein's interval when the first round chose n (the t interval when it is all n).
        n0 = len(wide) if first_rounds is None else first_rounds[group.index[0]]
        first = gaps[wide.index.get_level_values("repeat") < n0]
        gap_std = first.std(axis=0, ddof=1) if len(first) > 1 else np.full(gaps.shape[1], np.nan)
        gap_mean = gaps.mean(axis=0)
        lo, hi, _ = stein_interval(gap_mean, gap_std, len(first), len(wide), -1.0, 1.0)
        ranked["gap_to_next"] = np.append(gap_mean, np.nan)
        ranked["gap_ci95_lo"], ranked["gap_ci95_hi"] = np.append(lo, np.nan), np.append(hi, np.nan)
        for column, value in zip(where, key):
            ranked[column] = value
        frames.append(ranked)
    if not frames:
        return pd.DataFrame(columns=[*where, *COLUMNS])
    return pd.concat(frames, ignore_index=True)[[*where, *COLUMNS]]
