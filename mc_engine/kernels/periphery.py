"""DAC, noise and ADC of one analog tile (docs/physics.md).

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
def dac_rows(x: np.ndarray, c0: int, c1: int, rows: np.ndarray, scale: np.ndarray,
             width: int, step: np.float32, out: np.ndarray) -> None:
    """out[k] = clip(rint(x[rows[k], c0:c1]*s/step)*step, -1, 1), s = scale[k, (c - c0)//width].

    One scale per row and group of ``width`` columns (a grouped layer's groups share the row);
    step 0 = no rounding.
    """
    one = np.float32(1.0)
    for k in range(rows.shape[0]):
        i = rows[k]
        for g in range(scale.shape[1]):
            s = scale[k, g]
            for c in range(g * width, (g + 1) * width):
                out[k, c] = _quantize(x[i, c0 + c] * s, step, one)


@njit(cache=True, nogil=True)
def _scale_and_quantize(out: np.ndarray, step: np.float32, wake: bool, alpha: np.ndarray,
                        scale: np.ndarray) -> None:
    """Second pass of noise management + DAC, alpha[k] = max|out[k]| already gathered:
    alpha[k] = 1 for an all-zero row when ``wake`` (input noise drives its lines), scale[k] =
    1/alpha[k] (0 for a silent row), every row quantised with its scale.

    A pass of its own over the block (which is cache-sized): with the gather and the
    quantisation in one row loop LLVM vectorises neither as well (~1.6x slower)."""
    one = np.float32(1.0)
    zero = np.float32(0.0)
    for k in range(out.shape[0]):
        a = alpha[k]
        if a == 0 and wake:
            a = one
            alpha[k] = a
        scale[k] = one / a if a > 0 else zero
    for k in range(out.shape[0]):
        s = scale[k]
        for c in range(out.shape[1]):
            out[k, c] = _quantize(out[k, c] * s, step, one)


@njit(cache=True, nogil=True)
def dac_abs_max_rows(x: np.ndarray, c0: int, c1: int, step: np.float32, wake: bool,
                     alpha: np.ndarray, scale: np.ndarray, out: np.ndarray) -> None:
    """abs_max noise management and DAC of every row of x (columns c0..c1) in one pass."""
    for k in range(x.shape[0]):
        a = np.float32(0.0)
        for c in range(c1 - c0):
            v = x[k, c0 + c]
            out[k, c] = v
            a = max(a, abs(v))
        alpha[k] = a
    _scale_and_quantize(out, step, wake, alpha, scale)


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
def patch_dac_rows(xp: np.ndarray, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int,
                   ho: int, wo: int, c0: int, c1: int, rows: np.ndarray, scale: np.ndarray,
                   width: int, step: np.float32, out: np.ndarray) -> None:
    """Fused im2col + DAC: out[k] = quantised columns c0..c1 of im2col row rows[k], scaled as in
    ``dac_rows`` (row-major, the layout the GEMM is fastest on)."""
    row, col = _patch_offsets(xp, kh, kw, sh, sw, dh, dw, ho, wo, c0, c1)
    flat = xp.reshape(-1)
    one = np.float32(1.0)
    for k in range(rows.shape[0]):
        base = row[rows[k]]
        for c in range(col.size):          # gather (scalar loads), then quantise contiguously
            out[k, c] = flat[base + col[c]]
        for g in range(scale.shape[1]):
            s = scale[k, g]
            for c in range(g * width, (g + 1) * width):
                out[k, c] = _quantize(out[k, c] * s, step, one)


@njit(cache=True, nogil=True)
def patch_dac_abs_max(xp: np.ndarray, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int,
                      ho: int, wo: int, c0: int, c1: int, step: np.float32, wake: bool,
                      alpha: np.ndarray, scale: np.ndarray, out: np.ndarray) -> None:
    """Fused im2col + abs_max noise management + DAC of every im2col row (columns c0..c1)."""
    row, col = _patch_offsets(xp, kh, kw, sh, sw, dh, dw, ho, wo, c0, c1)
    flat = xp.reshape(-1)
    for k in range(row.size):
        base = row[k]
        a = np.float32(0.0)
        for c in range(col.size):
            v = flat[base + col[c]]
            out[k, c] = v
            a = max(a, abs(v))
        alpha[k] = a
    _scale_and_quantize(out, step, wake, alpha, scale)


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
    n64 = np.uint64(n)
    # Rows selected by a bound-management retry are scattered; a first pass's rows are usually
    # consecutive, and then so are the counters of the whole block: flat loops that vectorise.
    # (Loops index the 2-D arrays directly: a row view per row costs more than its arithmetic.)
    consecutive = m == 0 or ids[m - 1] - ids[0] == m - 1
    if wn_row.shape[0] > 0 or wn_full.shape[0] > 0:
        full = wn_full.shape[0] > 0
        for k in range(m):
            base = np.uint64(ids[k]) * n64
            for j in range(n):
                s = wn_full[k, j] if full else wn_row[k]
                y[k, j] += s * normal(key_w, base + np.uint64(j))
    flat = y.reshape(-1)
    if out_noise > 0:
        if consecutive:
            base = np.uint64(ids[0]) * n64
            for e in range(m * n):
                flat[e] += out_noise * normal(key_out, base + np.uint64(e))
        else:
            for k in range(m):
                base = np.uint64(ids[k]) * n64
                for j in range(n):
                    y[k, j] += out_noise * normal(key_out, base + np.uint64(j))
    over = np.empty(m * n, np.bool_)
    for e in range(m * n):
        v = flat[e]
        if step > 0:
            v = _rint(v / step) * step
        over[e] = (v > bound) | (v < -bound)
        flat[e] = min(max(v, -bound), bound)
    n_post = post.shape[0]
    for k in range(m):
        sat = False
        for j in range(n):
            sat |= over[k * n + j]
        saturated[k] = sat
        if last or not sat:
            i = rows[k]
            s = scale[k]
            p = i % n_post
            for j in range(n):
                out[i, j] = (y[k, j] / s) * post[p, j]


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


@njit(cache=True, nogil=True)
def adc_range_rows(y: np.ndarray, lo: np.ndarray, step: np.ndarray, top: np.float32,
                   saturated: np.ndarray) -> None:
    """A calibrated ADC on every element of y (rows × columns), in place: column j has the
    2^bits levels lo[j] + k·step[j], k = 0 … top (= 2^bits − 1), round half to even, clipped to
    the range; a row with any value beyond the range is flagged in ``saturated`` (or-ed in).
    step 0 (a range of zero width) reads lo."""
    zero = np.float32(0.0)
    for i in range(y.shape[0]):
        sat = False
        for j in range(y.shape[1]):
            s = step[j]
            k = _rint((y[i, j] - lo[j]) / s) if s > 0 else zero
            sat |= (k > top) | (k < zero)
            y[i, j] = lo[j] + min(max(k, zero), top) * s
        saturated[i] |= sat
