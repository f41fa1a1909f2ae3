"""DAC, noise and ADC of one analog tile (DESIGN.md §2.1 steps 1, 2, 4, 5).

The float32 operation order follows the IBM toolkit (see tests/data/aihwkit/README.md): the
input scale is s = (1/alpha)/r, v = x*s, x~ = rint(v/step)*step; the ADC is rint(y/step)*step.
Doing the same operations in the same precision reproduces the toolkit bit for bit, including
inputs that land exactly on a rounding edge.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def row_abs_max(x: np.ndarray, out: np.ndarray) -> None:
    """out[i] = max_j |x[i, j]| (the abs_max noise-management alpha of every input vector)."""
    m, n = x.shape
    for i in range(m):
        a = np.float32(0.0)
        for j in range(n):
            v = abs(x[i, j])
            if v > a:
                a = v
        out[i] = a


@njit(cache=True, nogil=True)
def dac_rows(x: np.ndarray, rows: np.ndarray, scale: np.ndarray, step: np.float32,
             inp_noise: np.float32, noise: np.ndarray, out: np.ndarray,
             sq_norm: np.ndarray) -> None:
    """Quantise the selected input rows: out[k] = clip(rint(x[rows[k]]*scale[k]/step)*step, -1, 1).

    ``step = 0`` skips the rounding; input noise (sigma ``inp_noise``, normals ``noise[k, j]``)
    is added after clipping. ``sq_norm[k]`` receives sum_j out[k, j]^2, used by the
    additive-constant weight noise.
    """
    n = x.shape[1]
    one = np.float32(1.0)
    for k in range(rows.shape[0]):
        i = rows[k]
        s = scale[k]
        acc = np.float32(0.0)
        for j in range(n):
            v = x[i, j] * s
            if step > 0:
                v = np.rint(v / step) * step
            if v > one:
                v = one
            elif v < -one:
                v = -one
            if inp_noise > 0:
                v += inp_noise * noise[k, j]
            out[k, j] = v
            acc += v * v
        sq_norm[k] = acc


@njit(cache=True, nogil=True)
def adc_rows(y: np.ndarray, out_noise: np.float32, noise: np.ndarray, wn_row: np.ndarray,
             wn_full: np.ndarray, wnoise: np.ndarray, step: np.float32, bound: np.float32,
             scale: np.ndarray, rows: np.ndarray, last: bool, post: np.ndarray,
             out: np.ndarray, saturated: np.ndarray) -> None:
    """Weight noise, output noise, ADC and digital rescale of one pass over the selected rows.

    y[k] is the analog MVM of input row rows[k] (scaled by scale[k] = (1/alpha)/r). Short-term
    weight noise has sigma wn_row[k] (additive constant) or wn_full[k, j] (pcm_read), either may
    be empty; output noise has sigma out_noise. Outputs are rounded with ``step`` (0 = off) and
    clipped at ±bound. A row whose rounded output lies strictly beyond the bound is flagged in
    ``saturated``; unless ``last``, it is not written so that bound management can retry it.
    Every other row is written as out[rows[k], j] = (y/scale[k]) * post[j].
    """
    m, n = y.shape
    has_row = wn_row.shape[0] > 0
    has_full = wn_full.shape[0] > 0
    for k in range(m):
        sat = False
        for j in range(n):
            v = y[k, j]
            if has_row:
                v += wn_row[k] * wnoise[k, j]
            elif has_full:
                v += wn_full[k, j] * wnoise[k, j]
            if out_noise > 0:
                v += out_noise * noise[k, j]
            if step > 0:
                v = np.rint(v / step) * step
            if v > bound:
                v = bound
                sat = True
            elif v < -bound:
                v = -bound
                sat = True
            y[k, j] = v
        saturated[k] = sat
        if last or not sat:
            i = rows[k]
            s = scale[k]
            for j in range(n):
                out[i, j] = (y[k, j] / s) * post[j]
