"""The torch execution of a tile's forward pass (docs/physics.md, "Tile forward"; the read-out
schemes of "Mappings, read-out, variation and faults"), on any torch device.

This is the second execution of the pass that :meth:`mc_engine.analog.tile.Tile.forward`,
:func:`mc_engine.analog.readout.convert` and :func:`mc_engine.analog.grouped.grouped_forward`
drive through the Numba kernels: the same row sets (silent rows, rows that ride along, bound
management's retries of the saturated rows), the same noise keys (``MVMNoise.sub(tile,
attempt)``, the kinds and row groups of :mod:`mc_engine.analog.noise`) and counters (row index
in the call × columns + column), the same float32 operations in the same order, and the
counter-based generator of :mod:`mc_engine.analog.torch_rng`. What a tile holds (its array
matrix, ω's k, its drift compensation, its calibrated ADC ranges) is the tile's own: this module
only reads it, copying the arrays to the device once per set of weights.

On the CPU the outputs equal the Numba execution's bit for bit (tests/test_torch_pass.py): both
sum the same numbers in the same GEMM (torch's, for a batch within one of the Numba execution's
row blocks), and the digital row sums of the offset mappings are exact in both. On a GPU the
GEMM's sums differ at float32 rounding: an output on a rounding edge of the ADC may then land
one step apart.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from mc_engine.analog.noise import GROUPED, KIND_INP, MVMNoise
from mc_engine.analog.torch_periphery import (
    DeviceArrays,
    _adc,
    _normal,
    arrays,
    ir_drop_term,
    quantize,
    static_alpha,
    weight_noise_sigma,
)
from mc_engine.analog.torch_readout import convert, row_sums


# ---- one tile ----
def tile_forward(tile, x: torch.Tensor, alpha: torch.Tensor, noise: MVMNoise | None,
                 post: torch.Tensor, r: float = 1.0, row0: int = 0,
                 first: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Tile.forward in torch: the tile output (rows × out) of inputs ``x`` (rows × the tile's
    inputs) with noise-management ``alpha``, times ``post``; see Tile.forward for ``r``,
    ``row0`` and ``first``."""
    per = tile.per
    a = arrays(tile, x.device)
    n = x.shape[0]
    out = x.new_zeros((n, a.post.shape[-1]))
    if first is None and per.inp_noise > 0 and noise is not None:
        alpha = torch.where(alpha > 0, alpha, torch.ones_like(alpha))
    silent = alpha <= 0
    n_silent = int(silent.sum())
    live = ~silent
    ride = 0 < n_silent and 2 * n_silent < n
    rows = torch.nonzero(live).flatten() if n_silent and not ride else \
        torch.arange(n, device=x.device)
    if first is not None:
        inv_alpha, xq = first
        if ride:
            inv_alpha = torch.where(live, inv_alpha, torch.ones_like(inv_alpha))
        elif rows.numel() < n:
            inv_alpha, xq = inv_alpha[rows], xq[rows]
    else:
        inv_alpha = (1.0 / torch.where(live, alpha, torch.ones_like(alpha)))[rows]
        xq = None
    passes(tile, x, rows, inv_alpha, xq, noise, post, out, r, row0, live if ride else None)
    if n_silent:
        out[silent] = 0.0
    return out


def passes(tile, x: torch.Tensor, rows: torch.Tensor, inv_alpha: torch.Tensor,
           xq: torch.Tensor | None, noise: MVMNoise | None, post: torch.Tensor,
           out: torch.Tensor, r: float = 1.0, row0: int = 0,
           live: torch.Tensor | None = None) -> None:
    """The passes of bound management from a given state, into ``out``: ``rows`` of ``x`` at
    factor ``r`` (attempt log2 r) with scales ``inv_alpha`` (and their DAC output ``xq``, or
    None), each retry on the rows that saturated. ``live``: the rows that may saturate when
    silent rows ride along."""
    per = tile.per
    hw = per.hw
    a = arrays(tile, x.device)
    one_pass = _pass if tile.readout is None else _readout_pass
    attempt = int(round(math.log2(r)))
    while rows.numel():
        last = hw.bound_management == "none" or r > per.r_last
        scale = inv_alpha / r
        if xq is None:
            xq = quantize(x[rows] * scale[:, None], float(per.step_in), 1.0)
        pass_noise = None if noise is None else noise.sub(tile.noise_id, attempt)
        y, sat = one_pass(tile, a, xq, pass_noise, scale, row0 + rows, last, post)
        if live is not None:
            sat = sat & live[rows]
        keep = slice(None) if last else ~sat
        out[rows[keep]] = y[keep]
        if last or not bool(sat.any()):
            break
        rows, inv_alpha, xq = rows[sat], inv_alpha[sat], None
        r *= 2.0
        attempt += 1


def _pass(tile, a: DeviceArrays, xq, noise, scale, ids, last, post):
    """The fused default pass (§2.1 steps 3-5): MVM, IR drop, noise, ADC, rescale."""
    per = tile.per
    hw = per.hw
    if per.inp_noise > 0 and noise is not None:
        xq = xq + float(per.inp_noise) * _normal(noise, (KIND_INP,), ids, xq.shape[1])
    y = xq @ a.wt
    if hw.ir_drop > 0:
        y = y - ir_drop_term(hw, xq, a.wt, a.abs_wt, a.ir_f, a.wt.shape[0])
    sigma = None
    if per.w_noise > 0 and noise is not None:
        sigma = weight_noise_sigma(per, xq[:, None], None if a.abs_noise is None
                                   else a.abs_noise[None])
    y, sat = _adc(per, y, sigma, noise, ids, float(per.step_out), float(per.bound))
    return (y / scale[:, None]) * post, sat


def _readout_pass(tile, a: DeviceArrays, xq, noise, scale, ids, last, post):
    """One pass through a read-out scheme (readout.convert in torch), rescaled."""
    y, sat = convert(tile, a, xq, noise, ids)
    y = (y / scale[:, None]) * post
    layout = tile.mapping.layout
    if layout.correction:                       # exact, digital: not drift-compensated
        y = y + float(np.float32(layout.rescale * layout.correction)) * (
            row_sums(xq) / scale[:, None])
    return y, sat


# ---- one matrix, one layer ----
def _abs_max_dac(per, x: torch.Tensor, wake: bool):
    """abs_max noise management fused with the DAC (dac_abs_max_rows): alpha, scale (0 for a
    silent row), DAC output."""
    alpha = x.detach().abs().amax(1) if x.shape[1] else x.new_zeros(x.shape[0])
    if wake:
        alpha = torch.where(alpha == 0, torch.ones_like(alpha), alpha)
    scale = torch.where(alpha > 0, 1.0 / torch.where(alpha > 0, alpha, 1.0),
                        torch.zeros_like(alpha))
    return alpha, scale, quantize(x * scale[:, None], float(per.step_in), 1.0)


def chunk_range(matrix, chunk: int):
    """AnalogMatrix.chunk_range, None for a matrix without static ranges (training's)."""
    ranges = getattr(matrix, "input_ranges", None)
    return None if ranges is None else ranges[chunk]


def _const_alpha(per, n: int, device, r=None) -> torch.Tensor:
    """The static alpha (periphery.static_alpha) of ``n`` rows; ``r``: the tile's range."""
    return torch.full((n,), float(static_alpha(per.hw, r)), device=device)


def matrix_forward(matrix, x: torch.Tensor, col_offset: int = 0) -> torch.Tensor:
    """AnalogMatrix.forward in torch: W·x of every row of ``x`` (rows × columns, this matrix
    reading columns col_offset..) -> rows × out, on x's device."""
    per = matrix.periphery
    x = x.to(torch.float32)
    noise = None if matrix._calibrating else matrix.noise.call()
    fused = matrix.hw.noise_management == "abs_max"
    y = x.new_zeros((x.shape[0], matrix.out_features))
    for ci, ((i0, i1), row) in enumerate(zip(matrix.in_chunks, matrix.tiles)):
        xs = x[:, col_offset + i0:col_offset + i1]
        first = None
        if fused:
            alpha, scale, xq = _abs_max_dac(per, xs, per.inp_noise > 0)
            first = (scale, xq)
        else:
            alpha = _const_alpha(per, xs.shape[0], x.device, chunk_range(matrix, ci))
        for (o0, o1), tile in zip(matrix.out_chunks, row):
            post = arrays(tile, x.device).post
            y[:, o0:o1] += tile_forward(tile, xs, alpha, noise, post, first=first)
    return y


def grouped_forward(matrices, x: torch.Tensor) -> torch.Tensor:
    """grouped.grouped_forward in torch: G single-tile matrices reading consecutive column
    groups of the rows ``x`` (rows × G·width), one batched pass, per-group retries."""
    tiles = [m.tiles[0][0] for m in matrices]
    per = matrices[0].periphery
    hw = per.hw
    noise = matrices[0].noise.call()
    first = noise.sub(GROUPED, 0)
    n_groups = len(tiles)
    dev = x.device
    width = matrices[0].in_features
    arr = [arrays(t, dev) for t in tiles]
    w = torch.stack([a.wt for a in arr])                              # G, width, n_out
    abs_w = torch.stack([a.abs_noise for a in arr]) if hw.w_noise > 0 and \
        hw.w_noise_type == "pcm_read" else None
    post = torch.stack([a.post for a in arr])                         # G, n_out
    n_out = post.shape[1]
    last = hw.bound_management == "none" or 1.0 > per.r_last
    m = x.shape[0]
    x3 = x.view(m, n_groups, width)
    if hw.noise_management == "abs_max":
        alpha = x3.detach().abs().amax(2)
    else:
        alpha = torch.tensor([float(static_alpha(hw, chunk_range(mat, 0))) for mat in matrices],
                             device=dev)[None].repeat(m, 1)
    if per.inp_noise > 0:
        alpha = torch.where(alpha > 0, alpha, torch.ones_like(alpha))
    active = alpha > 0
    scale = 1.0 / torch.where(active, alpha, torch.ones_like(alpha))
    xq = quantize(x3 * scale[:, :, None], float(per.step_in), 1.0)
    ids = torch.arange(m, device=dev)
    if per.inp_noise > 0:
        xq = xq + float(per.inp_noise) * _normal(first, (KIND_INP,), ids,
                                                 n_groups * width).view(m, n_groups, width)
    y = torch.einsum("mgi,gio->mgo", xq, w).contiguous().reshape(m * n_groups, n_out)
    sigma = weight_noise_sigma(per, xq, abs_w) if per.w_noise > 0 else None
    y, sat = _adc(per, y, sigma, first, torch.arange(m * n_groups, device=dev),
                  float(per.step_out), float(per.bound))
    out3 = ((y / scale.reshape(-1, 1)).view(m, n_groups, n_out) * post[None])
    out3 = out3.masked_fill(~active[:, :, None], 0.0)
    if last:
        return out3.reshape(m, n_groups * n_out)
    retry = sat.view(m, n_groups) & active
    for g in torch.nonzero(retry.any(0)).flatten().tolist():
        again = retry[:, g]
        alpha_g = torch.where(again, alpha[:, g], torch.zeros_like(alpha[:, g]))
        part = tile_forward(tiles[g], x[:, g * width:(g + 1) * width], alpha_g, noise, post[g],
                            r=2.0)
        out3[again, g] = part[again]
    return out3.reshape(m, n_groups * n_out)


def patch_rows(layer, x: torch.Tensor) -> torch.Tensor:
    """The im2col rows of a convolution (rows (n, oh, ow), columns (C, kh, kw)), as the
    Numba execution's PatchRows reads them."""
    ph, pw = layer.padding
    cols = F.unfold(x.to(torch.float32), layer.kernel_size, dilation=layer.dilation,
                    padding=(ph, pw), stride=layer.stride)               # n, C·kh·kw, L
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def conv_forward(layer, x: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """AnalogConv2d.forward in torch (without the bias): n × out × ho × wo."""
    n = x.shape[0]
    ho, wo = out_hw
    rows = patch_rows(layer, x)
    clip = getattr(layer, "clip_rows", None)     # training's learned ranges (mc_engine/train)
    if clip is not None:
        rows = clip(rows)
    mats = layer.matrices
    if len(mats) > 1 and mats[0].hw.ir_drop == 0 and all(
            m.n_tiles == 1 and m.tiles[0][0].readout is None for m in mats):
        y = grouped_forward(mats, rows)
    else:
        width = mats[0].in_features
        parts = [matrix_forward(m, rows, g * width) for g, m in enumerate(mats)]
        y = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
    return y.view(n, ho * wo, layer.out_channels).transpose(1, 2).reshape(
        n, layer.out_channels, ho, wo)
