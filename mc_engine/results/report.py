"""The HTML report of a study: one self-contained file (figures embedded as PNG data URIs, no
scripts, no external resources) that opens offline and can be mailed around.

Sections: accuracy vs time, accuracy vs each swept parameter at each read time, the paired
comparison of the two best points (by mean accuracy at the latest read time), the layer
ranking of a layer-sensitivity study, the summary table, and the study file that produced the
results. The page is a Jinja2 template
(``templates/report.html.j2``, autoescaped); the figures come from :mod:`.plot`.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

import mc_engine
from mc_engine.errors import UserInputError
from mc_engine.fileio import atomic_write
from mc_engine.results.analysis import summarize, swept_columns
from mc_engine.results.compare import compare
from mc_engine.results.intervals import interval_note
from mc_engine.results.layers import rank_layers
from mc_engine.results.plot import (
    accuracy_vs_parameter,
    accuracy_vs_time,
    layer_ranking,
    paired_comparison,
    point_label,
)
from mc_engine.results.store import STUDY_FILE
from mc_engine.study.spec import ALL_LAYERS
from mc_engine.study.units import format_duration

TEMPLATE = "report.html.j2"
TABLE_FORMAT = {"float_format": lambda v: f"{v:.4f}", "na_rep": "-", "index": False,
                "border": 0}


@dataclass(frozen=True)
class Section:
    """A heading, a line saying what the figure shows, the figure as a PNG data URI and an
    optional table (HTML pandas escaped)."""

    title: str
    caption: str
    image: str
    table: str = ""


def report(df: pd.DataFrame, out: str | Path, ideal=None) -> Path:
    """Write the HTML report of the results ``df`` (as :func:`load_results` returns them) to
    ``out``; returns the file. ``ideal`` as for :func:`summarize`."""
    from jinja2 import Environment, PackageLoader, select_autoescape
    from markupsafe import Markup

    summary = summarize(df, ideal)
    hardware = swept_columns(df)
    swept = hardware + (["layer"] if "layer" in df else [])
    sections = [Section("Accuracy vs time",
                        "Mean accuracy over the repeats at each read time; the band holds the "
                        "middle 90 % of chips (5–95 % quantiles); dashed: the digital model.",
                        _png(accuracy_vs_time(summary, swept)))]
    for parameter in hardware:
        sections.append(Section(f"Accuracy vs {parameter}",
                                "Mean accuracy with its 95 % confidence interval, one panel "
                                "per read time.",
                                _png(accuracy_vs_parameter(summary, parameter, swept))))
    best = _best_two(df, summary, swept)
    if best is not None:
        sections.append(best)
    ranked = _checkpoint_ranking(df)   # a checkpoint axis: each against the axis's first
    if ranked is not None:
        sections.append(ranked)
    ranking = rank_layers(df, ideal)
    if len(ranking):
        shown = ranking.assign(t=ranking["t_inference_s"].map(format_duration))
        shown = shown[["t" if c == "t_inference_s" else c for c in ranking.columns]]
        sections.append(Section("Layer ranking",
                                "Accuracy drop from the digital model with one layer alone on "
                                "analog tiles (the others digital), per read time; rank 1 costs "
                                "the most: the first to keep digital or give more bits. "
                                "Layers are compared chip by chip over the n repeats every "
                                "variant ran; share_of_drop: that drop over the all-analog "
                                "drop; gap_to_next: the paired difference to the next rank "
                                "with its 95 % interval (holding 0: not told apart yet).",
                                _png(layer_ranking(ranking, hardware)),
                                shown.to_html(**TABLE_FORMAT)))
    table = summary.assign(t=summary["t_inference_s"].map(format_duration))
    first = ["study"] if summary["study"].nunique() > 1 else []
    adaptive = ["n_first", "std_first"] if "n_first" in summary else []
    table = table[[*first, *(swept or ["point_id"]), "t", "n", "mean", "std", *adaptive,
                   "ci95_lo", "ci95_hi", "ci95_clipped", "q05", "q50", "q95", "drop_from_ideal"]]
    env = Environment(loader=PackageLoader("mc_engine.results", "templates"),
                      autoescape=select_autoescape(default=True))
    page = env.get_template(TEMPLATE).render(
        title=", ".join(summary["study"].unique()),
        sections=[{**s.__dict__, "table": Markup(s.table)} for s in sections],
        summary=Markup(table.to_html(**TABLE_FORMAT)), interval=interval_note(bool(adaptive)),
        studies=_study_files(df), n_rows=len(df), n_points=len(summary[["study", "point_id"]]
                                                               .drop_duplicates()),
        version=mc_engine.__version__)
    return atomic_write(out, lambda temp: temp.write_text(page, encoding="utf-8"))


def _best_two(df: pd.DataFrame, summary: pd.DataFrame, swept: list[str]) -> Section | None:
    """The paired comparison of the two points with the highest mean at the latest read time
    (the runner-up as baseline), or None with fewer than two points or no repeats to pair."""
    last = summary[summary["t_inference_s"] == summary["t_inference_s"].max()]
    if "layer" in last:  # hardware points compared with all their layers analog
        last = last[last["layer"] == ALL_LAYERS]
    ranked = last.sort_values("mean", ascending=False, kind="stable")
    if len(ranked) < 2:
        return None
    pick = [{"study": r.study, "point_id": r.point_id} for r in ranked.iloc[:2].itertuples()]
    try:
        table = compare(df, baseline=pick[1], other=pick[0])
    except UserInputError:  # e.g. two studies run with different seeds: nothing to pair
        return None
    several = summary["study"].nunique() > 1
    names = [point_label(ranked.iloc[[i]], swept, several) for i in (0, 1)]
    title = f"({names[0]}) − ({names[1]})"
    shown = table.assign(t=table["t_inference_s"].map(format_duration))
    shown = shown[["t", *[c for c in table.columns if c != "t_inference_s"]]]
    return Section("Paired comparison of the two best points",
                   f"Accuracy of the best point minus the runner-up at the latest read time, "
                   f"{title}, paired repeat by repeat (the same simulated chips), with the "
                   f"interval an unpaired comparison would give beside it.",
                   _png(paired_comparison(table, title)), shown.to_html(**TABLE_FORMAT))


def _checkpoint_ranking(df: pd.DataFrame) -> Section | None:
    """The checkpoints ranked by paired gain over the first of the checkpoint axis
    (:mod:`mc_engine.results.ranking`), or None without an axis of two or more."""
    from mc_engine.results.ranking import axis_baseline, rank_checkpoints, ranking_figure

    baseline = axis_baseline(df)
    if baseline is None:
        return None
    try:
        ranking = rank_checkpoints(df, baseline)
    except UserInputError:
        return None
    shown = ranking.assign(t=ranking["t_inference_s"].map(format_duration))
    shown = shown[["t" if c == "t_inference_s" else c for c in ranking.columns]]
    return Section(f"Checkpoints ranked by gain over {Path(baseline).name}",
                   f"Accuracy of every checkpoint minus the baseline {baseline} (the first of "
                   f"the checkpoint axis), paired chip by chip, with its 95 % interval, per "
                   f"hardware point and read time; rank 1 gains the most. The figure shows the "
                   f"latest read time.", _png(ranking_figure(ranking, baseline)),
                   shown.to_html(**TABLE_FORMAT))


def _png(fig: Figure) -> str:
    """The figure as a ``data:image/png;base64,...`` URI."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _study_files(df: pd.DataFrame) -> list[dict[str, str]]:
    """Name and text of the study.toml that produced each study's rows, where it is on disk."""
    folder = Path(df.attrs.get("results_dir", "."))
    found = []
    for study in df["study"].unique():
        for path in (folder / STUDY_FILE, folder / study / STUDY_FILE):
            if path.is_file():
                found.append({"study": study, "path": str(path),
                              "text": path.read_text(encoding="utf-8")})
                break
    return found
