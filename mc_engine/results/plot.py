"""Accuracy versus time after programming, one line with a spread band per hardware point."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mc_engine.results.analysis import summarize, swept_columns
from mc_engine.study.units import format_duration


def time_positions(times_s: np.ndarray) -> np.ndarray:
    """x positions on a log axis: t itself, with t = 0 placed one decade below the first t > 0.

    Drift makes accuracy a function of log t, but "right after programming" (0 s) is the
    reference every study wants to see, so it gets its own tick left of the others.
    """
    times_s = np.asarray(times_s, dtype=float)
    positive = times_s[times_s > 0]
    zero_at = positive.min() / 10 if positive.size else 1.0
    return np.where(times_s > 0, times_s, zero_at)


def plot(df: pd.DataFrame, out_png: str | Path, ideal=None) -> Path:
    """Draw mean accuracy vs inference time with the 5–95 % band per point; returns the file.

    ``ideal`` is passed to :func:`summarize`; when known it is drawn as a dashed line.
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    summary = summarize(df, ideal)
    label_columns = swept_columns(df)
    several = summary["study"].nunique() > 1
    times = np.unique(summary["t_inference_s"].to_numpy())
    position = dict(zip(times, time_positions(times)))  # t = 0 at one place for every point
    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = fig.subplots()
    for (study, pid), point in summary.groupby(["study", "point_id"], sort=False):
        point = point.sort_values("t_inference_s")
        x = point["t_inference_s"].map(position).to_numpy()
        values = [f"{c}={Path(point[c].iloc[0]).name if c == 'checkpoint' else point[c].iloc[0]}"
                  for c in label_columns]
        label = ", ".join(values) if values else str(pid)
        if several:
            label = f"{study}: {label}"
        (line,) = ax.plot(x, point["mean"], marker="o", label=label)
        ax.fill_between(x, point["q05"], point["q95"], color=line.get_color(), alpha=0.2,
                        linewidth=0)
    by = ["study", "checkpoint"] if "checkpoint" in summary else ["study"]  # one per checkpoint
    for key, acc in summary.groupby(by)["ideal_accuracy"].first().items():
        key = key if isinstance(key, tuple) else (key,)
        names = ([key[0]] if several else []) + [Path(k).name for k in key[1:]]
        if np.isfinite(acc):
            ax.axhline(acc, color="0.3", linestyle="--", linewidth=1,
                       label=", ".join(["ideal (digital)", *names]))
    ax.set_xscale("log")
    ax.set_xticks(list(position.values()), [format_duration(t) for t in times])
    ax.minorticks_off()
    ax.set_xlabel("time after programming")
    ax.set_ylabel("accuracy (mean, 5–95 % band)")
    ax.set_title(", ".join(summary["study"].unique()))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    out_png = Path(out_png)
    if not out_png.suffix:  # matplotlib would add .png itself: return the name it writes
        out_png = out_png.with_name(out_png.name + ".png")
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    return out_png
