"""A corpus of bad inputs through the command line, each answered as the README promises.

Every case is one mistake a user can make (study file, data, model, factory, command-line
option, results path) on the base study below (digits_mlp on digits, 50 samples, one repeat, one
read time). Each must give the documented exit status (2 for user input: one line naming the
file or option and the key; 1 for a failure outside the input: one line and a hint), never a
traceback, and must leave every file that was there before untouched.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from mc_engine.cli import main
from mc_engine.run import cluster

BASE = """
[study]
name = "bad"
seed = 1
repeats = 1
inference_times = ["0s"]

[model]
zoo = "digits_mlp"

[data]
dataset = "digits"
limit = 50
"""


@dataclass(frozen=True)
class Case:
    """``setup(folder)`` writes what the case needs and returns the mc-engine arguments;
    ``where`` is the start of the message (``{study}``: the study file's path) and ``what``
    a fragment of it."""

    setup: Callable[[Path], list[str]]
    where: str
    what: str
    status: int = 2


def study(folder: Path, *edits: tuple[str, str], append: str = "",
          command: str = "validate") -> list[str]:
    """The base study with text replacements (and appended tables), run through ``command``."""
    text = BASE
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    path = folder / "study.toml"
    path.write_text(text + append, encoding="utf-8")
    return [command, str(path), "--out", str(folder / "out")]


def hardware(line: str) -> Callable[[Path], list[str]]:
    return lambda f: study(f, append=f"\n[hardware]\n{line}\n")


def sweep(text: str) -> Callable[[Path], list[str]]:
    return lambda f: study(f, append=f"\n{text}\n")


def npz(**arrays: np.ndarray) -> Callable[[Path], list[str]]:
    def setup(folder: Path) -> list[str]:
        np.savez(folder / "d.npz", **arrays)
        return study(folder, ('dataset = "digits"', 'dataset = "npz"\npath = "d.npz"'))
    return setup


X, Y = np.zeros((4, 64), np.float32), np.arange(4)


def cifar(labels: object) -> Callable[[Path], list[str]]:
    """A one-file CIFAR-10 folder whose test_batch holds ``labels``."""
    def setup(folder: Path) -> list[str]:
        batches = folder / "cifar-10-batches-py"
        batches.mkdir()
        data = np.zeros((len(labels), 3072), np.uint8)
        with open(batches / "test_batch", "wb") as fh:
            pickle.dump({b"data": data, b"labels": labels}, fh)
        return study(folder, ('zoo = "digits_mlp"', 'zoo = "resnet20"'),
                     ('dataset = "digits"', 'dataset = "cifar10"\npath = "."'))
    return setup


def factory(table: str, code: str, name: str) -> Callable[[Path], list[str]]:
    """A module ``name`` beside the study whose ``make`` is the [model] or [data] factory."""
    def setup(folder: Path) -> list[str]:
        (folder / f"{name}.py").write_text(code)
        old = 'zoo = "digits_mlp"' if table == "model" else 'dataset = "digits"\nlimit = 50'
        return study(folder, (old, f'factory = "{name}:make"'))
    return setup


def path_value(table: str, key: str, make: Callable[[Path], str]) -> Callable[[Path], list[str]]:
    """``[table] key = make(folder)`` (e.g. a directory or an empty string)."""
    def setup(folder: Path) -> list[str]:
        value = make(folder)
        if table == "model":
            return study(folder, ('zoo = "digits_mlp"', f'zoo = "digits_mlp"\n{key} = "{value}"'))
        return study(folder, ('dataset = "digits"', f'dataset = "npz"\n{key} = "{value}"'))
    return setup


def folder_in(folder: Path) -> str:
    (folder / "sub").mkdir()
    return "sub"


def run_with(*options: str) -> Callable[[Path], list[str]]:
    return lambda f: study(f, command="run") + list(options)


def out_is_a_file(folder: Path) -> list[str]:
    (folder / "out").write_text("a file the user keeps\n")
    return study(folder, command="run")


def name_is_a_file(folder: Path) -> list[str]:
    (folder / "out").mkdir()
    (folder / "out" / "bad").write_text("a file the user keeps\n")
    return study(folder, command="run")


def scheduler_file(content: str | None) -> Callable[[Path], list[str]]:
    def setup(folder: Path) -> list[str]:
        if content is not None:
            (folder / "scheduler.json").write_text(content)
        return study(folder, command="run") + ["--scheduler-file", str(folder / "scheduler.json")]
    return setup


def results_folder(folder: Path) -> Path:
    """A results folder as a run leaves it: one part file, ideal.parquet, study.toml."""
    res = folder / "res"
    res.mkdir()
    pq.write_table(pa.table({"study": ["s"], "point_id": ["p"], "repeat": [0],
                             "t_inference_s": [0.0], "accuracy": [0.5]}),
                   res / "part-00000.parquet")
    pq.write_table(pa.table({"study": ["s"], "accuracy": [0.9]}), res / "ideal.parquet")
    (res / "study.toml").write_text(BASE)
    return res


def results_command(*args: str) -> Callable[[Path], list[str]]:
    """``args`` with RES replaced by a results folder (RES/x: a file in it)."""
    def setup(folder: Path) -> list[str]:
        res = results_folder(folder)
        return [a.replace("RES", str(res)) for a in args]
    return setup


TRAIN = """
[train]
name = "t"
epochs = 1
batch_size = 16
lr = 0.01

[model]
zoo = "digits_mlp"

[data]
dataset = "digits"
limit = 50

[noise]
"""


def train(*edits: tuple[str, str], append: str = "",
          existing: bool = False) -> Callable[[Path], list[str]]:
    """``mc-engine train`` of the base train file with text replacements (and [noise] lines);
    ``existing``: the checkpoint and sidecar of an earlier training of the name are there."""
    def setup(folder: Path) -> list[str]:
        text = TRAIN
        for old, new in edits:
            assert old in text, old
            text = text.replace(old, new)
        path = folder / "train.toml"
        path.write_text(text + append)
        if existing:
            (folder / "out").mkdir()
            (folder / "out" / "t.pt").write_bytes(b"a finished training's weights")
            (folder / "out" / "t.json").write_text(json.dumps(
                {"epochs_done": 30, "epochs": 30, "train_file": "other.toml"}))
        return ["train", str(path), "--out", str(folder / "out")]
    return setup


T = "{folder}/train.toml: "
S = "{study}: "
LONG_NAME = "a" * 300
MLP = "import torch\nfrom torch import nn\n"
CASES: dict[str, Case] = {
    # [study]
    "name_with_trailing_newline": Case(lambda f: study(f, ('"bad"', '"abc\\n"')),
                                       S + "study.name", "letters, digits"),
    "name_of_300_characters": Case(lambda f: study(f, ('"bad"', f'"{LONG_NAME}"')),
                                   S + "study.name", "at most 100"),
    "name_climbing_out_of_out": Case(lambda f: study(f, ('"bad"', '"../x"')), S + "study.name",
                                     "letters, digits"),
    "name_empty": Case(lambda f: study(f, ('"bad"', '""')), S + "study.name", "letters"),
    "name_hidden_file": Case(lambda f: study(f, ('"bad"', '".bad"')), S + "study.name", "letters"),
    "name_not_a_string": Case(lambda f: study(f, ('"bad"', "7")), S + "study.name", "got 7"),
    "seed_negative": Case(lambda f: study(f, ("seed = 1", "seed = -1")), S + "study.seed", ">= 0"),
    "seed_beyond_int64": Case(lambda f: study(f, ("seed = 1", f"seed = {2**63}")),
                              S + "study.seed", "< 2**63"),
    "seed_a_float": Case(lambda f: study(f, ("seed = 1", "seed = 1.5")), S + "study.seed",
                         "integer"),
    "repeats_zero": Case(lambda f: study(f, ("repeats = 1", "repeats = 0")), S + "study.repeats",
                         "integer >= 1"),
    "repeats_a_string": Case(lambda f: study(f, ("repeats = 1", 'repeats = "3"')),
                             S + "study.repeats", "integer >= 1"),
    "times_empty": Case(lambda f: study(f, ('["0s"]', "[]")), S + "study.inference_times",
                        "non-empty list"),
    "time_unit_unknown": Case(lambda f: study(f, ('"0s"', '"2 fortnights"')),
                              S + "study.inference_times[0]", "unit"),
    "time_nan": Case(lambda f: study(f, ('"0s"', "nan")), S + "study.inference_times[0]",
                     "finite"),
    "time_duplicate": Case(lambda f: study(f, ('["0s"]', '["0s", "0 s"]')),
                           S + "study.inference_times[1]", "duplicate"),
    "description_not_a_string": Case(lambda f: study(f, ("repeats = 1", "repeats = 1\n"
                                                         "description = 3")),
                                     S + "study.description", "string"),
    "unknown_study_key": Case(lambda f: study(f, ("repeats = 1", "repeats = 1\nrepeat = 1")),
                              S + "study.repeat", "unknown key"),
    "unknown_table": Case(lambda f: study(f, append="\n[hardwar]\nadc_bits = 8\n"),
                          S + "hardwar", "unknown table"),
    # [hardware] and [sweep]
    "max_input_size_1e19": Case(hardware("max_input_size = 1e19"), S + "hardware.max_input_size",
                                "<= 2147483647"),
    "max_output_size_20_digits": Case(hardware("max_output_size = 99999999999999999999"),
                                      S + "hardware.max_output_size", "<="),
    "adc_bits_one": Case(hardware("adc_bits = 1"), S + "hardware.adc_bits", "1 bit"),
    "adc_bits_99": Case(hardware("adc_bits = 99"), S + "hardware.adc_bits", "<= 20"),
    "out_noise_negative": Case(hardware("out_noise = -0.1"), S + "hardware.out_noise", ">= 0"),
    "out_noise_nan": Case(hardware("out_noise = nan"), S + "hardware.out_noise", "finite"),
    "g_max_inf": Case(hardware("g_max = inf"), S + "hardware.g_max", "finite"),
    "w_noise_type_unknown": Case(hardware('w_noise_type = "pink"'), S + "hardware.w_noise_type",
                                 "expected one of"),
    "device_unknown": Case(hardware('device = "memristor"'), S + "hardware.device",
                           "expected one of"),
    "device_module_missing": Case(hardware('device = "no_such_devices_mod:Dev"'),
                                  S + "hardware.device", "cannot import"),
    "drift_compensation_unknown": Case(hardware('drift_compensation = "sometimes"'),
                                       S + "hardware.drift_compensation", "expected one of"),
    "rows_per_adc_zero": Case(hardware("rows_per_adc = 0"), S + "hardware.rows_per_adc", ">= 1"),
    "unknown_hardware_key": Case(hardware("adc_bit = 8"), S + "hardware.adc_bit",
                                 "unknown hardware parameter"),
    "sweep_not_a_list": Case(sweep("[sweep]\nadc_bits = 8"), S + "sweep.adc_bits",
                             "list of values"),
    "sweep_same_point_twice": Case(sweep("[sweep]\nadc_bits = [9, 9]"), S + "sweep",
                                   "same hardware point"),
    "zip_lengths_differ": Case(sweep("[[sweep.zip]]\nadc_bits = [6, 8]\ndac_bits = [7]"),
                               S + "sweep.zip[0].", "same length"),
    # [data]
    "npz_float32_near_max": Case(npz(x_test=np.full((4, 64), 3e38, np.float32), y_test=Y),
                                 S + "data.path", "within +-1e+09"),
    "npz_float64_1e300": Case(npz(x_test=np.full((4, 64), 1e300), y_test=Y), S + "data.path",
                              "within +-1e+09"),
    "npz_inputs_with_nan": Case(npz(x_test=np.full((4, 64), np.nan), y_test=Y), S + "data.path",
                                "NaN"),
    "npz_float_labels": Case(npz(x_test=X, y_test=np.array([0.7, 1, 2, 3])), S + "data.path",
                             "1-D integer"),
    "npz_negative_labels": Case(npz(x_test=X, y_test=-Y), S + "data.path", ">= 0"),
    "npz_huge_labels": Case(npz(x_test=X, y_test=Y + 10**7), S + "data.path", "<= 1_000_000"),
    "npz_inputs_1d": Case(npz(x_test=np.zeros(4, np.float32), y_test=Y), S + "data.path",
                          "shape N x"),
    "npz_complex_inputs": Case(npz(x_test=X.astype(complex), y_test=Y), S + "data.path",
                               "numeric array"),
    "npz_lengths_differ": Case(npz(x_test=X, y_test=Y[:3]), S + "data.path", "same number"),
    "npz_without_y_test": Case(npz(x_test=X), S + "data.path", "lacks array 'y_test'"),
    "npz_garbage_file": Case(path_value("data", "path", lambda f: (f / "g.npz").write_text("no")
                                        and "g.npz"), S + "data.path", "not a readable .npz"),
    "npz_path_a_folder": Case(path_value("data", "path", folder_in), S + "data.path",
                              "is a directory"),
    "npz_path_empty": Case(path_value("data", "path", lambda f: ""), S + "data.path",
                           "empty path"),
    "cifar_string_labels": Case(cifar(["cat", "dog"]), S + "data.path", "integer class indices"),
    "cifar_float_labels": Case(cifar([0.7, 1.0]), S + "data.path", "integer class indices"),
    "cifar_negative_labels": Case(cifar([-1, 2]), S + "data.path", ">= 0"),
    "limit_zero": Case(lambda f: study(f, ("limit = 50", "limit = 0")), S + "data.limit",
                       "positive integer"),
    "limit_a_string": Case(lambda f: study(f, ("limit = 50", 'limit = "10"')), S + "data.limit",
                           "positive integer"),
    "data_factory_ragged_lists": Case(factory("data", "def make():\n    return [[1.0, 2.0], [3.0]]"
                                              ", [0, 1]\n", "ragged_data"),
                                      S + "data.factory", "inputs x must be"),
    "data_factory_string_labels": Case(factory("data", "import numpy as np\ndef make():\n    "
                                               "return np.zeros((2, 64)), ['a', 'b']\n",
                                               "str_labels"), S + "data.factory", "1-D integer"),
    "data_factory_calls_sys_exit": Case(factory("data", "import sys\ndef make():\n    "
                                                "sys.exit(3)\n", "exiting_data"),
                                        S + "data.factory", "called sys.exit(3)"),
    "data_factory_returns_one_array": Case(factory("data", "import numpy as np\ndef make():\n"
                                                   "    return np.zeros((2, 64))\n", "one_array"),
                                           S + "data.factory", "must return (x, y)"),
    # [model]
    "checkpoint_a_folder": Case(path_value("model", "checkpoint", folder_in),
                                S + "model.checkpoint", "is a directory"),
    "checkpoint_empty": Case(path_value("model", "checkpoint", lambda f: ""),
                             S + "model.checkpoint", "empty path"),
    "checkpoint_garbage": Case(path_value("model", "checkpoint",
                                          lambda f: (f / "w.pt").write_text("x") and "w.pt"),
                               S + "model.checkpoint", "not a readable state_dict"),
    "model_factory_exit_0": Case(factory("model", "import sys\ndef make():\n    sys.exit(0)\n",
                                         "exit_zero"), S + "model.factory", "called sys.exit(0)"),
    "model_factory_exit_message": Case(factory("model", "import sys\ndef make():\n    "
                                               "sys.exit('no GPU here')\n", "exit_text"),
                                       S + "model.factory", "sys.exit('no GPU here')"),
    "model_module_parses_argv": Case(factory("model", "import argparse\np = argparse."
                                             "ArgumentParser()\np.add_argument('--lr', "
                                             "required=True)\np.parse_args()\ndef make():\n    "
                                             "pass\n", "argv_module"),
                                     S + "model.factory", "importing module 'argv_module' called "
                                                          "sys.exit(2)"),
    "model_lazy_layer": Case(factory("model", MLP + "def make():\n    return nn.Sequential("
                                     "nn.Flatten(), nn.LazyLinear(10))\n", "lazy_model"),
                             S + "model.factory", "1.weight of module '1' has no values (lazy"),
    "model_on_meta_device": Case(factory("model", MLP + "def make():\n    with torch.device("
                                         "'meta'):\n        return nn.Sequential(nn.Linear(64, 10"
                                         "))\n", "meta_model"),
                                 S + "model.factory", "0.weight of module '0' has no values"),
    "model_root_parameter": Case(factory("model", MLP + "class M(nn.Module):\n    def __init__("
                                         "self):\n        super().__init__()\n        self.fc = "
                                         "nn.Linear(64, 10)\n        self.scale = nn.Parameter("
                                         "torch.ones(10))\n    def forward(self, x):\n        "
                                         "return self.fc(x) * self.scale\ndef make():\n    return"
                                         " M()\n", "root_param"),
                                 S + "model.factory", "parameter scale is owned by the model's "
                                                      "root module (M)"),
    "model_linear_in_a_list": Case(factory("model", MLP + "class M(nn.Module):\n    def __init__"
                                           "(self):\n        super().__init__()\n        self.fc "
                                           "= nn.Linear(64, 10)\n        self.extra = [nn.Linear"
                                           "(10, 10)]\n    def forward(self, x):\n        return "
                                           "self.extra[0](self.fc(x))\ndef make():\n    return "
                                           "M()\n", "list_model"),
                                   S + "model.factory", "plain Python attribute 'extra'"),
    "model_factory_returns_a_dict": Case(factory("model", "def make():\n    return {}\n",
                                                 "dict_model"), S + "model.factory",
                                         "must return a torch.nn.Module"),
    "num_classes_for_a_digits_model": Case(lambda f: study(f, ('zoo = "digits_mlp"',
                                                               'zoo = "digits_mlp"\nnum_classes '
                                                               '= 10')),
                                           S + "model.num_classes", "has 10 classes"),
    "zoo_and_factory": Case(lambda f: study(f, ('zoo = "digits_mlp"', 'zoo = "digits_mlp"\n'
                                                'factory = "m:f"')), S + "model", "exactly one"),
    # command-line options
    "out_is_a_file": Case(out_is_a_file, "--out: ", "is not a folder"),
    "out_name_is_a_file": Case(name_is_a_file, "--out: ", "is not a folder"),
    "scheduler_empty": Case(run_with("--scheduler", ""), "error: invalid Dask scheduler address",
                            "empty", status=1),
    "scheduler_refused": Case(run_with("--scheduler", "tcp://127.0.0.1:1"),
                              "error: cannot connect to the Dask scheduler at tcp://127.0.0.1:1",
                              "refused", status=1),
    "scheduler_port_99999": Case(run_with("--scheduler", "tcp://127.0.0.1:99999"),
                                 "error: invalid Dask scheduler address", "1..65535", status=1),
    "scheduler_ucx": Case(run_with("--scheduler", "ucx://127.0.0.1:8786"),
                          "error: invalid Dask scheduler address", "unsupported scheme 'ucx'",
                          status=1),
    "workers_10000": Case(run_with("--workers", "100000"), "--workers: ",
                          "local worker processes on this machine"),
    "scheduler_file_missing": Case(scheduler_file(None), "{folder}/scheduler.json: "
                                                          "--scheduler-file", "not found"),
    "scheduler_file_not_json": Case(scheduler_file("tcp://x:1"), "{folder}/scheduler.json: "
                                                                 "--scheduler-file",
                                    "not a readable Dask scheduler file"),
    "scheduler_file_without_address": Case(scheduler_file(json.dumps({"id": 1})),
                                           "{folder}/scheduler.json: --scheduler-file",
                                           '"address"'),
    # results paths
    "summary_of_ideal_parquet": Case(results_command("summary", "RES/ideal.parquet"),
                                     "{folder}/res/ideal.parquet: ", "ideal (digital) accuracy"),
    "summary_of_study_toml": Case(results_command("summary", "RES/study.toml"),
                                  "{folder}/res/study.toml: ", "not a readable Parquet file"),
    "report_of_ideal_parquet": Case(results_command("report", "RES/ideal.parquet"),
                                    "{folder}/res/ideal.parquet: ", "not a file of trial"),
    "summary_of_a_missing_folder": Case(results_command("summary", "RES/nothing"),
                                        "{folder}/res/nothing: ", "no results here"),
    "report_out_txt": Case(results_command("report", "RES", "--out", "RES/acc.txt"), "--out: ",
                           ".png, .pdf, .svg"),
    "report_out_under_a_file": Case(results_command("report", "RES", "--out",
                                                    "RES/study.toml/acc.png"),
                                    "--out: ", "not a folder"),
    # train files
    "train_lr_that_diverges": Case(train(("lr = 0.01", 'lr = 1e30\noptimizer = "sgd"')),
                                   T + "train.lr", "lower the learning rate"),
    "train_step_size_without_step_schedule": Case(train(("lr = 0.01", "lr = 0.01\nstep_size = 5")),
                                                  T + "train.step_size", "schedule = 'step'"),
    "train_gamma_with_cosine_schedule": Case(
        train(("lr = 0.01", 'lr = 0.01\nschedule = "cosine"\ngamma = 0.5')), T + "train.gamma",
        "the schedule is 'cosine'"),
    "train_momentum_with_adam": Case(train(("lr = 0.01", "lr = 0.01\nmomentum = 0.5")),
                                     T + "train.momentum", "optimizer = 'sgd'"),
    "train_more_levels_than_batch_samples": Case(
        train(("batch_size = 16", "batch_size = 2"), append="weight_noise = [0.1, 0.2, 0.3]\n"),
        T + "noise.weight_noise", "at most 2 levels"),
    "train_prog_noise_scale_without_a_device": Case(train(append="prog_noise_scale = 2.0\n"),
                                                    T + "noise.prog_noise_scale", "needs a device"),
    "train_adc_bits_without_a_range": Case(train(append="adc_bits = 8\nout_bound = inf\n"),
                                           T + "noise.adc_bits", "finite range"),
    "train_rerun_of_a_finished_checkpoint": Case(train(existing=True), T + "train.name",
                                                 "already exists (30 of 30 epochs"),
    "train_out_below_a_file": Case(lambda f: [*train()(f)[:3], str(f / "keep.txt" / "ck")],
                                   "--out: ", "not a folder"),
}


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """A results folder whose .cache holds the trained digits models (trained once)."""
    folder = tmp_path_factory.mktemp("cache")
    assert main(["validate", str(Path(study(folder)[1])), "--out", str(folder / "out")]) == 0
    return folder / "out" / ".cache"


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gives_one_line_and_the_documented_status(case, tmp_path, cache, capsys,
                                                            monkeypatch):
    monkeypatch.setattr(cluster, "SCHEDULER_FILE_WAIT_S", 0.0)
    spec = CASES[case]
    (tmp_path / "keep.txt").write_text("a user's file\n")
    args = spec.setup(tmp_path)
    if (tmp_path / "out").is_dir() or not (tmp_path / "out").exists():
        (tmp_path / "out").mkdir(exist_ok=True)
        shutil.copytree(cache, tmp_path / "out" / ".cache", dirs_exist_ok=True)
    before = snapshot(tmp_path)
    capsys.readouterr()
    started = time.monotonic()
    status = main(args)
    err = capsys.readouterr().err
    lines = err.splitlines()
    where = spec.where.format(study=tmp_path / "study.toml", folder=tmp_path)
    assert status == spec.status, err
    assert "Traceback" not in err and "Warning" not in err, err
    assert lines and lines[0].startswith(where), err
    assert spec.what in err, err
    if status == 2:
        assert len(lines) == 1, err
    else:
        assert len(lines) == 2 and lines[1].startswith("hint: "), err
    assert time.monotonic() - started < 30  # refused at once (no connection retries)
    after = snapshot(tmp_path)
    assert {k: after.get(k) for k in before} == before  # nothing that was there is lost
    assert not (tmp_path / "out" / "bad").is_dir()  # nothing run or written


def test_a_factory_module_parsing_optional_arguments_sees_none_of_mc_engines(tmp_path, cache):
    """A module that parses sys.argv at import gets only its own name, not mc-engine's."""
    (tmp_path / "cli_model.py").write_text(
        MLP + "import argparse\np = argparse.ArgumentParser()\np.add_argument('--width', type="
        "int, default=32)\nWIDTH = p.parse_args().width\ndef make():\n    return nn.Sequential("
        "nn.Linear(64, WIDTH), nn.ReLU(), nn.Linear(WIDTH, 10))\n")
    args = study(tmp_path, ('zoo = "digits_mlp"', 'factory = "cli_model:make"'))
    assert main(args) == 0


def test_bfloat16_data_from_a_factory_is_accepted(tmp_path, cache):
    (tmp_path / "bf16_data.py").write_text(
        "import torch\ndef make():\n    return torch.ones(8, 64, dtype=torch.bfloat16), "
        "torch.arange(8) % 10\n")
    args = study(tmp_path, ('dataset = "digits"\nlimit = 50', 'factory = "bf16_data:make"'))
    shutil.copytree(cache, tmp_path / "out" / ".cache")
    assert main(args) == 0


def test_what_the_engine_writes_reads_back(tmp_path):
    """Every character a TOML string can hold survives the resolved study.toml."""
    import tomllib

    from mc_engine.study import toml_writer

    text = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)
    doc = {"study": {"description": text, "a\x7fb": "x\x7f\n\t"}}
    assert tomllib.loads(toml_writer.dumps(doc)) == doc


def test_a_model_with_parametrized_linear_weights_is_accepted(tmp_path):
    """Parameters inside a Linear (weight normalisation) go onto tiles with it."""
    from mc_engine.analog.checks import check_weights
    from mc_engine.errors import UserInputError

    model = torch.nn.Sequential(torch.nn.utils.parametrizations.weight_norm(
        torch.nn.Linear(4, 2)))
    check_weights(model, lambda msg: UserInputError(msg))
