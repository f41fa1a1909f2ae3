"""The torch execution of the analog pass against the Numba execution (issue: GPUs).

Both executions run the same description: the same row sets, noise keys and counters, float32
operations in the same order and the same counter-based normals (tests/test_torch_rng.py). On
the CPU they share torch's GEMM, so for every mapping, read-out and layer kind (dense, im2col,
grouped convolution, split tiles) the outputs must be equal bit for bit, noise on; a single
differing element is a divergence in the description, not rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mc_engine.analog import convert
from mc_engine.analog.evaluate import evaluate_trial
from mc_engine.analog.execution import Execution
from mc_engine.errors import UserInputError
from mc_engine.hardware import HardwareConfig
from mc_engine.hardware.presets import presets

TORCH_CPU = Execution("torch", "cpu")

CASES = {
    "default": {},
    "noise_off": dict(inp_noise=0.0, out_noise=0.0, w_noise=0.0, device="ideal"),
    "pcm_read_noise": dict(w_noise=0.02, w_noise_type="pcm_read", inp_noise=0.01),
    "split_tiles": dict(max_input_size=20, max_output_size=6, inp_noise=0.02),
    "constant_nm": dict(noise_management="constant", nm_constant=2.0),
    "no_nm_no_bm": dict(noise_management="none", bound_management="none"),
    "omega_columnwise": dict(weight_scaling_omega=1.0, weight_scaling_columnwise=True),
    "bit_slices": dict(weight_bits=8, cell_bits=2),
    "dummy_column": dict(weight_bits=8, offset="dummy_column"),
    "digital_offset": dict(weight_bits=8, offset="digital"),
    "offset_slices": dict(weight_bits=8, cell_bits=2, offset="digital", inp_noise=0.01),
    "bit_serial": dict(weight_bits=6, input_bits_per_cycle=2, bound_management="none"),
    "row_by_row": dict(readout="row_by_row", rows_per_adc=16),
    "calibrated_adc": dict(weight_bits=8, adc_range="calibrated", bound_management="none"),
    "analog_recombination": dict(weight_bits=8, cell_bits=4, slice_recombination="analog",
                                 w_noise=0.01),
    "faults_variation": dict(stuck_on_fraction=0.01, stuck_off_fraction=0.01, d2d_sigma=0.05),
    "independent_pairs": dict(pair_drift="independent", drift_compensation="per_column"),
    "on_off_ratio": dict(weight_bits=8, on_off_ratio=10.0, inp_noise=0.02),
    "state_independent": dict(device="state_independent", drift_compensation="exact"),
    "dual_pair": dict(g_converter="dual_pair"),
    "ir_drop": dict(ir_drop=1.0),
    "ir_drop_slices": dict(ir_drop=1.0, weight_bits=8, cell_bits=4),
    "tight_bound": dict(out_bound=2.0, adc_bits=6),
    "calibrated_ranges": dict(noise_management="calibrated", inp_noise=0.02),
    "calibrated_ranges_split": dict(noise_management="calibrated", input_range_std=1.5,
                                    max_input_size=20, max_output_size=6, w_noise=0.02,
                                    bound_management="none"),
    "preset_hwa": dict(presets()["aihwkit_standard_hwa"]),
    "preset_hwa_calibrated": {**presets()["aihwkit_standard_hwa"],
                              "noise_management": "calibrated"},
    "calibrated_ranges_adc": dict(noise_management="calibrated", weight_bits=8,
                                  adc_range="calibrated", bound_management="none"),
}


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=4), nn.ReLU(),       # grouped: batched pass
        nn.Flatten(), nn.Linear(8 * 8 * 8, 40), nn.ReLU(), nn.Linear(40, 10)).eval()


def _inputs(n: int = 24) -> torch.Tensor:
    x = torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    x[3] = 0.0                                    # a silent image: silent and riding rows
    return x


def assert_executions_equal(model, hw: HardwareConfig, x: torch.Tensor,
                            calibration: np.ndarray) -> list[np.ndarray]:
    """``model`` on ``hw`` read at 0 s and 1 h by the Numba and the torch execution: the outputs
    must be finite and bitwise equal; returns the Numba outputs of the two reads."""
    outs = []
    for execution in (Execution(), TORCH_CPU):
        analog = convert(model, hw).use(execution)
        analog.program(7, calibration=calibration)
        for t in (0.0, 3600.0):                   # two reads: the noise keys advance alike
            analog.drift(t)
            outs.append(analog(x).numpy())
    for numba_out, torch_out in zip(outs[:2], outs[2:]):
        assert np.isfinite(numba_out).all()
        assert np.array_equal(numba_out, torch_out), \
            f"{np.count_nonzero(numba_out != torch_out)} of {numba_out.size} outputs differ"
    return outs[:2]


@pytest.mark.parametrize("name", sorted(CASES))
def test_torch_equals_numba_bitwise(name):
    model, x = _model(), _inputs()
    assert_executions_equal(model, HardwareConfig(**CASES[name]), x, x.numpy())


def test_noise_is_on_and_keyed_by_chip():
    """The equality above is not that of two noiseless passes: two chips differ, and so do two
    calls of one chip (fresh MVM noise), in the torch execution as in the Numba one."""
    model, x = _model(), _inputs()
    analog = convert(model, HardwareConfig()).use(TORCH_CPU)
    a = analog.program(1).drift(60.0)(x)
    b = analog(x)
    c = analog.program(2).drift(60.0)(x)
    assert not torch.equal(a, b) and not torch.equal(a, c)


def test_trial_rows_equal_across_executions():
    model, x = _model(), _inputs(40)
    y = np.arange(40) % 10
    rows = [evaluate_trial(model, HardwareConfig(), x.numpy(), y, [1.0, 86400.0], 3,
                           execution=ex) for ex in (Execution(), TORCH_CPU)]
    assert [r["n_correct"] for r in rows[0]] == [r["n_correct"] for r in rows[1]]


def test_execution_option_rejects_nonsense():
    with pytest.raises(UserInputError, match="--backend"):
        Execution("numba", "cuda")
    with pytest.raises(UserInputError, match="--device"):
        Execution("torch", "gpu0")
    with pytest.raises(UserInputError, match="--backend"):
        Execution("jax", "cpu")
    assert Execution.parse(None, "cuda:1") == Execution("torch", "cuda:1")
    assert Execution.parse(None, None) == Execution()
    if not torch.cuda.is_available():
        with pytest.raises(UserInputError, match="no CUDA device"):
            convert(_model(), HardwareConfig()).use(Execution("torch", "cuda"))
