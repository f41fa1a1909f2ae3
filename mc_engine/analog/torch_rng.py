"""The counter-based standard-normal generator of :mod:`mc_engine.kernels.rng`, in torch ops.

Draw ``i`` of the stream ``key`` is the same function as in the Numba kernels,

    h = splitmix64_finalizer(key XOR (i * 0x9E3779B97F4A7C15))
    z = sqrt(2 (32 ln 2 - ln v)) * cos(2 pi u2)
    v = (h >> 32) + 1,  u2 = (h & 0xFFFFFFFF >> 8) / 2^24

written in int64 tensor operations (multiplication wraps modulo 2^64 as unsigned arithmetic
does; the logical shifts are arithmetic shifts masked) and float32 operations: the log and cos
are the same Cephes polynomials as :mod:`mc_engine.kernels.fastmath`, operation for operation,
so on the CPU the draws are the Numba kernels' bit for bit (tests/test_torch_rng.py), and on a
GPU they differ at most by the rounding of fused operations. Any torch device.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch


def _signed(u: int) -> int:
    """A 64-bit unsigned constant as the int64 with the same bits."""
    u &= (1 << 64) - 1
    return u - (1 << 64) if u >= 1 << 63 else u


_GAMMA = _signed(0x9E3779B97F4A7C15)
_M1 = _signed(0xBF58476D1CE4E5B9)
_M2 = _signed(0x94D049BB133111EB)
_LOW32 = 0xFFFFFFFF


def _f(c: float) -> float:
    """A float32 constant (as the exact Python float the float32 holds)."""
    return float(np.float32(c))


def _srl(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 bits."""
    return torch.bitwise_and(torch.bitwise_right_shift(z, s), (1 << (64 - s)) - 1)


def mix64(z: torch.Tensor) -> torch.Tensor:
    """The splitmix64 finalizer on int64 tensors (bits as uint64)."""
    z = torch.bitwise_xor(z, _srl(z, 30)) * _M1
    z = torch.bitwise_xor(z, _srl(z, 27)) * _M2
    return torch.bitwise_xor(z, _srl(z, 31))


_SQRTHF = _f(0.707106781186547524)
_LOG_P = [_f(c) for c in (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
                          1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
                          3.3333331174e-1)]


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
    y = y + _f(-2.12194440e-4) * e
    y = y - 0.5 * z
    return x + y + _f(0.693359375) * e


_TWO_PI = _f(2.0 * np.pi)
_COS_P = [_f(1.0 / 479001600.0), -_f(1.0 / 3628800.0), _f(1.0 / 40320.0), -_f(1.0 / 720.0),
          _f(1.0 / 24.0), -0.5, 1.0]


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


_TWO_M24 = _f(2.0 ** -24)
_LN2_32 = _f(32.0 * 0.6931471805599453)


def normal(key: int | np.uint64 | torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    """Standard normal draws ``counters`` (int64 tensor, values in [0, 2^63)) of the stream
    ``key`` (a uint64, or an int64 tensor of keys (:func:`keys`) broadcast against the
    counters: one stream per chip of a chip batch), float32, on the counters' device."""
    k = key if isinstance(key, torch.Tensor) else _signed(int(key))
    h = mix64(torch.bitwise_xor(counters * _GAMMA, k))
    v = (_srl(h, 32) + 1).to(torch.float32)
    u2 = torch.bitwise_right_shift(torch.bitwise_and(h, _LOW32), 8).to(torch.float32) * _TWO_M24
    r2 = 2.0 * (_LN2_32 - log(v))
    return correct_sqrt(torch.clamp_min(r2, 0.0)) * cos2pi(u2)


def correct_sqrt(x: torch.Tensor) -> torch.Tensor:
    """The correctly rounded float32 square root (torch's float32 CPU sqrt is not: ~17 % of
    results differ from IEEE's by one ulp); a float64 root rounded to float32 is exact
    rounding (53 ≥ 2·24 + 2 bits)."""
    return torch.sqrt(x.double()).to(torch.float32)


def keys(values, device) -> torch.Tensor:
    """uint64 stream keys as an int64 tensor (the same bits) on ``device``."""
    return torch.tensor([_signed(int(v)) for v in values], dtype=torch.int64, device=device)


def row_counters(ids: torch.Tensor, n: int) -> torch.Tensor:
    """The counters ids[k]·n + j (k × n) of the elements of rows ``ids``: the MVM noise layout
    of :func:`mc_engine.kernels.periphery.adc_rows`."""
    return ids.to(torch.int64)[:, None] * n + torch.arange(n, dtype=torch.int64,
                                                          device=ids.device)[None, :]


def _normal_rows(key: torch.Tensor, ids: torch.Tensor, n: int) -> torch.Tensor:
    return normal(key, row_counters(ids, n))


#: MC_ENGINE_COMPILE: 'auto' (the default: compile on CUDA), '1' (everywhere), '0' (never).
COMPILE_ENV = "MC_ENGINE_COMPILE"
_FAST: dict[str, object] = {}


def _fast(device: torch.device):
    """The generator compiled into one fused kernel (torch.compile) for ``device``'s type, or
    None. Eager, a draw costs ~40 elementwise passes over its tensor; compiled, one (on this
    machine's CPU 40x faster, the same bits). Compilation takes tens of seconds once per
    process, so it is the default on CUDA only."""
    kind = device.type
    if kind not in _FAST:
        mode = os.environ.get(COMPILE_ENV, "auto")
        on = mode == "1" or (mode == "auto" and kind == "cuda")
        _FAST[kind] = torch.compile(_normal_rows, dynamic=True) if on else None
    return _FAST[kind]


def normal_rows(key: int | np.uint64 | torch.Tensor, ids: torch.Tensor, n: int) -> torch.Tensor:
    """Draws for a (len(ids) × n) block of rows ``ids`` (float32, on ids' device): counters
    ids[k]·n + j (:func:`row_counters`). ``key``: one stream, or a tensor of keys
    (:func:`keys`) broadcast in front (C × 1 × 1: one stream per chip)."""
    key_t = key if isinstance(key, torch.Tensor) else \
        torch.tensor(_signed(int(key)), dtype=torch.int64, device=ids.device)
    fast = _fast(ids.device)
    if fast is not None:
        try:
            return fast(key_t, ids, n)
        except Exception as err:             # no compiler, an unsupported backend: eager
            _FAST[ids.device.type] = None
            warnings.warn(f"torch.compile of the noise generator failed on {ids.device.type} "
                          f"({type(err).__name__}: {str(err)[:200]}); running it eagerly "
                          f"(slower; set {COMPILE_ENV}=0 to skip the attempt)", stacklevel=2)
    return _normal_rows(key_t, ids, n)
