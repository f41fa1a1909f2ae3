"""The CLI's small gaps (issue: a researcher's first hour): folders of several studies are
summarised and reported study by study, never merged; a reader that leaves a pipe early ends
the command quietly; --version; a mistyped key gets a "did you mean"."""

from __future__ import annotations

import subprocess

import pytest

from mc_engine import __version__
from mc_engine.cli import main
from mc_engine.errors import UserInputError
from mc_engine.hardware import from_dict
from mc_engine.run import run_study
from mc_engine.study import load_study
from tests.conftest import BIN
from tests.test_run import write_study


@pytest.fixture(scope="module")
def two_studies(tmp_path_factory, cache_dir, warm_cluster):
    """A folder holding two different studies' results (different names, seeds, points)."""
    root = tmp_path_factory.mktemp("two")
    for name, seed in (("alpha", 1), ("beta", 2)):
        study = load_study(write_study(root, name=name, seed=seed, repeats=1))
        run_study(study, root / "results", scheduler=warm_cluster, progress=False,
                  cache_dir=cache_dir)
    return root / "results"


def test_summary_of_a_folder_of_studies_shows_each_on_its_own(two_studies, capsys):
    assert main(["summary", str(two_studies)]) == 0
    out = capsys.readouterr().out
    assert "2 studies" in out and "== alpha" in out and "== beta" in out
    assert out.index("== alpha") < out.index("== beta")


def test_report_of_a_folder_of_studies_writes_one_per_study(two_studies, tmp_path, capsys):
    assert main(["report", str(two_studies)]) == 0
    assert (two_studies / "alpha" / "report.html").is_file()
    assert (two_studies / "beta" / "report.html").is_file()
    assert main(["report", str(two_studies), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert "holds 2 studies (alpha, beta)" in err and not (tmp_path / "r.html").exists()


def test_a_reader_leaving_the_pipe_ends_the_command_quietly(two_studies):
    proc = subprocess.run(f"'{BIN / 'mc-engine'}' summary '{two_studies}' | head -n 1",
                          shell=True, capture_output=True, text=True, timeout=120)
    assert proc.stdout.count("\n") == 1
    assert "BrokenPipe" not in proc.stderr and "Traceback" not in proc.stderr


def test_version_and_did_you_mean(capsys):
    with pytest.raises(SystemExit):
        from mc_engine.cli import _parser
        _parser().parse_args(["--version"])
    assert capsys.readouterr().out.strip() == f"mc-engine {__version__}"
    with pytest.raises(UserInputError, match=r"did you mean 'adc_bits'\?") as err:
        from_dict({"adc_bit": 8})
    assert err.value.key == "adc_bit"
    with pytest.raises(UserInputError) as far:
        from_dict({"zzz": 1})
    assert "did you mean" not in str(far.value)
