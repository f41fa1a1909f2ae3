"""`[noise] preset` of a train file: the training side of a hardware preset, as data
(mc_engine/train/presets.toml), resolved before the [noise] keys are checked."""

from __future__ import annotations

import pytest

from mc_engine.errors import UserInputError
from mc_engine.hardware.presets import presets
from mc_engine.train import load_train
from mc_engine.train.spec import noise_presets
from tests.test_train import write_train


def test_the_aihwkit_preset_trains_with_the_inference_presets_forward_noise(tmp_path):
    spec = load_train(write_train(tmp_path, noise='preset = "aihwkit_standard_hwa"'))
    hw, inference = spec.noise.hardware, presets()["aihwkit_standard_hwa"]
    for key in ("dac_bits", "adc_bits", "bound_management", "out_noise", "out_bound", "w_noise",
                "w_noise_type", "weight_scaling_omega", "weight_scaling_columnwise",
                "max_input_size", "max_output_size"):
        assert getattr(hw, key) == inference[key], key
    assert hw.noise_management == "learned" and hw.ir_drop == 0.0
    learn = spec.noise.ranges
    assert (learn.init_from_data, learn.init_std_alpha, learn.decay,
            learn.input_min_percentage) == (100, 3.0, 0.001, 0.95)


def test_keys_beside_the_preset_override_it(tmp_path):
    spec = load_train(write_train(tmp_path, noise='preset = "aihwkit_standard_hwa"\n'
                                                  'out_noise = 0.1\nweight_noise = 0.02\n'
                                                  'decay = 0.01'))
    assert spec.noise.hardware.out_noise == 0.1 and spec.noise.weight_noise == (0.02,)
    assert spec.noise.ranges.decay == 0.01 and spec.noise.hardware.adc_bits == 8
    static = load_train(write_train(tmp_path, noise='preset = "aihwkit_standard_hwa"\n'
                                                    'noise_management = "constant"\n'
                                                    'nm_constant = 3.0'))
    assert static.noise.ranges is None and static.noise.hardware.noise_management == "constant"


def test_an_unknown_preset_is_one_line_listing_the_presets(tmp_path):
    with pytest.raises(UserInputError, match="presets: aihwkit_standard_hwa") as err:
        load_train(write_train(tmp_path, noise='preset = "aihwkit"'))
    assert err.value.key == "noise.preset"
    assert set(noise_presets()) <= set(presets())     # every training preset has its inference
