"""The HTML report: one self-contained file whose every figure is present and drawn, the paired
comparison of the two best points, the summary table and the study file; PNG still available."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

import mc_engine
from mc_engine.cli import main
from mc_engine.hardware import HardwareConfig
from mc_engine.results import ResultStore, load_results, report, trial_rows
from mc_engine.study import point_id

TIMES = (0.0, 3600.0, 365 * 86400.0)
STUDY_TEXT = '[study]\nname = "demo"\nseed = 1\nrepeats = 4\n# <b>not markup</b>\n'
#: Mean accuracy per (adc_bits, w_noise): adc_bits 8 without weight noise is best, then 8 with.
MEANS = {(6, 0.0): 0.80, (6, 0.02): 0.75, (8, 0.0): 0.92, (8, 0.02): 0.88}


def write_results(folder: Path, name: str = "demo", seed: int = 100) -> Path:
    """A study folder with 4 points (adc_bits x w_noise), 4 repeats (trial seeds ``seed`` +
    repeat), 3 times, ideal and study file."""
    rng = np.random.default_rng(5)
    store = ResultStore(folder / name)
    rows = []
    for (bits, noise), mean in MEANS.items():
        hw = HardwareConfig(adc_bits=bits, w_noise=noise)
        for repeat in range(4):
            evaluations = [{"t_inference_s": t, "n_correct": 0, "n_samples": 100,
                            "accuracy": mean - 0.01 * k + rng.normal(0, 0.01), "wall_s": 0.1}
                           for k, t in enumerate(TIMES)]
            rows += trial_rows(name, point_id(hw), hw, repeat, seed + repeat, evaluations, "t")
    store.write_trials(rows)
    store.write_ideal({"study": name, "n_correct": 95, "n_samples": 100, "accuracy": 0.95,
                       "engine_version": mc_engine.__version__})
    store.write_text("study.toml", STUDY_TEXT)
    return store.directory


class Page(HTMLParser):
    """What a test needs from the page: images, section headings, tables, pre text, and any
    tag that would load something from elsewhere."""

    def __init__(self, text: str):
        super().__init__()
        self.images: list[str] = []
        self.headings: list[str] = []
        self.table_rows: list[int] = []
        self.pre: list[str] = []
        self.external: list[str] = []
        self._in: str | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        elif tag in ("script", "link", "iframe") or (tag == "a" and "href" in attrs):
            self.external.append(tag)
        elif tag == "table":
            self.table_rows.append(0)
        elif tag == "tr":
            self.table_rows[-1] += 1
        elif tag in ("h2", "pre"):
            self._in = tag
            (self.headings if tag == "h2" else self.pre).append("")

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in == "h2":
            self.headings[-1] += data
        elif self._in == "pre":
            self.pre[-1] += data


def drawn_fraction(data_uri: str) -> float:
    """The share of a PNG data URI's pixels that are not background white."""
    prefix = "data:image/png;base64,"
    assert data_uri.startswith(prefix)
    pixels = imread(io.BytesIO(base64.b64decode(data_uri[len(prefix):])), format="png")
    assert pixels.shape[0] > 200 and pixels.shape[1] > 300
    return float((pixels[..., :3].min(axis=2) < 0.9).mean())


def test_report_embeds_every_figure_and_section_in_one_offline_file(tmp_path):
    folder = write_results(tmp_path)
    out = report(load_results(folder), tmp_path / "out" / "report.html")
    page = Page(out.read_text(encoding="utf-8"))
    assert page.headings == ["Answer: accuracy at 1 y", "Accuracy vs time",
                             "Accuracy vs adc_bits", "Accuracy vs w_noise", "Paired comparison",
                             "Summary", "Study file: demo"]
    assert len(page.images) == 4
    for image in page.images:
        assert drawn_fraction(image) > 0.02  # axes, lines and labels: a blank figure has ~0
    assert page.external == []  # nothing to fetch: it opens offline
    assert page.pre == [STUDY_TEXT]  # escaped by the template, shown verbatim
    # The answer (best, worst), the comparison table (one row per time) and the summary
    # table (points x times).
    assert page.table_rows == [3, 1 + len(TIMES), 1 + len(MEANS) * len(TIMES)]


def test_paired_comparison_takes_the_leading_swept_key(tmp_path):
    """Without a [sweep] in the study file: the first swept column (adc_bits), its two values
    at the w_noise where they differ most (0.02: 0.88 - 0.75 against 0.92 - 0.80); with one:
    its first key (w_noise, which costs most at adc_bits 6: 0.05 against 0.04)."""
    folder = write_results(tmp_path)
    text = report(load_results(folder), tmp_path / "r.html").read_text()
    assert "of adc_bits=8, w_noise=0.02 minus adc_bits=6, w_noise=0.02" in text
    (folder / "study.toml").write_text(STUDY_TEXT + "[sweep]\nw_noise = [0.0, 0.02]\n"
                                       "adc_bits = [6, 8]\n")
    text = report(load_results(folder), tmp_path / "r.html").read_text()
    assert "of w_noise=0, adc_bits=6 minus w_noise=0.02, adc_bits=6" in text  # the file's order


def test_report_compare_chooses_the_pair_holding_the_rest_at_the_best_point(tmp_path, capsys):
    folder = write_results(tmp_path)
    assert main(["report", str(folder), "--compare", "w_noise=0.02", "w_noise=0"]) == 0
    text = (folder / "report.html").read_text()
    assert "of adc_bits=8, w_noise=0 minus adc_bits=8, w_noise=0.02" in text
    assert "as chosen with --compare" in text
    assert main(["report", str(folder), "--compare", "adc_bits=6,w_noise=0.02",
                 "adc_bits=8,w_noise=0"]) == 0
    assert "of adc_bits=8, w_noise=0 minus adc_bits=6, w_noise=0.02" in \
        (folder / "report.html").read_text()
    capsys.readouterr()
    assert main(["report", str(folder), "--compare", "adc_bits=7", "adc_bits=8"]) == 2
    assert "no rows match" in capsys.readouterr().err


def test_report_of_one_point_has_no_comparison(tmp_path):
    df = load_results(write_results(tmp_path))
    df = df[df.point_id == df.point_id.iloc[0]]
    page = Page(report(df, tmp_path / "one.html").read_text())
    assert "Paired comparison" not in page.headings
    assert len(page.images) == 1


def test_cli_report_writes_html_by_default_and_png_on_request(tmp_path, capsys):
    folder = write_results(tmp_path)
    assert main(["report", str(folder)]) == 0
    assert capsys.readouterr().out.strip() == str(folder / "report.html")
    assert Page((folder / "report.html").read_text()).images
    assert main(["report", str(folder), "--out", str(tmp_path / "acc.png")]) == 0
    assert (tmp_path / "acc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", ["report.txt", "report"])
def test_cli_report_rejects_an_unknown_output_type(tmp_path, capsys, name):
    folder = write_results(tmp_path)
    assert main(["report", str(folder), "--out", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("--out: expected a .html report or an image (.png, .pdf, .svg)")
    assert not (tmp_path / name).exists()


def test_studies_with_different_seeds_get_a_report_without_a_comparison(tmp_path):
    write_results(tmp_path, "a", seed=100)
    write_results(tmp_path, "b", seed=500)  # same points, other chips: nothing pairs across
    df = load_results(tmp_path)
    df.loc[df.study == "b", "accuracy"] += 0.01  # the two best: b's and a's adc_bits=8, w_noise=0
    page = Page(report(df, tmp_path / "both.html").read_text())
    assert "Paired comparison" not in page.headings
    assert page.headings[1] == "Accuracy vs time" and len(page.images) == 3


def test_cli_report_format_and_size(tmp_path, capsys):
    folder = write_results(tmp_path)
    assert main(["report", str(folder), "--format", "SVG", "--size", "5"]) == 0
    svgs = sorted((folder / "report-figures").glob("*.svg"))
    assert len(svgs) == 4 and 'width="360pt"' in svgs[0].read_text()   # 5 in
    assert len(list((folder / "report-figures").glob("*.png"))) == 4
    for bad, message in ((["--format", "gif"], "unknown figure format 'gif'"),
                         (["--size", "A4"], "expected one of single, double")):
        assert main(["report", str(folder), *bad]) == 2
        assert message in capsys.readouterr().err
