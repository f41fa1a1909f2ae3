"""Ranking the checkpoints of a checkpoint axis by their paired gain over a baseline checkpoint
(README, "Training recipes"): at every hardware point and read time, each checkpoint's accuracy
minus the baseline's, paired chip by chip (:func:`mc_engine.results.compare.compare`: repeat r
of every checkpoint is programmed with the same device draws), with the paired 95 % interval;
rank 1 gains the most. A recipe sweep (mc_engine/train/sweep.py) evaluated by a study this way
compares every recipe with plain training on the same chips.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mc_engine.errors import UserInputError
from mc_engine.results.analysis import swept_columns
from mc_engine.results.compare import compare
from mc_engine.study.units import format_duration

COLUMNS = ["t_inference_s", "rank", "checkpoint", "n", "baseline_mean", "other_mean",
           "diff_mean", "diff_ci95_lo", "diff_ci95_hi"]


def rank_checkpoints(df: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Every other checkpoint against ``baseline`` (a value of the ``checkpoint`` column), per
    hardware point (the swept hardware columns, first in the table) and read time, ranked by
    the mean paired difference (rank 1: the largest gain). One row per (point, time,
    checkpoint): the columns of :data:`COLUMNS` after the hardware ones."""
    if "checkpoint" not in df:
        raise UserInputError("the results have no checkpoint axis to rank",
                             source=df.attrs.get("results_dir"), key="checkpoint")
    if baseline not in set(df["checkpoint"]):
        raise UserInputError(f"no checkpoint {baseline!r} in the results; they have: "
                             f"{', '.join(sorted(df['checkpoint'].unique()))}",
                             source=df.attrs.get("results_dir"), key="baseline")
    hardware = [c for c in swept_columns(df) if c != "checkpoint"]
    if df["study"].nunique() > 1:
        hardware = ["study", *hardware]
    others = [c for c in dict.fromkeys(df["checkpoint"]) if c != baseline]
    points = df[hardware].drop_duplicates().to_dict("records") if hardware else [{}]
    rows = []
    for point in points:
        for other in others:
            table = compare(df, {**point, "checkpoint": baseline},
                            {**point, "checkpoint": other})
            rows.append(table.assign(checkpoint=other, **point))
    if not rows:
        return pd.DataFrame(columns=[*hardware, *COLUMNS])
    out = pd.concat(rows, ignore_index=True)
    out["rank"] = out.groupby([*hardware, "t_inference_s"])["diff_mean"].rank(
        ascending=False, method="first").astype(int)
    return out.sort_values([*hardware, "t_inference_s", "rank"], kind="stable")[
        [*hardware, *COLUMNS]].reset_index(drop=True)


def axis_baseline(df: pd.DataFrame) -> str | None:
    """The first checkpoint of the study's checkpoint axis (its resolved study.toml, in the
    results folder), or None without one."""
    if "checkpoint" not in df or df["checkpoint"].nunique() < 2 or df["study"].nunique() > 1:
        return None
    folder = Path(df.attrs.get("results_dir", "."))
    for path in (folder / "study.toml", folder / df["study"].iloc[0] / "study.toml"):
        if path.is_file():
            sweep = tomllib.loads(path.read_text(encoding="utf-8")).get("sweep", {})
            axis = sweep.get("checkpoint") or next(
                (z["checkpoint"] for z in sweep.get("zip", []) if "checkpoint" in z), None)
            if axis and axis[0] in set(df["checkpoint"]):
                return axis[0]
    return None


def ranking_figure(ranking: pd.DataFrame, baseline: str) -> Figure:
    """The gains at the latest read time as horizontal intervals, one panel per hardware
    point (at most 4), the checkpoints by their file names."""
    last = ranking[ranking["t_inference_s"] == ranking["t_inference_s"].max()]
    hardware = [c for c in ranking.columns if c not in COLUMNS]
    groups = list(last.groupby(hardware, sort=False)) if hardware else [((), last)]
    groups = groups[:4]
    # One order for every panel (by the first panel's gains), so that a row is one checkpoint.
    order = list(groups[0][1].sort_values("diff_mean")["checkpoint"])
    order += [c for c in dict.fromkeys(last["checkpoint"]) if c not in order]
    fig = Figure(figsize=(4.2 * len(groups), 1.2 + 0.35 * len(order)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(groups), sharey=True, squeeze=False)[0])
    for ax, (key, rows) in zip(axes, groups):
        rows = rows.set_index("checkpoint").reindex(order)
        y = np.arange(len(rows))
        mean = rows["diff_mean"].to_numpy()
        err = np.vstack([mean - rows["diff_ci95_lo"].to_numpy(),
                         rows["diff_ci95_hi"].to_numpy() - mean])
        ax.errorbar(mean, y, xerr=np.nan_to_num(err), marker="o", capsize=3, linestyle="none")
        ax.axvline(0.0, color="0.3", linewidth=1)
        ax.set_yticks(y, [Path(str(c)).stem for c in order], fontsize="small")
        key = key if isinstance(key, tuple) else (key,)
        names = [f"{h}={v}" for h, v in zip(hardware, key)]
        ax.set_title("\n".join(", ".join(names[i:i + 2]) for i in range(0, len(names), 2))
                     or "all chips", fontsize="small")
        ax.set_xlabel(f"accuracy gain over {Path(baseline).stem} at "
                      f"{format_duration(float(last['t_inference_s'].iloc[0]))}",
                      fontsize="small")
        ax.grid(True, alpha=0.3)
    return fig
