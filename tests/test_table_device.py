"""A device from a table of measurements (``device = "table"``, ``device_table``): a table built
from a known Gaussian law reproduces it, log-time interpolation is exact on a law linear in
ln t, read times outside the measured span are refused by name, and the table is read beside
the study, carried by the hardware points and fingerprinted with the study.

Tolerances: 100 000 devices per level, so a mean is held within 5 standard errors (sigma/63)
and a std within 2 % (its standard error is 0.22 %).
"""

from __future__ import annotations

import pickle
import tomllib
from pathlib import Path

import numpy as np
import pytest

from mc_engine.errors import UserInputError
from mc_engine.hardware import HardwareConfig, from_dict
from mc_engine.hardware.devices import DEVICES
from mc_engine.hardware.table import PACK
from mc_engine.hardware.tables import TABLES, parse_table, register_table
from mc_engine.study import load_study, parse_study
from mc_engine.study.inputs import fingerprint_mismatch

EXAMPLES = Path(__file__).parents[1] / "docs" / "examples"
LEVELS = (2.0, 6.0, 12.0, 20.0)
TIMES = (1.0, 3600.0, 86400.0)
N = 100_000


def law(level, t):
    """A known Gaussian law: the mean decays 1 % per e-fold of time, the spread grows."""
    return level * (1 - 0.01 * np.log(t)), 0.05 + 0.03 * level * (1 + 0.1 * np.log(t))


def csv_text(levels=LEVELS, times=TIMES, f=law) -> str:
    rows = [f"{lv!r},{t!r},{float(f(lv, t)[0])!r},{float(f(lv, t)[1])!r}"
            for lv in levels for t in times]
    return "# a known law\nlevel_us,time_s,mean_us,std_us\n" + "\n".join(rows) + "\n"


def table_device(text: str, name: str = "law.csv", **values):
    register_table(parse_table(text, name))
    hw = from_dict({"device": "table", "device_table": name, **values})
    return DEVICES["table"](hw), hw


def test_defaults_come_from_the_levels():
    _, hw = table_device(csv_text())
    assert (hw.g_max, hw.g_min) == (20.0, pytest.approx(2.0))
    with pytest.raises(UserInputError, match=r"g_max: the table 'law.csv' has levels from 2 "
                                             r"to 20 µS, the mapping programs g_min = 0"):
        from_dict({"device": "table", "device_table": "law.csv", "on_off_ratio": float("inf")})


@pytest.mark.parametrize("rho", [0.0, 0.6, 1.0])
def test_a_table_of_a_gaussian_law_reproduces_it(rho):
    """Programming at the first measured time, reads at every measured time: per level, mean
    and std of the law, and reads correlate with the programming by rho (1: a device keeps its
    place, 0: fresh draws)."""
    device, _ = table_device(csv_text(), table_correlation=rho)
    targets = np.repeat(np.array(LEVELS), N)
    g_prog, state = device.program(targets, np.random.default_rng(1))
    for t in TIMES:
        read = device.read(g_prog, state, t, np.random.default_rng(2))
        for i, level in enumerate(LEVELS):
            part = slice(i * N, (i + 1) * N)
            mean, std = law(level, t)
            assert abs(read[part].mean() - mean) < 5 * std / np.sqrt(N), (level, t)
            assert read[part].std() == pytest.approx(std, rel=0.02), (level, t)
            corr = np.corrcoef(read[part], g_prog[part])[0, 1]
            assert corr == pytest.approx(rho, abs=0.02), (level, t)
    if rho == 1:   # at the programming time: the programmed conductance (the state packs
        # the deviation with the level index, which rounds it at 1e-15)
        np.testing.assert_allclose(device.read(g_prog, state, 1.0, None), g_prog, rtol=1e-14)


def test_targets_are_quantized_to_the_nearest_level():
    device, _ = table_device(csv_text())
    _, state = device.program(np.array([0.0, 3.9, 4.1, 8.9, 9.1, 15.9, 16.1, 25.0]),
                              np.random.default_rng(0))
    np.testing.assert_array_equal(np.rint(state / PACK), [0, 0, 1, 1, 2, 2, 3, 3])


def linear(level, t):
    return level + 0.4 * np.log(t), 0.1 + 0.02 * np.log(t)


@pytest.mark.parametrize("t", [10.0, 3600.0, 5e4])
def test_log_time_interpolation_is_exact_on_a_linear_law(t):
    """Two measured times (1 s and 10^5 s) of a law linear in ln t: the read at any t between
    them is the law at t for the device's own deviation xi (rho = 1), to float64 rounding."""
    device, _ = table_device(csv_text(times=(1.0, 1e5), f=linear), "linear.csv")
    targets = np.repeat(np.array(LEVELS), 1000)
    g_prog, state = device.program(targets, np.random.default_rng(3))
    xi = state - PACK * np.rint(state / PACK)
    mean, std = linear(targets, t)
    np.testing.assert_allclose(device.read(g_prog, state, t, np.random.default_rng(4)),
                               np.maximum(mean + std * xi, 0.0), rtol=1e-12, atol=1e-12)


def test_reads_outside_the_measured_span_are_refused_by_name():
    device, hw = table_device(csv_text())
    assert device.time_problem(TIMES) is None
    with pytest.raises(UserInputError, match=r"t_inference_s: device 'table' \('law.csv'\) is "
                                             r"measured from 1 s to 86400 s after programming; "
                                             r"got 1e\+06 s"):
        device.read(np.ones(3), np.zeros(3), 1e6, np.random.default_rng(0))


@pytest.mark.parametrize(("text", "message"), [
    ("level_us,time_s,mean_us\n1,1,1", r"has no column 'std_us'"),
    ("level_us,time_s,mean_us,std_us\n1,1,1,0.1", r"at least 2 levels"),
    ("level_us,time_s,mean_us,std_us\n1,1,1,0.1\n2,1,2,0.1\n2,10,2,0.1",
     r"3 rows for 2 levels x 2 times: every level needs one row at every measured time"),
    ("level_us,time_s,mean_us,std_us\n1,0,1,0.1\n2,0,2,0.1", r"time_s must be > 0"),
    ("level_us,time_s,mean_us,std_us\n1,1,1,-0.1\n2,1,2,0.1", r"std_us must be >= 0"),
    ("level_us,time_s,mean_us,std_us\n1,1,one,0.1", r"line 2, column mean_us: expected a "
                                                    r"number, got 'one'"),
])
def test_bad_tables_are_one_clear_line(text, message):
    with pytest.raises(UserInputError, match=r"device_table: 'bad.csv'.*" + message):
        table_device(text, "bad.csv")


def test_the_table_travels_with_the_point():
    """A worker has no file and no registry: the point carries its parsed table."""
    _, hw = table_device(csv_text(), "travels.csv")
    blob = pickle.dumps(hw)
    del TABLES["travels.csv"]
    again = pickle.loads(blob)
    assert again == hw and again.table.sha256 == hw.table.sha256
    g, state = DEVICES["table"](again).program(np.full(4, 6.0), np.random.default_rng(0))
    assert DEVICES["table"](again).read(g, state, 3600.0, None).shape == (4,)
    assert again.replace(read_noise_scale=0.5).table == hw.table     # replace keeps it


STUDY = """
[study]
name = "table"
seed = 1
repeats = 1
inference_times = ["1s", "1h"]

[model]
zoo = "digits_mlp"

[data]
dataset = "digits"

[hardware]
device = "table"
device_table = "levels.csv"
"""


def test_a_study_reads_its_table_beside_it_and_fingerprints_it(tmp_path):
    (tmp_path / "levels.csv").write_text(csv_text())
    (tmp_path / "study.toml").write_text(STUDY)
    study = load_study(tmp_path / "study.toml")
    assert study.points[0].table.name == "levels.csv" and study.points[0].g_max == 20.0
    first = study.device_tables
    again = parse_study(tomllib.loads(study.to_toml()), source="resolved", base_dir=tmp_path)
    assert again.points == study.points
    (tmp_path / "levels.csv").write_text(csv_text(f=linear))
    changed = load_study(tmp_path / "study.toml").device_tables
    model = {"model": "0" * 64, "data": "1" * 64}
    assert fingerprint_mismatch({**model, "device_tables": first},
                                {**model, "device_tables": first}) is None
    assert fingerprint_mismatch({**model, "device_tables": first},
                                {**model, "device_tables": changed})[0] == \
        "device table 'levels.csv'"
    pinned = STUDY.replace('repeats = 1\n', f'repeats = 1\nfingerprint = {{ model = "{"0" * 64}", '
                                            f'data = "{"1" * 64}", device_tables = '
                                            f'{{ "levels.csv" = "{first["levels.csv"]}" }} }}\n')
    (tmp_path / "pinned.toml").write_text(pinned)
    assert load_study(tmp_path / "pinned.toml").fingerprint["device_tables"] == first


@pytest.mark.parametrize(("change", "message"), [
    ('device_table = "levels.csv"', r"study.toml: hardware.device_table: 'missing.csv': file "
                                    r"not found"),
    ('inference_times = ["1s", "1h"]', r"study.toml: study.inference_times: device 'table' "
                                       r"\('levels.csv'\) is measured from 1 s to 86400 s after "
                                       r"programming; got 0 s"),
])
def test_table_study_mistakes_are_reported_before_anything_runs(tmp_path, change, message):
    (tmp_path / "levels.csv").write_text(csv_text())
    replacement = {'device_table = "levels.csv"': 'device_table = "missing.csv"',
                   'inference_times = ["1s", "1h"]': 'inference_times = ["0s", "1h"]'}[change]
    (tmp_path / "study.toml").write_text(STUDY.replace(change, replacement))
    with pytest.raises(UserInputError, match=message):
        load_study(tmp_path / "study.toml")


def test_the_docs_example_table_is_the_wan2022_fits_and_its_study_is_valid():
    """docs/examples/neurram_levels.csv tabulates reram_wan2022's fits at g_max = 40 µS: the
    table device with rho = 0 reads a level exactly as reram_wan2022 reads that target."""
    study = load_study(EXAMPLES / "table_study.toml")
    assert [dict(p.device_params)["table_correlation"] for p in study.points] == [0.0, 1.0]
    hw = study.points[0]
    table = DEVICES["table"](hw)
    wan = DEVICES["reram_wan2022"](HardwareConfig(device="reram_wan2022", g_max=40.0))
    g = np.full(N, 20.0)
    for t in (1.0, 86400.0, 172800.0):
        ours = table.read(*table.program(g, np.random.default_rng(5)), t,
                          np.random.default_rng(6))
        theirs = wan.read(*wan.program(g, np.random.default_rng(5)), t,
                          np.random.default_rng(6))
        assert ours.std() == pytest.approx(theirs.std(), rel=0.03), t
        assert abs(ours.mean() - theirs.mean()) < 7 * theirs.std() / np.sqrt(N), t
    with pytest.raises(UserInputError, match="is measured from 1 s to 172800 s"):
        table.check_time(0.0)
