"""The periphery of one training tile in torch (docs/physics.md, tile forward and recombination):
noise management, DAC, input/weight/output noise, ADC, bound management and the digital factors,
with the float32 operations, kernels and row sets of the Monte Carlo engine's
:meth:`mc_engine.analog.tile.Tile.forward`, :func:`mc_engine.analog.readout.convert` and
:func:`mc_engine.analog.grouped.grouped_forward`.

The GEMM's float32 sums depend on its kernel and on the rows it is given (MKL's small-matrix
paths), so each tile multiplies exactly the rows the engine multiplies: every row in the first
pass unless more than half are silent (all-zero), only the saturated ones in a retry, each group
on its own. With the noise off the outputs are then the engine's bit for bit, for a batch within
one of the engine's row blocks (:data:`mc_engine.analog.rows.BLOCK_BYTES`); beyond, equal to
float32 rounding. Rounding passes the gradient straight through.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from mc_engine.analog.periphery import Periphery
from mc_engine.train.arrays import TileArrays

if TYPE_CHECKING:
    from mc_engine.train.noisy import NoiseSource


class RoundSTE(torch.autograd.Function):
    """rint(v/step)*step (half to even) forward; the identity backward (straight through)."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, step: float) -> torch.Tensor:
        return torch.round(v / step) * step

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def quantize(v: torch.Tensor, step: float, bound: float) -> torch.Tensor:
    """The DAC/ADC quantizer: round to ``step`` (0 = no rounding), clip at ±bound."""
    if step > 0:
        v = RoundSTE.apply(v, torch.tensor(step, dtype=v.dtype, device=v.device))
    return v.clamp(-bound, bound) if math.isfinite(bound) else v


def tiled_mvm(x: torch.Tensor, tiles: list[TileArrays], per: Periphery, src: NoiseSource
              ) -> torch.Tensor:
    """rows × groups × in through every tile of a layer; outputs of the input chunks summed
    digitally in the engine's order. Returns rows × groups × out."""
    n_groups = x.shape[1]
    batched = n_groups > 1 and len(tiles) == 1 and not per.hw.conductance_units
    chunks: dict[int, torch.Tensor] = {}
    for tile in tiles:
        xt = x[:, :, tile.i0:tile.i1]
        if batched:                       # the engine's grouped convolution
            part = grouped_mvm(xt, tile, per, src)
        else:                             # every group its own matrix
            part = torch.stack([analog_mvm(xt[:, g], tile, g, per, src)
                                for g in range(n_groups)], 1)
        chunks[tile.o0] = part if tile.o0 not in chunks else chunks[tile.o0] + part
    parts = [chunks[o0] for o0 in sorted(chunks)]
    return parts[0] if len(parts) == 1 else torch.cat(parts, 2)


def _alpha(x: torch.Tensor, per: Periphery) -> torch.Tensor:
    """Noise management's alpha over the last dimension, all-zero vectors woken by input
    noise (0 marks a silent vector)."""
    mode = per.hw.noise_management
    if mode == "abs_max":
        alpha = x.detach().abs().amax(-1) if x.shape[-1] else x.new_zeros(x.shape[:-1])
    else:
        alpha = x.new_full(x.shape[:-1], 1.0 if mode == "none" else per.hw.nm_constant)
    if per.inp_noise > 0:
        alpha = torch.where(alpha > 0, alpha, torch.ones_like(alpha))
    return alpha


def _adc(xq: torch.Tensor, wt: torch.Tensor, abs_wt: torch.Tensor | None, per: Periphery,
         src: NoiseSource, batched: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Input noise, MVM, weight and output noise, ADC of DAC outputs ``xq`` (rows × in, or rows
    × groups × in when ``batched``): (clipped outputs, which vectors saturated)."""
    if per.inp_noise > 0:
        xq = xq + float(per.inp_noise) * src.normal(tuple(xq.shape), xq)
    y = torch.einsum("mgi,gio->mgo", xq, wt) if batched else xq @ wt
    if per.w_noise > 0:
        sq = xq * xq
        if abs_wt is None:
            sigma = sq.sum(-1, keepdim=True).sqrt()
        else:
            sigma = (torch.einsum("mgi,gio->mgo", sq, abs_wt) if batched else sq @ abs_wt).sqrt()
        y = y + float(per.w_noise) * sigma.detach() * src.normal(tuple(y.shape), y)
    if per.out_noise > 0:
        y = y + float(per.out_noise) * src.normal(tuple(y.shape), y)
    step, bound = float(per.step_out), float(per.bound)
    if step > 0:
        y = RoundSTE.apply(y, torch.tensor(step, dtype=y.dtype, device=y.device))
    sat = ((y.detach() > bound) | (y.detach() < -bound)).any(-1)
    return y.clamp(-bound, bound), sat


def _digital(y: torch.Tensor, tile: TileArrays, scale: torch.Tensor,
             post: torch.Tensor | None) -> torch.Tensor:
    """After the ADC, in the engine's float32 order: slices shift-and-added, times the rescale
    to weight units, divided by the input scale, times 1/k."""
    if len(tile.coefs) > 1:
        n_out = tile.o1 - tile.o0
        total = None
        for i, coef in enumerate(tile.coefs):
            part = y[..., i * n_out:(i + 1) * n_out]
            part = part * coef if coef != 1 else part
            total = part if total is None else total + part
        y = total
    if tile.gain != 1:
        y = y * tile.gain
    y = y / scale
    return y if post is None else y * post


def analog_mvm(x: torch.Tensor, tile: TileArrays, g: int, per: Periphery, src: NoiseSource,
               alpha: torch.Tensor | None = None, r: float = 1.0) -> torch.Tensor:
    """Group ``g`` of one tile (the engine's Tile.forward): ``x`` is rows × the tile's inputs,
    ``alpha`` the noise-management scales (computed here when None; 0 = silent: output 0),
    ``r`` the bound-management factor of the first pass. Returns rows × outputs."""
    hw = per.hw
    wt = tile.wt[g]                                         # in × columns, contiguous
    post = None if tile.post is None else tile.post[g]
    abs_wt = wt.abs() if hw.w_noise > 0 and hw.w_noise_type == "pcm_read" else None
    n_rows = x.shape[0]
    out = x.new_zeros((n_rows, tile.o1 - tile.o0))
    if n_rows == 0:
        return out
    if alpha is None:
        alpha = _alpha(x, per)
    silent = alpha <= 0
    n_silent = int(silent.sum())
    ride = 0 < n_silent and 2 * n_silent < n_rows   # a few silent rows ride along, scale 1
    rows = torch.nonzero(~silent).flatten() if n_silent and not ride else None  # None: all
    inv_alpha = 1.0 / torch.where(silent, torch.ones_like(alpha), alpha)
    if rows is not None:
        inv_alpha = inv_alpha[rows]
    while rows is None or rows.numel():
        last = hw.bound_management == "none" or r > per.r_last
        scale = (inv_alpha / r)[:, None]
        xq = quantize((x if rows is None else x[rows]) * scale, float(per.step_in), 1.0)
        y, sat = _adc(xq, wt, abs_wt, per, src, False)
        if ride:
            sat = sat & ~(silent if rows is None else silent[rows])
        y = _digital(y, tile, scale, post)
        if rows is None and (last or not bool(sat.any())):
            out = y
        else:
            at = torch.arange(n_rows, device=x.device) if rows is None else rows
            out = out.index_put((at,), y) if last else out.index_put((at[~sat],), y[~sat])
        if last or not bool(sat.any()):
            break
        at = torch.arange(n_rows, device=x.device) if rows is None else rows
        rows, inv_alpha = at[sat], inv_alpha[sat]
        r *= 2.0
    return out.masked_fill(silent[:, None], 0.0) if n_silent else out


def grouped_mvm(x: torch.Tensor, tile: TileArrays, per: Periphery, src: NoiseSource
                ) -> torch.Tensor:
    """A grouped layer on single tiles in weight units (the engine's grouped_forward): every
    row of every group in one batched pass, then each group retries its saturated rows on its
    own from r = 2. ``x`` is rows × groups × in; returns rows × groups × outputs."""
    hw = per.hw
    alpha = _alpha(x, per)                                  # rows × groups
    active = alpha > 0
    scale = (1.0 / torch.where(active, alpha, torch.ones_like(alpha)))[:, :, None]
    xq = quantize(x * scale, float(per.step_in), 1.0)
    abs_wt = tile.wt.abs() if hw.w_noise > 0 and hw.w_noise_type == "pcm_read" else None
    y, sat = _adc(xq, tile.wt, abs_wt, per, src, True)
    out = _digital(y, tile, scale, tile.post).masked_fill(~active[:, :, None], 0.0)
    if hw.bound_management == "none" or 1.0 > per.r_last:
        return out
    retry = sat & active
    for g in torch.nonzero(retry.any(0)).flatten().tolist():
        again = retry[:, g]
        part = analog_mvm(x[:, g], tile, g, per, src,
                          alpha=torch.where(again, alpha[:, g], torch.zeros_like(alpha[:, g])),
                          r=2.0)
        out = out.index_put((torch.nonzero(again).flatten(), torch.tensor(g, device=x.device)),
                            part[again])
    return out
