"""The HTML report of a small real run, rendered by headless Chromium: nothing wider than the
page, every figure loaded and shown, no console errors; a screenshot is kept as the artefact
(its path is printed and recorded as the test's ``screenshot`` property).

Skipped, saying so, only where Chromium is not installed (``make system-deps`` installs it as
root: the ``chromium`` package of .ci/system-packages)."""

from __future__ import annotations

import io
import json

import pytest
from matplotlib.image import imread

from mc_engine.results import load_results, report
from mc_engine.results.report import time_section
from mc_engine.run import run_study
from mc_engine.study import load_study
from tests.browser import Browser, chromium

pytestmark = pytest.mark.skipif(chromium() is None, reason="chromium is not installed (the "
                                "Debian package 'chromium'; `make system-deps` installs it)")

#: 2 x 2 product times a zip of two keys: 8 points, 3 chips, 3 read times, a log-spanning
#: parameter (w_noise) and a tied group (out_noise with read_noise_scale).
STUDY = """# A small study for the browser test of the report.
[study]
name = "browser"
description = "digits MLP on PCM: ADC bits x weight noise x (output noise, read noise)"
seed = 3
repeats = 3
inference_times = ["0s", "1d", "1y"]

[model]
zoo = "digits_mlp"

[data]
dataset = "digits"
limit = 120

[sweep]
adc_bits = [6, 8]
w_noise = [0.001, 0.03]

[[sweep.zip]]
out_noise = [0.02, 0.06]
read_noise_scale = [1.0, 2.0]
"""

#: Everything that can overflow or fail to show, measured in the page.
MEASURE = """(() => {
  const width = window.innerWidth, outside = [];
  const boxes = 'img, figure, pre, dl, .table-wrap, h1, h2, p' + (width >= 1200 ? ', table' : '');
  for (const el of document.querySelectorAll(boxes)) {
    const r = el.getBoundingClientRect();
    if (r.right > width + 0.5 || r.left < -0.5)
      outside.push(`${el.tagName}.${el.className}: ${r.left.toFixed(0)}..${r.right.toFixed(0)}`);
  }
  const images = [...document.images].map(img => {
    const r = img.getBoundingClientRect(), s = getComputedStyle(img);
    return {loaded: img.complete && img.naturalWidth > 0, width: r.width, height: r.height,
            shown: s.display !== 'none' && s.visibility !== 'hidden' && img.offsetParent !== null};
  });
  return {scrollWidth: document.documentElement.scrollWidth, innerWidth: width, outside,
          images, headings: [...document.querySelectorAll('h2')].map(h => h.textContent)};
})()"""


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, cache_dir, warm_cluster):
    folder = tmp_path_factory.mktemp("browser")
    (folder / "browser.toml").write_text(STUDY)
    outcome = run_study(load_study(folder / "browser.toml"), folder / "out",
                        scheduler=warm_cluster, progress=False, cache_dir=cache_dir)
    assert outcome.n_run == 8 * 3
    return outcome.results_dir


def test_report_of_a_real_run_renders_in_chromium_within_the_page(real_run, tmp_path,
                                                                 record_property):
    out = report(load_results(real_run), tmp_path / "report.html")
    browser = Browser(chromium(), tmp_path / "profile")
    try:
        measured = {}
        for width in (1280, 800):           # a laptop window, and a narrow one
            browser.open(out.as_uri(), width, 900)
            measured[width] = browser.evaluate(MEASURE)
            shot = browser.screenshot(tmp_path / f"report-{width}.png")
        errors = browser.errors()
    finally:
        browser.close()
    print(f"\nscreenshot: {tmp_path / 'report-1280.png'} (and {shot})")
    record_property("screenshot", str(tmp_path / "report-1280.png"))
    for width, page in measured.items():
        assert page["innerWidth"] == width
        assert page["scrollWidth"] <= width, json.dumps(page)[:2000]
        assert page["outside"] == [], page["outside"]
        # time, 3 parameter groups (adc_bits, w_noise, out_noise with read_noise_scale),
        # the paired comparison
        assert len(page["images"]) == 5
        for image in page["images"]:
            assert image["loaded"] and image["shown"], image
            assert image["width"] > 0.5 * min(width, 1100) - 40 and image["height"] > 150
    assert measured[1280]["headings"][:6] == [
        "Answer: accuracy at 1 y", "Accuracy vs time", "Accuracy vs adc_bits",
        "Accuracy vs w_noise", "Accuracy vs out_noise (with read_noise_scale)",
        "Paired comparison"]
    assert errors == []
    pixels = imread(io.BytesIO((tmp_path / "report-1280.png").read_bytes()), format="png")
    assert pixels.shape[1] == 1280 and pixels.shape[0] > 2000     # the whole page, drawn
    assert (pixels[..., :3].min(axis=2) < 0.9).mean() > 0.03


def test_report_writes_vector_figures_beside_the_report(real_run, tmp_path):
    out = report(load_results(real_run), tmp_path / "r.html", formats=["svg", "pdf"],
                 size="single", sections=[time_section])
    figures = sorted((tmp_path / "r-figures").iterdir())
    assert [f.name for f in figures] == [f"00-accuracy-vs-time.{x}" for x in ("pdf", "png",
                                                                             "svg")]
    assert figures[0].read_bytes().startswith(b"%PDF")
    assert figures[1].read_bytes().startswith(b"\x89PNG")
    svg = figures[2].read_text()
    assert "<svg" in svg[:2000] and 'width="252pt"' in svg   # 3.5 in at 72 pt per inch
    assert "Accuracy vs time" in out.read_text()
