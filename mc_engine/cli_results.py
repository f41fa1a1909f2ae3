"""The results commands of ``mc-engine``: summary, report and compare (their options and
handlers), and the summary table ``run`` prints too."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from mc_engine.errors import UserInputError

PLOT_SUFFIXES = (".png", ".pdf", ".svg")
SUMMARY_COLUMNS = ["n", "mean", "std", "ci95_lo", "ci95_hi", "q05", "q95", "drop_from_ideal"]


def results_commands(command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add summary, report and compare through ``command(name, handler, text)``."""
    summary = command("summary", _summary, "Print per-point, per-time accuracy statistics.")
    summary.add_argument("results", type=Path, help="results folder of a study")
    _metric_option(summary)

    report = command("report", _report,
                     "Write the HTML report (figures, paired comparison, summary table, study "
                     "file in one offline file), or the accuracy-vs-time plot alone as an "
                     "image.")
    report.add_argument("results", type=Path, help="results folder of a study")
    report.add_argument("--out", type=Path, default=None,
                        help="report.html (default: RESULTS/report.html), or an image "
                             "(.png, .pdf, .svg) of accuracy vs time")
    _metric_option(report)
    report.add_argument("--compare", nargs=2, metavar=("BASELINE", "OTHER"), default=None,
                        help="the two points of the paired comparison, each K=V or K=V,K=V "
                             "(e.g. --compare adc_bits=6 adc_bits=8; keys left out are held "
                             "at the best point's values); default: two values of the study's "
                             "leading swept key")
    report.add_argument("--format", default="", metavar="svg,pdf",
                        help="also write every figure of the report as these formats (png, "
                             "svg, pdf; comma-separated) into <report name>-figures/ beside it")
    report.add_argument("--size", default="double", metavar="{single,double,INCHES}",
                        help="figure width: single (3.5 in) or double (7.2 in, default) column, "
                             "or inches")

    compare = command("compare", _compare,
                      "Paired difference in accuracy (other - baseline) of two points over the "
                      "repeats they share, at each inference time, with the unpaired interval "
                      "beside it.")
    compare.add_argument("results", type=Path, help="results folder of a study")
    for role, example in (("baseline", "adc_bits=6"), ("other", "adc_bits=8")):
        compare.add_argument(f"--{role}", nargs="+", action="extend", required=True,
                             metavar="COLUMN=VALUE",
                             help=f"column values that pick the {role} point, e.g. {example} "
                                  f"(a checkpoint by its path, file name or stem)")
    _metric_option(compare)


def _metric_option(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--metric", default="accuracy", metavar="{accuracy,loss,perplexity}",
                     help="the result column to summarise (default accuracy; loss and "
                          "perplexity where the rows have them: for them lower is better, and "
                          "the change from the digital model is a rise)")


def _studies(folder: Path) -> list[Path]:
    """The study results folders directly inside ``folder`` when it holds several studies
    rather than one (no part files of its own), sorted; [] otherwise."""
    folder = Path(folder)
    try:
        if not folder.is_dir() or any(folder.glob("part-*.parquet")):
            return []
        found = sorted(sub for sub in folder.iterdir()
                       if sub.is_dir() and any(sub.glob("part-*.parquet")))
    except OSError:                 # a path the OS refuses: load_results says why, by name
        return []
    return found if len(found) > 1 else []


def _summary(args: argparse.Namespace) -> int:
    from mc_engine.results import load_results

    studies = _studies(args.results)
    if not studies:
        print(summary_table(load_results(args.results), args.metric))
        return 0
    print(f"{args.results}: {len(studies)} studies, each on its own:")
    for folder in studies:              # never merged: each study's table under its name
        print(f"\n== {folder.name} ({folder}) ==")
        print(summary_table(load_results(folder), args.metric))
    return 0


def _report(args: argparse.Namespace) -> int:
    from mc_engine.fileio import check_path_fits, check_writable_folder
    from mc_engine.results import load_results, plot, report
    from mc_engine.results.style import check_formats, width

    size = _size(args.size)
    width(size)
    options = {"metric": args.metric, "compare": args.compare, "size": size,
               "formats": check_formats([f for f in args.format.split(",") if f.strip()])}
    studies = _studies(args.results)
    if studies:
        if args.out is not None:
            raise UserInputError(f"{args.results} holds {len(studies)} studies "
                                 f"({', '.join(s.name for s in studies)}): --out names one "
                                 f"file, so give one study's folder (e.g. {studies[0]}), or "
                                 "leave --out out for one report in each study's folder",
                                 source="--out")
        for folder in studies:          # one report per study, in its own folder
            print(report(load_results(folder), folder / "report.html", **options))
        return 0
    df = load_results(args.results)
    out = args.out if args.out is not None else Path(args.results) / "report.html"
    suffix = out.suffix.lower()
    if suffix not in (".html", ".htm", *PLOT_SUFFIXES):
        raise UserInputError(f"expected a .html report or an image "
                             f"({', '.join(PLOT_SUFFIXES)}), got {str(out)!r}", source="--out")
    check_path_fits(out, "--out")
    if out.is_dir():
        raise UserInputError(f"{out} is a folder; expected a file name", source="--out")
    check_writable_folder(out.parent, "--out")
    if suffix in (".html", ".htm"):
        print(report(df, out, **options))
    else:
        print(plot(df, out, metric=args.metric, size=size))
    return 0


def _size(text: str) -> str | float:
    """``--size``: single, double or a width in inches."""
    try:
        return float(text)
    except ValueError:
        return text


def _compare(args: argparse.Namespace) -> int:
    from mc_engine.results import compare, load_results
    from mc_engine.results.compare import parse_selection
    from mc_engine.study import format_duration

    table = compare(load_results(args.results), parse_selection(args.baseline, "baseline"),
                    parse_selection(args.other, "other"), metric=args.metric)
    table.insert(0, "t", table.pop("t_inference_s").map(format_duration))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="-"))
    return 0


def _parameter(value: float) -> str:
    """A swept parameter value with the digits it was given (12 significant at most)."""
    return "-" if value != value else f"{value:.12g}"


def summary_table(df, metric: str = "accuracy") -> str:
    """The summary as aligned text: swept parameters, time, then the statistics; in a
    layer-sensitivity study, then the layers ranked by the accuracy they cost alone."""
    from mc_engine.results import rank_layers, summarize, swept_columns
    from mc_engine.results.intervals import interval_note
    from mc_engine.study import format_duration

    def text(frame) -> str:
        frame = frame.assign(t=frame["t_inference_s"].map(format_duration))
        columns = [c if c != "t_inference_s" else "t" for c in frame.columns if c != "t"]
        # Swept values as given (1e-05, 0.0003), statistics to four decimals.
        given = {c: _parameter for c in first if c in frame and frame[c].dtype.kind == "f"}
        return frame[columns].to_string(index=False, float_format=lambda v: f"{v:.4f}",
                                        na_rep="-", formatters=given)

    from mc_engine.results.metrics import metric as get_metric

    quantity = get_metric(metric, df)
    table = summarize(df, metric=metric)
    first = ["study"] if table["study"].nunique() > 1 else []
    first += (swept_columns(df) + (["layer"] if "layer" in table else [])) or ["point_id"]
    columns = [quantity.change_column if c == "drop_from_ideal" else c for c in SUMMARY_COLUMNS]
    adaptive = "n_first" in table  # adaptive repeats: the first round behind Stein's interval
    if adaptive:
        columns[3:3] = ["n_first", "std_first"]
    out = text(table[[*first, "t_inference_s", *columns]])
    if adaptive:
        out += "\n" + interval_note(adaptive)
    ranking = rank_layers(df) if metric == "accuracy" else []
    if len(ranking):
        if first[0] != "study":
            ranking = ranking.drop(columns="study")
        out += "\n\nLayers ranked by the accuracy they cost alone (that layer analog, the " \
               "others digital):\n" + text(ranking)
    return out


