"""Study files: parsing, unit handling, sweep expansion, trial keys and seeds (no running)."""

from __future__ import annotations

import re
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mc_engine.errors import UserInputError
from mc_engine.hardware import HardwareConfig
from mc_engine.results import swept_columns
from mc_engine.study import (
    format_duration,
    load_study,
    parse_duration,
    parse_study,
    point_id,
    trial_seed,
)
from mc_engine.zoo import build

QUICKSTART = Path(__file__).parents[1] / "studies" / "quickstart.toml"


def study_doc(**tables) -> dict:
    """A minimal valid study document, with tables replaced or added."""
    doc = {"study": {"name": "t", "seed": 7, "repeats": 2, "inference_times": ["0s", "1h"]},
           "model": {"zoo": "digits_mlp"}, "data": {"dataset": "digits", "limit": 100}}
    doc.update(tables)
    return doc


@pytest.mark.parametrize(("text", "seconds"), [
    ("0s", 0.0), ("1h", 3600.0), ("1.5 h", 5400.0), ("30min", 1800.0), ("1d", 86400.0),
    ("1y", 31536000.0), ("2e3s", 2000.0), ("60", 60.0), (60, 60.0), (2.5, 2.5),
])
def test_durations_parse_to_seconds(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(("value", "fragment"), [
    ("1w", "unknown time unit 'w'"), ("-1h", ">= 0"), (-5, ">= 0"), (float("nan"), "finite"),
    ("inf", "finite"), ("one hour", "expected a duration"), (True, "expected a duration"),
])
def test_bad_durations_are_rejected_with_the_key(value, fragment):
    with pytest.raises(UserInputError, match=fragment) as info:
        parse_duration(value, source="s.toml", key="study.inference_times[0]")
    assert str(info.value).startswith("s.toml: study.inference_times[0]: ")


def test_format_duration_picks_the_largest_unit():
    assert [format_duration(t) for t in (0, 30, 3600, 86400, 365 * 86400)] == \
        ["0 s", "30 s", "1 h", "1 d", "1 y"]


def test_times_are_sorted_and_duplicates_rejected():
    doc = study_doc()
    doc["study"]["inference_times"] = ["1y", 0, "1h"]
    assert parse_study(doc).inference_times_s == (0.0, 3600.0, 31536000.0)
    doc["study"]["inference_times"] = ["1h", "60min"]
    with pytest.raises(UserInputError, match=r"study.inference_times\[1\]: duplicate"):
        parse_study(doc)


def test_grid_is_the_cartesian_product_in_file_order():
    study = parse_study(study_doc(sweep={"adc_bits": [6, 8], "w_noise": [0.0, 0.01, 0.02]}))
    assert [(p.adc_bits, p.w_noise) for p in study.points] == [
        (6, 0.0), (6, 0.01), (6, 0.02), (8, 0.0), (8, 0.01), (8, 0.02)]
    assert study.n_trials == 12
    points = pd.DataFrame([p.to_dict() for p in study.points])
    assert swept_columns(points) == ["adc_bits", "w_noise"]


def test_zip_ties_lists_and_multiplies_with_the_grid():
    sweep = {"adc_bits": [6, 8],
             "zip": [{"w_noise": [0.0, 0.02], "g_max": [25.0, 20.0]},
                     {"drift_scale": [1.0, 0.5, 0.0], "read_noise_scale": [1.0, 1.0, 2.0]}]}
    study = parse_study(study_doc(hardware={"out_noise": 0.04}, sweep=sweep))
    assert len(study.points) == 2 * 2 * 3
    combos = {(p.adc_bits, p.w_noise, p.g_max, p.drift_scale, p.read_noise_scale)
              for p in study.points}
    assert (6, 0.02, 20.0, 0.5, 1.0) in combos
    assert (8, 0.0, 25.0, 0.0, 2.0) in combos
    assert not any(p.w_noise == 0.02 and p.g_max == 25.0 for p in study.points)
    assert all(p.out_noise == 0.04 for p in study.points)


def test_zip_lists_of_different_length_are_rejected():
    sweep = {"zip": [{"w_noise": [0.0, 0.02], "g_max": [25.0]}]}
    with pytest.raises(UserInputError, match=r"sweep.zip\[0\].g_max: has 1 values"):
        parse_study(study_doc(sweep=sweep), source="z.toml")


def test_a_parameter_swept_twice_is_rejected():
    sweep = {"adc_bits": [6, 8], "zip": [{"adc_bits": [4, 5]}]}
    with pytest.raises(UserInputError, match=r"sweep.zip\[0\].adc_bits: swept twice"):
        parse_study(study_doc(sweep=sweep))


def test_duplicate_points_are_rejected():
    with pytest.raises(UserInputError, match="same hardware point"):
        parse_study(study_doc(sweep={"adc_bits": [8, 8.0]}))


def test_cross_checked_values_name_the_sweep_point():
    with pytest.raises(UserInputError, match=r"^s.toml: sweep.dac_bits: 1 bit leaves"):
        parse_study(study_doc(sweep={"dac_bits": [1, 7]}), source="s.toml")


def test_point_id_is_stable_and_independent_of_spelling_out_defaults():
    assert point_id({"adc_bits": 8}) == point_id({"adc_bits": 8, "dac_bits": 7})
    assert point_id({"adc_bits": 8}) == point_id(HardwareConfig(adc_bits=8))
    assert point_id({"adc_bits": 8}) != point_id({"adc_bits": 6})
    assert re.fullmatch(r"[0-9a-f]{12}", point_id({"adc_bits": 8}))


def test_point_ids_do_not_depend_on_sweep_order():
    a = parse_study(study_doc(sweep={"adc_bits": [6, 8], "w_noise": [0.0, 0.02]}))
    b = parse_study(study_doc(sweep={"w_noise": [0.02, 0.0], "adc_bits": [8, 6]}))
    assert set(a.point_ids) == set(b.point_ids)
    assert {t.point_id: t.hardware for t in a.trials()} == \
        {t.point_id: t.hardware for t in b.trials()}


def test_trial_seed_depends_on_study_seed_and_repeat_only():
    study = parse_study(study_doc(sweep={"adc_bits": [6, 8]}))
    seeds = {(t.point_id, t.repeat): t.seed for t in study.trials()}
    ids = study.point_ids
    assert seeds[(ids[0], 0)] == seeds[(ids[1], 0)]  # common random numbers across points
    assert seeds[(ids[0], 0)] != seeds[(ids[0], 1)]
    expected = int(np.random.SeedSequence([7, 1]).generate_state(1, np.uint64)[0] >> 1)
    assert trial_seed(7, 1) == expected == seeds[(ids[0], 1)]
    assert 0 <= expected < 2**63
    assert trial_seed(8, 1) != expected


def test_trials_are_repeat_major():
    study = parse_study(study_doc(sweep={"adc_bits": [6, 8, 10]}))
    assert [t.repeat for t in study.trials()] == [0, 0, 0, 1, 1, 1]


def test_resolved_toml_round_trips():
    sweep = {"adc_bits": [6, 8], "zip": [{"w_noise": [0.0, 0.02], "out_bound": [12.0,
                                                                              float("inf")]}]}
    study = parse_study(study_doc(hardware={"device": "pcm"}, sweep=sweep))
    again = parse_study(tomllib.loads(study.to_toml()))
    assert again.point_ids == study.point_ids
    assert again.identity() == study.identity()
    assert again.repeats == study.repeats


@pytest.mark.parametrize(("change", "message"), [
    ({"study": {"name": "t", "seed": 1, "repeats": 1, "inference_times": ["0s"], "rep": 3}},
     "study.rep: unknown key"),
    ({"study": {"name": "t/../x", "seed": 1, "repeats": 1, "inference_times": ["0s"]}},
     "study.name: expected a name"),
    ({"study": {"name": "t", "seed": -1, "repeats": 1, "inference_times": ["0s"]}},
     "study.seed: expected an integer >= 0, got -1"),
    ({"study": {"name": "t", "seed": 1, "repeats": 0, "inference_times": ["0s"]}},
     "study.repeats: expected an integer >= 1 and <= 1_000_000, got 0"),
    ({"study": {"name": "t", "seed": 1, "repeats": "4", "inference_times": ["0s"]}},
     "study.repeats: expected an integer >= 1 and <= 1_000_000, got '4'"),
    ({"study": {"name": "t", "seed": 1, "repeats": 1_000_001, "inference_times": ["0s"]}},
     "study.repeats: expected an integer >= 1 and <= 1_000_000, got 1000001"),
    ({"study": {"name": "t", "seed": 1, "repeats": 1, "inference_times": ["0s", 10**400]}},
     r"study.inference_times\[1\]: a duration must be finite \(below 1e308 s\), got an integer "
     "of about 401 digits"),
    ({"study": {"name": "t", "seed": 1, "repeats": 1, "inference_times": ["0s"],
                "fingerprint": {"model": "abc"}}}, "study.fingerprint: expected"),
    ({"study": {"name": "t", "seed": 1, "repeats": 1, "inference_times": []}},
     "study.inference_times: expected a non-empty list"),
    ({"study": {"name": "t", "seed": 1, "repeats": 1}}, "study.inference_times: missing"),
    ({"hardware": {"adc_bits": "a"}}, "hardware.adc_bits: expected an integer, got 'a'"),
    ({"hardware": {"adc_bit": 8}}, "hardware.adc_bit: unknown hardware parameter"),
    ({"hardware": {"device": "rram"}}, "hardware.device: expected one of"),
    ({"sweep": {"adc_bits": ["a"]}}, "sweep.adc_bits: expected an integer, got 'a'"),
    ({"sweep": {"w_noise": [-0.1]}}, "sweep.w_noise: must be >= 0.0"),
    ({"sweep": {"adc_bits": 8}}, "sweep.adc_bits: expected a list of values"),
    ({"sweep": {"adc_bits": []}}, "sweep.adc_bits: empty list"),
    ({"sweep": {"zip": [{}]}}, r"sweep.zip\[0\]: empty"),
    ({"hardwre": {"adc_bits": 8}}, "hardwre: unknown table"),
])
def test_invalid_studies_name_file_and_key(change, message):
    with pytest.raises(UserInputError, match=f"^bad.toml: {message}"):
        parse_study(study_doc(**change), source="bad.toml")


def test_missing_tables_are_named():
    doc = study_doc()
    del doc["model"]
    with pytest.raises(UserInputError, match="^bad.toml: model: missing the"):
        parse_study(doc, source="bad.toml")


def test_unreadable_study_files_are_user_errors(tmp_path):
    with pytest.raises(UserInputError, match="study file not found"):
        load_study(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[study\nname = 1\n")
    with pytest.raises(UserInputError, match=r"bad.toml: not valid TOML"):
        load_study(bad)


def test_quickstart_study_is_valid_and_small():
    study = load_study(QUICKSTART)
    assert study.model == {"zoo": "digits_cnn"}
    assert len(study.points) == 4
    assert study.n_trials == 32
    assert study.inference_times_s[0] == 0.0
    assert study.base_dir == QUICKSTART.parent


def test_huge_integer_durations_are_user_errors_not_overflows():
    for value in (10**400, -(10**400)):
        with pytest.raises(UserInputError, match="must be finite"):
            parse_duration(value, source="s.toml", key="study.inference_times[0]")


def test_sweeps_too_big_to_run_are_rejected_before_expansion():
    ten = [i / 100 for i in range(10)]
    sweep = {k: ten for k in ("w_noise", "out_noise", "inp_noise", "drift_scale",
                              "read_noise_scale", "prog_noise_scale", "sigma_prog")}
    with pytest.raises(UserInputError, match=r"^s.toml: sweep: 10_000_000 hardware points x 2 "
                                             r"repeats = 20_000_000 trials; at most 1_000_000"):
        parse_study(study_doc(sweep=sweep), source="s.toml")
    doc = study_doc(sweep={"adc_bits": [6, 8]})
    doc["study"]["repeats"] = 600_000
    with pytest.raises(UserInputError, match=r"^s.toml: study.repeats: 2 hardware points x "
                                             r"600_000 repeats = 1_200_000 trials"):
        parse_study(doc, source="s.toml")


def pinned_study(folder: Path) -> dict:
    """A study on an npz test set and a digits_mlp checkpoint (no training), both in folder."""
    torch.save(build("digits_mlp").state_dict(), folder / "w.pt")
    rng = np.random.default_rng(0)
    np.savez(folder / "data.npz", x_test=rng.random((8, 64), dtype=np.float32),
             y_test=np.arange(8))
    return study_doc(model={"zoo": "digits_mlp", "checkpoint": "w.pt"},
                     data={"dataset": "npz", "path": "data.npz"})


def test_resolved_toml_pins_the_fingerprint_of_model_and_data(tmp_path):
    study = parse_study(pinned_study(tmp_path), source="s.toml", base_dir=tmp_path)
    prints = study.load(tmp_path / "cache").fingerprint
    assert set(prints) == {"model", "data"}
    assert all(re.fullmatch(r"[0-9a-f]{64}", v) for v in prints.values())
    resolved = tomllib.loads(replace(study, fingerprint=prints).to_toml())
    assert resolved["study"]["fingerprint"] == prints
    pinned = parse_study(resolved, source="s.toml", base_dir=tmp_path)
    assert pinned.load(tmp_path / "cache").fingerprint == prints
    with np.load(tmp_path / "data.npz") as npz:
        x, y = npz["x_test"], npz["y_test"]
    np.savez(tmp_path / "data.npz", x_test=x, y_test=y[::-1])
    with pytest.raises(UserInputError, match=r"^s.toml: study.fingerprint.data: the data "
                                             r"\(sha256 [0-9a-f]{12}...\) differs"):
        pinned.load(tmp_path / "cache")
    assert study.load(tmp_path / "cache").fingerprint["model"] == prints["model"]


def test_fields_added_later_leave_older_point_ids_unchanged():
    # Ids that results folders written before adc_range, calibration_samples, the converters and
    # device tables existed hold (measured on that release): those folders must resume, not run
    # every point again beside their old rows. A non-default value of a later field is its own
    # point.
    assert point_id({}) == "d7735d6c8bec"
    assert point_id({"adc_bits": 8, "weight_bits": 8, "cell_bits": 2}) == "56179e7e4dba"
    assert point_id({"adc_range": "calibrated", "bound_management": "none"}) != \
        point_id({"bound_management": "none"})
