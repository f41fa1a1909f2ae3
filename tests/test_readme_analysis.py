"""The README's "Analysing results" pandas example runs as pasted, on results shaped like those
of `make run` (the quickstart study: adc_bits x w_noise, 8 chips, 0 s to 1 y)."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import numpy as np

import mc_engine
from mc_engine.hardware import HardwareConfig
from mc_engine.results import ResultStore, trial_rows
from mc_engine.study import point_id, trial_seed

README = Path(__file__).resolve().parents[1] / "README.md"
TIMES = (0.0, 3600.0, 86400.0, 365 * 86400.0)


def analysis_example() -> str:
    """The first python code block of the README's "Analysing results" section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Analysing results\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def quickstart_like_results(out: Path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for bits in (6, 8):
        for noise in (0.0, 0.02):
            hw = HardwareConfig(adc_bits=bits, dac_bits=7, out_noise=0.06, w_noise=noise)
            for repeat in range(8):
                chip = rng.normal(0, 0.01)
                evaluations = [{"t_inference_s": t, "n_correct": 0, "n_samples": 899,
                                "accuracy": 0.9 + 0.01 * bits - 2 * noise - 0.005 * k + chip,
                                "wall_s": 0.1} for k, t in enumerate(TIMES)]
                rows += trial_rows("quickstart", point_id(hw), hw, repeat,
                                   trial_seed(2026, repeat), evaluations, mc_engine.__version__)
    ResultStore(out / "results" / "quickstart").write_trials(rows)


def test_readme_analysis_example_runs_as_pasted(tmp_path, monkeypatch, capsys):
    quickstart_like_results(tmp_path)
    monkeypatch.chdir(tmp_path)
    matplotlib.use("Agg")  # no display here; the example itself saves its figure
    exec(compile(analysis_example(), str(README), "exec"), {})
    out = capsys.readouterr().out
    assert "w_noise" in out and "diff_ci95_lo" in out and "ci95_hi" in out
    assert (tmp_path / "accuracy_1y.png").read_bytes()[:4] == b"\x89PNG"
