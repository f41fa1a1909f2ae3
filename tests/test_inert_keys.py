"""A hardware key that cannot act in its combination is rejected by name (docs/physics.md,
"Which parameters may be combined"): at study level when it acts at none of the study's points,
with one warning when a sweep makes it act at some of them only."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from mc_engine import HardwareConfig, UserInputError
from mc_engine.hardware.combinations import inert_keys
from mc_engine.study import parse_study
from tests.test_mapping import analog_out

BASE = {"study": {"name": "s", "seed": 1, "repeats": 2, "inference_times": [0]},
        "model": {"zoo": "digits_mlp"}, "data": {}}


def study(hardware=None, sweep=None):
    return parse_study({**BASE, "hardware": dict(hardware or {}), "sweep": dict(sweep or {})})


@pytest.mark.parametrize("hardware, key", [
    ({"out_bound": float("inf"), "adc_bits": 6}, "adc_bits"),
    ({"nm_constant": 2.0}, "nm_constant"),
    ({"weight_scaling_columnwise": True}, "weight_scaling_columnwise"),
    ({"sigma_prog": 0.05}, "sigma_prog"),
    ({"device": "pcm", "sigma_read": 0.05}, "sigma_read"),
    ({"offset": "digital", "pair_drift": "independent"}, "pair_drift"),
    ({"weight_bits": 8, "slice_recombination": "analog"}, "slice_recombination"),
    ({"calibration_samples": 64}, "calibration_samples"),
    ({"input_range_std": 2.0}, "input_range_std"),
    ({"noise_management": "learned", "input_range_std": 2.0}, "input_range_std"),
    ({"device": "ideal", "prog_noise_scale": 2.0}, "prog_noise_scale"),
    ({"device": "state_independent", "drift_scale": 2.0}, "drift_scale"),
])
def test_a_key_that_acts_at_no_point_is_rejected_by_name(hardware, key):
    with pytest.raises(UserInputError) as err:
        study(hardware)
    assert err.value.key == f"hardware.{key}"
    assert "has no effect at any point" in str(err.value)


def test_the_same_keys_act_in_the_right_combination():
    for hardware in ({"out_bound": 20.0, "adc_bits": 6}, {"noise_management": "constant",
                                                         "nm_constant": 2.0},
                     {"weight_scaling_omega": 1.0, "weight_scaling_columnwise": True},
                     {"device": "state_independent", "sigma_prog": 0.05},
                     {"weight_bits": 8, "cell_bits": 2, "slice_recombination": "analog"},
                     {"adc_range": "calibrated", "bound_management": "none",
                      "calibration_samples": 64},
                     {"noise_management": "calibrated", "input_range_std": 2.0,
                      "calibration_samples": 64}):
        assert not inert_keys(HardwareConfig(**hardware))
        study(hardware)


def test_a_sweep_that_makes_a_key_inert_at_some_points_warns_once():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = study({"nm_constant": 2.0}, {"noise_management": ["abs_max", "constant"]})
    assert len(s.points) == 2
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "hardware.nm_constant: has no effect at 1 of 2" in messages[0]
    with pytest.raises(UserInputError) as err:           # swept, inert everywhere: rejected
        study({"out_bound": float("inf")}, {"adc_bits": [6, 8]})
    assert err.value.key == "sweep.adc_bits"


def test_an_adc_without_a_range_really_does_nothing():
    # Why adc_bits with out_bound = inf is rejected: a 2-bit and a 10-bit ADC give the same rows.
    rng = np.random.default_rng(0)
    w, x = rng.uniform(-1, 1, (4, 12)), rng.uniform(-1, 1, (8, 12))
    hw = dict(device="ideal", out_noise=0.0, drift_compensation="none", out_bound=float("inf"))
    np.testing.assert_array_equal(analog_out(w, x, **hw, adc_bits=2),
                                  analog_out(w, x, **hw, adc_bits=10))


def test_bit_serial_cycles_wider_than_the_dac_are_rejected():
    with pytest.raises(UserInputError) as err:
        HardwareConfig(dac_bits=5, input_bits_per_cycle=6, bound_management="none")
    assert err.value.key == "input_bits_per_cycle" and "4 magnitude bits" in str(err.value)
    HardwareConfig(dac_bits=5, input_bits_per_cycle=4, bound_management="none")
