"""The differentiable noisy forward of hardware-aware training (docs/physics.md).

During training every ``nn.Linear`` and ``nn.Conv2d`` of the model computes its output the way
the Monte Carlo engine's analog tiles will, in torch, so that gradients flow through it:

- tiles, scales and units (:mod:`mc_engine.train.arrays`): the layer split at
  ``max_input_size`` × ``max_output_size`` like the engine's, every tile with its own array
  matrix in the units its ADC sees (weight units, with ω's k; conductance units g/g_max of the
  engine's own mapping when ``weight_bits > 0``, bit slices included), its own programming noise
  on its own conductance scale (the device model through the engine's mapping) and Gaussian
  weight noise of ``level`` times the weight g_max stands for, fresh for every batch. With
  several levels the batch is split into as many consecutive chunks, each seeing its own draw at
  its own level (multi-scale fusion); BatchNorm still sees the whole batch.
- inputs and outputs (only when a periphery option is on): per tile, noise management, the DAC,
  input, short-term weight and output noise, the ADC, iterative bound management and the
  digital recombination (slices, rescale, 1/k), with the float32 operation order of
  :mod:`mc_engine.kernels.periphery` and :mod:`mc_engine.analog.readout` and the constants
  of :class:`mc_engine.analog.periphery.Periphery`, so that with the noise off the quantized
  outputs are the Monte Carlo engine's; tile outputs summed digitally. Rounding passes the
  gradient straight through. Without a periphery option the layer is a plain torch layer on the
  weights its tiles hold (to float32 rounding of the engine's).
- activation noise (``noise.act_noise``, :mod:`mc_engine.train.act_noise`): every layer's output
  y·(1 + σξ) after all of the above, levels mapped to batch chunks as the weight noise's.
- learned input ranges (``noise.input_range = 'learn'``, :mod:`mc_engine.train.ranges`): each
  layer's rows clipped to its per-chunk ranges with aihwkit's gradient, then the pass with
  alpha = r (noise_management 'learned').

The engine itself never runs here: drift, read noise and drift compensation are inference-time
effects and are left to the study; read-out schemes the forward does not mirror are rejected by
the train file (:mod:`mc_engine.train.spec`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mc_engine.analog import torch_pass
from mc_engine.analog.periphery import Periphery
from mc_engine.errors import UserInputError
from mc_engine.hardware import HardwareConfig
from mc_engine.train.act_noise import with_act_noise
from mc_engine.train.arrays import TileArrays, tile_arrays, tile_weights
from mc_engine.train.mvm import matrices
from mc_engine.train.ranges import (
    RangeLearning,
    clip_rows,
    column_ranges,
    init_from_data,
    matrix_ranges,
)
from mc_engine.train.sequence import (
    conv_as_2d,
    patch_sequence_layers,
    sequence_layers,
    weight_matrices,
)

#: The periphery of training: everything off unless a [noise] key switches it on.
TRAIN_PERIPHERY = {"dac_bits": 0, "adc_bits": 0, "out_noise": 0.0, "out_bound": math.inf,
                   "device": "ideal"}


@dataclass(frozen=True)
class NoiseSpec:
    """What the training forward injects. ``hardware`` carries the tiles and their mapping
    (sizes, ω, weight quantization and bit slices), the periphery (DAC, ADC, noise, noise and
    bound management) and, with ``program``, the device model of the programming noise;
    ``weight_noise`` holds the multi-scale levels (relative to the weight g_max stands for,
    empty = off)."""

    hardware: HardwareConfig = field(default_factory=lambda: HardwareConfig(**TRAIN_PERIPHERY))
    weight_noise: tuple[float, ...] = ()
    clip_std: float = 0.0
    program: bool = False
    #: Learned input ranges (noise.input_range = 'learn'; the hardware's noise_management is
    #: then 'learned'), None = off.
    ranges: RangeLearning | None = None
    #: Activation noise levels (mc_engine/train/act_noise.py), empty = off.
    act_noise: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for key, ok, message in _mirrored(self.hardware):
            if not ok:
                raise UserInputError(message, key=key)
        if self.ranges is not None and not self.periphery:
            raise UserInputError("learned input ranges act in the DAC/ADC path: switch a "
                                 "periphery option on (dac_bits, adc_bits, inp_noise, "
                                 "out_noise, w_noise or a finite out_bound)", key="input_range")

    @property
    def weight_bits(self) -> int:
        return self.hardware.weight_bits

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
            any(level > 0 for level in (*self.weight_noise, *self.act_noise))


def _mirrored(hw: HardwareConfig):
    """(key, whether the training forward mirrors it, why not) of the read-outs it leaves out."""
    yield ("offset", hw.offset == "differential",
           f"offset = {hw.offset!r} is not mirrored by the training forward (differential "
           "pairs only): train with 'differential'")
    yield ("readout", hw.readout == "parallel",
           "readout = 'row_by_row' is not mirrored by the training forward (one conversion "
           "per tile and slice): train with 'parallel'")
    yield ("input_bits_per_cycle", hw.input_bits_per_cycle == 0,
           "bit-serial inputs are not mirrored by the training forward: train with "
           "input_bits_per_cycle = 0")
    yield ("slice_recombination", not (hw.slice_recombination == "analog" and hw.n_slices > 1
                                       and hw.w_noise > 0),
           "the training forward does not mirror the per-device weight noise of analog slice "
           "recombination: use 'digital', or w_noise = 0")


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


def _levels(spec: NoiseSpec) -> tuple[float, ...]:
    return spec.weight_noise or (0.0,)


def noisy_weights(w: torch.Tensor, spec: NoiseSpec, src: NoiseSource, groups: int = 1
                  ) -> list[torch.Tensor]:
    """The layer's weights (its own shape, weight units) as its tiles compute with them in this
    batch, one tensor per multi-scale level (the digital path: no periphery option on)."""
    w3 = w.reshape(groups, w.shape[0] // groups, -1)
    return [tile_weights(w3, spec.hardware, level, spec.program, src).reshape(w.shape)
            for level in _levels(spec)]


def _draws(layer: nn.Module, spec: NoiseSpec, per: Periphery | None, src: NoiseSource,
           groups: int) -> list:
    """Per multi-scale level: the layer's weights (digital path) or its tiles (analog path)."""
    if per is None:
        return noisy_weights(layer.weight, spec, src, groups)
    w = layer.weight
    w3 = w.reshape(groups, w.shape[0] // groups, -1)
    return [tile_arrays(w3, spec.hardware, level, spec.program, src) for level in _levels(spec)]


def _ranges(layer: nn.Module, spec: NoiseSpec, rows, cols: torch.Tensor) -> np.ndarray:
    """Init the layer's ranges from this batch's rows while due (training mode; ``rows``
    is called for them only then), and return them as the pass's alphas (groups × chunks)."""
    learn = spec.ranges
    if layer.training and bool((layer.input_range_inits <
                                learn.init_from_data).any()):
        init_from_data(layer, rows().detach(), cols.to(layer.weight.device), learn)
    return matrix_ranges(layer)


def _linear(layer: nn.Linear, spec: NoiseSpec, per: Periphery | None, src: NoiseSource,
            x: torch.Tensor, cols: torch.Tensor | None = None,
            draws: list | None = None) -> torch.Tensor:
    """The noisy forward of a Linear (``layer``: anything with its weight, bias, in_features,
    out_features); ``draws``: this batch's weights or tiles (:func:`_draws`) when already
    drawn (a recurrent matrix reused at every step), None = draw them now."""
    parts = []
    ranges = None
    if cols is not None:
        flat = x.reshape(-1, x.shape[-1])
        ranges = _ranges(layer, spec, lambda: flat, cols)
        x = clip_rows(layer, flat, cols, spec.ranges).reshape(x.shape)
    draws = _draws(layer, spec, per, src, 1) if draws is None else draws
    for xk, draw in zip(torch.tensor_split(x, spec.levels), draws):
        if per is None:
            parts.append(F.linear(xk, draw))
            continue
        mats = matrices(draw, 1, layer.out_features, layer.in_features, per, src)
        if ranges is not None:
            mats[0].input_ranges = ranges[0]
        flat = xk.reshape(-1, xk.shape[-1])
        parts.append(torch_pass.matrix_forward(mats[0], flat).reshape(*xk.shape[:-1],
                                                                       layer.out_features))
    y = parts[0] if len(parts) == 1 else torch.cat(parts)
    return y if layer.bias is None else y + layer.bias


def _conv(layer: nn.Conv2d, spec: NoiseSpec, per: Periphery | None, src: NoiseSource,
          x: torch.Tensor, cols: torch.Tensor | None = None) -> torch.Tensor:
    parts = []
    learned = None
    if cols is not None:
        from mc_engine.analog.convert import _conv_padding

        geometry = SimpleNamespace(kernel_size=layer.kernel_size, stride=layer.stride,
                                   dilation=layer.dilation, padding=_conv_padding(layer, ""))
        ranges = _ranges(layer, spec, lambda: torch_pass.patch_rows(geometry, x), cols)
        learned = (ranges, partial(clip_rows, layer, cols=cols, learn=spec.ranges))
    for xk, draw in zip(torch.tensor_split(x, spec.levels),
                        _draws(layer, spec, per, src, layer.groups)):
        if per is None:
            parts.append(layer._conv_forward(xk, draw, None))
        elif isinstance(layer, nn.Conv1d) or layer.padding_mode != "zeros":
            y = _analog_conv(*conv_as_2d(layer, xk), draw, per, src, learned)
            parts.append(y.squeeze(2) if isinstance(layer, nn.Conv1d) else y)
        else:
            parts.append(_analog_conv(layer, xk, draw, per, src, learned))
    y = parts[0] if len(parts) == 1 else torch.cat(parts)
    if layer.bias is None:
        return y
    return y + layer.bias.view(1, -1, *([1] * (y.dim() - 2)))


def _analog_conv(layer: nn.Conv2d, x: torch.Tensor, tiles: list[TileArrays], per: Periphery,
                 src: NoiseSource, learned=None) -> torch.Tensor:
    """Conv2d as the engine computes it (the torch execution's convolution: im2col rows, each
    group on tiles of its own, grouped layers in one batched pass)."""
    from mc_engine.analog.convert import _conv_padding

    n, _, h, wd = x.shape
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.stride, layer.dilation
    ph, pw = _conv_padding(layer, "")
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    groups = layer.groups
    n_in = layer.weight[0].numel()
    view = SimpleNamespace(kernel_size=layer.kernel_size, stride=layer.stride,
                           dilation=layer.dilation, padding=(ph, pw),
                           out_channels=layer.out_channels,
                           matrices=matrices(tiles, groups, layer.out_channels // groups, n_in,
                                             per, src))
    if learned is not None:
        ranges, view.clip_rows = learned
        for g, m in enumerate(view.matrices):
            m.input_ranges = ranges[g]
    return torch_pass.conv_forward(view, x, (ho, wo))


def check_trainable(model: nn.Module, spec: NoiseSpec) -> None:
    """UserInputError naming the first layer the noisy forward does not mirror: learned input
    ranges and activation noise are for Linear and Conv2d only."""
    if spec.active and spec.ranges is not None:
        for name, m in sequence_layers(model):
            raise UserInputError(
                f"layer {name or '0'!r} ({type(m).__name__}): learned input ranges "
                f"(noise.input_range = 'learn') are learned for Linear and Conv2d layers "
                f"only; train this model with input_range off", key="train.input_range")
    if spec.active and any(level > 0 for level in spec.act_noise):
        for name, m in sequence_layers(model):
            raise UserInputError(
                f"layer {name or '0'!r} ({type(m).__name__}): activation noise "
                f"(noise.act_noise) is injected on Linear and Conv2d outputs only; train "
                f"this model without act_noise", key="noise.act_noise")


@contextmanager
def noisy_forward(model: nn.Module, spec: NoiseSpec, src: NoiseSource) -> Iterator[nn.Module]:
    """Within the block, every Linear and Conv2d of ``model`` runs the noisy forward; the model,
    its parameters and its state_dict are otherwise untouched (nothing to undo on save)."""
    if not spec.active:
        yield model
        return
    check_trainable(model, spec)
    per = Periphery(spec.hardware) if spec.periphery else None
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    for m in layers:
        fn = _linear if isinstance(m, nn.Linear) else _conv
        cols = column_ranges(m, spec.hardware).to(m.weight.device) \
            if spec.ranges is not None else None
        m.forward = partial(fn, m, spec, per, src, cols=cols)
        if any(level > 0 for level in spec.act_noise):
            m.forward = with_act_noise(m.forward, spec.act_noise, src)
    layers += patch_sequence_layers(model, partial(_linear, spec=spec, per=per, src=src),
                                    partial(_draws, spec=spec, per=per, src=src, groups=1),
                                    partial(_conv, spec=spec, per=per, src=src))
    try:
        yield model
    finally:
        for m in layers:
            del m.forward


@torch.no_grad()
def clip_weights(model: nn.Module, k: float) -> None:
    """Clip every analog weight matrix (Linear, convolutions, and the matrices of attention
    and recurrent layers) to ±k·std of that matrix's weights (after a step)."""
    for w in weight_matrices(model):
        if w.numel() > 1:
            bound = k * float(w.std())
            w.clamp_(-bound, bound)
