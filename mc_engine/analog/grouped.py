"""Grouped (e.g. depthwise) convolutions: all groups of a layer through one batched pass."""

from __future__ import annotations

import numpy as np
import torch

from mc_engine.analog.matrix import AnalogMatrix
from mc_engine.analog.noise import GROUPED, KIND_INP, KIND_OUT, KIND_W
from mc_engine.analog.periphery import _EMPTY1, _EMPTY2
from mc_engine.analog.rows import PatchRows
from mc_engine.analog.torch_pass import static_alpha
from mc_engine.kernels.periphery import adc_rows, add_normal_rows


def grouped_forward(matrices: list[AnalogMatrix], source: PatchRows) -> np.ndarray:
    """Forward of a grouped convolution: G single-tile matrices reading consecutive column
    groups of one source, batched (one DAC pass, one batched GEMM, one ADC pass for all groups).

    Each group keeps its own alpha, ADC, weights and digital factors, exactly as if run alone;
    only the (row, group) pairs that saturate go through the per-tile bound-management retry.
    Depthwise layers (hundreds of 9-input tiles) would otherwise cost a Python round trip per
    group and block. The noise of the batched pass is drawn from the first group's streams,
    element (row, group, column) at its own counter.
    """
    tiles = [m.tiles[0][0] for m in matrices]
    per = matrices[0].periphery
    noise = matrices[0].noise.call()
    first = noise.sub(GROUPED, 0)
    hw = per.hw
    n_groups = len(tiles)
    n_out, width = tiles[0].w.shape
    w = torch.stack([t.w_analog_t for t in tiles])                  # G, width, n_out
    abs_w = w.abs() if hw.w_noise > 0 and hw.w_noise_type == "pcm_read" else None
    post = np.stack([t.comp / t.k for t in tiles])                  # G, n_out
    last = hw.bound_management == "none" or 1.0 > per.r_last
    y_all = np.empty((source.n_rows, n_groups * n_out), np.float32)
    for r0, block in source.blocks(n_groups * width):
        m = block.n_rows
        if hw.noise_management == "abs_max":
            alpha = block.group_abs_max(n_groups)
        else:
            alpha = np.repeat(group_alpha(matrices)[None], m, axis=0)
        alpha = per.wake_zero_rows(alpha, per.inp_noise)
        active = alpha > 0
        scale = np.float32(1.0) / np.where(active, alpha, np.float32(1.0))
        xq = block.dac(0, n_groups * width, np.arange(m), scale, width, per.step_in)
        if per.inp_noise > 0:
            add_normal_rows(xq, per.inp_noise, first.stream(KIND_INP), r0 + np.arange(m))
        x3 = torch.from_numpy(xq).view(m, n_groups, width)
        y = torch.einsum("mgi,gio->mgo", x3, w).contiguous().numpy().reshape(m * n_groups, n_out)
        wn_row, wn_full = _EMPTY1, _EMPTY2
        if per.w_noise > 0:
            wn_row, wn_full = per.weight_noise(x3, abs_w)
        out = y_all[r0:r0 + m].reshape(m * n_groups, n_out)
        sat = np.empty(m * n_groups, np.bool_)
        adc_rows(y, per.out_noise, first.stream(KIND_OUT), wn_row, wn_full, first.stream(KIND_W),
                 r0 * n_groups + np.arange(m * n_groups), per.step_out, per.bound,
                 scale.reshape(-1), np.arange(m * n_groups), last, post, out, sat)
        out3 = out.reshape(m, n_groups, n_out)
        out3[~active] = 0.0
        retry = sat.reshape(m, n_groups) & active & (not last)
        for g in np.flatnonzero(retry.any(axis=0)):
            part = np.empty((m, n_out), np.float32)
            alpha_g = np.where(retry[:, g], alpha[:, g], np.float32(0.0))
            tiles[g].forward(block, g * width, alpha_g, noise, part, post[g], r=2.0, row0=r0)
            out3[retry[:, g], g] = part[retry[:, g]]
    return y_all


def group_alpha(matrices: list) -> np.ndarray:
    """The static alpha of each group's single tile (noise management other than abs_max)."""
    return np.array([static_alpha(m.hw, m.chunk_range(0)) for m in matrices], np.float32)
