"""The PCM device statistics of :mod:`mc_engine.kernels.pcm`, in torch ops (docs/physics.md).

``program`` and ``drift_read`` are :func:`~mc_engine.kernels.pcm.pcm_program` and
:func:`~mc_engine.kernels.pcm.pcm_drift_read` written as tensor operations on any torch device,
with the same draws (device i: normals 2i and 2i + 1 of the stream ``key`` when programmed,
normal i when read) and the same precision of every step: conductances, the drift exponent and
the noise scales in float64, the logs and powers in the float32 Cephes polynomials of
:mod:`mc_engine.analog.torch_fastmath`. On the CPU the results are the Numba kernels' bit for bit
(tests/test_torch_pcm.py); on a GPU they can differ by the rounding of fused operations.

Many streams in one call: ``key`` may be an int64 tensor of per-device keys
(:func:`mc_engine.analog.torch_rng.key_bits`) and ``index`` each device's index in its stream,
so the devices of many tiles are programmed or read at once with the rows each tile would get
on its own.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mc_engine.analog.torch_fastmath import exp, f32, log
from mc_engine.analog.torch_rng import normal
from mc_engine.kernels.pcm import T0_S, T_READ_S

_F1E7 = f32(1e-7)
_F1E6 = f32(1e-6)
_F065 = f32(0.65)

Key = int | np.uint64 | torch.Tensor


def _index(g: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    if index is None:
        return torch.arange(g.shape[0], dtype=torch.int64, device=g.device)
    return index.to(torch.int64)


def _per_device(key: Key) -> Key:
    """A key tensor (one per device) as a column, so that it broadcasts over 2 draws each."""
    return key[:, None] if isinstance(key, torch.Tensor) and key.ndim == 1 else key


def program(g_target: torch.Tensor, key: Key, g_max: float, prog_scale: float,
            drift_scale: float, index: torch.Tensor | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(g_prog, nu) of the devices ``g_target`` (float64, µS): programming noise and drift
    exponent, :func:`mc_engine.kernels.pcm.pcm_program`. ``index``: each device's index in
    its stream (default 0, 1, ...)."""
    gt = g_target.to(torch.float64)
    i = _index(gt, index)
    counters = i[:, None] * 2 + torch.arange(2, dtype=torch.int64, device=gt.device)
    z = normal(_per_device(key), counters).to(torch.float64)
    inv = 1.0 / g_max
    scale = (g_max / 25.0) * prog_scale
    x = gt * inv
    sig = (0.26348 + 1.9650 * x - 1.1731 * x * x) * scale
    gp = gt + sig * z[:, 0]
    g_prog = torch.where(gp > 0.0, gp, 0.0)
    xl = log(torch.clamp_min(x.to(torch.float32), _F1E7)).to(torch.float64)
    mu = torch.clamp(-0.0155 * xl + 0.0244, 0.049, 0.1)
    sd = torch.clamp(-0.0125 * xl - 0.0059, 0.008, 0.045)
    nu = torch.abs(mu + sd * z[:, 1]) * drift_scale
    return g_prog, nu


def drift_read(g_prog: torch.Tensor, nu: torch.Tensor, key: Key, t: float, g_max: float,
               read_scale: float, index: torch.Tensor | None = None) -> torch.Tensor:
    """The conductances (float64, µS) read ``t`` seconds after programming: drift, then fresh
    1/f read noise, :func:`mc_engine.kernels.pcm.pcm_drift_read`."""
    gp = g_prog.to(torch.float64)
    log_ratio = f32(math.log((t + T0_S) / T0_S))
    noise = math.sqrt(math.log((t + T0_S + T_READ_S) / (2.0 * T_READ_S))) * read_scale
    inv = 1.0 / g_max
    z = normal(key, _index(gp, index)).to(torch.float64)
    gd = gp * exp(-nu.to(torch.float32) * log_ratio).to(torch.float64)
    x_pow = exp(_F065 * log(torch.clamp_min((gp * inv).to(torch.float32), _F1E6)))
    # A scalar over a tensor is reciprocal-then-multiply in torch (not correctly rounded): a
    # tensor numerator divides exactly as the kernel does.
    q = torch.clamp_max(torch.full_like(gp, 0.0088) / torch.clamp_min(x_pow.to(torch.float64),
                                                                      1e-3), 0.2)
    g = gd + torch.abs(gd) * q * noise * z
    return torch.where(g > 0.0, g, 0.0)
