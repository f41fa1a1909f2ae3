"""Hardware presets (mc_engine/hardware/presets.toml): a named base point, resolved before
anything else; keys beside it override it, sweeps override both, and the rows and point ids
are those of the resolved point (README, "Comparing with aihwkit")."""

from __future__ import annotations

import pytest
import torch

from mc_engine import HardwareConfig, UserInputError
from mc_engine.cli import main
from mc_engine.hardware import from_dict
from mc_engine.hardware.presets import presets
from mc_engine.results import load_results
from mc_engine.run import run_study
from mc_engine.study import load_study, parse_study
from mc_engine.study.keys import point_id
from mc_engine.zoo import build

HWA = "aihwkit_standard_hwa"


def test_the_standard_hwa_preset_is_aihwkits_inference_setting():
    """aihwkit 1.2.0's StandardHWATrainingPreset: inp_res = out_res = 1/254 (8 bits), no bound
    management, constant noise management at the preset's input range 3.0, pcm_read weight
    noise 0.0175, ir_drop 1.0, out_noise 0.04, out_bound 10, channelwise remapping to 1,
    512-row tiles with the outputs unsplit, PCM and global drift compensation."""
    hw = from_dict({"preset": HWA})
    assert hw.inp_res == hw.out_res == 1 / 254
    assert (hw.bound_management, hw.noise_management, hw.nm_constant) == ("none", "constant", 3.0)
    assert (hw.w_noise, hw.w_noise_type, hw.ir_drop) == (0.0175, "pcm_read", 1.0)
    assert (hw.out_noise, hw.out_bound) == (0.04, 10.0)
    assert (hw.weight_scaling_omega, hw.weight_scaling_columnwise) == (1.0, True)
    assert (hw.max_input_size, hw.max_output_size) == (512, 2**31 - 1)
    assert (hw.device, hw.drift_compensation) == ("pcm", "global")
    assert hw == HardwareConfig(**presets()[HWA])


def test_keys_beside_the_preset_override_it_and_the_rest_stays_default():
    hw = from_dict({"preset": HWA, "ir_drop": 0.5, "noise_management": "learned"})
    assert (hw.ir_drop, hw.noise_management, hw.dac_bits) == (0.5, "learned", 8)
    assert hw.g_max == HardwareConfig().g_max and hw.inp_noise == 0.0


def _study(hardware, sweep=None):
    return parse_study({"study": {"name": "p", "seed": 1, "repeats": 1, "inference_times": [0]},
                        "model": {"zoo": "digits_mlp"}, "data": {}, "hardware": hardware,
                        "sweep": sweep or {}})


def test_resolution_order_preset_then_hardware_keys_then_sweep_and_ids_of_the_point():
    study = _study({"preset": HWA, "out_noise": 0.06}, {"ir_drop": [0.0, 2.0]})
    assert study.preset == HWA and "preset" not in study.hardware
    assert [p.ir_drop for p in study.points] == [0.0, 2.0]
    assert all(p.out_noise == 0.06 and p.adc_bits == 8 for p in study.points)
    explicit = _study({**presets()[HWA], "out_noise": 0.06}, {"ir_drop": [0.0, 2.0]})
    assert study.point_ids == explicit.point_ids == [point_id(p) for p in explicit.points]
    assert "preset" not in study.to_toml()       # the resolved study re-runs as the same points


def test_an_unknown_preset_is_one_line_listing_the_presets():
    with pytest.raises(UserInputError) as err:
        _study({"preset": "aihwkit_standard"})
    assert err.value.key == "hardware.preset"
    assert str(err.value).endswith(f"unknown preset 'aihwkit_standard'; presets: {HWA}")
    assert "\n" not in str(err.value)
    with pytest.raises(UserInputError, match="unknown preset") as err:
        from_dict({"preset": 3})
    assert err.value.key == "preset"
    with pytest.raises(UserInputError, match="a preset is a base point") as err:
        _study({}, {"preset": [HWA]})
    assert err.value.key == "sweep.preset"


STUDY = """
[study]
name = "hwa"
seed = 2
repeats = 2
inference_times = ["0s", "1d"]

[model]
zoo = "digits_mlp"
checkpoint = "m.pt"

[data]
dataset = "digits"
limit = 60

[hardware]
preset = "aihwkit_standard_hwa"
out_noise = 0.05
"""


def test_a_study_runs_from_the_preset_and_validate_prints_the_resolved_point(tmp_path, capsys):
    torch.save(build("digits_mlp", seed=1).state_dict(), tmp_path / "m.pt")
    path = tmp_path / "hwa.toml"
    path.write_text(STUDY)
    assert main(["validate", str(path), "--out", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out
    assert f"[hardware] preset '{HWA}' resolves to: " in out
    assert "out_noise = 0.05" in out and "ir_drop = 1.0" in out and "dac_bits = 8" in out
    run_study(load_study(path), tmp_path / "results", workers=1, progress=False)
    df = load_results(tmp_path / "results" / "hwa")
    assert len(df) == 4 and "preset" not in df.columns
    row = df.iloc[0]
    assert (row.dac_bits, row.adc_bits, row.ir_drop, row.out_noise, row.w_noise_type) == \
        (8, 8, 1.0, 0.05, "pcm_read")
    assert df.accuracy.between(0, 1).all()
