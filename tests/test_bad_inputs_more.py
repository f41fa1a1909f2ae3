"""More bad inputs (issue 28), answered as the README promises: result folders written by other
versions or holding odd entries, file names and paths the file system or the Parquet library
cannot take, the environment, options beyond the machine, train inputs, full disks, tied
weights. Input problems exit 2 with one line naming the file or option and the key; failures
outside the input exit 1 with one line and a hint; nothing that was there before is lost.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tomllib
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from test_bad_inputs import BASE, snapshot, study
from torch import nn

from mc_engine import HardwareConfig, convert
from mc_engine.analog.convert import AnalogLinear
from mc_engine.cli import main
from mc_engine.results import ResultStore, load_results, trial_rows
from mc_engine.run import cluster, run_study
from mc_engine.run.adaptive import stein_size
from mc_engine.study import load_study
from mc_engine.study.keys import point_id, trial_seed

ROOT = Path(__file__).resolve().parents[1]
#: A study file name with an ESC and a byte that is not UTF-8 (latin-1's é).
ODD_NAME = "st\x1b" + os.fsdecode(b"\xe9") + ".toml"
TRAIN = """
[train]
name = "t"
epochs = 1
batch_size = 16

[model]
zoo = "digits_mlp"

[data]
dataset = "digits"
limit = 40
"""


def answer(args: list[str], capsys) -> tuple[int, list[str], str]:
    capsys.readouterr()
    status = main(args)
    out, err = capsys.readouterr()
    return status, err.splitlines(), out


def one_line(status: int, lines: list[str], expected: int, where: str, what: str) -> None:
    """The documented answer: the status, one line (two with the hint of exit 1) that starts
    with ``where`` and holds ``what``, never a traceback."""
    text = "\n".join(lines)
    assert status == expected, text
    assert "Traceback" not in text and "Warning" not in text, text
    assert lines and lines[0].startswith(where) and what in lines[0], text
    assert len(lines) == (1 if expected == 2 else 2), text
    if expected == 1:
        assert lines[1].startswith("hint: "), text


@pytest.fixture(scope="module")
def ran(tmp_path_factory, cache_dir, warm_cluster) -> tuple[Path, Path]:
    """A study run once (2 points x 2 repeats x 2 times) from a file whose name holds an ESC
    and a latin-1 byte: (study file, results folder)."""
    folder = tmp_path_factory.mktemp("ran")
    path = folder / ODD_NAME
    path.write_text(BASE.replace('"bad"', '"v"').replace("repeats = 1", "repeats = 2")
                    .replace('["0s"]', '["0s", "1d"]') + "\n[sweep]\nadc_bits = [6, 8]\n")
    outcome = run_study(load_study(path), folder / "out", scheduler=warm_cluster,
                        progress=False, cache_dir=cache_dir)
    assert outcome.n_run == 4
    return path, outcome.results_dir


def copy_of(ran: tuple[Path, Path], folder: Path, cache_dir: Path) -> Path:
    """A copy of the run's results under ``folder/out`` (with the zoo cache), as --out."""
    res = folder / "out" / ran[1].name
    shutil.copytree(ran[1], res)
    shutil.copytree(cache_dir, folder / "out" / ".cache")
    return res


def test_a_study_file_named_with_esc_and_latin1_resumes_from_its_own_study_toml(
        ran, cache_dir, warm_cluster):
    path, res = ran
    again = run_study(load_study(path), res.parent, scheduler=warm_cluster, progress=False,
                      cache_dir=cache_dir)
    assert (again.n_run, again.n_skipped) == (0, 4)   # its own study.toml read back
    text = (res / "study.toml").read_text(encoding="utf-8")
    assert "\\x1b" in text and "\\udce9" in text   # escaped in the header comment
    assert tomllib.loads(text)["study"]["name"] == "v"


# Hardware columns added after the first results folders existed: a part file of then lacks them.
LATER = ["adc_range", "calibration_samples", "g_converter", "slice_recombination", "g_max",
         "readout", "rows_per_adc"]


def test_part_files_of_two_versions_read_as_one_table(ran, tmp_path, cache_dir, warm_cluster,
                                                      capsys):
    res = copy_of(ran, tmp_path, cache_dir)
    reference = load_results(res)
    status, _, summary = answer(["summary", str(res)], capsys)
    assert status == 0
    parts = ResultStore(res).parts()   # one, or several where trials arrived apart
    part = parts[0]
    table = pq.read_table(part)
    metadata, half = table.schema.metadata, table.num_rows // 2
    newer = table.slice(0, half)   # integers rewritten as double by another tool
    for name in ("adc_bits", "n_correct"):
        i = newer.schema.get_field_index(name)
        newer = newer.set_column(i, name, pc.cast(newer.column(name), pa.float64()))
    older = table.slice(half).drop_columns(LATER)
    pq.write_table(newer.replace_schema_metadata(metadata), part)
    pq.write_table(older.replace_schema_metadata(metadata),
                   part.with_name(f"part-{len(parts) + 1:05d}.parquet"))

    df = load_results(res)
    assert df[list(reference.columns)].equals(reference)   # defaults filled, types unified
    status, lines, again = answer(["summary", str(res)], capsys)
    assert status == 0 and not lines and again == summary   # no column taken as swept
    assert answer(["report", str(res)], capsys)[0] == 0
    resumed = run_study(load_study(ran[0]), res.parent, scheduler=warm_cluster,
                        progress=False, cache_dir=cache_dir)
    assert resumed.n_run == 0   # every trial of both files known as done


@pytest.mark.parametrize("name", ["part-00005.parquet", "study.toml", "ideal.parquet", ".lock"])
def test_a_folder_named_like_a_file_of_the_store_is_refused_by_run(name, ran, tmp_path,
                                                                   cache_dir, capsys):
    res = copy_of(ran, tmp_path, cache_dir)
    odd = res / name
    odd.unlink(missing_ok=True)
    odd.mkdir()
    status, lines, _ = answer(["summary", str(res)], capsys)
    assert status == 0
    assert lines == ([f"warning: {odd}: named like a part file but not a file; left out"]
                     if name.startswith("part-") else [])
    before = snapshot(tmp_path)
    status, lines, _ = answer(["run", str(ran[0]), "--out", str(res.parent)], capsys)
    one_line(status, lines, 2, f"{odd}: ", f"is named like a file mc-engine writes there "
                                           f"({name}) but is not a file")
    assert snapshot(tmp_path) == before


def test_an_unstamped_part_file_without_seeds_is_refused_by_name(ran, tmp_path, cache_dir,
                                                                capsys):
    res = copy_of(ran, tmp_path, cache_dir)
    part = ResultStore(res).parts()[0]
    pq.write_table(pq.read_table(part).drop_columns(["seed"]).replace_schema_metadata(None),
                   part)
    before = snapshot(tmp_path)
    status, lines, _ = answer(["run", str(ran[0]), "--out", str(res.parent)], capsys)
    one_line(status, lines, 2, f"{part}: ", "neither a study stamp nor a 'seed' column")
    assert snapshot(tmp_path) == before


def test_a_full_disk_names_the_file_keeps_what_was_written_and_resumes_exactly(
        tmp_path, cache_dir, warm_cluster, monkeypatch):
    path = tmp_path / "full.toml"
    path.write_text(BASE.replace('"bad"', '"full"').replace("repeats = 1", "repeats = 2")
                    + "\n[sweep]\nadc_bits = [6, 8]\n")
    real, refused = pq.write_table, []

    def full_disk(table, where, *args, **kwargs):
        """The disk fills after two part files: every later part write fails (ENOSPC)."""
        if Path(where).name.startswith(".part-") and (refused or Path(where).name >=
                                                      ".part-00002"):
            refused.append(table)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(table, where, *args, **kwargs)

    monkeypatch.setattr(pq, "write_table", full_disk)
    with pytest.raises(OSError) as failed:
        run_study(load_study(path), tmp_path, scheduler=warm_cluster, batch_trials=1,
                  progress=False, cache_dir=cache_dir)
    folder = tmp_path / "full"
    message = str(failed.value)
    assert f"cannot write {folder / 'part-00002.parquet'}: No space left on device" in message
    assert f"everything written before in {folder} is kept" in message
    assert f"free space in {folder}" in failed.value.hint
    monkeypatch.setattr(pq, "write_table", real)
    kept = {p: p.read_bytes() for p in ResultStore(folder).parts()}
    assert [p.name for p in kept] == ["part-00000.parquet", "part-00001.parquet"]
    assert not list(folder.glob(".*.tmp"))   # no half-written temporary left

    again = run_study(load_study(path), tmp_path, scheduler=warm_cluster, progress=False,
                      cache_dir=cache_dir)
    assert (again.n_skipped, again.n_run) == (2, 2)
    assert all(p.read_bytes() == data for p, data in kept.items())   # untouched
    df = load_results(folder).drop(columns="wall_s")
    assert len(df) == 4 and not df.duplicated(["point_id", "repeat"]).any()   # 2 x 2, once
    lost = refused[0].to_pandas().drop(columns="wall_s")   # the rows the full disk refused
    rerun = df.merge(lost[["point_id", "repeat"]])
    assert len(rerun) == len(lost) == 1
    assert rerun.equals(lost[list(df.columns)])   # run again: the same row, bit for bit


def test_a_full_disk_through_the_command_line_is_one_line_and_a_hint(ran, tmp_path,
                                                                     monkeypatch, capsys):
    original = Path.write_text

    def full_disk(self, *args, **kwargs):
        if self.name.endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    out = tmp_path / "report.html"
    status, lines, _ = answer(["report", str(ran[1]), "--out", str(out)], capsys)
    one_line(status, lines, 1, f"error: cannot write {out}: No space left on device",
             f"(errno 28); everything written before in {tmp_path} is kept")
    assert not list(tmp_path.iterdir())


def results(folder: Path, name: str, points: list[HardwareConfig], times: tuple[float, ...],
            repeats: int = 3) -> Path:
    """A results folder as a run writes it, with made-up accuracies."""
    rows = []
    for k, hw in enumerate(points):
        for r in range(repeats):
            evaluations = [{"t_inference_s": t, "accuracy": 0.9 - 0.01 * r - 0.02 * k,
                            "n_correct": 90 - r - 2 * k, "n_samples": 100, "wall_s": 0.1}
                           for t in times]
            rows += trial_rows(name, point_id(hw), hw, r, trial_seed(1, r), evaluations, "0")
    ResultStore(folder / name).write_trials(rows)
    return folder / name


def tiny_values(folder: Path) -> list[str]:
    res = results(folder, "tiny", [HardwareConfig(out_noise=1e-5),
                                   HardwareConfig(out_noise=3.1e-4)], (0.0,))
    return ["summary", str(res)]


def test_tiny_swept_values_print_with_their_own_digits(tmp_path, capsys):
    status, lines, out = answer(tiny_values(tmp_path), capsys)
    assert status == 0 and not lines
    firsts = [line.split()[0] for line in out.splitlines()[1:3]]
    assert firsts == ["1e-05", "0.00031"], out


def compare_twice(folder: Path) -> list[str]:
    res = results(folder, "c", [HardwareConfig(adc_bits=6), HardwareConfig(adc_bits=8)], (0.0,))
    return ["compare", str(res), "--baseline", "adc_bits=6", "adc_bits=8", "--other",
            "adc_bits=8"]


def compare_times(folder: Path) -> list[str]:
    results(folder / "res", "a", [HardwareConfig()], (0.0, 60.0))
    results(folder / "res", "b", [HardwareConfig()], (3600.0,))
    return ["compare", str(folder / "res"), "--baseline", "study=a", "--other", "study=b"]


def train_file(folder: Path, *edits: tuple[str, str], out: str = "ck",
               options: tuple[str, ...] = ()) -> list[str]:
    text = TRAIN
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    (folder / "t.toml").write_text(text, encoding="utf-8")
    return ["train", str(folder / "t.toml"), "--out", str(folder / out), *options]


def nan_init(folder: Path) -> list[str]:
    from mc_engine.zoo import build

    state = {k: torch.full_like(v, float("nan")) for k, v in build("digits_mlp").state_dict()
             .items()}
    torch.save(state, folder / "nan.pt")
    return train_file(folder, ('epochs = 1', 'epochs = 1\ninit = "nan.pt"'))


def zoo_cache(folder: Path) -> list[str]:
    (folder / "res" / ".cache").mkdir(parents=True)
    (folder / "res" / ".cache" / "digits_mlp.pt").write_bytes(b"cached zoo weights")
    return train_file(folder, out="res/.cache")


def checkpoint_axis(folder: Path) -> list[str]:
    from mc_engine.zoo import build

    torch.save(build("digits_mlp").state_dict(), folder / "w.pt")
    return study(folder, append='\n[sweep]\ncheckpoint = ["w.pt", "./w.pt"]\n')


LONG = "a" * 300
NOT_UTF8 = os.fsdecode(b"r\xe9s")
S = "{folder}/study.toml: "
T = "{folder}/t.toml: "
CASES: dict[str, tuple[Callable[[Path], list[str]], str, str]] = {
    # options beyond the machine (emulated: 2 cores, 23 GiB)
    "workers_800_on_two_cores": (lambda f: study(f, command="run") + ["--workers", "800"],
                                 "--workers: ", "expected at most 16 local worker processes"),
    "threads_huge": (lambda f: train_file(f, options=("--threads", str(10**12))), "--threads: ",
                     "expected at most 8 torch threads"),
    # paths the file system or the Parquet library cannot take
    "out_name_too_long": (lambda f: study(f, command="run")[:-1] + [str(f / LONG)], "--out: ",
                          "has 300 bytes"),
    "validate_out_too_long": (lambda f: study(f)[:-1] + [str(f / LONG)], "--out: ",
                              "has 300 bytes"),
    "report_out_too_long": (lambda f: ["report", str(results(f, "r", [HardwareConfig()], (0.0,))),
                                       "--out", str(f / f"{LONG}.html")], "--out: ",
                            "has 305 bytes"),
    "summary_path_too_long": (lambda f: ["summary", str(f / LONG)], "{folder}/", "has 300 bytes"),
    "scheduler_file_too_long": (lambda f: study(f, command="run") + [
        "--scheduler-file", str(f / f"{LONG}.json")], "--scheduler-file: ", "has 305 bytes"),
    "out_not_utf8": (lambda f: study(f, command="run")[:-1] + [str(f / NOT_UTF8)], "--out: ",
                     "holds the byte \\xe9, which is not UTF-8"),
    "train_name_too_long": (lambda f: train_file(f, ('name = "t"', f'name = "{"n" * 240}"')),
                            T + "train.name", "a name of 240 bytes is too long"),
    "train_out_a_zoo_cache": (zoo_cache, "--out: ", "zoo model cache"),
    # train inputs
    "train_init_a_folder": (lambda f: (f / "sub").mkdir() or train_file(
        f, ('epochs = 1', 'epochs = 1\ninit = "sub"')), T + "train.init", "is a directory"),
    "train_init_nan": (nan_init, T + "train.init", "0.weight holds NaN or infinite values"),
    # studies and results
    "checkpoint_axis_two_spellings": (checkpoint_axis, S + "sweep.checkpoint",
                                      "'w.pt' and './w.pt' are the same file"),
    "compare_column_twice": (compare_twice, "--baseline: ", "'adc_bits' given twice"),
    "compare_at_different_times": (compare_times, "{folder}/res: other: ",
                                   "read at different inference times (baseline at 0 s, 1 min; "
                                   "other at 1 h)"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_more_bad_inputs_give_one_line_and_status_2(case, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cluster, "_memory_bytes", lambda: 23 * 2**30)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    setup, where, what = CASES[case]
    (tmp_path / "keep.txt").write_text("a user's file\n")
    args = setup(tmp_path)
    before = snapshot(tmp_path)
    status, lines, _ = answer(args, capsys)
    one_line(status, lines, 2, where.format(folder=tmp_path), what)
    after = snapshot(tmp_path)
    assert {k: after.get(k) for k in before} == before   # nothing that was there is lost
    assert not (tmp_path / "out" / "bad").exists() and not (tmp_path / "ck").exists()


@pytest.mark.parametrize("name, value", [("NUMBA_NUM_THREADS", "0"), ("OMP_NUM_THREADS", "x")])
def test_a_thread_count_of_0_or_text_in_the_environment_is_one_line(name, value, tmp_path):
    env = {**os.environ, name: value, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "mc_engine.cli", "summary", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{name}: expected a positive integer"), \
        done.stderr
    assert f"got {value!r}; unset it or set it to 1" in lines[0]


class Tied(nn.Module):
    """One Linear under two names, each called once (tied weights)."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(16, 8)
        self.dec = self.enc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.enc(x), self.dec(x)])


def test_a_linear_used_twice_is_one_analog_layer_read_afresh_at_each_call():
    torch.manual_seed(0)
    fc = nn.Linear(16, 16)
    twice = convert(nn.Sequential(fc, nn.ReLU(), fc))
    assert isinstance(twice.module[2], AnalogLinear) and twice.module[2] is twice.module[0]
    assert len(list(twice.analog_layers())) == 1   # one matrix, programmed once

    # Exact devices and converters, output noise only: each call's deviation from the digital
    # output is its own noise draw. Fresh noise at each call makes Var(call 1 - call 2) twice
    # Var(call 1 - digital); the same draw would make it 0, a digital second use half of that.
    # 64 x 8 values: the ratio's standard error is about 0.09, so [0.7, 1.4] is > 3 sigma wide.
    hw = HardwareConfig(device="ideal", dac_bits=0, adc_bits=0, out_noise=0.05,
                        drift_compensation="none")
    model = Tied()
    analog = convert(model, hw).program(7).drift(0.0)
    assert analog.module.enc is analog.module.dec
    x = torch.randn(64, 16)
    first, second = analog(x)
    digital = model.enc(x).detach()
    ratio = float((first - second).var() / (2 * (first - digital).var()))
    assert 0.7 < ratio < 1.4, ratio


def bn_train(folder: Path, batch_size: int, limit: int) -> list[str]:
    (folder / "bn_model.py").write_text(
        "from torch import nn\ndef make():\n    return nn.Sequential(nn.Linear(64, 16), "
        "nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10))\n")
    return train_file(folder, ('zoo = "digits_mlp"', 'factory = "bn_model:make"'),
                      ("batch_size = 16", f"batch_size = {batch_size}"),
                      ("limit = 40", f"limit = {limit}"), ("epochs = 1", "epochs = 2"))


def test_batchnorm_skips_a_last_batch_of_one_and_refuses_batches_of_one(tmp_path, capsys):
    status, lines, out = answer(bn_train(tmp_path, 16, 33), capsys)   # 16 + 16 + 1
    assert status == 0, lines
    assert "2 of 2 epochs" in out
    shutil.rmtree(tmp_path / "ck")
    status, lines, _ = answer(bn_train(tmp_path, 1, 8), capsys)
    one_line(status, lines, 2, f"{tmp_path}/t.toml: train.batch_size",
             "expected batch_size >= 2 (got 1)")


def test_a_tiny_target_ci_stops_at_max_repeats_without_warnings():
    first = np.random.default_rng(3).normal(0.9, 0.01, size=(5, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for target in (1e-3, 1e-200, 1e-300, 5e-324):
            assert stein_size(first, target, 40) == 40
            assert stein_size(np.zeros((5, 2)), target, 40) == 5   # chips that all agree
