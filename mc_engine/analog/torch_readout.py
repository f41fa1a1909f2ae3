"""Read-out schemes in the torch execution (:mod:`mc_engine.analog.readout` in torch ops, the
same operations in the same order): bit-serial input cycles, row groups, slices, dummy column
and digital offset, calibrated ADC ranges, and their digital recombination."""

from __future__ import annotations

import math

import numpy as np
import torch

from mc_engine.analog.noise import KIND_INP, MVMNoise
from mc_engine.analog.torch_periphery import (
    DeviceArrays,
    _adc,
    _normal,
    ir_drop_term,
    weight_noise_sigma,
)


def bit_serial_cycles(xq: torch.Tensor, m_bits: int, k_bits: int, cycles: int) -> torch.Tensor:
    """kernels.periphery.bit_serial_cycles: cycles × rows × in, LSB first."""
    mag = torch.round(xq.abs() * float(2 ** m_bits - 1)).to(torch.int32)
    top = float(np.float32(1.0) / np.float32(2 ** k_bits - 1))
    sign = torch.where(xq > 0, top, torch.where(xq < 0, -top, 0.0)).to(torch.float32)
    mask = (1 << k_bits) - 1
    return torch.stack([sign * torch.bitwise_and(torch.bitwise_right_shift(mag, j * k_bits),
                                                 mask).to(torch.float32)
                        for j in range(cycles)])


def convert(tile, a: DeviceArrays, xq: torch.Tensor, noise: MVMNoise | None, ids: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """readout.convert in torch: digitised, recombined outputs of DAC outputs ``xq`` and which
    rows saturated in any conversion."""
    per, readout, layout, adc = tile.per, tile.readout, tile.mapping.layout, tile.adc
    hw = per.hw
    m, n_in = xq.shape
    cycles = bit_serial_cycles(xq, readout.m, readout.k, readout.cycles) if readout.k \
        else xq[None]
    k_cycles = cycles.shape[0]
    n_conv = k_cycles * m
    conv_ids = (ids[None, :] + (torch.arange(k_cycles, device=ids.device,
                                             dtype=torch.int64) << 40)[:, None]).reshape(-1)
    x_all = cycles.reshape(n_conv, n_in)
    lines = x_all
    if per.inp_noise > 0 and noise is not None:
        lines = x_all + float(per.inp_noise) * _normal(noise, (KIND_INP,), conv_ids, n_in)
    step, bound = (float(per.step_out), float(per.bound)) if adc is None else (0.0, math.inf)
    saturated = torch.zeros(n_conv, dtype=torch.bool, device=xq.device)
    groups = readout.row_groups(n_in)
    part = None
    for gi, (j0, j1) in enumerate(groups):
        x_in, x_line = x_all[:, j0:j1], lines[:, j0:j1]
        if len(groups) > 1:
            x_line = x_line.contiguous()
        y = x_line @ a.wt[j0:j1]
        if hw.ir_drop > 0:
            y = y - ir_drop_term(hw, x_line, a.wt[j0:j1], a.abs_wt[j0:j1], a.ir_f[j0:j1],
                                 a.wt.shape[0])
        sigma = None
        if per.w_noise > 0 and noise is not None:
            sigma = weight_noise_sigma(per, x_line[:, None], None if a.abs_noise is None
                                       else a.abs_noise[None, j0:j1])
            if sigma.dim() == 1 and layout.w_noise_gain != 1:
                sigma = sigma * float(np.float32(layout.w_noise_gain))
        y, sat = _adc(per, y, sigma, noise, conv_ids, step, bound, (gi,))
        if adc is not None:
            if adc.recording:
                adc.record(gi, y.cpu().numpy())
            else:
                y, over = calibrated_adc(adc, gi, y)
                sat = sat | over
        saturated |= sat
        y = recombine(layout, y, x_in)
        part = y if part is None else part + y
    part = part.reshape(k_cycles, m, layout.n_out)
    if readout.k:
        acc = torch.zeros_like(part[0])
        for y_cycle in part:                     # acc <- (acc + y_j)/2^k, LSB first
            acc = (acc + y_cycle) / float(2 ** readout.k)
    else:
        acc = part[0]
    gain = float(np.float32(layout.rescale * readout.serial_gain))
    return (acc * gain if gain != 1 else acc), saturated.reshape(-1, m).any(0)


def calibrated_adc(adc, row_group: int, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CalibratedADC.convert in torch: (digitised y, rows beyond a range)."""
    lo_np, step_np = adc._cols[row_group]
    lo = torch.from_numpy(lo_np).to(y.device)
    step = torch.from_numpy(step_np).to(y.device)
    top = float(adc.top)
    k = torch.where(step > 0, torch.round((y - lo) / torch.where(step > 0, step, 1.0)),
                    torch.zeros_like(y))
    sat = ((k > top) | (k < 0)).any(1)
    return lo + k.clamp(0.0, top) * step, sat


def row_sums(x: torch.Tensor) -> torch.Tensor:
    """Σ_j x_ij of every row (rows × 1, float32): summed in float64 and rounded once, which is
    exact for DAC outputs (multiples of the DAC step within ±1), so every reduction order (a
    CPU's, a GPU's) gets the same number. Both executions' offset and correction terms."""
    return x.sum(1, keepdim=True, dtype=torch.float64).to(torch.float32)


def recombine(layout, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Dummy column or digital offset subtracted, slices shift-and-added (conductance units):
    the digital recombination of both executions (readout.convert calls it too)."""
    n_out = layout.n_out
    base = len(layout.coefs) * n_out
    out = None
    for i, coef in enumerate(layout.coefs):
        y_i = y[:, i * n_out:(i + 1) * n_out]
        if layout.dummy:
            y_i = y_i - y[:, base + i:base + i + 1]
        if coef != 1:
            y_i = float(np.float32(coef)) * y_i
        out = y_i if out is None else out + y_i
    if layout.offset:
        out = out - float(np.float32(layout.offset)) * row_sums(x)
    return out
