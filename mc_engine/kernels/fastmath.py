"""Vectorisable float32 log, exp and cos(2 pi u) for Numba kernels.

Numba on these machines has no SVML, so ``math.log``/``math.exp``/``math.cos`` are scalar libm
calls that stop LLVM from vectorising a loop. These are polynomial approximations made of
integer and floating-point operations only (Cephes' logf and expf, relative error ~1e-7; an
even Taylor polynomial of cos on [0, pi/2] after an exact quadrant reduction, absolute error
< 1e-7), so the loops that use them vectorise (AVX-512: 16 lanes).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import types
from numba.extending import intrinsic

_SQRTHF = np.float32(0.707106781186547524)
_TWO_PI = np.float32(2.0 * np.pi)
_LOG2E = np.float32(1.44269504088896341)
_EXP_HI = np.float32(88.0)
_EXP_LO = np.float32(-87.0)


@intrinsic
def _f32_bits(typingctx, x):
    """The IEEE-754 bit pattern of a float32 as int32 (a register bitcast, vectorisable)."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))
    return types.int32(types.float32), codegen


@intrinsic
def _bits_f32(typingctx, x):
    """The float32 whose IEEE-754 bit pattern is the int32 ``x``."""
    if x != types.int32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


@njit(cache=True, nogil=True, inline="always")
def log(v):
    """ln(v) for a finite float32 v > 0 (Cephes logf: exponent from the bits, degree-9
    polynomial of the mantissa in [sqrt(1/2), sqrt(2)))."""
    bits = _f32_bits(v)
    e = np.float32(((bits >> 23) & 0xFF) - 126)
    m = _bits_f32(np.int32((bits & 0x007FFFFF) | 0x3F000000))      # in [0.5, 1)
    small = m < _SQRTHF
    e = e - np.float32(1.0) if small else e
    x = (m + m if small else m) - np.float32(1.0)
    z = x * x
    y = np.float32(7.0376836292e-2) * x - np.float32(1.1514610310e-1)
    y = y * x + np.float32(1.1676998740e-1)
    y = y * x - np.float32(1.2420140846e-1)
    y = y * x + np.float32(1.4249322787e-1)
    y = y * x - np.float32(1.6668057665e-1)
    y = y * x + np.float32(2.0000714765e-1)
    y = y * x - np.float32(2.4999993993e-1)
    y = y * x + np.float32(3.3333331174e-1)
    y = y * x * z
    y += np.float32(-2.12194440e-4) * e
    y -= np.float32(0.5) * z
    return x + y + np.float32(0.693359375) * e


@njit(cache=True, nogil=True, inline="always")
def cos2pi(u):
    """cos(2 pi u) for u in [0, 1): reduced exactly to b in [0, 1/4], then an even polynomial."""
    a = abs(u - np.float32(0.5))                   # cos(2 pi u) = -cos(2 pi a), a in [0, 1/2]
    far = a > np.float32(0.25)
    b = np.float32(0.5) - a if far else a          # cos(2 pi a) = -cos(2 pi b) when a > 1/4
    x = _TWO_PI * b
    x2 = x * x
    c = np.float32(1.0 / 479001600.0)
    c = c * x2 - np.float32(1.0 / 3628800.0)
    c = c * x2 + np.float32(1.0 / 40320.0)
    c = c * x2 - np.float32(1.0 / 720.0)
    c = c * x2 + np.float32(1.0 / 24.0)
    c = c * x2 - np.float32(0.5)
    c = c * x2 + np.float32(1.0)
    return c if far else -c


@njit(cache=True, nogil=True, inline="always")
def exp(x):
    """e^x for float32 x, clamped to [-87, 88] (Cephes expf: x = n ln2 + r, |r| <= ln2/2,
    degree-7 polynomial of r, 2^n put into the exponent bits)."""
    x = min(max(x, _EXP_LO), _EXP_HI)
    n = np.float32(np.floor(x * _LOG2E + np.float32(0.5)))
    r = x - n * np.float32(0.693359375)
    r = r + n * np.float32(2.12194440e-4)
    z = r * r
    p = np.float32(1.9875691500e-4) * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    p = p * z + r + np.float32(1.0)
    return p * _bits_f32(np.int32((np.int32(n) + 127) << 23))
