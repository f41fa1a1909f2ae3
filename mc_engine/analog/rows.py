"""The input vectors of a layer as the DAC reads them: dense rows (Linear inputs, probes) or the
im2col rows of a convolution, gathered on the fly and never materialised.

Each view gives the abs-max noise-management alpha of a column range, fused gather + DAC
output of selected rows, and cache-sized blocks of rows.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from mc_engine.kernels.periphery import (
    dac_abs_max_rows,
    dac_rows,
    patch_dac_abs_max,
    patch_dac_rows,
    row_abs_max,
)

# Rows are processed in pieces of about this many bytes of DAC output (a few MiB: the piece,
# its GEMM and the epilogue stay in the last-level cache; smaller pieces cost Python overhead).
BLOCK_BYTES = 1 << 22


class InputRows:
    """The input vectors of a layer, read column range by column range (one per tile)."""

    n_rows: int

    def abs_max(self, c0: int, c1: int) -> np.ndarray:
        """The abs_max noise-management alpha of every row over columns c0..c1 (the forward
        pass gets it from the fused DAC; this is for callers that need alpha alone)."""
        return self.dac_abs_max(c0, c1, np.float32(0.0), False)[0]

    def blocks(self, n_cols: int) -> Iterator[tuple[int, InputRows]]:
        """(first row, view) pieces of about BLOCK_BYTES of DAC output each, so that the DAC
        output, its GEMM and the ADC epilogue of a piece stay in cache."""
        raise NotImplementedError

    def dac(self, c0: int, c1: int, rows: np.ndarray, scale: np.ndarray, width: int,
            step: np.float32) -> np.ndarray:
        """DAC output (len(rows) × (c1 - c0)) of the selected rows; columns c0 + g*width ..
        are scaled by scale[k, g] (one group, i.e. one tile, per ``width`` columns)."""
        raise NotImplementedError

    def dac_abs_max(self, c0: int, c1: int, step: np.float32, wake: bool
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """abs_max noise management fused with the DAC, every row, one pass: (alpha, scale =
        1/alpha or 0 for a silent row, DAC output). ``wake``: an all-zero row gets alpha 1."""
        alpha = np.empty(self.n_rows, np.float32)
        scale = np.empty(self.n_rows, np.float32)
        out = np.empty((self.n_rows, c1 - c0), np.float32)
        self._dac_abs_max(c0, c1, step, wake, alpha, scale, out)
        return alpha, scale, out

    def _dac_abs_max(self, c0, c1, step, wake, alpha, scale, out) -> None:
        raise NotImplementedError


class DenseRows(InputRows):
    """Rows of a (M × n) float32 matrix (Linear inputs, drift-compensation probes)."""

    def __init__(self, x: np.ndarray):
        self.x = np.ascontiguousarray(x, dtype=np.float32)
        self.n_rows = self.x.shape[0]

    def abs_max(self, c0, c1):
        a = np.empty(self.n_rows, np.float32)
        row_abs_max(self.x, c0, c1, a)
        return a

    def blocks(self, n_cols):
        step = max(64, BLOCK_BYTES // (4 * n_cols))
        for r0 in range(0, self.n_rows, step):
            yield r0, DenseRows(self.x[r0:r0 + step])

    def dac(self, c0, c1, rows, scale, width, step):
        out = np.empty((rows.size, c1 - c0), np.float32)
        dac_rows(self.x, c0, c1, rows, scale, width, step, out)
        return out

    def _dac_abs_max(self, c0, c1, step, wake, alpha, scale, out):
        dac_abs_max_rows(self.x, c0, c1, step, wake, alpha, scale, out)


class ProbeRows(DenseRows):
    """The rows of an identity matrix: the one-hot probe of drift compensation, whose MVM a
    tile computes without a GEMM."""


class PatchRows(InputRows):
    """The im2col rows of a convolution, gathered on the fly from the padded images."""

    def __init__(self, x_padded: np.ndarray, kernel, stride, dilation, out_hw):
        self.xp = np.ascontiguousarray(x_padded, dtype=np.float32)
        self.geom = (*kernel, *stride, *dilation, *out_hw)
        self.n_rows = self.xp.shape[0] * out_hw[0] * out_hw[1]

    def group_abs_max(self, groups: int) -> np.ndarray:
        """abs_max alpha of every (im2col row, channel group): rows × groups, one pass."""
        kh, kw, sh, sw, dh, dw = self.geom[:6]
        n, c, h, w = self.xp.shape
        a = torch.from_numpy(self.xp).view(n, groups, c // groups, h, w).abs().amax(dim=2)
        pooled = F.max_pool2d(a, (kh, kw), (sh, sw), dilation=(dh, dw))   # n, G, ho, wo
        return np.ascontiguousarray(pooled.permute(0, 2, 3, 1).numpy().reshape(-1, groups))

    def blocks(self, n_cols):
        per_image = self.geom[-1] * self.geom[-2]
        images = max(1, BLOCK_BYTES // (4 * n_cols * per_image))
        for n0 in range(0, self.xp.shape[0], images):
            yield n0 * per_image, PatchRows(self.xp[n0:n0 + images], self.geom[:2],
                                            self.geom[2:4], self.geom[4:6], self.geom[6:])

    def dac(self, c0, c1, rows, scale, width, step):
        out = np.empty((rows.size, c1 - c0), np.float32)
        patch_dac_rows(self.xp, *self.geom, c0, c1, rows, scale, width, step, out)
        return out

    def _dac_abs_max(self, c0, c1, step, wake, alpha, scale, out):
        patch_dac_abs_max(self.xp, *self.geom, c0, c1, step, wake, alpha, scale, out)
