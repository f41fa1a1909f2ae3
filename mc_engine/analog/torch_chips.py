"""Chips batched in one call (the torch execution): C programmed chips of one model and hardware
point evaluate the same images together, with stacked weights, batched GEMMs and one epilogue.

A small network cannot fill a GPU with one chip, and on any device a forward pass pays per
call, not per flop; a chip batch pays the calls once for C chips. Each chip keeps its own
programmed devices, drift compensation and noise keys (its
:class:`~mc_engine.analog.noise.NoiseKeys` advance exactly as when it runs alone), and the
normals of element (row, column) of chip c are draws at the same counters of chip c's streams
(:func:`mc_engine.analog.torch_rng.normal` with one key per chip). Every input row takes part
in the first pass (silent rows ride along with scale 1 and are zeroed), which changes which
rows share a GEMM but not what a row computes; the rows that saturate are retried chip by chip
through :func:`mc_engine.analog.torch_pass.tile_forward` exactly as a single chip retries
them. So a chip's outputs do not depend on the batch it is in (tests/test_torch_chips.py:
bitwise on the CPU against the chips run one by one).

Tiles whose pass is not the fused default (read-out schemes, calibrated ADC ranges, grouped
convolutions) are run chip by chip inside the batched call.

On the CPU the torch execution is bound by its elementwise passes (the counter-based generator
alone is ~40 passes over each noise tensor), so batching does not make it faster there; the
CPU's engine is the Numba execution. On a GPU those passes are cheap and the calls are not.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mc_engine.analog import direct_conv, torch_pass
from mc_engine.analog.noise import KIND_INP, KIND_OUT, KIND_W
from mc_engine.analog.torch_pass import _abs_max_dac, _const_alpha, passes, tile_forward
from mc_engine.analog.torch_periphery import (
    arrays,
    epilogue,
    ir_drop_term,
    quantize,
    weight_noise_sigma,
)
from mc_engine.analog.torch_rng import keys, normal_rows


def _stream_keys(noises, tile, attempt: int, kind: int, device) -> torch.Tensor:
    """(C, 1, 1) keys of stream ``kind`` of attempt ``attempt`` of ``tile`` for every chip."""
    return keys([n.sub(tile.noise_id, attempt).stream(kind) for n in noises],
                device)[:, None, None]


def _tile_pass(tiles: list, xs: torch.Tensor, alpha: torch.Tensor, noises: list,
               first: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """The fused default pass of one tile position on every chip: xs (C × rows × in) ->
    C × rows × out. A chip with more than half of its rows silent multiplies only its live
    rows when alone, so it runs alone here too (a GEMM's last bits can depend on its rows)."""
    per = tiles[0].per
    dev = xs.device
    if first is None and per.inp_noise > 0:
        woken = torch.where(alpha > 0, alpha, torch.ones_like(alpha))
    else:
        woken = alpha
    n_silent = (woken <= 0).sum(1)
    alone = ((n_silent > 0) & (2 * n_silent >= xs.shape[1])).tolist()
    if not any(alone):
        return _batched_pass(tiles, xs, woken, noises, first)
    out = xs.new_zeros((xs.shape[0], xs.shape[1], arrays(tiles[0], dev).post.shape[-1]))
    together = [c for c, a in enumerate(alone) if not a]
    for c in (c for c, a in enumerate(alone) if a):
        out[c] = tile_forward(tiles[c], xs[c], alpha[c], noises[c], arrays(tiles[c], dev).post,
                              first=None if first is None else (first[0][c], first[1][c]))
    if together:
        idx = torch.tensor(together, device=dev)
        sub_first = None if first is None else (first[0][idx], first[1][idx])
        out[idx] = _batched_pass([tiles[c] for c in together], xs[idx], woken[idx],
                                 [noises[c] for c in together], sub_first)
    return out


def _batched_pass(tiles: list, xs: torch.Tensor, alpha: torch.Tensor, noises: list,
                  first: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """:func:`_tile_pass` of chips whose rows all take part in the first pass (``alpha``
    already woken by input noise)."""
    tile0 = tiles[0]
    per = tile0.per
    hw = per.hw
    dev = xs.device
    arr = [arrays(t, dev) for t in tiles]
    n_chips, n = xs.shape[:2]
    live = alpha > 0
    if first is not None:
        inv_alpha, xq = first
        inv_alpha = torch.where(live, inv_alpha, torch.ones_like(inv_alpha))
    else:
        inv_alpha = 1.0 / torch.where(live, alpha, torch.ones_like(alpha))
        xq = quantize(xs * inv_alpha[..., None], float(per.step_in), 1.0)
    ids = torch.arange(n, device=dev)
    if per.inp_noise > 0:
        xq = xq + float(per.inp_noise) * normal_rows(
            _stream_keys(noises, tile0, 0, KIND_INP, dev), ids, xq.shape[2])
    wt = torch.stack([a.wt for a in arr])                             # C × in × out
    y = torch.bmm(xq, wt)
    if hw.ir_drop > 0:
        y = y - ir_drop_term(hw, xq, wt, torch.stack([a.abs_wt for a in arr]),
                             arr[0].ir_f, wt.shape[1])
    sigma = key_w = key_out = None
    if per.w_noise > 0:
        abs_w = torch.stack([a.abs_noise for a in arr]) if a_pcm(hw) else None
        sigma = weight_noise_sigma(per, xq.transpose(0, 1), abs_w)  # rows × chips (× out)
        sigma = sigma.view(n, n_chips, -1).transpose(0, 1)
        key_w = _stream_keys(noises, tile0, 0, KIND_W, dev)
    if per.out_noise > 0:
        key_out = _stream_keys(noises, tile0, 0, KIND_OUT, dev)
    y, sat = epilogue(y, sigma, key_w, key_out, ids, float(per.out_noise), float(per.step_out),
                      float(per.bound))
    sat = sat & live
    post = torch.stack([a.post for a in arr])                         # C × out
    out = (y / inv_alpha[..., None]) * post[:, None, :]
    out = out.masked_fill(~live[..., None], 0.0)
    if hw.bound_management == "none" or 1.0 > per.r_last or not bool(sat.any()):
        return out
    for c in torch.nonzero(sat.any(1)).flatten().tolist():   # as the chip alone retries
        rows = torch.nonzero(sat[c]).flatten()
        passes(tiles[c], xs[c], rows, inv_alpha[c][rows], None, noises[c], post[c], out[c],
               r=2.0)
    return out


def a_pcm(hw) -> bool:
    """Whether the weight noise is 'pcm_read' (its sigma weighted by |W|)."""
    return hw.w_noise > 0 and hw.w_noise_type == "pcm_read"


def _fused(tile) -> bool:
    return tile.readout is None


def matrix_forward(mats: list, x: torch.Tensor, col_offset: int = 0) -> torch.Tensor:
    """AnalogMatrix.forward of C chips' matrices of one layer: x (C × rows × columns) ->
    C × rows × out."""
    m0 = mats[0]
    per = m0.periphery
    x = x.to(torch.float32)
    if any(m._calibrating for m in mats):
        return torch.stack([torch_pass.matrix_forward(m, x[c], col_offset)
                            for c, m in enumerate(mats)])
    noises = [m.noise.call() for m in mats]
    fused = m0.hw.noise_management == "abs_max"
    n_chips, n = x.shape[:2]
    y = x.new_zeros((n_chips, n, m0.out_features))
    for ci, (i0, i1) in enumerate(m0.in_chunks):
        xs = x[:, :, col_offset + i0:col_offset + i1]
        first = None
        if fused:
            alpha, scale, xq = _abs_max_dac(per, xs.reshape(-1, xs.shape[2]), per.inp_noise > 0)
            alpha, scale = alpha.view(n_chips, n), scale.view(n_chips, n)
            first = (scale, xq.view(n_chips, n, -1))
        else:
            alpha = _const_alpha(per, n_chips * n, x.device,
                                 torch_pass.chunk_range(m0, ci)).view(n_chips, n)
        for oi, (o0, o1) in enumerate(m0.out_chunks):
            tiles = [m.tiles[ci][oi] for m in mats]
            if _fused(tiles[0]):
                y[:, :, o0:o1] += _tile_pass(tiles, xs, alpha, noises, first)
                continue
            for c, tile in enumerate(tiles):            # a read-out scheme: chip by chip
                one = None if first is None else (first[0][c], first[1][c])
                y[c, :, o0:o1] += tile_forward(tile, xs[c], alpha[c], noises[c],
                                               arrays(tile, x.device).post, first=one)
    return y


class ChipBatch(nn.Module):
    """C chips (converted models of one model and hardware point on one torch execution),
    called like one model on images x: returns C × images × outputs. The digital layers run
    once on the C·N images (chip 0's copy: the digital layers of all chips are the same)."""

    def __init__(self, chips: Sequence):
        super().__init__()
        self.chips = list(chips)
        self.layers = [list(layers) for layers in zip(*(c.analog_layers() for c in chips))]

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        c = len(self.chips)
        for group in self.layers:
            group[0].batch = group
        try:
            out = self.chips[0].module(x.repeat(c, *([1] * (x.dim() - 1))))
        finally:
            for group in self.layers:
                group[0].batch = None
        return out.view(c, n, *out.shape[1:])


def linear_forward(layers: list, x: torch.Tensor) -> torch.Tensor:
    """AnalogLinear.forward of a chip batch: x (C·N × … × in)."""
    c = len(layers)
    shape = x.shape
    flat = x.reshape(c, -1, shape[-1])
    return matrix_forward([lay.matrices[0] for lay in layers], flat)


def conv_forward(layers: list, x: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """AnalogConv2d.forward of a chip batch (without the bias): C·N × out × ho × wo."""
    c = len(layers)
    n = x.shape[0] // c
    lay0 = layers[0]
    ho, wo = out_hw
    if direct_conv.eligible(lay0):          # static alpha: each chip its direct convolution
        parts = [direct_conv.forward(lay, x[k * n:(k + 1) * n], out_hw, numba=False)
                 for k, lay in enumerate(layers)]
        return torch.cat(parts)
    rows = torch_pass.patch_rows(lay0, x).view(c, n * ho * wo, -1)
    mats0 = lay0.matrices
    if len(mats0) > 1 and mats0[0].hw.ir_drop == 0 and all(
            m.n_tiles == 1 and m.tiles[0][0].readout is None for m in mats0):
        y = torch.stack([torch_pass.grouped_forward(lay.matrices, rows[k])
                         for k, lay in enumerate(layers)])
    else:
        width = mats0[0].in_features
        parts = [matrix_forward([lay.matrices[g] for lay in layers], rows, g * width)
                 for g in range(len(mats0))]
        y = parts[0] if len(parts) == 1 else torch.cat(parts, 2)
    return y.view(c * n, ho * wo, lay0.out_channels).transpose(1, 2).reshape(
        c * n, lay0.out_channels, ho, wo)
