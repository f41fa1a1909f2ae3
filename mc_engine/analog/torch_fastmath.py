"""The float32 log, exp and cos(2 pi u) of :mod:`mc_engine.kernels.fastmath`, in torch ops.

The same Cephes polynomials, operation for operation, in float32 tensor operations whose
constants are exact float32 values (a Python float holding a float32 value: torch then computes
in float32 as the Numba kernels do), and the exponent put into or read from the bits with
``Tensor.view``. On the CPU the results are the Numba kernels' bit for bit
(tests/test_torch_pcm.py, tests/test_torch_rng.py); on a GPU they can differ by the rounding of
fused operations. Any torch device. The counter-based generator that uses them is
:mod:`mc_engine.analog.torch_rng`; the PCM device statistics, :mod:`mc_engine.analog.torch_pcm`.
"""

from __future__ import annotations

import numpy as np
import torch


def f32(c: float) -> float:
    """A float32 constant (as the exact Python float the float32 holds)."""
    return float(np.float32(c))


_SQRTHF = f32(0.707106781186547524)
_LOG_P = [f32(c) for c in (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
                           1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
                           3.3333331174e-1)]
_LN2_HI = f32(0.693359375)
_LN2_LO = f32(-2.12194440e-4)


def log(v: torch.Tensor) -> torch.Tensor:
    """ln(v) of finite float32 v > 0: Cephes logf, :func:`mc_engine.kernels.fastmath.log`."""
    bits = v.view(torch.int32)
    e = (torch.bitwise_and(torch.bitwise_right_shift(bits, 23), 0xFF) - 126).to(torch.float32)
    m = torch.bitwise_or(torch.bitwise_and(bits, 0x007FFFFF), 0x3F000000).view(torch.float32)
    small = m < _SQRTHF
    e = torch.where(small, e - 1.0, e)
    x = torch.where(small, m + m, m) - 1.0
    z = x * x
    y = _LOG_P[0] * x + _LOG_P[1]
    for c in _LOG_P[2:]:
        y = y * x + c
    y = y * x * z
    y = y + _LN2_LO * e
    y = y - 0.5 * z
    return x + y + _LN2_HI * e


_TWO_PI = f32(2.0 * np.pi)
_COS_P = [f32(1.0 / 479001600.0), -f32(1.0 / 3628800.0), f32(1.0 / 40320.0), -f32(1.0 / 720.0),
          f32(1.0 / 24.0), -0.5, 1.0]


def cos2pi(u: torch.Tensor) -> torch.Tensor:
    """cos(2 pi u) of float32 u in [0, 1): :func:`mc_engine.kernels.fastmath.cos2pi`."""
    a = torch.abs(u - 0.5)
    far = a > 0.25
    b = torch.where(far, 0.5 - a, a)
    x = _TWO_PI * b
    x2 = x * x
    c = torch.full_like(x2, _COS_P[0])
    for k in _COS_P[1:]:
        c = c * x2 + k
    return torch.where(far, c, -c)


_LOG2E = f32(1.44269504088896341)
_EXP_P = [f32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                           1.6666665459e-1, 5.0000001201e-1)]


def exp(x: torch.Tensor) -> torch.Tensor:
    """e^x of float32 x, clamped to [-87, 88]: Cephes expf,
    :func:`mc_engine.kernels.fastmath.exp` (x = n ln2 + r, degree-7 polynomial of r, 2^n put
    into the exponent bits)."""
    x = torch.clamp(x, -87.0, 88.0)
    n = torch.floor(x * _LOG2E + 0.5)
    r = x - n * _LN2_HI
    r = r + n * f32(2.12194440e-4)
    z = r * r
    p = _EXP_P[0] * r + _EXP_P[1]
    for c in _EXP_P[2:]:
        p = p * r + c
    p = p * z + r + 1.0
    return p * torch.bitwise_left_shift(n.to(torch.int32) + 127, 23).view(torch.float32)


def correct_sqrt(x: torch.Tensor) -> torch.Tensor:
    """The correctly rounded float32 square root (torch's float32 CPU sqrt is not: ~17 % of
    results differ from IEEE's by one ulp); a float64 root rounded to float32 is exact
    rounding (53 ≥ 2·24 + 2 bits)."""
    return torch.sqrt(x.double()).to(torch.float32)
