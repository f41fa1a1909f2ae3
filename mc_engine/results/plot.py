"""The figures of a study's results: accuracy vs time, accuracy vs each swept parameter, and a
paired comparison. Each builder returns a matplotlib Figure (no pyplot: no global backend or
figure state); :func:`plot` writes the first one to a file, the HTML report embeds them all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mc_engine.fileio import atomic_write
from mc_engine.results.analysis import summarize, swept_columns
from mc_engine.study.units import format_duration

#: Beyond this many other-parameter combinations a parameter figure shows their average only.
MAX_LINES = 8


def time_positions(times_s: np.ndarray) -> np.ndarray:
    """x positions on a log axis: t itself, with t = 0 placed one decade below the first t > 0.

    Drift makes accuracy a function of log t, but "right after programming" (0 s) is the
    reference every study wants to see, so it gets its own tick left of the others.
    """
    times_s = np.asarray(times_s, dtype=float)
    positive = times_s[times_s > 0]
    zero_at = positive.min() / 10 if positive.size else 1.0
    return np.where(times_s > 0, times_s, zero_at)


def short_value(column: str, value: object) -> object:
    """A value as a legend shows it: a checkpoint by its file name, anything else as is."""
    return Path(str(value)).name if column == "checkpoint" else value


def point_label(point: pd.DataFrame, label_columns: list[str], several_studies: bool) -> str:
    """``adc_bits=8, w_noise=0.02`` for a point's rows (its point_id when nothing is swept)."""
    values = [f"{c}={short_value(c, point[c].iloc[0])}" for c in label_columns]
    label = ", ".join(values) if values else str(point["point_id"].iloc[0])
    return f"{point['study'].iloc[0]}: {label}" if several_studies else label


def accuracy_vs_time(summary: pd.DataFrame, label_columns: list[str]) -> Figure:
    """Mean accuracy vs inference time with the 5–95 % band per point, and the ideal line."""
    several = summary["study"].nunique() > 1
    times = np.unique(summary["t_inference_s"].to_numpy())
    position = dict(zip(times, time_positions(times)))  # t = 0 at one place for every point
    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = fig.subplots()
    for _, point in summary.groupby(["study", "point_id"], sort=False):
        point = point.sort_values("t_inference_s")
        x = point["t_inference_s"].map(position).to_numpy()
        (line,) = ax.plot(x, point["mean"], marker="o",
                          label=point_label(point, label_columns, several))
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
    return fig


def accuracy_vs_parameter(summary: pd.DataFrame, parameter: str,
                          label_columns: list[str]) -> Figure:
    """Mean accuracy (95 % interval bars) vs one swept parameter, one panel per read time.

    Values sit at evenly spaced positions in sorted order (parameters may be text, bools or
    inf). A line per combination of the other swept parameters, or, when there are more than
    :data:`MAX_LINES`, their average (bars: the smallest lower and largest upper bound).
    """
    others = [c for c in label_columns if c != parameter]
    values = sorted(summary[parameter].unique())
    position = {v: i for i, v in enumerate(values)}
    times = sorted(summary["t_inference_s"].unique())
    fig = Figure(figsize=(3.2 * len(times) + 1.0, 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(times), sharey=True, squeeze=False)[0])
    average = bool(others) and len(summary[others].drop_duplicates()) > MAX_LINES
    for ax, t in zip(axes, times):
        at_t = summary[summary["t_inference_s"] == t]
        if average:
            lines = [("average over " + ", ".join(others),
                      at_t.groupby(parameter).agg(mean=("mean", "mean"), ci95_lo=("ci95_lo", "min"),
                                                  ci95_hi=("ci95_hi", "max")).reset_index())]
        else:
            lines = []
            for key, group in (at_t.groupby(others, sort=True, dropna=False) if others
                               else [((), at_t)]):
                key = key if isinstance(key, tuple) else (key,)
                label = ", ".join(f"{c}={short_value(c, v)}" for c, v in zip(others, key)) \
                    or "mean"
                lines.append((label, group))
        for label, line in lines:
            line = line.sort_values(parameter)
            mean = line["mean"].to_numpy()
            err = np.vstack([mean - line["ci95_lo"].to_numpy(), line["ci95_hi"].to_numpy() - mean])
            ax.errorbar(line[parameter].map(position), mean, yerr=np.nan_to_num(err), marker="o",
                        capsize=3, label=label)
        ax.set_xticks(range(len(values)), [str(short_value(parameter, v)) for v in values])
        ax.set_xlabel(parameter)
        ax.set_title(f"t = {format_duration(t)}")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("accuracy (mean, 95 % CI)")
    if others:
        axes[-1].legend(fontsize="small")
    return fig


def paired_comparison(table: pd.DataFrame, title: str) -> Figure:
    """``compare``'s table: the mean difference vs time with its paired and unpaired 95 %
    intervals side by side."""
    times = table["t_inference_s"].to_numpy()
    x = np.arange(len(times))
    fig = Figure(figsize=(7.5, 3.8), layout="constrained")
    ax = fig.subplots()
    mean = table["diff_mean"].to_numpy()
    for offset, kind, name in ((-0.08, "diff", "paired (same chips)"),
                               (0.08, "unpaired", "unpaired (as if independent)")):
        err = np.vstack([mean - table[f"{kind}_ci95_lo"].to_numpy(),
                         table[f"{kind}_ci95_hi"].to_numpy() - mean])
        ax.errorbar(x + offset, mean, yerr=np.nan_to_num(err), marker="o", capsize=4,
                    linestyle="none", label=f"95 % CI, {name}")
    ax.axhline(0.0, color="0.3", linewidth=1)
    ax.set_xticks(x, [format_duration(t) for t in times])
    ax.set_xlabel("time after programming")
    ax.set_ylabel("accuracy difference")
    ax.set_title(title, fontsize="medium")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def layer_ranking(ranking: pd.DataFrame, hardware: list[str]) -> Figure:
    """:func:`rank_layers`' table as bars: each layer's accuracy drop (that layer alone analog)
    per read time, one panel per hardware point (the first :data:`MAX_LINES`)."""
    points = ranking[hardware].drop_duplicates().head(MAX_LINES) if hardware else [None]
    n_points = len(points) if hardware else 1
    layers = sorted(ranking["layer"].unique(), key=lambda name: (len(name), name))
    times = sorted(ranking["t_inference_s"].unique())
    fig = Figure(figsize=(7.5, 2.8 * n_points + 0.6), layout="constrained")
    axes = fig.subplots(n_points, 1, squeeze=False)[:, 0]
    width = 0.8 / len(times)
    rows = points.itertuples(index=False) if hardware else [()]
    for ax, values in zip(axes, rows):
        mask = np.ones(len(ranking), dtype=bool)
        for column, value in zip(hardware, values):
            mask &= (ranking[column] == value).to_numpy()
        point = ranking[mask].set_index(["layer", "t_inference_s"])["drop_from_ideal"]
        for k, t in enumerate(times):
            drops = [point.get((layer, t), np.nan) for layer in layers]
            ax.bar(np.arange(len(layers)) + (k - (len(times) - 1) / 2) * width, drops, width,
                   label=f"t = {format_duration(t)}")
        ax.set_xticks(range(len(layers)), layers)
        ax.set_ylabel("accuracy drop")
        title = ", ".join(f"{c}={short_value(c, v)}" for c, v in zip(hardware, values))
        ax.set_title(title or "every point", fontsize="medium")
        ax.grid(True, axis="y", alpha=0.3)
    axes[-1].set_xlabel("layer (alone on analog tiles, the others digital)")
    axes[0].legend(fontsize="small")
    return fig


def plot(df: pd.DataFrame, out: str | Path, ideal=None) -> Path:
    """Draw mean accuracy vs inference time with the 5–95 % band per point into ``out`` (PNG,
    or any format matplotlib writes, by suffix); returns the file.

    ``ideal`` is passed to :func:`summarize`; when known it is drawn as a dashed line.
    """
    fig = accuracy_vs_time(summarize(df, ideal), swept_columns(df))
    out = Path(out)
    if not out.suffix:  # matplotlib would add .png itself: return the name it writes
        out = out.with_name(out.name + ".png")
    # Through a temporary: a full disk names the file and leaves no half-written image.
    return atomic_write(out, lambda temp: fig.savefig(temp, dpi=120,
                                                      format=out.suffix[1:].lower()))
