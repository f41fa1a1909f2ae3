"""The figures of a study's results: a metric vs time and vs each swept parameter (group).

Each builder returns a matplotlib Figure (no pyplot: no global backend or figure state) in the
house style of :mod:`.style` (print-sized, colour-blind-safe, legends outside the axes);
:func:`plot` writes the time figure to a file, the HTML report embeds them all. The paired
comparison and the layer ranking are in :mod:`.plot_pairs`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mc_engine.fileio import atomic_write
from mc_engine.results import style
from mc_engine.results.analysis import summarize, swept_columns
from mc_engine.results.labels import Names, group_title, tied_groups
from mc_engine.results.metrics import METRICS
from mc_engine.study.units import format_duration

#: Beyond this many other-parameter combinations a parameter figure shows their average only.
MAX_LINES = 8
#: Beyond this many curves the time figure is split into panels by one parameter group.
MAX_PER_PANEL = 8
#: Most panels of one figure (read times of a parameter figure, facets of the time figure).
MAX_PANELS = 6
#: Up to this many lines per panel a parameter figure also shows every chip as a dot.
MAX_DOT_LINES = 3


def time_positions(times_s: np.ndarray) -> np.ndarray:
    """x positions on a log axis: t itself, with t = 0 placed one decade below the first t > 0.

    Drift makes accuracy a function of log t, but "right after programming" (0 s) is the
    reference every study wants to see, so it gets its own tick left of the others.
    """
    times_s = np.asarray(times_s, dtype=float)
    positive = times_s[times_s > 0]
    zero_at = positive.min() / 10 if positive.size else 1.0
    return np.where(times_s > 0, times_s, zero_at)


def metric_of(summary: pd.DataFrame) -> str:
    """The metric a :func:`summarize` table is of (its ``ideal_<metric>`` column)."""
    return next((m for m in METRICS if f"ideal_{m}" in summary), "accuracy")


def point_groups(summary: pd.DataFrame, label_columns: list[str]) -> list[list[str]]:
    """The label columns of ``summary`` in tied groups, with ``study`` first when the table
    holds several studies."""
    columns = (["study"] if summary["study"].nunique() > 1 else []) + \
        [c for c in label_columns if c in summary and c != "study"]
    points = summary[["point_id", *columns]].drop_duplicates()
    return tied_groups(points, columns)


def accuracy_vs_time(summary: pd.DataFrame, label_columns: list[str], *,
                     size: str | float = "double") -> Figure:
    """Mean of the metric vs inference time, one curve per point, with the 5–95 % band of the
    chips (up to 4 curves a panel) and the digital model as a dashed line; more than
    :data:`MAX_PER_PANEL` curves are split into panels by the parameter group that leaves the
    fewest per panel."""
    metric = metric_of(summary)
    names = Names.of(summary)
    groups = point_groups(summary, label_columns)
    facet = _facet_group(summary, groups)
    legend_groups = [g for g in groups if g is not facet]
    panels = [(None, summary)] if facet is None else [
        (f"{group_title(facet)} = {names.value(facet[0], key)}", part)
        for key, part in summary.groupby(facet[0], sort=True, dropna=False)]
    times = np.unique(summary["t_inference_s"].to_numpy())
    position = dict(zip(times, time_positions(times)))
    labels = _curve_labels(summary, legend_groups, names)
    order = {label: i for i, label in enumerate(dict.fromkeys(labels.values()))}
    with style.context():
        n_cols = 1 if len(panels) == 1 else (2 if len(panels) == 4 else min(3, len(panels)))
        n_rows = int(np.ceil(len(panels) / n_cols))
        fig = style.figure(size, 3.0 if n_rows == 1 else 2.2 * n_rows + 0.4)
        axes = fig.subplots(n_rows, n_cols, sharex=True, sharey=True, squeeze=False).ravel()
        handles: dict[str, object] = {}
        banded = max(part[["study", "point_id"]].drop_duplicates().shape[0]
                     for _, part in panels) <= 4
        for ax, (title, part) in zip(axes, panels):
            curves = list(part.groupby(["study", "point_id"], sort=False))
            for (study, point_id), point in curves:
                point = point.sort_values("t_inference_s")
                x = point["t_inference_s"].map(position).to_numpy()
                label = labels[(study, point_id)]
                look = style.curve_style(order[label])
                (line,) = ax.plot(x, point["mean"], **look.kwargs(), label=label)
                handles.setdefault(label, line)
                if banded:
                    ax.fill_between(x, point["q05"], point["q95"], color=look.color,
                                    alpha=0.15, linewidth=0)
            for k, (label, value) in enumerate(_ideal_lines(part, metric, names).items()):
                dashes = style.IDEAL_DASHES[k % len(style.IDEAL_DASHES)]   # one per model
                handles.setdefault(label, ax.axhline(value, **{**style.IDEAL, "linestyle": dashes},
                                                     label=label))
            if title:
                ax.set_title(title)
        for ax in axes[len(panels):]:
            ax.set_visible(False)
        for ax in axes[:len(panels)]:
            ax.set_xscale("log")
            ax.set_xticks(list(position.values()), [format_duration(t) for t in times])
            ax.minorticks_off()
        fig.supxlabel("time after programming", fontsize=style.RC["axes.labelsize"])
        for ax in axes[::n_cols]:
            ax.set_ylabel(f"{metric} (mean; band: 5–95 % of chips)" if banded
                          else f"{metric} (mean over chips)")
        title = ", ".join(group_title(g) for g in legend_groups)
        if len(handles) > 1 or legend_groups:
            style.legend_outside(fig, list(handles.values()), list(handles), title or None)
    return fig


def accuracy_vs_parameter(summary: pd.DataFrame, parameter: str | list[str],
                          label_columns: list[str], *, chips: pd.DataFrame | None = None,
                          size: str | float = "double") -> Figure:
    """Mean (95 % interval bars) vs one swept parameter (or a group of tied ones, drawn by its
    first), one panel per read time (at most :data:`MAX_PANELS`, spread over the times).

    Values spanning more than a decade sit on a log axis, others at evenly spaced positions in
    sorted order (parameters may be text, bools or inf). A line per combination of the other
    parameter groups, or, when there are more than :data:`MAX_LINES`, their average (bars: the
    smallest lower and largest upper bound). With ``chips`` (the result rows) and at most
    :data:`MAX_DOT_LINES` lines, each chip is drawn as a dot beside its mean.
    """
    metric = metric_of(summary)
    names = Names.of(summary)
    group = [parameter] if isinstance(parameter, str) else list(parameter)
    lead = group[0]
    groups = [g for g in point_groups(summary, label_columns) if lead not in g]
    others = [g[0] for g in groups]
    values = sorted(summary[lead].unique())
    log_x = style.spans_decades(values)
    position = {v: (float(v) if log_x else i) for i, v in enumerate(values)}
    times = sorted(summary["t_inference_s"].unique())
    if len(times) > MAX_PANELS:
        times = [times[i] for i in np.linspace(0, len(times) - 1, MAX_PANELS).round().astype(int)]
    average = bool(others) and len(summary[others].drop_duplicates()) > MAX_LINES
    with style.context():
        fig = style.figure(size, 2.8)
        axes = fig.subplots(1, len(times), sharey=True, squeeze=False)[0]
        handles: dict[str, object] = {}
        axis_width = style.width(size) * 0.75 / len(times)
        for ax, t in zip(axes, times):
            at_t = summary[summary["t_inference_s"] == t]
            lines = _parameter_lines(at_t, lead, groups, names, average)
            for i, (label, key, line) in enumerate(lines):
                look = style.curve_style(i)
                line = line.sort_values(lead)
                x = line[lead].map(position).to_numpy(dtype=float)
                mean = line["mean"].to_numpy()
                err = np.vstack([mean - line["ci95_lo"].to_numpy(),
                                 line["ci95_hi"].to_numpy() - mean])
                bars = ax.errorbar(x, mean, yerr=np.nan_to_num(err), capsize=2.5,
                                   **look.kwargs(), label=label, zorder=3)
                handles.setdefault(label, bars)
                if chips is not None and len(lines) <= MAX_DOT_LINES and key is not None:
                    _chip_dots(ax, chips, metric, t, lead, dict(zip(others, key)), position,
                               log_x, look.color, i - (len(lines) - 1) / 2)
            if log_x:
                ax.set_xscale("log")
                ax.set_xticks(list(position.values()), [names.value(lead, v) for v in values])
                ax.minorticks_off()
                low, high = min(position.values()), max(position.values())
                pad = (high / low) ** 0.12          # room for the end ticks' labels
                ax.set_xlim(low / pad, high * pad)
            else:
                style.set_category_ticks(ax, range(len(values)),
                                         [names.value(lead, v) for v in values], axis_width)
                ax.set_xlim(-0.5, len(values) - 0.5)
            ax.set_title(f"t = {format_duration(t)}")
        fig.supxlabel(group_title(group), fontsize=style.RC["axes.labelsize"])
        axes[0].set_ylabel(f"{metric} (mean, 95 % CI)")
        if others:
            title = "average over " + ", ".join(others) if average else \
                ", ".join(group_title(g) for g in groups)
            style.legend_outside(fig, list(handles.values()), list(handles), title)
    return fig


def plot(df: pd.DataFrame, out: str | Path, ideal=None, *, metric: str = "accuracy",
         size: str | float = "double") -> Path:
    """Draw the mean of ``metric`` vs inference time with the 5–95 % band per point into
    ``out`` (PNG, PDF or SVG, by suffix); returns the file. ``size``: ``single`` (3.5 in),
    ``double`` (7.2 in) or a width in inches.

    ``ideal`` is passed to :func:`summarize`; when known it is drawn as a dashed line.
    """
    fig = accuracy_vs_time(summarize(df, ideal, metric=metric), swept_columns(df), size=size)
    out = Path(out)
    if not out.suffix:  # matplotlib would add .png itself: return the name it writes
        out = out.with_name(out.name + ".png")
    # Through a temporary: a full disk names the file and leaves no half-written image.
    return atomic_write(out, lambda temp: style.save(fig, temp, out.suffix[1:].lower()))


def _facet_group(summary: pd.DataFrame, groups: list[list[str]]) -> list[str] | None:
    """The group to split the time figure's panels by when it has more than
    :data:`MAX_PER_PANEL` curves: the one leaving the fewest curves per panel (at most
    :data:`MAX_PANELS` panels; the first such in sweep order)."""
    n_points = summary[["study", "point_id"]].drop_duplicates().shape[0]
    if n_points <= MAX_PER_PANEL or len(groups) < 2:
        return None
    fits = [g for g in groups if 2 <= summary[g[0]].nunique(dropna=False) <= MAX_PANELS]
    if not fits:
        return None
    return min(fits, key=lambda g: -summary[g[0]].nunique(dropna=False))


def _curve_labels(summary: pd.DataFrame, groups: list[list[str]],
                  names: Names) -> dict[tuple, str]:
    """(study, point_id) -> the values of ``groups`` that tell the curve apart (point_id when
    nothing is swept)."""
    points = summary.drop_duplicates(["study", "point_id"])
    return {(r["study"], r["point_id"]): (names.label(r, groups, with_keys=False)
                                          if groups else str(r["point_id"]))
            for _, r in points.iterrows()}


def _ideal_lines(part: pd.DataFrame, metric: str, names: Names) -> dict[str, float]:
    """Label -> the digital model's value: one per study (and per checkpoint)."""
    by = ["study", "checkpoint"] if "checkpoint" in part else ["study"]
    several = part["study"].nunique() > 1
    lines = {}
    for key, value in part.groupby(by)[f"ideal_{metric}"].first().items():
        key = key if isinstance(key, tuple) else (key,)
        words = ([str(key[0])] if several else []) + [names.value("checkpoint", k)
                                                       for k in key[1:]]
        if np.isfinite(value):
            lines[", ".join(["digital", *words])] = float(value)
    return lines


def _parameter_lines(at_t: pd.DataFrame, lead: str, groups: list[list[str]], names: Names,
                     average: bool) -> list[tuple[str, tuple | None, pd.DataFrame]]:
    """(label, values of the other group leads or None, rows) of each line of one panel."""
    others = [g[0] for g in groups]
    if average:
        rows = at_t.groupby(lead).agg(mean=("mean", "mean"), ci95_lo=("ci95_lo", "min"),
                                      ci95_hi=("ci95_hi", "max")).reset_index()
        return [("average", None, rows)]
    if not others:
        return [("mean", (), at_t)]
    lines = []
    for key, rows in at_t.groupby(others, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        lines.append((names.label(dict(zip(others, key)), groups, with_keys=False), key, rows))
    return lines


def _chip_dots(ax, chips: pd.DataFrame, metric: str, t: float, lead: str, fixed: dict,
               position: dict, log_x: bool, color: str, offset: float) -> None:
    """Every chip of one line at time ``t`` as a small dot, spread sideways a little."""
    mask = (chips["t_inference_s"] == t).to_numpy().copy()
    for column, value in fixed.items():
        mask &= (chips[column] == value).to_numpy() | (chips[column].isna().to_numpy()
                                                       & pd.isna(value))
    rows = chips[mask]
    if rows.empty:
        return
    rng = np.random.default_rng(0)     # the same spread every time: reproducible figures
    x = rows[lead].map(position).to_numpy(dtype=float)
    jitter = (offset * 0.12 + rng.uniform(-0.05, 0.05, len(x)))
    x = x * 10 ** (jitter * 0.3) if log_x else x + jitter
    ax.scatter(x, rows[metric], s=4, color=color, alpha=0.35, linewidths=0, zorder=2)
