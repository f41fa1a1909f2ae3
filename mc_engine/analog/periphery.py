"""The float32 constants and the weight-noise sigma of a tile's DAC/ADC path (docs/physics.md,
"Forward pass of one analog tile"), derived once per hardware configuration and shared by the
engine's tiles (:mod:`mc_engine.analog.tile`) and the training forward (:mod:`mc_engine.train`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mc_engine.analog.rows import InputRows
from mc_engine.analog.torch_periphery import ir_drop_term, static_alpha, weight_noise_sigma
from mc_engine.hardware.config import HardwareConfig

_EMPTY1 = np.zeros(0, np.float32)
_EMPTY2 = np.zeros((0, 0), np.float32)


class Periphery:
    """The float32 constants of the DAC/ADC path of docs/physics.md, derived once per config."""

    def __init__(self, hw: HardwareConfig):
        self.hw = hw
        self.step_in = np.float32(np.float32(hw.inp_res) * np.float32(2.0))
        self.step_out = np.float32(np.float32(hw.out_res) * np.float32(2.0) *
                                   np.float32(hw.out_bound)) if math.isfinite(hw.out_bound) \
            else np.float32(0.0)
        self.bound = np.float32(hw.out_bound)
        self.inp_noise = np.float32(hw.inp_noise)
        self.out_noise = np.float32(hw.out_noise)
        self.w_noise = np.float32(hw.w_noise)
        dac_step = 2.0 * hw.inp_res
        self.r_last = min(0.25 / dac_step if dac_step > 0 else math.inf, 1000.0)

    def alpha(self, source: InputRows, c0: int, c1: int, r: float | None = None) -> np.ndarray:
        """Noise-management scale of every input row (0 marks a row whose output is 0); ``r``:
        the tile's static input range (noise_management 'calibrated' or 'learned')."""
        if self.hw.noise_management == "abs_max":
            return source.abs_max(c0, c1)
        return np.full(source.n_rows, static_alpha(self.hw, r), np.float32)

    @staticmethod
    def wake_zero_rows(alpha: np.ndarray, inp_noise: float) -> np.ndarray:
        """An all-zero input vector (alpha 0) is silent, its output exactly 0, unless input
        noise drives the lines; then it is converted like any other vector, with alpha = 1
        (as aihwkit does)."""
        return np.where(alpha > 0, alpha, np.float32(1.0)) if inp_noise > 0 else alpha

    def weight_noise(self, x3: torch.Tensor, abs_w: torch.Tensor | None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Sigma of the short-term weight noise of every output, for DAC outputs x3 (rows ×
        groups × inputs): per row, w_noise·‖x~‖₂ ('additive_constant', abs_w None), or per
        output, w_noise·sqrt(Σ_j |W_ij| x~_j²) ('pcm_read', abs_w: groups × inputs × outputs).
        Returned as (per row, per output), the unused one empty, rows × groups flattened; the
        formula is the torch execution's
        (:func:`mc_engine.analog.torch_periphery.weight_noise_sigma`)."""
        sigma = weight_noise_sigma(self, x3, abs_w).numpy()
        return (sigma, _EMPTY2) if abs_w is None else (_EMPTY1, sigma)

    def ir_drop(self, y: np.ndarray, x: torch.Tensor, w_t: torch.Tensor, abs_w_t: torch.Tensor,
                f: torch.Tensor, n_rows: int) -> None:
        """Subtract aihwkit's IR drop (:func:`mc_engine.analog.torch_periphery.ir_drop_term`) from
        the MVM ``y`` (rows × columns, in place) of inputs ``x`` (rows × in) on the array
        ``w_t`` (in × columns); ``f``: the row weighting of the rows of ``x``."""
        y -= ir_drop_term(self.hw, x, w_t, abs_w_t, f, n_rows).numpy()

