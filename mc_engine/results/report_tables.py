"""The tables of the HTML report as HTML that fits the page: short parameter values
(checkpoints by their short name, numbers as given), statistics to four decimals, headers that
may wrap, and a container that scrolls sideways rather than widen the page should a table
still be too wide."""

from __future__ import annotations

import math
import re

import pandas as pd
from markupsafe import Markup

from mc_engine.results.labels import Names, format_value
from mc_engine.study.units import format_duration

#: Statistic columns of the summary table, in order (the change from ideal is appended).
SUMMARY_STATS = ["n", "mean", "std", "ci95_lo", "ci95_hi", "q05", "q50", "q95"]


def html_table(frame: pd.DataFrame, parameters: list[str], names: Names,
               css_class: str = "") -> Markup:
    """``frame`` as an HTML table in a sideways-scrolling container: ``parameters`` columns
    shown by :class:`Names`, ``t_inference_s`` as a duration named ``t``, other floats to
    four decimals (NaN as ``-``)."""
    shown = frame.copy()
    if "t_inference_s" in shown:
        shown.insert(list(shown.columns).index("t_inference_s"), "t",
                     shown.pop("t_inference_s").map(format_duration))
    formatters = {}
    for column in shown.columns:
        if column in parameters:
            shown[column] = [names.value(column, v) for v in shown[column]]
        elif shown[column].dtype.kind == "f":
            formatters[column] = _statistic
    html = shown.to_html(index=False, border=0, na_rep="-", formatters=formatters,
                         classes=css_class or None, escape=True)
    # Long headers may break after an underscore (drop_from_<wbr>ideal), never inside a word.
    html = re.sub(r"<th>([^<]*)</th>", lambda m: f"<th>{m[1].replace('_', '_<wbr>')}</th>",
                  html)
    return Markup(f'<div class="table-wrap">{html}</div>')


def summary_table(summary: pd.DataFrame, parameters: list[str], change_column: str,
                  names: Names) -> Markup:
    """The per-point, per-time statistics (the adaptive first round where there is one)."""
    first = ["study"] if summary["study"].nunique() > 1 else []
    adaptive = ["n_first", "std_first"] if "n_first" in summary else []
    stats = SUMMARY_STATS[:3] + adaptive + SUMMARY_STATS[3:]
    frame = summary[[*first, *(parameters or ["point_id"]), "t_inference_s", *stats,
                     change_column]]
    return html_table(frame, parameters, names, "summary")


def _statistic(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return format_value(value)
    return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"
