"""The building blocks of the torch execution of a tile's pass (docs/physics.md, "Tile forward"):
a tile's arrays on the execution's device, the DAC/ADC quantizer, the noise draws, the
short-term weight-noise sigma, IR drop and the ADC epilogue. The Numba execution calls
:func:`weight_noise_sigma` and :func:`ir_drop_term` too (one formula for both); the pass that
uses the rest is :mod:`mc_engine.analog.torch_pass`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from mc_engine.analog.noise import KIND_OUT, KIND_W, MVMNoise
from mc_engine.analog.torch_rng import (
    Fused,
    correct_sqrt,
    key_bits,
    normal,
    normal_rows,
    row_counters,
)
from mc_engine.errors import UserInputError


@dataclass
class DeviceArrays:
    """A tile's arrays on the execution's device: the array matrix (in × columns), |matrix|
    for 'pcm_read' noise or IR drop, IR drop's row weighting, and the digital factor
    comp/k (rebuilt when the drift compensation changes)."""

    wt: torch.Tensor
    abs_noise: torch.Tensor | None = None
    abs_wt: torch.Tensor | None = None
    ir_f: torch.Tensor | None = None
    post: torch.Tensor | None = None
    post_of: object = None


def arrays(tile, device: torch.device) -> DeviceArrays:
    """The device copy of ``tile``'s arrays (made once per set of weights). A tile without
    drift compensation (``comp`` None: training's tiles) brings its arrays with it."""
    a = tile.device_arrays
    if tile.comp is None:
        return a
    if a is None:
        hw = tile.per.hw
        a = DeviceArrays(wt=tile.w_analog_t.to(device))
        if hw.ir_drop > 0 or (hw.w_noise > 0 and hw.w_noise_type == "pcm_read"):
            a.abs_wt = tile._abs_array().to(device)
        if hw.w_noise > 0 and hw.w_noise_type == "pcm_read":
            a.abs_noise = tile._abs_w()[0].to(device)
        if hw.ir_drop > 0:
            a.ir_f = tile.ir_rows().to(device)
        tile.device_arrays = a
    if a.post_of is not tile.comp:
        a.post = torch.from_numpy(tile.comp / tile.k).to(a.wt.device)
        a.post_of = tile.comp
    return a


class RoundSTE(torch.autograd.Function):
    """rint(v/step)·step (half to even) forward; the identity backward (straight through)."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, step: float) -> torch.Tensor:
        return torch.round(v / step) * step

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def _round(v: torch.Tensor, step: float) -> torch.Tensor:
    """rint(v/step)·step; in grad mode the gradient passes straight through."""
    return RoundSTE.apply(v, step) if v.requires_grad else torch.round(v / step) * step


def quantize(v: torch.Tensor, step: float, bound: float) -> torch.Tensor:
    """The DAC/ADC quantizer: rint(v/step)·step (half to even; step 0 = no rounding), clipped
    at ±bound; in grad mode rounding passes the gradient straight through."""
    if step > 0:
        v = _round(v, step)
    return v.clamp(-bound, bound) if math.isfinite(bound) else v


def _normal(noise, words: tuple[int, ...], ids: torch.Tensor, n: int) -> torch.Tensor:
    """Standard normals for the (len(ids) × n) elements of rows ``ids`` of the stream ``words``
    of ``noise``: counter-based for the engine's MVMNoise (the Numba kernels' draws), from the
    noise object itself otherwise (training's generator)."""
    if isinstance(noise, MVMNoise):
        return normal_rows(int(noise.stream(*words)), ids, n)
    return noise.normal_rows(words, ids, n)


def weight_noise_sigma(per, x3: torch.Tensor, abs_w: torch.Tensor | None) -> torch.Tensor:
    """Sigma of the short-term weight noise for DAC outputs x3 (rows × groups × inputs):
    w_noise·‖x~‖₂ per (row, group) ('additive_constant', abs_w None: rows·groups), or
    w_noise·sqrt(Σ_j |W_ij| x~_j²) per output ('pcm_read', abs_w groups × in × out:
    rows·groups × out). The one formula of both executions (Periphery.weight_noise)."""
    sq = x3 * x3
    w = float(per.w_noise)
    if abs_w is None:
        return w * correct_sqrt(sq.sum(-1)).reshape(-1)
    sigma = correct_sqrt(torch.einsum("mgi,gio->mgo", sq, abs_w))
    return w * sigma.reshape(-1, abs_w.shape[-1])


def static_alpha(hw, r: float | None) -> np.float32:
    """The alpha of every input vector under a static noise management: 1 ('none'),
    nm_constant ('constant') or the tile's input range ``r`` ('calibrated', 'learned'; None
    when its ranges were never set). The one rule of both executions."""
    mode = hw.noise_management
    if mode == "none":
        return np.float32(1.0)
    if mode == "constant":
        return np.float32(hw.nm_constant)
    if r is None:
        how = "program(seed, calibration=x_train) first" if mode == "calibrated" else \
            "convert a model that carries them (<layer>.input_range)"
        raise UserInputError(f"noise_management = {mode!r} needs each tile's input range: "
                             f"{how}", key="noise_management")
    return np.float32(r)


def ir_drop_term(hw, x: torch.Tensor, w_t: torch.Tensor, abs_w_t: torch.Tensor,
                 f: torch.Tensor, n_rows: int) -> torch.Tensor:
    """aihwkit's IR drop of the read of inputs ``x`` (rows × in) on ``w_t`` (in × columns):
    s·c·((x·f)·Wᵀ), a = (n/G)·|x|·|W|ᵀ, c = a·(a·(0.05·a − 0.2) + 0.5). The one formula of
    both executions (Periphery.ir_drop subtracts it)."""
    return ir_drop_term_maps(hw, x.abs() @ abs_w_t, (x * f) @ w_t, n_rows)


def ir_drop_term_maps(hw, abs_sums: torch.Tensor, weighted: torch.Tensor, n_rows: int
                      ) -> torch.Tensor:
    """IR drop from its two sums, however computed (a GEMM of rows, or the direct
    convolution): ``abs_sums`` = |x|·|W|ᵀ, ``weighted`` = (x·f)·Wᵀ, ``n_rows`` the tile's rows."""
    a = abs_sums * float(np.float32(n_rows / hw.ir_drop_g_ratio))
    c = a * (a * (a * float(np.float32(0.05)) - float(np.float32(0.2))) + 0.5)
    return c * weighted * float(np.float32(hw.ir_drop))


def key_tensor(noise: MVMNoise, kind: int, device) -> torch.Tensor:
    """The key of stream ``kind`` of ``noise`` as an int64 tensor on ``device``."""
    return _key(noise, (kind,), device)


def _adc(per, y: torch.Tensor, sigma_w: torch.Tensor | None, noise: MVMNoise | None,
         ids: torch.Tensor, step: float, bound: float, group: tuple[int, ...] = ()
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight noise, output noise and the ADC of one conversion (adc_rows' order): (clipped
    outputs, which rows saturated). ``sigma_w``: per row (rows) or per element, or None."""
    n = y.shape[1]
    if sigma_w is not None:
        sigma_w = sigma_w.detach()
        sigma_w = sigma_w[:, None] if sigma_w.dim() == 1 else sigma_w
    out_noise = noise is not None and per.out_noise > 0
    if not y.requires_grad and (isinstance(noise, MVMNoise) or noise is None):
        key_w = _key(noise, (KIND_W, *group), y.device) if sigma_w is not None else None
        key_out = _key(noise, (KIND_OUT, *group), y.device) if out_noise else None
        return epilogue(y, sigma_w, key_w, key_out, ids, float(per.out_noise), step, bound)
    if sigma_w is not None:
        y = y + sigma_w * _normal(noise, (KIND_W, *group), ids, n)
    if out_noise:
        y = y + float(per.out_noise) * _normal(noise, (KIND_OUT, *group), ids, n)
    if step > 0:
        y = _round(y, step)
    over = (y > bound) | (y < -bound)
    return y.clamp(-bound, bound), over.any(1)


def _key(noise: MVMNoise, words: tuple[int, ...], device) -> torch.Tensor:
    return torch.tensor(key_bits(noise.stream(*words)), dtype=torch.int64, device=device)


def _epilogue(y: torch.Tensor, sigma: torch.Tensor | None, key_w: torch.Tensor | None,
              key_out: torch.Tensor | None, ids: torch.Tensor, out_noise: torch.Tensor,
              step: torch.Tensor, bound: torch.Tensor, quantized: bool
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """The ADC epilogue (kernels.periphery.adc_rows) on y (… × rows × n): weight noise of
    ``sigma`` (broadcast to y) from stream ``key_w``, output noise from ``key_out`` (None:
    off), rounding to ``step``, clipping at ±``bound``; (outputs, which rows saturated). The
    keys may carry leading dimensions (one stream per chip)."""
    n = y.shape[-1]
    if key_w is not None:
        y = y + sigma * normal(key_w, row_counters(ids, n))
    if key_out is not None:
        y = y + out_noise * normal(key_out, row_counters(ids, n))
    if quantized:
        y = torch.round(y / step) * step
    over = (y > bound) | (y < -bound)
    return torch.minimum(torch.maximum(y, -bound), bound), over.any(-1)


_EPILOGUE = Fused(_epilogue, "the ADC epilogue")


def epilogue(y: torch.Tensor, sigma: torch.Tensor | None, key_w: torch.Tensor | None,
             key_out: torch.Tensor | None, ids: torch.Tensor, out_noise: float, step: float,
             bound: float) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_epilogue`, compiled into one fused kernel where the generator is
    (:func:`mc_engine.analog.torch_rng.compile_wanted`: on CUDA by default), the same
    operations eagerly elsewhere or if compilation fails."""
    dev = y.device
    args = (y, sigma, key_w, key_out, ids,
            torch.tensor(out_noise, dtype=torch.float32, device=dev),
            torch.tensor(step if step > 0 else 1.0, dtype=torch.float32, device=dev),
            torch.tensor(bound, dtype=torch.float32, device=dev), step > 0)
    return _EPILOGUE(dev, *args)
