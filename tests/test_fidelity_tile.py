"""Tile forward against aihwkit 1.2.0 (tests/data/aihwkit): exact outputs and noise statistics.

Everything goes through the public API: HardwareConfig + convert() of an nn.Linear, on both
executions of the pass (Numba on the CPU, torch on the CPU: the GPU's code).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mc_engine
from mc_engine.analog.execution import Execution
from tests.conftest import linear_with, std_standard_error

QUIET = dict(device="ideal", out_noise=0.0, drift_compensation="none")
EXACT_CONFIGS = {
    "default": {},
    "bm_none": dict(bound_management="none"),
    "dac4_adc6": dict(dac_bits=4, adc_bits=6),
    "nm_none": dict(noise_management="none"),
    "out_bound_3": dict(out_bound=3.0),
    "split_40": dict(max_input_size=40),
    "omega_1": dict(weight_scaling_omega=1.0),
    "no_quant": dict(dac_bits=0, adc_bits=0, out_bound=1e6),
}
NOISE_CONFIGS = {
    "out_noise_0.06": dict(out_noise=0.06),
    "w_noise_add_0.02": dict(w_noise=0.02),
    "w_noise_pcm_read_0.03": dict(w_noise=0.03, w_noise_type="pcm_read"),
    "inp_noise_0.05": dict(inp_noise=0.05),
    "all_adc6": dict(out_noise=0.06, w_noise=0.02, inp_noise=0.02, adc_bits=6),
}


EXECUTIONS = {"numba": Execution(), "torch": Execution("torch", "cpu")}


def analog_output(w: np.ndarray, x: np.ndarray, execution: str = "numba", **hardware
                  ) -> np.ndarray:
    am = mc_engine.convert(linear_with(w), mc_engine.HardwareConfig(**{**QUIET, **hardware}))
    return am.use(EXECUTIONS[execution])(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("execution", sorted(EXECUTIONS))
@pytest.mark.parametrize("config", sorted(EXACT_CONFIGS))
def test_tile_output_equals_aihwkit_exactly(tile_exact, config, execution):
    # The kernel follows aihwkit's float32 order, so rows kept by bound management at r = 2
    # (inputs exactly on a DAC rounding edge) match too: no DAC-step allowance is needed.
    y = analog_output(tile_exact["W"], tile_exact["X"], execution, **EXACT_CONFIGS[config])
    ref = tile_exact[f"Y_{config}"]
    # 1e-5 relative; the absolute floor is float32 accumulation error of a 100-term dot product
    # (outputs that cancel to ~1e-3 differ by summation order only).
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())


def _bound_managed_pass(w: np.ndarray, x: np.ndarray, r: float) -> tuple[np.ndarray, bool]:
    """The tile forward of docs/physics.md (steps 1-6) by hand for one input vector at the
    default 7-bit DAC, 9-bit ADC over ±12: the output of the pass with inputs scaled down by r,
    and whether it saturates."""
    alpha = np.abs(x).max()
    step_in, step_out = 1 / 63, 2 * 12 / 510
    x_q = np.clip(np.rint(x / alpha / r / step_in) * step_in, -1, 1)
    y = np.rint((w.astype(np.float64) @ x_q) / step_out) * step_out
    return np.clip(y, -12, 12) * r * alpha, bool(np.any(np.abs(y) > 12))


def test_bound_management_factor_matches_aihwkit(tile_exact):
    # Row 4 saturates at r = 1 and 2: aihwkit recorded r = 4 for it, and so does the pass by
    # hand; mc-engine's output is that pass (inputs ±0.25 land on 16/63), not r = 2 or 8.
    w, x = tile_exact["W"], tile_exact["X"][4]
    assert tile_exact["bm_r_default"][4, 0] == 4
    passes = {r: _bound_managed_pass(w, x, r) for r in (1, 2, 4, 8)}
    assert passes[1][1] and passes[2][1] and not passes[4][1]
    y = analog_output(w, x[None].copy())[0]
    np.testing.assert_allclose(y, passes[4][0], rtol=1e-5, atol=1e-5)
    assert not np.allclose(passes[4][0], passes[8][0], atol=1e-3)  # r tells the passes apart
    np.testing.assert_allclose(y, tile_exact["Y_default"][4], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("execution", sorted(EXECUTIONS))
@pytest.mark.parametrize("config", sorted(NOISE_CONFIGS))
def test_tile_noise_statistics_match_aihwkit(tile_noise, config, execution):
    repeats = int(tile_noise["repeats"])
    x = tile_noise["X"]
    n = 4000
    y = analog_output(tile_noise["W"], np.tile(x, (n, 1)), execution, **NOISE_CONFIGS[config])
    y = y.reshape(n, *x.shape[:1], -1).astype(np.float64)
    mean, std = y.mean(0), y.std(0, ddof=1)
    ref_mean, ref_std = tile_noise[f"mean_{config}"], tile_noise[f"std_{config}"]
    # Two independent samples: the difference of means has variance s1^2/n1 + s2^2/n2; the std
    # error uses the kurtosis of our (quantised, non-normal) samples for both sides. Per cell we
    # allow 5 standard errors (384 cells: a false alarm has probability ~1e-4). A small systematic
    # error (a noise sigma 3 % off, ~1.9 standard errors in every cell) hides inside that, so the
    # mean z over all cells is bounded too; cells of one input row share input noise, so the 16
    # rows, not the 384 cells, count as independent units: |mean z| <= 5/sqrt(16).
    se_mean = np.sqrt(ref_std**2 / repeats + std**2 / n) + 1e-7
    assert np.all(np.abs(mean - ref_mean) <= 5 * se_mean)
    se_std = std_standard_error(y) * np.sqrt(1 + n / repeats) + 1e-7
    z_std = (std - ref_std) / se_std
    assert np.all(np.abs(z_std) <= 5)
    assert abs(z_std.mean()) <= 5 / np.sqrt(x.shape[0])


def test_zero_input_is_silent_without_input_noise():
    w = np.random.default_rng(0).standard_normal((4, 10)).astype(np.float32)
    y = analog_output(w, np.zeros((1000, 10), np.float32), out_noise=0.5, w_noise=0.1)
    assert np.all(y == 0.0)
