"""DAC, noise and ADC of one analog tile (DESIGN.md §2.1 steps 1, 2, 4, 5).

The float32 operation order follows the IBM toolkit (see tests/data/aihwkit/README.md): the
input scale is s = (1/alpha)/r, v = x*s, x~ = rint(v/step)*step; the ADC is rint(y/step)*step.
Doing the same operations in the same precision reproduces the toolkit bit for bit, including
inputs that land exactly on a rounding edge.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from mc_engine.kernels.rng import normal

_MAGIC = np.float32(12582912.0)   # 1.5 * 2^23: (q + M) - M is rint(q) for |q| < 2^22
_LIMIT = np.float32(2.0**21)      # quantizers have <= 20 bits, so levels lie well inside this


@njit(cache=True, nogil=True, inline="always")
def _rint(q):
    """Round half to even, like C's rint, for float32 q; |q| beyond 2^21 saturates there.

    libm's rintf is an opaque call that stops LLVM from vectorising the loops; the magic-number
    form is exact (IEEE round-to-nearest-even) and vectorises. Values beyond 2^21 levels are
    clipped by every caller anyway (DAC at ±1, ADC at ±bound), so saturating them is harmless.
    """
    q = min(max(q, -_LIMIT), _LIMIT)
    return (q + _MAGIC) - _MAGIC


@njit(cache=True, nogil=True, inline="always")
def _quantize(v, step, one):
    if step > 0:
        v = _rint(v / step) * step
    return min(max(v, -one), one)


@njit(cache=True, nogil=True)
def row_abs_max(x: np.ndarray, c0: int, c1: int, out: np.ndarray) -> None:
    """out[i] = max_{c0 <= j < c1} |x[i, j]| (the abs_max noise-management alpha)."""
    for i in range(x.shape[0]):
        a = np.float32(0.0)
        for j in range(c0, c1):
            a = max(a, abs(x[i, j]))
        out[i] = a


@njit(cache=True, nogil=True)
def _quantize_row(dst: np.ndarray, scale_row: np.ndarray, width: int, step: np.float32) -> None:
    """dst[c] = quantised dst[c]*scale_row[c // width]: one input scale per group of columns."""
    one = np.float32(1.0)
    for g in range(scale_row.shape[0]):
        s = scale_row[g]
        seg = dst[g * width:(g + 1) * width]
        for c in range(seg.shape[0]):
            seg[c] = _quantize(seg[c] * s, step, one)


@njit(cache=True, nogil=True)
def dac_rows(x: np.ndarray, c0: int, c1: int, rows: np.ndarray, scale: np.ndarray,
             width: int, step: np.float32, out: np.ndarray) -> None:
    """out[k] = clip(rint(x[rows[k], c0:c1]*s/step)*step, -1, 1), s = scale[k, (c - c0)//width].

    One scale per row and group of ``width`` columns (a grouped layer's groups share the row);
    step 0 = no rounding.
    """
    for k in range(rows.shape[0]):
        dst = out[k]
        dst[:] = x[rows[k], c0:c1]
        _quantize_row(dst, scale[k], width, step)


@njit(cache=True, nogil=True, inline="always")
def _abs_max_quantize(dst: np.ndarray, step: np.float32, wake: bool, alpha: np.ndarray,
                      scale: np.ndarray, k: int) -> None:
    """Noise management fused with the DAC for one row already gathered into ``dst``:
    alpha[k] = max|dst| (1 for an all-zero row when ``wake``: input noise drives its lines),
    scale[k] = 1/alpha[k] (0 for a silent row), dst quantised with that scale."""
    one = np.float32(1.0)
    a = np.float32(0.0)
    for c in range(dst.shape[0]):
        a = max(a, abs(dst[c]))
    if a == 0 and wake:
        a = one
    s = one / a if a > 0 else np.float32(0.0)
    alpha[k] = a
    scale[k] = s
    for c in range(dst.shape[0]):
        dst[c] = _quantize(dst[c] * s, step, one)


@njit(cache=True, nogil=True)
def dac_abs_max_rows(x: np.ndarray, c0: int, c1: int, step: np.float32, wake: bool,
                     alpha: np.ndarray, scale: np.ndarray, out: np.ndarray) -> None:
    """abs_max noise management and DAC of every row of x (columns c0..c1) in one pass."""
    for k in range(x.shape[0]):
        dst = out[k]
        dst[:] = x[k, c0:c1]
        _abs_max_quantize(dst, step, wake, alpha, scale, k)


@njit(cache=True, nogil=True)
def _patch_offsets(xp: np.ndarray, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int,
                   ho: int, wo: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat offsets of im2col: element (r, c) of the patch matrix is xp.flat[row[r] + col[c]].

    Row r = (n*ho + oh)*wo + ow, columns in the (C, kh, kw) order of torch's unfold; the patch
    matrix itself is never materialised.
    """
    n_img, n_ch, hp, wp = xp.shape
    col = np.empty(c1 - c0, np.int64)
    kk = kh * kw
    for c in range(c0, c1):
        ch = c // kk
        i = (c - ch * kk) // kw
        j = c - ch * kk - i * kw
        col[c - c0] = (ch * hp + i * dh) * wp + j * dw
    row = np.empty(n_img * ho * wo, np.int64)
    r = 0
    for n in range(n_img):
        for oh in range(ho):
            for ow in range(wo):
                row[r] = n * n_ch * hp * wp + oh * sh * wp + ow * sw
                r += 1
    return row, col


@njit(cache=True, nogil=True)
def patch_abs_max(xp: np.ndarray, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int,
                  ho: int, wo: int, c0: int, c1: int, out: np.ndarray) -> None:
    """abs_max alpha of every im2col row (columns c0..c1) of the padded images xp (N, C, Hp, Wp)."""
    row, col = _patch_offsets(xp, kh, kw, sh, sw, dh, dw, ho, wo, c0, c1)
    flat = xp.reshape(-1)
    for r in range(row.size):
        a = np.float32(0.0)
        base = row[r]
        for c in range(col.size):
            a = max(a, abs(flat[base + col[c]]))
        out[r] = a


@njit(cache=True, nogil=True)
def patch_dac_rows(xp: np.ndarray, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int,
                   ho: int, wo: int, c0: int, c1: int, rows: np.ndarray, scale: np.ndarray,
                   width: int, step: np.float32, out: np.ndarray) -> None:
    """Fused im2col + DAC: out[k] = quantised columns c0..c1 of im2col row rows[k], scaled as in
    ``dac_rows`` (row-major, the layout the GEMM is fastest on)."""
    row, col = _patch_offsets(xp, kh, kw, sh, sw, dh, dw, ho, wo, c0, c1)
    flat = xp.reshape(-1)
    for k in range(rows.shape[0]):
        base = row[rows[k]]
        dst = out[k]
        for c in range(col.size):          # gather (scalar loads), then quantise contiguously
            dst[c] = flat[base + col[c]]
        _quantize_row(dst, scale[k], width, step)


@njit(cache=True, nogil=True)
def patch_dac_abs_max(xp: np.ndarray, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int,
                      ho: int, wo: int, c0: int, c1: int, step: np.float32, wake: bool,
                      alpha: np.ndarray, scale: np.ndarray, out: np.ndarray) -> None:
    """Fused im2col + abs_max noise management + DAC of every im2col row (columns c0..c1)."""
    row, col = _patch_offsets(xp, kh, kw, sh, sw, dh, dw, ho, wo, c0, c1)
    flat = xp.reshape(-1)
    for k in range(row.size):
        base = row[k]
        dst = out[k]
        for c in range(col.size):
            dst[c] = flat[base + col[c]]
        _abs_max_quantize(dst, step, wake, alpha, scale, k)


@njit(cache=True, nogil=True)
def adc_rows(y: np.ndarray, out_noise: np.float32, key_out: np.uint64, wn_row: np.ndarray,
             wn_full: np.ndarray, key_w: np.uint64, ids: np.ndarray, step: np.float32,
             bound: np.float32, scale: np.ndarray, rows: np.ndarray, last: bool,
             post: np.ndarray, out: np.ndarray, saturated: np.ndarray) -> None:
    """Weight noise, output noise, ADC and digital rescale of one pass over the selected rows.

    y[k] is the analog MVM of input row rows[k] (scaled by scale[k] = (1/alpha)/r). Short-term
    weight noise has sigma wn_row[k] (additive constant) or wn_full[k, j] (pcm_read), either may
    be empty; output noise has sigma out_noise. The standard normals are drawn here, counter-
    based (:mod:`mc_engine.kernels.rng`): element (k, j) takes draw ids[k]*n + j of the streams
    ``key_w`` and ``key_out``, so the noise of a row does not depend on which other rows share
    the pass. Outputs are rounded with ``step`` (0 = off) and clipped at ±bound. A row whose
    rounded output lies strictly beyond the bound is flagged in ``saturated``; unless ``last``,
    it is not written so that bound management can retry it. Every other row is written as
    out[i, j] = (y/scale[k]) * post[i % P, j], i = rows[k]: post holds the digital factors of P
    interleaved groups (P = 1 for a plain tile).
    """
    m, n = y.shape
    has_row = wn_row.shape[0] > 0
    has_full = wn_full.shape[0] > 0
    n64 = np.uint64(n)
    for k in range(m):
        base = np.uint64(ids[k]) * n64
        yk = y[k]
        if has_row:
            s = wn_row[k]
            for j in range(n):
                yk[j] += s * normal(key_w, base + np.uint64(j))
        elif has_full:
            s_full = wn_full[k]
            for j in range(n):
                yk[j] += s_full[j] * normal(key_w, base + np.uint64(j))
        if out_noise > 0:
            for j in range(n):
                yk[j] += out_noise * normal(key_out, base + np.uint64(j))
        sat = False
        for j in range(n):
            v = yk[j]
            if step > 0:
                v = _rint(v / step) * step
            sat |= (v > bound) | (v < -bound)
            yk[j] = min(max(v, -bound), bound)
        saturated[k] = sat
        if last or not sat:
            i = rows[k]
            s = scale[k]
            p = post[i % post.shape[0]]
            for j in range(n):
                out[i, j] = (yk[j] / s) * p[j]


@njit(cache=True, nogil=True)
def add_normal_rows(x: np.ndarray, sigma: np.float32, key: np.uint64, ids: np.ndarray) -> None:
    """x[k, j] += sigma * draw ids[k]*n + j of stream ``key`` (the input noise on the lines)."""
    n = x.shape[1]
    n64 = np.uint64(n)
    for k in range(x.shape[0]):
        base = np.uint64(ids[k]) * n64
        for j in range(n):
            x[k, j] += sigma * normal(key, base + np.uint64(j))


@njit(cache=True, nogil=True)
def bit_serial_cycles(xq: np.ndarray, m_bits: int, k_bits: int, out: np.ndarray) -> None:
    """Bit-serial cycle inputs of DAC outputs xq (rows × n): out[j] = sign(x)·d_j/(2^k − 1),
    d_j the j-th group of k bits (LSB first) of x_int = rint(|x|·(2^m − 1)); out is K × rows × n.
    """
    full = np.float32(2 ** m_bits - 1)
    top = np.float32(1.0) / np.float32(2 ** k_bits - 1)
    mask = np.int32((1 << k_bits) - 1)
    x = xq.reshape(-1)
    n = x.size
    mag = np.empty(n, np.int32)
    sign = np.empty(n, np.float32)
    for i in range(n):
        v = x[i]
        mag[i] = np.int32(_rint(abs(v) * full))
        sign[i] = top if v > 0 else (-top if v < 0 else np.float32(0.0))
    planes = out.reshape(out.shape[0], n)
    for j in range(out.shape[0]):
        dst = planes[j]
        shift = np.int32(j * k_bits)
        for i in range(n):
            dst[i] = sign[i] * np.float32((mag[i] >> shift) & mask)
