"""The mc-engine command: exit codes, one-line messages for bad input, run/summary/report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mc_engine.cli import main

GOOD = """
[study]
name = "cli"
seed = 3
repeats = 2
inference_times = ["0s", "1h"]

[model]
zoo = "digits_mlp"

[data]
dataset = "digits"
limit = 100

[sweep]
w_noise = [0.0, 0.05]
"""


def study_file(folder: Path, old: str = "", new: str = "") -> Path:
    """GOOD with one text replacement (or appended text when ``old`` is empty)."""
    text = GOOD.replace(old, new) if old else GOOD + new
    assert text != GOOD or not (old or new)
    path = folder / "study.toml"
    path.write_text(text)
    return path


BAD_STUDIES = {
    "unknown_key": ("repeats = 2", "repeat = 2", "study.repeat", "unknown key"),
    "wrong_type": ("w_noise = [0.0, 0.05]", "adc_bits = [8, 'a']", "sweep.adc_bits",
                   "expected an integer, got 'a'"),
    "bad_unit": ('"1h"]', '"1w"]', "study.inference_times[1]", "unknown time unit 'w'"),
    "negative_time": ('"0s"', '"-1h"', "study.inference_times[0]", ">= 0"),
    "empty_sweep": ("[0.0, 0.05]", "[]", "sweep.w_noise", "empty list"),
    "missing_data_file": ('dataset = "digits"', 'dataset = "npz"\npath = "missing.npz"',
                          "data.path", "does not exist"),
    "missing_checkpoint": ('zoo = "digits_mlp"', 'zoo = "digits_mlp"\ncheckpoint = "nope.pt"',
                           "model.checkpoint", "does not exist"),
    "unknown_zoo_name": ('zoo = "digits_mlp"', 'zoo = "digits_rnn"', "model.zoo",
                         "unknown zoo model 'digits_rnn'"),
    "factory_does_not_import": ('zoo = "digits_mlp"', 'factory = "no_such_pkg_xyz.nets:mlp"',
                                "model.factory", "no_such_pkg_xyz"),
    "model_does_not_fit_the_data": ('zoo = "digits_mlp"', 'zoo = "resnet20"', "model",
                                    "the model (zoo = 'resnet20') cannot process the [data] "
                                    "inputs of shape (2, 64) (digits): RuntimeError: "),
    "time_beyond_float_range": ('"1h"]', f"1{'0' * 400}]", "study.inference_times[1]",
                                "must be finite"),
    "too_many_repeats": ("repeats = 2", "repeats = 1_000_001", "study.repeats",
                         "<= 1_000_000"),
}


@pytest.mark.parametrize("case", sorted(BAD_STUDIES))
def test_bad_study_exits_2_with_one_line_naming_file_and_key(case, tmp_path, capsys):
    old, new, key, fragment = BAD_STUDIES[case]
    path = study_file(tmp_path, old, new)
    out = tmp_path / "results"
    assert main(["run", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"{path}: {key}: "), err
    assert fragment in err
    assert not (out / "cli").exists()  # rejected before anything ran or was written


def test_missing_study_file_exits_2(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "none.toml")]) == 2
    assert capsys.readouterr().err == f"{tmp_path / 'none.toml'}: study file not found\n"


@pytest.mark.parametrize("args", [["run", "s.toml", "--workers", "0"],
                                  ["run", "s.toml", "--workers", "2", "--scheduler", "tcp://x:1"],
                                  ["frobnicate"], []])
def test_bad_command_lines_exit_2(args, capsys):
    assert main(args) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_module_entry_point_prints_no_traceback(tmp_path):
    path = study_file(tmp_path, "w_noise = [0.0, 0.05]", "adc_bits = [8, 'a']")
    done = subprocess.run([sys.executable, "-m", "mc_engine.cli", "validate", str(path)],
                          check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr == f"{path}: sweep.adc_bits: expected an integer, got 'a'\n"


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory) -> Path:
    """The GOOD study run through the command line on a one-worker local cluster."""
    folder = tmp_path_factory.mktemp("cli")
    assert main(["run", str(study_file(folder)), "--out", str(folder / "results"),
                 "--workers", "1"]) == 0
    return folder / "results" / "cli"


def test_run_prints_the_summary_table(results_dir, capsys):
    assert main(["summary", str(results_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["w_noise", "t", "n", "mean", "std", "ci95_lo", "ci95_hi", "q05",
                                "q95", "drop_from_ideal"]
    assert len(lines) == 1 + 2 * 2
    # every row: the point, the time and statistics computed from the trial rows themselves
    from mc_engine.results import load_ideal, load_results

    df = load_results(results_dir)
    ideal = float(load_ideal(results_dir)["accuracy"].iloc[0])
    expected = []
    for (w_noise, t), group in df.groupby(["w_noise", "t_inference_s"]):
        acc = group["accuracy"]
        expected.append([f"{w_noise:.12g}", "0" if t == 0 else "1", "s" if t == 0 else "h",
                         str(len(acc)), f"{acc.mean():.4f}", f"{acc.std():.4f}",
                         f"{ideal - acc.mean():.4f}"])
    rows = [line.split() for line in lines[1:]]
    assert [r[:6] + r[-1:] for r in rows] == expected


def test_validate_counts_points_and_trials(results_dir, capsys):
    study = results_dir / "study.toml"  # the resolved study is itself a valid study file
    assert main(["validate", str(study), "--out", str(results_dir.parent)]) == 0
    out = capsys.readouterr().out
    assert "2 hardware points x 2 repeats = 4 trials" in out
    assert "2 inference times (0 s, 1 h)" in out


def test_report_writes_the_plot(results_dir, tmp_path, capsys):
    png = tmp_path / "plot.png"
    assert main(["report", str(results_dir), "--out", str(png)]) == 0
    assert capsys.readouterr().out.strip() == str(png)
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_unexpected_failure_exits_1_with_a_hint(tmp_path, capsys, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mc_engine import results

    # A readable results folder, and a failure inside the engine that is no user mistake
    # mc-engine can name: the generic failure path with its hint.
    pq.write_table(pa.table({"study": ["s"], "point_id": ["p"], "repeat": [0],
                             "t_inference_s": [0.0], "accuracy": [0.5]}),
                   tmp_path / "part-00000.parquet")

    def broken(*args, **kwargs):
        raise RuntimeError("an engine bug")

    monkeypatch.setattr(results, "summarize", broken)
    assert main(["summary", str(tmp_path)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["error: RuntimeError: an engine bug",
                     "hint: run again with --debug for the full traceback"]


def test_a_part_file_with_text_accuracies_is_refused_by_name(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    part = tmp_path / "part-00000.parquet"
    pq.write_table(pa.table({"study": ["s"], "point_id": ["p"], "repeat": [0],
                             "t_inference_s": [0.0], "accuracy": ["high"]}), part)
    assert main(["summary", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{part}: the column 'accuracy' holds "
                                                   f"string values that are not double")


def test_summary_of_an_empty_folder_is_a_user_error(tmp_path, capsys):
    assert main(["summary", str(tmp_path)]) == 2
    assert "no results here" in capsys.readouterr().err


def test_validate_rejects_a_model_with_fewer_outputs_than_classes(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "c100.npz", x_test=rng.random((4, 3, 32, 32), dtype=np.float32),
             y_test=np.array([0, 5, 99, 3]))
    path = study_file(tmp_path, 'zoo = "digits_mlp"\n\n[data]\ndataset = "digits"',
                      'zoo = "resnet20"\n\n[data]\ndataset = "npz"\npath = "c100.npz"')
    assert main(["validate", str(path), "--out", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert err == (f"{path}: model: the model (zoo = 'resnet20') gives 10 class scores per "
                   f"input, but the labels of [data] (npz:c100.npz) go up to 99: it needs at "
                   f"least 100\n")


def test_scheduler_address_without_port_exits_1_with_a_hint(tmp_path, capsys):
    out = tmp_path / "results"
    assert main(["run", str(study_file(tmp_path)), "--out", str(out), "--scheduler", "foo"]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["error: invalid Dask scheduler address 'foo': missing port number in "
                     "address 'foo'",
                     "hint: give --scheduler as tcp://HOST:PORT, the address 'dask scheduler' "
                     "prints, e.g. tcp://10.0.0.5:8786, or --scheduler-file with the file "
                     "it writes"]
    assert not out.exists()  # refused before the model was loaded or anything written
