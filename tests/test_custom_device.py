"""A user's device model named in a study file (docs/devices.md): the retention example's law,
its parameters as study keys, sweep axes and result columns, and runs on local and remote Dask
workers that cannot import the user's module."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from distributed import Client

from mc_engine.cli import main
from mc_engine.errors import UserInputError
from mc_engine.hardware import HardwareConfig
from mc_engine.hardware.devices import DEVICES, DeviceModel, DeviceParam, register_device
from mc_engine.results import load_results, summarize
from mc_engine.run import run_study
from mc_engine.study import load_study, parse_study, point_id
from tests.conftest import dask_processes

EXAMPLES = Path(__file__).parents[1] / "docs" / "examples"
DEVICE = "retention_device:Retention"

STUDY = """
[study]
name = "retention"
seed = 3
repeats = 2
inference_times = ["0s", "1d"]

[model]
zoo = "digits_mlp"

[data]
dataset = "digits"
limit = 60

[hardware]
device = "retention_device:Retention"
beta = 0.7
read_sigma_rel = 0.01

[sweep]
tau_s = [1e3, 1e7]
"""


def study_folder(folder: Path, text: str = STUDY) -> Path:
    """The docs example module beside a study file in ``folder``; returns the study path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "retention_device.py").write_text((EXAMPLES / "retention_device.py").read_text())
    (folder / "study.toml").write_text(text)
    return folder / "study.toml"


def comparable(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=["wall_s"])


@pytest.fixture(scope="module")
def retention(tmp_path_factory) -> type[DeviceModel]:
    """The example class, imported the way a study file imports it (and registered)."""
    study = load_study(study_folder(tmp_path_factory.mktemp("registered")))
    return study.custom_devices[DEVICE]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, cache_dir):
    """The study on a LocalCluster of two workers started by the run."""
    folder = tmp_path_factory.mktemp("local")
    outcome = run_study(load_study(study_folder(folder / "study")), folder / "out", workers=2,
                        progress=False, cache_dir=cache_dir)
    return folder, outcome


def hardware(**params) -> HardwareConfig:
    return HardwareConfig(device=DEVICE, g_max=20.0, device_params=params)


# ---- the device itself ----

def test_retention_law_without_noise_is_exact(retention):
    hw = hardware(tau_s=1e4, beta=0.6, g_rest_frac=0.25, prog_sigma_rel=0.0, read_sigma_rel=0.0)
    device = DEVICES[DEVICE](hw)
    g_t = np.linspace(0.0, 20.0, 41)
    g_p, state = device.program(g_t, np.random.default_rng(1))
    np.testing.assert_array_equal(g_p, g_t)
    g_rest = 0.25 * 20.0
    for t in (0.0, 60.0, 1e4, 3.6e5, 3.15e7):
        expected = g_rest + (g_t - g_rest) * np.exp(-((t / 1e4) ** 0.6))
        np.testing.assert_allclose(device.read(g_p, state, t, np.random.default_rng(2)),
                                   expected, rtol=1e-12, atol=1e-12)
    at_tau = device.read(g_p, state, 1e4, np.random.default_rng(2))
    np.testing.assert_allclose(at_tau - g_rest, (g_t - g_rest) / np.e, atol=1e-12)


def test_retention_noise_has_the_declared_relative_sigma(retention):
    hw = hardware(tau_s=1e5, beta=0.5, prog_sigma_rel=0.05, read_sigma_rel=0.02)
    device = DEVICES[DEVICE](hw)
    g_t = np.full(200_000, 10.0)
    g_p, state = device.program(g_t, np.random.default_rng(3))
    prog = g_p / g_t - 1.0
    assert abs(prog.mean()) < 4 * 0.05 / np.sqrt(g_t.size)
    assert prog.std() == pytest.approx(0.05, rel=0.01)
    t = 3600.0
    read = device.read(g_p, state, t, np.random.default_rng(4)) / device.retained(g_p, t) - 1.0
    assert abs(read.mean()) < 4 * 0.02 / np.sqrt(g_t.size)
    assert read.std() == pytest.approx(0.02, rel=0.01)
    again = device.read(g_p, state, t, np.random.default_rng(4))
    np.testing.assert_array_equal(again, device.read(g_p, state, t, np.random.default_rng(4)))


def test_parameters_are_canonical_hashable_and_flattened(retention):
    hw = hardware(tau_s=1e3)
    assert hw.device_params == (("beta", 0.5), ("g_rest_frac", 0.0), ("prog_sigma_rel", 0.03),
                                ("read_sigma_rel", 0.0), ("tau_s", 1000.0))
    assert hash(hw) == hash(hardware(tau_s=1000, beta=0.5))
    flat = hw.to_dict()
    assert "device_params" not in flat and flat["tau_s"] == 1000.0
    assert list(flat)[list(flat).index("device") + 1] == "beta"
    assert point_id(flat) == point_id(hw) != point_id(hardware(tau_s=1e4))
    assert hw.replace(tau_s=5.0).device_params[-1] == ("tau_s", 5.0)
    assert hw.replace(device="pcm").device_params == ()
    assert "device_params" not in HardwareConfig.field_names()  # not a column, not a study key


def test_builtin_devices_keep_their_columns_and_ids():
    hw = HardwareConfig(adc_bits=6)
    assert hw.device_params == () and list(hw.to_dict()) == HardwareConfig.field_names()


def test_a_parameter_named_like_a_hardware_field_is_an_error_of_the_class():
    class Clash(DeviceModel):
        name = "test_clash"
        params = {"g_max": DeviceParam(1.0, "clashes")}

    with pytest.raises(TypeError, match="'g_max' has the name of a HardwareConfig field"):
        register_device(Clash)

    class BadDefault(DeviceModel):
        name = "test_bad_default"
        params = {"tau_s": DeviceParam(-1.0, "negative", lo=0.0)}

    with pytest.raises(TypeError, match="default of parameter 'tau_s'.*>= 0"):
        register_device(BadDefault)


def test_python_users_get_a_hint_for_unregistered_module_class_names():
    with pytest.raises(UserInputError, match="'nowhere:Dev' is not registered.*register_device"):
        HardwareConfig(device="nowhere:Dev")


# ---- study files ----

def test_study_validates_sweeps_parameters_and_round_trips(tmp_path, retention):
    path = study_folder(tmp_path)
    study = load_study(path)
    assert [p.device for p in study.points] == [DEVICE, DEVICE]
    assert [dict(p.device_params)["tau_s"] for p in study.points] == [1e3, 1e7]
    assert all(dict(p.device_params)["beta"] == 0.7 for p in study.points)
    assert study.device_params == ("beta", "g_rest_frac", "prog_sigma_rel", "read_sigma_rel",
                                   "tau_s")
    again = parse_study(tomllib.loads(study.to_toml()), source="resolved", base_dir=tmp_path)
    assert again.points == study.points
    zipped = STUDY.replace("[sweep]\ntau_s = [1e3, 1e7]",
                           "[[sweep.zip]]\ntau_s = [1e3, 1e7]\nbeta = [0.3, 1.0]")
    study = load_study(study_folder(tmp_path / "zip", zipped))
    assert [(dict(p.device_params)["tau_s"], p.device_params[0][1]) for p in study.points] == \
        [(1e3, 0.3), (1e7, 1.0)]


BAD_DEVICES = """
from mc_engine.hardware.devices import DeviceModel, DeviceParam


class NotADevice:
    pass


def function():
    return None


class Clash(DeviceModel):
    params = {"adc_bits": DeviceParam(1.0, "clashes with a hardware field")}
"""


@pytest.mark.parametrize(("change", "message"), [
    ("tau = 1.0\n", r"study.toml: hardware.tau: unknown hardware parameter "
                    r"\(did you mean 'tau_s'\?\); known: .*; "
                    r"parameters of device 'retention_device:Retention': beta, g_rest_frac"),
    ("g_rest_frac = 1.5\n", r"study.toml: hardware.g_rest_frac: expected a finite number >= 0 "
                            r"and <= 1, got 1.5 \(a parameter of device 'retention_device:"),
    ("tau_s = \"long\"\n", r"hardware.tau_s: expected a finite number > 0, got 'long'"),
    ("SWEEP tau_s = [1e3, -1.0]", r"study.toml: sweep.tau_s: expected a finite number > 0, "
                                  r"got -1.0"),
    ("DEVICE bad_devices:NotADevice", r"study.toml: hardware.device: 'bad_devices:NotADevice' "
                                      r"is not a subclass of .*DeviceModel"),
    ("DEVICE bad_devices:function", r"hardware.device: 'bad_devices:function' is not a "
                                    r"subclass of .*DeviceModel \(it is 'function'\)"),
    ("DEVICE bad_devices:Clash", r"hardware.device: 'bad_devices:Clash' parameter 'adc_bits' "
                                 r"has the name of a HardwareConfig field"),
    ("DEVICE bad_devices:Missing", r"hardware.device: module 'bad_devices' has no attribute"),
    ("DEVICE no_such_devices_module:Retention", r"study.toml: hardware.device: cannot import "
                                                r"module 'no_such_devices_module'"),
    ("DEVICE retention", r"hardware.device: expected one of 'pcm', 'ideal'"),
])
def test_bad_device_inputs_are_one_clear_line(tmp_path, retention, change, message):
    text = STUDY
    if change.startswith("DEVICE "):
        text = text.replace(DEVICE, change.split()[1]).replace("beta = 0.7\n", "") \
            .replace("read_sigma_rel = 0.01\n", "").replace("tau_s = [1e3, 1e7]", "")
    elif change.startswith("SWEEP "):
        text = text.replace("tau_s = [1e3, 1e7]", change.split(" ", 1)[1])
    else:
        text = text.replace("[hardware]\n", f"[hardware]\n{change}")
    path = study_folder(tmp_path, text)
    (tmp_path / "bad_devices.py").write_text(BAD_DEVICES)
    with pytest.raises(UserInputError, match=message) as info:
        load_study(path)
    assert "\n" not in str(info.value)


def test_cli_reports_a_bad_device_parameter_with_status_2(tmp_path, capsys, retention):
    path = study_folder(tmp_path, STUDY.replace("beta = 0.7", "beta = 0.0"))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("hardware.beta: expected a finite number > 0 and <= 1, got 0.0 "
                        "(a parameter of device 'retention_device:Retention')")
    assert "Traceback" not in err


# ---- running ----

def test_local_run_writes_parameter_columns_and_resumes(local_run, cache_dir):
    folder, outcome = local_run
    assert (outcome.n_trials, outcome.n_run) == (4, 4)
    df = load_results(outcome.results_dir)
    for column in ("tau_s", "beta", "g_rest_frac", "prog_sigma_rel", "read_sigma_rel"):
        assert df[column].dtype == np.float64, column
    assert "device_params" not in df
    assert sorted(set(df["tau_s"])) == [1e3, 1e7] and set(df["beta"]) == {0.7}
    assert set(df["device"]) == {DEVICE}
    # tau = 1e3 s has relaxed to g_rest = 0 by 1 d; tau = 1e7 s has barely moved
    acc = df.groupby(["tau_s", "t_inference_s"])["accuracy"].mean()
    assert acc[(1e3, 86400.0)] < 0.3 < 0.8 < acc[(1e7, 86400.0)]
    summary = summarize(df)
    assert "tau_s" in summary and "beta" not in summary  # tau_s tells the points apart

    stored = tomllib.loads((outcome.results_dir / "study.toml").read_text())
    assert stored["hardware"]["device"] == DEVICE and stored["hardware"]["beta"] == 0.7
    again = run_study(load_study(folder / "study" / "study.toml"), folder / "out", workers=1,
                      progress=False, cache_dir=cache_dir)
    assert (again.n_run, again.n_skipped) == (0, 4)


@pytest.fixture
def dask_cluster(tmp_path):
    """A real `dask scheduler` and two `dask worker` processes, started in a folder of their
    own: the study's device module is not importable there."""
    cwd = tmp_path / "workers"
    cwd.mkdir()
    with dask_processes(cwd) as address:
        yield address


def test_a_device_module_beside_the_study_runs_on_remote_workers(dask_cluster, local_run,
                                                                   tmp_path, cache_dir):
    with Client(dask_cluster) as client:
        importable = client.run(lambda: importlib.util.find_spec("retention_device") is not None)
        assert importable and not any(importable.values())
    path = study_folder(tmp_path / "user_study")
    remote = run_study(load_study(path), tmp_path / "out", scheduler=dask_cluster,
                       progress=False, cache_dir=cache_dir)
    assert remote.n_run == 4
    _, local = local_run
    pd.testing.assert_frame_equal(comparable(load_results(remote.results_dir)),
                                  comparable(load_results(local.results_dir)))
