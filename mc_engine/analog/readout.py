"""Read-out schemes of a tile (docs/physics.md): bit-serial inputs, row-by-row conversion, bit
slices, dummy column and digital offset, with their digital recombination.

The default tile forward (all rows and all input bits at once, one weight-unit column per output)
is fused in :meth:`mc_engine.analog.tile.Tile.forward`; everything else goes through
:func:`convert` here. One call converts a block of DAC outputs: for each input cycle and each
group of rows it runs the MVM over every column of the array matrix (all slices and the dummy
column in one GEMM), adds the noise, digitises each column with the ADC and recombines the
digital numbers: shift-and-add over slices, dummy or offset subtraction, sum over row groups,
shift-and-add over cycles, and the rescale to weight units.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mc_engine.analog.adc_range import CalibratedADC
from mc_engine.analog.mapping import Layout
from mc_engine.analog.noise import KIND_INP, KIND_OUT, KIND_W, MVMNoise, stream
from mc_engine.analog.periphery import _EMPTY1, _EMPTY2
from mc_engine.analog.torch_readout import recombine
from mc_engine.hardware.config import HardwareConfig
from mc_engine.kernels.periphery import adc_rows, add_normal_rows, bit_serial_cycles


class Readout:
    """The read-out constants of one configuration: input cycles and row groups."""

    def __init__(self, hw: HardwareConfig):
        self.k = hw.input_bits_per_cycle
        self.m = hw.dac_bits - 1                       # magnitude bits of the DAC output
        self.cycles = math.ceil(self.m / self.k) if self.k else 1
        self.rows_per_adc = hw.rows_per_adc if hw.readout == "row_by_row" else 0
        # Y = acc·(2^k − 1)·2^(kK − m)·2^m/(2^m − 1) after acc ← (acc + y_j)/2^k per cycle
        self.serial_gain = ((2 ** self.k - 1) * 2.0 ** (self.k * self.cycles - self.m) *
                            2.0 ** self.m / (2 ** self.m - 1)) if self.k else 1.0

    def row_groups(self, n_in: int) -> list[tuple[int, int]]:
        r = self.rows_per_adc or n_in
        return [(j0, min(j0 + r, n_in)) for j0 in range(0, n_in, r)]

    def input_cycles(self, xq: np.ndarray) -> np.ndarray:
        """The cycle inputs sign(x~)·d_j/(2^k − 1), LSB first: cycles × rows × in (just
        ``xq[None]`` when not serial)."""
        if not self.k:
            return xq[None]
        out = np.empty((self.cycles, *xq.shape), np.float32)
        bit_serial_cycles(xq, self.m, self.k, out)
        return out


def convert(readout: Readout, layout: Layout, w_t: torch.Tensor, abs_w_t: torch.Tensor | None,
            xq: np.ndarray, per, noise: MVMNoise | None, ids: np.ndarray,
            adc: CalibratedADC | None = None, ir_drop=None) -> tuple[np.ndarray, np.ndarray]:
    """Digitised and recombined outputs of DAC outputs ``xq`` (rows × in), in weight units of
    the scaled input, and which rows saturated the ADC in any conversion.

    ``w_t`` is the array matrix transposed (in × columns of ``layout``); ``per`` the tile's
    :class:`~mc_engine.analog.periphery.Periphery`; ``noise`` the pass's noise keys or None (noise
    off); ``ids`` the rows' indices in the forward call (the noise counters; conversion c of
    row k draws at ids[k] + c * 2^40). ``adc``: the tile's calibrated ADC ranges
    (adc_range = 'calibrated'), which record the pre-ADC values instead while calibrating.
    ``ir_drop(y, x, j0, j1)``: subtracts the tile's IR drop from each read (row group j0..j1,
    every cycle and column), or None.
    """
    m, n_in = xq.shape
    n_out, n_cols = layout.n_out, layout.n_cols
    inp_noise = per.inp_noise if noise is not None else 0.0
    out_noise = per.out_noise if noise is not None else np.float32(0.0)
    w_noise = per.w_noise if noise is not None else 0.0
    cycles = readout.input_cycles(xq)                 # K × m × in
    n_conv = cycles.shape[0] * m                      # every cycle's rows in one GEMM
    conv_ids = (ids[None, :] + (np.arange(cycles.shape[0]) << 40)[:, None]).reshape(-1)
    lines = cycles
    if inp_noise > 0:
        lines = cycles.copy()
        add_normal_rows(lines.reshape(n_conv, n_in), inp_noise, noise.stream(KIND_INP), conv_ids)
    ones_k, rows_k = np.ones(n_conv, np.float32), np.arange(n_conv)
    post = np.ones((1, n_cols), np.float32)
    sat = np.empty(n_conv, np.bool_)
    saturated = np.zeros(n_conv, np.bool_)
    groups = readout.row_groups(n_in)
    step, bound = (per.step_out, per.bound) if adc is None else \
        (np.float32(0.0), np.float32(np.inf))
    part = None
    for gi, (j0, j1) in enumerate(groups):
        if len(groups) == 1:
            x_in, x_line = cycles.reshape(n_conv, n_in), lines.reshape(n_conv, n_in)
        else:
            x_in = cycles[:, :, j0:j1].reshape(n_conv, j1 - j0)
            x_line = np.ascontiguousarray(lines[:, :, j0:j1]).reshape(n_conv, j1 - j0)
        xg = torch.from_numpy(x_line)
        y = (xg @ w_t[j0:j1]).numpy()
        if ir_drop is not None:
            ir_drop(y, xg, j0, j1)
        wn_row, wn_full = _EMPTY1, _EMPTY2
        if w_noise > 0:
            wn_row, wn_full = per.weight_noise(
                xg[:, None], None if abs_w_t is None else abs_w_t[:, j0:j1])
            if wn_row.size and layout.w_noise_gain != 1:
                wn_row = wn_row * np.float32(layout.w_noise_gain)
        adc_rows(y, out_noise, stream(noise, KIND_OUT, gi), wn_row, wn_full,
                 stream(noise, KIND_W, gi), conv_ids, step, bound, ones_k, rows_k,
                 True, post, y, sat)
        if adc is not None:
            if adc.recording:
                adc.record(gi, y)
            else:
                adc.convert(gi, y, sat)
        saturated |= sat
        y = recombine(layout, torch.from_numpy(y), torch.from_numpy(x_in)).numpy()
        part = y if part is None else part + y
    part = part.reshape(cycles.shape[0], m, n_out)
    if readout.k:
        acc = np.zeros((m, n_out), np.float32)
        for y_cycle in part:                           # acc <- (acc + y_j)/2^k, LSB first
            acc = (acc + y_cycle) / np.float32(2 ** readout.k)
    else:
        acc = part[0]
    gain = np.float32(layout.rescale * readout.serial_gain)
    return (acc * gain if gain != 1 else acc), saturated.reshape(-1, m).any(axis=0)
