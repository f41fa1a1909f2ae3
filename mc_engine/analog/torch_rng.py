"""The counter-based standard-normal generator of :mod:`mc_engine.kernels.rng`, in torch ops.

Draw ``i`` of the stream ``key`` is the same function as in the Numba kernels,

    h = splitmix64_finalizer(key XOR (i * 0x9E3779B97F4A7C15))
    z = sqrt(2 (32 ln 2 - ln v)) * cos(2 pi u2)
    v = (h >> 32) + 1,  u2 = (h & 0xFFFFFFFF >> 8) / 2^24

written in int64 tensor operations (multiplication wraps modulo 2^64 as unsigned arithmetic
does; the logical shifts are arithmetic shifts masked) and float32 operations: the log and cos
are the same Cephes polynomials as :mod:`mc_engine.kernels.fastmath`, operation for operation
(:mod:`mc_engine.analog.torch_fastmath`), so on the CPU the draws are the Numba kernels' bit for
bit (tests/test_torch_rng.py), and on a GPU they differ at most by the rounding of fused
operations. Any torch device.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch

from mc_engine.analog.torch_fastmath import correct_sqrt, cos2pi, log
from mc_engine.analog.torch_fastmath import f32 as _f

__all__ = ["correct_sqrt", "cos2pi", "key_bits", "keys", "log", "mix64", "normal",
           "normal_rows", "row_counters"]


def _signed(u: int) -> int:
    """A 64-bit unsigned constant as the int64 with the same bits."""
    u &= (1 << 64) - 1
    return u - (1 << 64) if u >= 1 << 63 else u


_GAMMA = _signed(0x9E3779B97F4A7C15)
_M1 = _signed(0xBF58476D1CE4E5B9)
_M2 = _signed(0x94D049BB133111EB)
_LOW32 = 0xFFFFFFFF


def _srl(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 bits."""
    return torch.bitwise_and(torch.bitwise_right_shift(z, s), (1 << (64 - s)) - 1)


def mix64(z: torch.Tensor) -> torch.Tensor:
    """The splitmix64 finalizer on int64 tensors (bits as uint64)."""
    z = torch.bitwise_xor(z, _srl(z, 30)) * _M1
    z = torch.bitwise_xor(z, _srl(z, 27)) * _M2
    return torch.bitwise_xor(z, _srl(z, 31))


_TWO_M24 = _f(2.0 ** -24)
_LN2_32 = _f(32.0 * 0.6931471805599453)


def key_bits(key: int | np.uint64) -> int:
    """A stream key (a uint64) as the int64 with the same bits, the form :func:`normal` takes
    in a tensor of per-element keys."""
    return _signed(int(key))


def normal(key: int | np.uint64 | torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    """Standard normal draws ``counters`` (int64 tensor, values in [0, 2^63)) of the stream
    ``key`` (a uint64), float32, on the counters' device and in their shape. ``key`` may also
    be an int64 tensor of keys (:func:`key_bits`) broadcastable to ``counters``: element k is
    then draw counters[k] of stream key[k] (many streams in one call)."""
    bits = key if isinstance(key, torch.Tensor) else key_bits(key)
    h = mix64(torch.bitwise_xor(counters * _GAMMA, bits))
    v = (_srl(h, 32) + 1).to(torch.float32)
    u2 = torch.bitwise_right_shift(torch.bitwise_and(h, _LOW32), 8).to(torch.float32) * _TWO_M24
    r2 = 2.0 * (_LN2_32 - log(v))
    return correct_sqrt(torch.clamp_min(r2, 0.0)) * cos2pi(u2)


def keys(values, device) -> torch.Tensor:
    """uint64 stream keys as an int64 tensor (the same bits, :func:`key_bits`) on ``device``."""
    return torch.tensor([key_bits(v) for v in values], dtype=torch.int64, device=device)


def row_counters(ids: torch.Tensor, n: int) -> torch.Tensor:
    """The counters ids[k]·n + j (k × n) of the elements of rows ``ids``: the MVM noise layout
    of :func:`mc_engine.kernels.periphery.adc_rows`."""
    return ids.to(torch.int64)[:, None] * n + torch.arange(n, dtype=torch.int64,
                                                          device=ids.device)[None, :]


def _normal_rows(key: torch.Tensor, ids: torch.Tensor, n: int) -> torch.Tensor:
    return normal(key, row_counters(ids, n))


#: MC_ENGINE_COMPILE: 'auto' (the default: compile on CUDA), '1' (everywhere), '0' (never).
COMPILE_ENV = "MC_ENGINE_COMPILE"


def compile_wanted(device: torch.device) -> bool:
    """Whether the torch execution compiles its elementwise work (the generator, the ADC
    epilogue) on ``device``: ``MC_ENGINE_COMPILE`` '1' everywhere, '0' never, 'auto' (the
    default) on CUDA."""
    mode = os.environ.get(COMPILE_ENV, "auto")
    return mode == "1" or (mode == "auto" and device.type == "cuda")


class Fused:
    """``fn`` compiled into one fused kernel (torch.compile) per device type where
    :func:`compile_wanted`, called eagerly elsewhere or once compilation has failed there (one
    warning naming ``what``). Eager, elementwise work costs one pass over its tensors per
    operation (the generator ~40); compiled, one. Compilation takes tens of seconds once per
    process, so it is the default on CUDA only."""

    def __init__(self, fn, what: str):
        self.fn, self.what = fn, what
        #: device type -> the compiled function, or None (eager)
        self.compiled: dict[str, object] = {}

    def __call__(self, device: torch.device, *args):
        kind = device.type
        if kind not in self.compiled:
            self.compiled[kind] = torch.compile(self.fn, dynamic=True) \
                if compile_wanted(device) else None
        fast = self.compiled[kind]
        if fast is not None:
            try:
                return fast(*args)
            except Exception as err:         # no compiler, an unsupported backend: eager
                self.compiled[kind] = None
                warnings.warn(f"torch.compile of {self.what} failed on {kind} "
                              f"({type(err).__name__}: {str(err)[:200]}); running it eagerly "
                              f"(slower; set {COMPILE_ENV}=0 to skip the attempt)", stacklevel=3)
        return self.fn(*args)


#: The generator of :func:`normal_rows` (on this machine's CPU, compiled: 40x faster, the
#: same bits).
GENERATOR = Fused(_normal_rows, "the noise generator")


def normal_rows(key: int | np.uint64 | torch.Tensor, ids: torch.Tensor, n: int) -> torch.Tensor:
    """Draws for a (len(ids) × n) block of rows ``ids`` (float32, on ids' device): counters
    ids[k]·n + j (:func:`row_counters`). ``key``: one stream, or a tensor of keys
    (:func:`keys`) broadcast in front (C × 1 × 1: one stream per chip)."""
    key_t = key if isinstance(key, torch.Tensor) else \
        torch.tensor(_signed(int(key)), dtype=torch.int64, device=ids.device)
    return GENERATOR(ids.device, key_t, ids, n)
