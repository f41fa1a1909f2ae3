"""What the arrays of a layer hold in one training batch: the tiles, scales and units of the
Monte Carlo engine's :class:`mc_engine.analog.matrix.AnalogMatrix` (docs/physics.md).

A layer's (groups × out × in) weights are split like the engine's, at ``max_input_size`` inputs
and ``max_output_size`` outputs into near-equal chunks (:func:`mc_engine.analog.tile.split_sizes`),
each group of a grouped convolution on tiles of its own. Every tile holds its array matrix in the
units its ADC sees:

- weight units (``weight_bits = 0``): the tile's weights, times ω's k = ω/max|W| (per tile or per
  column) when ``weight_scaling_omega > 0``, scaled back by 1/k after the ADC; programming noise
  through the engine's pair mapping on the tile's own conductance scale s = (g_max − g_min)/
  max|W_tile|; Gaussian weight noise relative to max|W_tile| (the weight g_max stands for).
- conductance units (``weight_bits > 0``): g/g_max of the engine's own
  :class:`~mc_engine.analog.mapping.ConductanceMapping` (quantized, optionally bit-sliced, on the
  layer-wide w_max), rescaled to weight units after the ADC and the shift-and-add over slices;
  Gaussian weight noise relative to w_max, spread over the slices so that the weight it adds is
  level·w_max·ξ whatever the slicing.

The forward values are the engine's array matrices exactly; gradients pass straight through
them to the weights (column j of slice i moves as c_i·W with Σ_i coef_i·c_i·rescale = 1, so the
gradient of the layer's output with respect to W is that of X·Wᵀ).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from mc_engine.analog.mapping import WeightUnitPairs, make_mapping
from mc_engine.analog.tile import split_sizes
from mc_engine.hardware import HardwareConfig
from mc_engine.hardware.devices import DEVICES

if TYPE_CHECKING:
    from mc_engine.train.noisy import NoiseSource


class StraightThrough(torch.autograd.Function):
    """``q`` forward (exactly), the gradient of ``w`` backward: w → q passes gradients through."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return q

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def quantize_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric weight quantization of docs/physics.md, W_q = w_max·rint(W/w_max·L)/L with
    L = 2^(bits−1) − 1 and w_max = max|W| of the layer (computed in float64 as the engine
    does); the gradient passes straight through."""
    levels = 2 ** (bits - 1) - 1
    w64 = w.detach().double()
    w_max = float(w64.abs().max())
    if w_max == 0:
        return w
    q = (w_max * torch.round(w64 / w_max * levels) / levels).to(w.dtype)
    return StraightThrough.apply(w, q)


@dataclass(frozen=True)
class TileArrays:
    """One tile position of every group of a layer: inputs i0..i1, outputs o0..o1.

    ``wt`` is the array matrix transposed as the GEMM takes it (groups × inputs × columns, the
    engine's layout); ``post`` the digital factor 1/k of ω (groups × outputs, None = 1);
    ``coefs`` the significance of each slice's block of columns, ``gain`` the float32 rescale
    to weight units after their shift-and-add (1 in weight units)."""

    i0: int
    i1: int
    o0: int
    o1: int
    wt: torch.Tensor
    post: torch.Tensor | None = None
    coefs: tuple[float, ...] = (1.0,)
    gain: float = 1.0


def tile_grid(n_out: int, n_in: int, hw: HardwareConfig) -> list[tuple[int, int, int, int]]:
    """(i0, i1, o0, o1) of every tile, input chunks outermost (the engine's order)."""
    return [(i0, i1, o0, o1) for i0, i1 in split_sizes(n_in, hw.max_input_size)
            for o0, o1 in split_sizes(n_out, hw.max_output_size)]


def layer_w_max(w: torch.Tensor, hw: HardwareConfig) -> float:
    """max|W| of the whole layer in float32, as the engine takes it (the conductance scale and
    weight quantization of every tile of the layer); 0 in weight units, where it is unused."""
    return float(w.detach().abs().max()) if hw.conductance_units else 0.0


def _cells(block: torch.Tensor, hw: HardwareConfig, w_max: float, program: bool,
           src: NoiseSource) -> tuple[torch.Tensor | None, object]:
    """The engine's array matrix of every group of one tile (groups × columns × in, float32,
    None in weight units without programming) and the first group's mapping."""
    if not program and not hw.conductance_units:
        return None, None
    device = DEVICES[hw.device](hw) if program else None
    mats, mapping = [], None
    for w_g in block.detach().cpu().numpy().astype(np.float32):
        mapping = make_mapping(w_g, hw, w_max) if hw.conductance_units else \
            WeightUnitPairs(w_g, hw)
        g = mapping.targets()
        if program:
            g, _ = device.program(g, src.rng)
        mats.append(mapping.matrix(g).astype(np.float32))
    return torch.from_numpy(np.stack(mats)).to(block.device), mapping


def _slice_factors(mapping) -> list[float]:
    """c_i of every slice's columns: Σ_i coef_i·c_i·rescale = 1, c_i ∝ coef_i."""
    layout = mapping.layout
    if layout.dummy or layout.offset:
        raise NotImplementedError("offset schemes are rejected by the train file")
    total = sum(c * c for c in layout.coefs)
    return [c / total / layout.rescale for c in layout.coefs]


def _noise_ref(block: torch.Tensor, hw: HardwareConfig, w_max: float) -> torch.Tensor | float:
    """The weight that g_max stands for: max|W_tile| per group, or the layer's w_max."""
    if hw.conductance_units:
        return w_max
    return block.detach().abs().amax((1, 2), keepdim=True)


def tile_arrays(w3: torch.Tensor, hw: HardwareConfig, level: float, program: bool,
                src: NoiseSource) -> list[TileArrays]:
    """Every tile of the layer ``w3`` (groups × out × in) as its arrays hold it in this batch:
    programming noise (``program``) and Gaussian weight noise of ``level`` drawn per tile."""
    w_max = layer_w_max(w3, hw)
    out = []
    for i0, i1, o0, o1 in tile_grid(w3.shape[1], w3.shape[2], hw):
        block = w3[:, o0:o1, i0:i1]
        cols, mapping = _cells(block, hw, w_max, program, src)
        extra = level * _noise_ref(block, hw, w_max) * src.normal(tuple(block.shape), block) \
            if level > 0 else None
        if hw.conductance_units:
            factors = _slice_factors(mapping)
            surrogate = torch.cat([c * block for c in factors], 1)
            if extra is not None:
                cols = cols + torch.cat([c * extra for c in factors], 1)
            a = StraightThrough.apply(surrogate, cols)
            layout = mapping.layout
            out.append(TileArrays(i0, i1, o0, o1, a.transpose(1, 2).contiguous(),
                                  coefs=layout.coefs, gain=float(np.float32(layout.rescale))))
            continue
        a = block if cols is None else StraightThrough.apply(block, cols)
        if extra is not None:
            a = a + extra
        post = None
        if hw.weight_scaling_omega > 0:               # k from the ideal weights, as the engine
            absw = block.detach().abs()
            wmax = absw.amax(2) if hw.weight_scaling_columnwise else \
                absw.amax((1, 2))[:, None].expand(-1, block.shape[1])
            wmax = torch.where(wmax > 0, wmax, torch.ones_like(wmax))
            k = torch.tensor(hw.weight_scaling_omega, dtype=torch.float32,
                             device=block.device) / wmax
            a, post = a * k[:, :, None], 1.0 / k
        out.append(TileArrays(i0, i1, o0, o1, a.transpose(1, 2).contiguous(), post=post))
    return out


def tile_weights(w3: torch.Tensor, hw: HardwareConfig, level: float, program: bool,
                 src: NoiseSource) -> torch.Tensor:
    """The weights (groups × out × in, weight units) that the layer's tiles compute with in this
    batch, for the digital path (no DAC, ADC or MVM noise, where the units do not matter):
    quantized, programmed and with Gaussian weight noise, each per tile as in
    :func:`tile_arrays`."""
    w_max = layer_w_max(w3, hw)
    grid = tile_grid(w3.shape[1], w3.shape[2], hw)
    if not program:                                 # one draw for the layer, scaled per tile
        w = quantize_weight(w3, hw.weight_bits) if hw.weight_bits > 0 else w3
        if level <= 0:
            return w
        if len(grid) == 1:
            ref = _noise_ref(w3, hw, w_max)
        else:
            ref = torch.empty_like(w3)
            for i0, i1, o0, o1 in grid:
                ref[:, o0:o1, i0:i1] = _noise_ref(w3[:, o0:o1, i0:i1], hw, w_max)
        return w + level * ref * src.normal(tuple(w3.shape), w3)
    rows = []
    for i0, i1, o0, o1 in grid:
        block = w3[:, o0:o1, i0:i1]
        cols, mapping = _cells(block, hw, w_max, True, src)
        if hw.conductance_units:                     # the shift-and-add and rescale, exactly
            layout, n = mapping.layout, o1 - o0
            cols = layout.rescale * sum(c * cols[:, s * n:(s + 1) * n].double()
                                        for s, c in enumerate(layout.coefs))
        a = StraightThrough.apply(block, cols.to(block.dtype))
        if level > 0:
            a = a + level * _noise_ref(block, hw, w_max) * src.normal(tuple(block.shape), block)
        rows.append(((i0, o0), a))
    return _assemble(rows, w3)


def _assemble(blocks: list[tuple[tuple[int, int], torch.Tensor]], like: torch.Tensor
              ) -> torch.Tensor:
    """The layer's matrix from its tiles (differentiable)."""
    by_in: dict[int, list[tuple[int, torch.Tensor]]] = {}
    for (i0, o0), a in blocks:
        by_in.setdefault(i0, []).append((o0, a))
    cols = [torch.cat([a for _, a in sorted(parts, key=lambda p: p[0])], 1)
            for _, parts in sorted(by_in.items())]
    out = cols[0] if len(cols) == 1 else torch.cat(cols, 2)
    return out.to(like.dtype)
