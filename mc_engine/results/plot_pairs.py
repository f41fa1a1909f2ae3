"""The figures of a paired comparison of two points and of a layer ranking, in the house style
of :mod:`.style`."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mc_engine.results import style
from mc_engine.results.labels import Names
from mc_engine.study.units import format_duration

#: Most hardware points of a layer ranking drawn (one panel each).
MAX_POINTS = 8


def paired_comparison(table: pd.DataFrame, title: str, *, metric: str = "accuracy",
                      size: str | float = "double") -> Figure:
    """``compare``'s table: the mean difference vs time with its paired and unpaired 95 %
    intervals side by side (the title wrapped so that it is never cut off)."""
    times = table["t_inference_s"].to_numpy()
    x = np.arange(len(times))
    with style.context():
        fig = style.figure(size, 2.6)
        ax = fig.subplots()
        mean = table["diff_mean"].to_numpy()
        for i, (offset, kind, name) in enumerate(((-0.08, "diff", "paired (same chips)"),
                                                  (0.08, "unpaired", "unpaired (as if "
                                                                     "independent)"))):
            err = np.vstack([mean - table[f"{kind}_ci95_lo"].to_numpy(),
                             table[f"{kind}_ci95_hi"].to_numpy() - mean])
            look = style.curve_style(i)
            ax.errorbar(x + offset, mean, yerr=np.nan_to_num(err), capsize=3,
                        color=look.color, marker=look.marker, linestyle="none",
                        label=f"95 % CI, {name}")
        ax.axhline(0.0, color="0.3", linewidth=0.8)
        ax.set_xticks(x, [format_duration(t) for t in times])
        ax.set_xlim(-0.5, len(times) - 0.5)
        ax.set_xlabel("time after programming")
        ax.set_ylabel(f"{metric} difference")
        fig.suptitle(style.wrap(title, int(style.width(size) * 13)))
        handles, labels = ax.get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=2)
    return fig


def layer_ranking(ranking: pd.DataFrame, hardware: list[str], *,
                  size: str | float = "double") -> Figure:
    """:func:`rank_layers`' table as bars: each layer's accuracy drop (that layer alone analog)
    per read time, one panel per hardware point (the first :data:`MAX_POINTS`)."""
    points = ranking[hardware].drop_duplicates().head(MAX_POINTS) if hardware else [None]
    n_points = len(points) if hardware else 1
    layers = sorted(ranking["layer"].unique(), key=lambda name: (len(name), name))
    times = sorted(ranking["t_inference_s"].unique())
    names = Names.of(ranking)
    with style.context():
        fig = style.figure(size, 2.2 * n_points + 0.6)
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
                ax.bar(np.arange(len(layers)) + (k - (len(times) - 1) / 2) * width, drops,
                       width, color=style.PALETTE[k % len(style.PALETTE)],
                       label=f"t = {format_duration(t)}")
            style.set_category_ticks(ax, range(len(layers)), layers, style.width(size) * 0.8)
            ax.set_ylabel("accuracy drop")
            title = ", ".join(f"{c}={names.value(c, v)}" for c, v in zip(hardware, values))
            ax.set_title(title or "every point")
            ax.grid(False, axis="x")
        axes[-1].set_xlabel("layer (alone on analog tiles, the others digital)")
        handles, labels = axes[0].get_legend_handles_labels()
        style.legend_outside(fig, handles, labels)
    return fig
