"""The differentiable noisy forward of hardware-aware training (DESIGN.md §2.1 where it overlaps).

During training every ``nn.Linear`` and ``nn.Conv2d`` of the model computes its output the way
an analog tile would, in torch, so that gradients flow through it:

- weights: quantized to ``weight_bits`` (symmetric, w_max = max|W| of the layer, DESIGN.md
  §2.3; the scale stays digital), then programming noise drawn from the device model through the
  engine's own pair mapping (:class:`mc_engine.analog.mapping.WeightUnitPairs`) and Gaussian
  noise of ``level * max|W|``, fresh for every batch. With several levels the batch is split into
  as many consecutive chunks, each seeing its own draw at its own level (multi-scale fusion);
  BatchNorm still sees the whole batch.
- inputs and outputs (only when a periphery option is on): noise management, the DAC, input,
  short-term weight and output noise, the ADC and iterative bound management, with the float32
  operation order of :mod:`mc_engine.kernels.periphery` and the constants of
  :class:`mc_engine.analog.tile.Periphery`, so that with the noise off the quantized outputs are
  the Monte Carlo engine's. Rounding passes the gradient straight through.

The engine itself never runs here: tile splitting, drift, read noise and drift compensation are
inference-time effects and are left to the study.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mc_engine.analog.mapping import WeightUnitPairs
from mc_engine.analog.tile import Periphery
from mc_engine.hardware import HardwareConfig
from mc_engine.hardware.devices import DEVICES

#: The periphery of training: everything off unless a [noise] key switches it on.
TRAIN_PERIPHERY = {"dac_bits": 0, "adc_bits": 0, "out_noise": 0.0, "out_bound": math.inf,
                   "device": "ideal"}


@dataclass(frozen=True)
class NoiseSpec:
    """What the training forward injects. ``hardware`` carries the periphery (DAC, ADC, noise,
    noise and bound management) and, with ``program``, the device model of the programming
    noise; ``weight_noise`` holds the multi-scale levels (relative to max|W|, empty = off)."""

    hardware: HardwareConfig = field(default_factory=lambda: HardwareConfig(**TRAIN_PERIPHERY))
    weight_noise: tuple[float, ...] = ()
    weight_bits: int = 0
    clip_std: float = 0.0
    program: bool = False

    @property
    def periphery(self) -> bool:
        """Whether inputs and outputs go through the DAC/ADC path at all."""
        hw = self.hardware
        return bool(hw.dac_bits or hw.adc_bits or hw.inp_noise or hw.out_noise or hw.w_noise
                    or math.isfinite(hw.out_bound))

    @property
    def levels(self) -> int:
        return max(1, len(self.weight_noise))

    @property
    def active(self) -> bool:
        """Whether the forward differs from the plain model's at all."""
        return self.periphery or self.program or self.weight_bits > 0 or \
            any(level > 0 for level in self.weight_noise)


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


def quantize_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric weight quantization of DESIGN.md §2.3, W_q = w_max·rint(W/w_max·L)/L with
    L = 2^(bits−1) − 1 and w_max = max|W| of the layer (computed in float64 as the engine
    does); the gradient passes straight through."""
    levels = 2 ** (bits - 1) - 1
    w64 = w.detach().double()
    w_max = float(w64.abs().max())
    if w_max == 0:
        return w
    q = (w_max * torch.round(w64 / w_max * levels) / levels).to(w.dtype)
    return StraightThrough.apply(w, q)


class StraightThrough(torch.autograd.Function):
    """``q`` forward (exactly), the gradient of ``w`` backward: w → q passes gradients through."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return q

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def programming_delta(w: torch.Tensor, hw: HardwareConfig, rng: np.random.Generator
                      ) -> torch.Tensor:
    """W_P − W for one programming of ``w`` on a differential pair per weight: the engine's
    mapping (g± = s·max(±W, 0), s = (g_max − g_min)/max|W|) and device model ``hw.device``."""
    w_np = w.detach().cpu().numpy().astype(np.float32)
    mapping = WeightUnitPairs(w_np, hw)
    g_prog, _ = DEVICES[hw.device](hw).program(mapping.targets(), rng)
    w_p = mapping.matrix(g_prog).astype(np.float32)
    return torch.from_numpy(w_p - w_np).to(w.device)


@dataclass
class NoiseSource:
    """The random streams of one training run: torch normals for per-batch and per-MVM noise,
    a numpy generator for the device model's programming noise."""

    gen: torch.Generator
    rng: np.random.Generator

    @classmethod
    def from_seed(cls, seed: int, device: torch.device | str = "cpu") -> NoiseSource:
        seq = np.random.SeedSequence([seed, 0x4857])    # 'HW': apart from the batch order
        torch_seed, numpy_seq = seq.spawn(2)
        gen = torch.Generator(device=device)
        gen.manual_seed(int(torch_seed.generate_state(1, np.uint64)[0] >> 1))
        return cls(gen=gen, rng=np.random.default_rng(numpy_seq))

    def normal(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        return torch.randn(shape, generator=self.gen, dtype=like.dtype, device=like.device)


def noisy_weights(w: torch.Tensor, spec: NoiseSpec, src: NoiseSource) -> list[torch.Tensor]:
    """The layer's weights as seen in this batch, one tensor per multi-scale level."""
    if spec.weight_bits > 0:
        w = quantize_weight(w, spec.weight_bits)
    out = []
    for level in spec.weight_noise or (0.0,):
        delta = programming_delta(w, spec.hardware, src.rng) if spec.program else None
        if level > 0:
            extra = level * w.detach().abs().max() * src.normal(tuple(w.shape), w)
            delta = extra if delta is None else delta + extra
        out.append(w if delta is None else w + delta)
    return out


def analog_mvm(x: torch.Tensor, w: torch.Tensor, per: Periphery, src: NoiseSource
               ) -> torch.Tensor:
    """y = W_g·x of every input row and group through DESIGN.md §2.1 steps 1-7: noise
    management, DAC, input/weight/output noise, ADC and iterative bound management.

    ``x`` is rows × groups × in, ``w`` groups × out × in: group g of a row is one input vector
    of its own tile (a grouped convolution's groups; one group for a plain layer), with its own
    alpha and its own bound-management retries. Returns rows × groups × out.
    """
    hw = per.hw
    n_rows, n_groups, n_in = x.shape
    n_out = w.shape[1]
    if hw.noise_management == "abs_max":
        alpha = x.detach().abs().amax(2) if n_in else x.new_zeros((n_rows, n_groups))
    else:
        alpha = x.new_full((n_rows, n_groups),
                           1.0 if hw.noise_management == "none" else hw.nm_constant)
    if per.inp_noise > 0:
        alpha = torch.where(alpha > 0, alpha, torch.ones_like(alpha))
    todo = alpha > 0                                     # (row, group) pairs still to convert
    inv_alpha = 1.0 / torch.where(todo, alpha, torch.ones_like(alpha))
    wt = w.transpose(1, 2).contiguous()                  # groups × in × out
    abs_wt = wt.abs() if hw.w_noise > 0 and hw.w_noise_type == "pcm_read" else None
    step_in, step_out, bound = float(per.step_in), float(per.step_out), float(per.bound)
    out = x.new_zeros((n_rows, n_groups, n_out))
    rows = torch.nonzero(todo.any(1)).flatten()
    r = 1.0
    while rows.numel():
        last = hw.bound_management == "none" or r > per.r_last
        every = rows.numel() == n_rows        # the first pass, usually: no gather, no scatter
        scale = ((inv_alpha if every else inv_alpha[rows]) / r)[:, :, None]
        xq = quantize((x if every else x[rows]) * scale, step_in, 1.0)
        if per.inp_noise > 0:
            xq = xq + float(per.inp_noise) * src.normal(tuple(xq.shape), xq)
        y = _matmul(xq, wt)
        if per.w_noise > 0:
            sq = xq * xq
            sigma = sq.sum(2, keepdim=True).sqrt() if abs_wt is None else _matmul(sq, abs_wt).sqrt()
            y = y + float(per.w_noise) * sigma.detach() * src.normal(tuple(y.shape), y)
        if per.out_noise > 0:
            y = y + float(per.out_noise) * src.normal(tuple(y.shape), y)
        if step_out > 0:
            y = RoundSTE.apply(y, torch.tensor(step_out, dtype=y.dtype, device=y.device))
        sat = ((y.detach() > bound) | (y.detach() < -bound)).any(2)
        y = y.clamp(-bound, bound)
        pending = todo[rows]
        keep = pending if last else pending & ~sat
        if every and bool(keep.all()):
            out = y / scale
        else:
            at_row, at_group = torch.nonzero(keep, as_tuple=True)
            out = out.index_put((rows[at_row], at_group), (y / scale)[at_row, at_group])
        if last:
            break
        todo = todo.index_put((rows,), pending & sat)
        rows = rows[(pending & sat).any(1)]
        r *= 2.0
    return out


def _matmul(x: torch.Tensor, wt: torch.Tensor) -> torch.Tensor:
    """rows × groups × in times groups × in × out; one group is a plain GEMM (the engine's)."""
    if wt.shape[0] == 1:
        return (x[:, 0] @ wt[0])[:, None]
    return torch.einsum("mgi,gio->mgo", x, wt)


def _linear(layer: nn.Linear, spec: NoiseSpec, per: Periphery | None, src: NoiseSource,
            x: torch.Tensor) -> torch.Tensor:
    parts = []
    for xk, wk in zip(torch.tensor_split(x, spec.levels), noisy_weights(layer.weight, spec, src)):
        if per is None:
            parts.append(F.linear(xk, wk))
            continue
        flat = xk.reshape(-1, 1, xk.shape[-1])
        parts.append(analog_mvm(flat, wk[None], per, src).reshape(*xk.shape[:-1], wk.shape[0]))
    y = parts[0] if len(parts) == 1 else torch.cat(parts)
    return y if layer.bias is None else y + layer.bias


def _conv(layer: nn.Conv2d, spec: NoiseSpec, per: Periphery | None, src: NoiseSource,
          x: torch.Tensor) -> torch.Tensor:
    parts = []
    for xk, wk in zip(torch.tensor_split(x, spec.levels), noisy_weights(layer.weight, spec, src)):
        parts.append(layer._conv_forward(xk, wk, None) if per is None
                     else _analog_conv(layer, xk, wk, per, src))
    y = parts[0] if len(parts) == 1 else torch.cat(parts)
    return y if layer.bias is None else y + layer.bias.view(1, -1, 1, 1)


def _analog_conv(layer: nn.Conv2d, x: torch.Tensor, w: torch.Tensor, per: Periphery,
                 src: NoiseSource) -> torch.Tensor:
    """Conv2d as the engine computes it: im2col rows (columns in (C, kh, kw) order), each group
    its own tile reading its own column range."""
    from mc_engine.analog.convert import _conv_padding

    n, _, h, wd = x.shape
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.stride, layer.dilation
    ph, pw = _conv_padding(layer, "")
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    cols = F.unfold(x, (kh, kw), dilation=(dh, dw), padding=(ph, pw), stride=(sh, sw))
    rows = cols.transpose(1, 2).reshape(n * ho * wo, -1)
    groups = layer.groups
    y = analog_mvm(rows.view(len(rows), groups, -1), w.reshape(groups, w.shape[0] // groups, -1),
                   per, src).reshape(len(rows), layer.out_channels)
    return y.view(n, ho * wo, layer.out_channels).transpose(1, 2).reshape(
        n, layer.out_channels, ho, wo)


@contextmanager
def noisy_forward(model: nn.Module, spec: NoiseSpec, src: NoiseSource) -> Iterator[nn.Module]:
    """Within the block, every Linear and Conv2d of ``model`` runs the noisy forward; the model,
    its parameters and its state_dict are otherwise untouched (nothing to undo on save)."""
    if not spec.active:
        yield model
        return
    per = Periphery(spec.hardware) if spec.periphery else None
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    for m in layers:
        fn = _linear if isinstance(m, nn.Linear) else _conv
        m.forward = partial(fn, m, spec, per, src)
    try:
        yield model
    finally:
        for m in layers:
            del m.forward


@torch.no_grad()
def clip_weights(model: nn.Module, k: float) -> None:
    """Clip every Linear/Conv2d weight to ±k·std of that layer's weights (after a step)."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)) and m.weight.numel() > 1:
            bound = k * float(m.weight.std())
            m.weight.clamp_(-bound, bound)
