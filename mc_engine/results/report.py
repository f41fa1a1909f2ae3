"""The HTML report of a study: one self-contained file (figures embedded as PNG data URIs, no
scripts, no external resources) that opens offline and can be mailed around.

It leads with the answer (:mod:`.report_answer`: what was simulated, the digital value, the best
and worst point at the last read time), then a list of sections, each built by one function of
:data:`SECTIONS` from a :class:`Context`: the metric vs time, vs each swept parameter group,
the paired comparison of a pair chosen from the study's swept keys, the checkpoints ranked
against the first of a checkpoint axis, the layer ranking of a
layer-sensitivity study, the summary table and the study file. Another section is one more
function ``Context -> list[Section]`` in that list (or in ``report(..., sections=...)``).
The page is a Jinja2 template (``templates/report.html.j2``, autoescaped); the figures come
from :mod:`.plot` and :mod:`.plot_pairs`, in the style of :mod:`.style`.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from markupsafe import Markup
from matplotlib.figure import Figure

import mc_engine
from mc_engine.errors import UserInputError
from mc_engine.fileio import atomic_write
from mc_engine.results import style
from mc_engine.results.analysis import summarize, swept_columns
from mc_engine.results.compare import compare
from mc_engine.results.intervals import interval_note
from mc_engine.results.labels import Names, group_title, order_by_sweep
from mc_engine.results.layers import rank_layers
from mc_engine.results.metrics import Metric
from mc_engine.results.metrics import metric as get_metric
from mc_engine.results.plot import accuracy_vs_parameter, accuracy_vs_time, point_groups
from mc_engine.results.plot_pairs import layer_ranking, paired_comparison
from mc_engine.results.report_answer import (
    StudyFile,
    best_and_worst,
    choose_pair,
    header_facts,
    study_files,
)
from mc_engine.results.report_tables import html_table, summary_table
from mc_engine.study.units import format_duration

TEMPLATE = "report.html.j2"


@dataclass(frozen=True)
class Section:
    """A heading, a caption, an optional figure (a PNG data URI), table (HTML) and
    preformatted text."""

    title: str
    caption: str
    image: str = ""
    table: str = ""
    pre: str = ""


@dataclass
class Context:
    """What the section builders read: the rows, their summary for the metric, the swept
    parameters (in the study file's order) and their tied groups, and how figures are made."""

    df: pd.DataFrame
    summary: pd.DataFrame
    metric: Metric
    parameters: list[str]
    groups: list[list[str]]
    names: Names
    files: list[StudyFile]
    ideal: object = None
    pair: list[str] | None = None
    size: str | float = "double"
    formats: tuple[str, ...] = ()
    figure_dir: Path | None = None
    written: list[Path] = field(default_factory=list)

    def image(self, fig: Figure, name: str) -> str:
        """``fig`` as a PNG data URI; also written as ``<name>.<format>`` for each of
        :attr:`formats` into :attr:`figure_dir`."""
        buffer = io.BytesIO()
        style.save(fig, buffer, "png")
        if self.formats and self.figure_dir is not None:
            self.figure_dir.mkdir(parents=True, exist_ok=True)
            slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "figure"
            for fmt in self.formats:
                path = self.figure_dir / f"{len(self.written) // len(self.formats):02d}-"\
                                         f"{slug}.{fmt}"
                self.written.append(atomic_write(path, lambda t, f=fmt: style.save(fig, t, f)))
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def time_section(ctx: Context) -> list[Section]:
    m = ctx.metric.name
    fig = accuracy_vs_time(ctx.summary, ctx.parameters + (["layer"] if "layer" in ctx.df
                                                          else []), size=ctx.size)
    return [Section(f"{m.capitalize()} vs time",
                    f"Mean {m} over the chips at each read time (band, up to 4 curves a "
                    f"panel: the middle 90 % of chips, 5–95 % quantiles); dashed: the digital "
                    f"model.", ctx.image(fig, f"{m}-vs-time"))]


def parameter_sections(ctx: Context) -> list[Section]:
    sections = []
    for group in (g for g in ctx.groups if g[0] != "study"):   # studies: curves, not an axis
        tied = f" Swept together with {group[0]}: {', '.join(group[1:])}." \
            if len(group) > 1 else ""
        fig = accuracy_vs_parameter(ctx.summary, group, ctx.parameters, chips=ctx.df,
                                    size=ctx.size)
        sections.append(Section(
            f"{ctx.metric.name.capitalize()} vs {group_title(group)}",
            f"Mean {ctx.metric.name} with its 95 % confidence interval, one panel per read time "
            f"(dots, with up to 3 lines: each chip).{tied}",
            ctx.image(fig, f"{ctx.metric.name}-vs-{group[0]}")))
    return sections


def comparison_section(ctx: Context) -> list[Section]:
    sweep = [k for f in ctx.files for k in f.sweep_keys]
    pair = choose_pair(ctx.summary, ctx.groups, sweep, ctx.metric, ctx.pair)
    if pair is None:
        return []
    baseline, other, why = pair
    try:
        table = compare(ctx.df, baseline=baseline, other=other, metric=ctx.metric.name)
    except UserInputError:
        if ctx.pair is not None:        # the user's own choice: say why it does not pair
            raise
        return []                       # e.g. two studies run with different seeds
    names = [_point_name(ctx, selection) for selection in (baseline, other)]
    title = f"({names[1]}) − ({names[0]})"
    sign = "" if ctx.metric.higher_is_better else \
        f" A positive difference in {ctx.metric.name} means the first point is worse."
    return [Section(
        "Paired comparison", f"{ctx.metric.name.capitalize()} of {names[1]} minus {names[0]} "
        f"({why}), paired chip by chip (the same simulated chips), with the interval an "
        f"unpaired comparison would give beside it.{sign} Choose another pair with "
        f"'mc-engine report --compare K=V K=V'.",
        ctx.image(paired_comparison(table, title, metric=ctx.metric.name, size=ctx.size),
                  "comparison"), html_table(table, [], ctx.names))]


def checkpoint_section(ctx: Context) -> list[Section]:
    """A checkpoint axis (e.g. training recipes): every checkpoint ranked by its paired gain
    over the axis's first (:mod:`mc_engine.results.ranking`)."""
    from mc_engine.results.ranking import axis_baseline, rank_checkpoints, ranking_figure

    baseline = axis_baseline(ctx.df)
    if baseline is None:
        return []
    try:
        ranking = rank_checkpoints(ctx.df, baseline)
    except UserInputError:
        return []
    return [Section(f"Checkpoints ranked by gain over {Path(baseline).name}",
                    f"Accuracy of every checkpoint minus the baseline {baseline} (the first of "
                    f"the checkpoint axis), paired chip by chip, with its 95 % interval, per "
                    f"hardware point and read time; rank 1 gains the most. The figure shows "
                    f"the latest read time.",
                    ctx.image(ranking_figure(ranking, baseline), "checkpoint-ranking"),
                    html_table(ranking, ctx.parameters, ctx.names))]


def layer_section(ctx: Context) -> list[Section]:
    ranking = rank_layers(ctx.df, ctx.ideal)
    if not len(ranking):
        return []
    return [Section("Layer ranking",
                    "Accuracy drop from the digital model with one layer alone on analog tiles "
                    "(the others digital), per read time; rank 1 costs the most: the first to "
                    "keep digital or give more bits. Layers are compared chip by chip over the "
                    "n repeats every variant ran; share_of_drop: that drop over the all-analog "
                    "drop; gap_to_next: the paired difference to the next rank with its 95 % "
                    "interval (holding 0: not told apart yet).",
                    ctx.image(layer_ranking(ranking, ctx.parameters, size=ctx.size),
                              "layer-ranking"),
                    html_table(ranking, ctx.parameters, ctx.names))]


def summary_section(ctx: Context) -> list[Section]:
    m = ctx.metric
    parameters = ctx.parameters + (["layer"] if "layer" in ctx.summary else [])
    return [Section("Summary",
                    f"Per point and read time: repeats n, mean {m.name}, its std over chips, "
                    f"the 95 % interval of the mean, quantiles over chips and the {m.change_word} "
                    f"from the digital model ({m.change_column}: positive is worse). "
                    + interval_note("n_first" in ctx.summary),
                    table=summary_table(ctx.summary, parameters, m.change_column, ctx.names))]


def study_file_sections(ctx: Context) -> list[Section]:
    return [Section(f"Study file: {f.study}", f.path, pre=f.text) for f in ctx.files if f.text]


#: The report's sections in order; each returns zero or more :class:`Section`.
SECTIONS: list[Callable[[Context], list[Section]]] = [
    time_section, parameter_sections, comparison_section, checkpoint_section, layer_section,
    summary_section, study_file_sections]


def report(df: pd.DataFrame, out: str | Path, ideal=None, *, metric: str = "accuracy",
           compare: Sequence[str] | None = None, formats: Sequence[str] = (),
           size: str | float = "double",
           sections: Sequence[Callable[[Context], list[Section]]] | None = None) -> Path:
    """Write the HTML report of the results ``df`` (as :func:`load_results` returns them) to
    ``out``; returns the file. ``ideal`` as for :func:`summarize`; ``metric``: accuracy, or loss
    or perplexity where the rows have them; ``compare``: two points ``["adc_bits=6",
    "adc_bits=8"]`` (baseline, other; ``K=V,K=V`` for several keys) for the paired comparison
    instead of the automatic pair; ``formats``: also write every figure as these (``png``,
    ``svg``, ``pdf``; PNG always among them) into ``<out stem>-figures/`` beside the report;
    ``size``: figure width, ``single`` (3.5 in), ``double`` (7.2 in) or inches."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    out = Path(out)
    quantity = get_metric(metric, df)
    style.width(size)                   # a bad size is refused before anything is drawn
    formats = style.check_formats(formats)
    if formats and "png" not in formats:    # the vector files beside the PNG ones
        formats = ("png", *formats)
    summary = summarize(df, ideal, metric=metric)
    files = study_files(df)
    parameters = order_by_sweep(swept_columns(df), [k for f in files for k in f.sweep_keys])
    names = Names.of(df)
    layer = ["layer"] if "layer" in summary else []   # rows in the study file's order
    summary = summary.sort_values(["study", *parameters, *layer, "t_inference_s"],
                                  kind="stable", ignore_index=True)
    ctx = Context(df, summary, quantity, parameters, point_groups(summary, parameters), names,
                  files, ideal, list(compare) if compare is not None else None, size, formats,
                  out.with_name(out.stem + "-figures"))
    built = [s for build in (SECTIONS if sections is None else sections) for s in build(ctx)]
    env = Environment(loader=PackageLoader("mc_engine.results", "templates"),
                      autoescape=select_autoescape(default=True))
    several = summary["study"].nunique() > 1
    page = env.get_template(TEMPLATE).render(
        title=", ".join(map(str, summary["study"].unique())),
        descriptions=[(f.study, f.description) for f in files if f.description]
        if several else [("", files[0].description)] if files and files[0].description else [],
        facts=header_facts(df, summary, files, quantity),
        answer=best_and_worst(summary, ctx.groups, quantity, names), metric=quantity,
        last_t=format_duration(summary["t_inference_s"].max()),
        first_t=format_duration(summary["t_inference_s"].min()),
        sections=[{**s.__dict__, "table": Markup(s.table)} for s in built],
        n_rows=len(df), n_points=len(summary[["study", "point_id"]].drop_duplicates()),
        version=mc_engine.__version__)
    return atomic_write(out, lambda temp: temp.write_text(page, encoding="utf-8"))


def _point_name(ctx: Context, selection: dict) -> str:
    """A point of the comparison by its parameter group leads (``adc_bits=8, w_noise=0``)."""
    from mc_engine.results.compare import _select

    rows = _select(ctx.df, selection, "compare", None)   # the one point: compare() found it
    row = ctx.summary[(ctx.summary["study"] == rows["study"].iloc[0])
                      & (ctx.summary["point_id"] == rows["point_id"].iloc[0])].iloc[0]
    return ctx.names.label(row, ctx.groups, with_keys=True)
