"""Calibrated ADC ranges (``adc_range = "calibrated"``, docs/physics.md): every conversion of a
tile — each row group of the read-out and each slice, its dummy column included — gets its own
[lo, hi], the min and max of its pre-ADC values over the calibration samples through the
programmed, noise-free array at t = 0. The ADC then has 2^adc_bits levels from lo to hi.
"""

from __future__ import annotations

import numpy as np

from mc_engine.analog.mapping import Layout
from mc_engine.kernels.periphery import adc_range_rows


class CalibratedADC:
    """The ranges of one tile's conversions: ``n_row_groups`` × the layout's column groups."""

    def __init__(self, layout: Layout, n_row_groups: int, adc_bits: int):
        self.group = layout.column_group()
        shape = (n_row_groups, layout.n_groups)
        self.lo = np.full(shape, np.inf)
        self.hi = np.full(shape, -np.inf)
        self.top = np.float32(2 ** adc_bits - 1)
        self.recording = False
        self._cols: list[tuple[np.ndarray, np.ndarray]] = []

    def start(self) -> None:
        """Forget the ranges and record them from the next conversions."""
        self.lo[:] = np.inf
        self.hi[:] = -np.inf
        self.recording = True

    def stop(self) -> None:
        """Fix the recorded ranges (a conversion that saw no value reads 0)."""
        self.recording = False
        unseen = self.lo > self.hi
        self.lo[unseen] = self.hi[unseen] = 0.0
        self._cols = []
        for lo, hi in zip(self.lo, self.hi):       # per row group, per column, float32
            lo_c = lo[self.group].astype(np.float32)
            step = ((hi[self.group] - lo[self.group]) / float(self.top)).astype(np.float32)
            self._cols.append((lo_c, step))

    def record(self, row_group: int, y: np.ndarray) -> None:
        """Widen the ranges of ``row_group`` by the pre-ADC values y (rows × columns)."""
        if not y.size:
            return
        lo, hi = y.min(axis=0).astype(np.float64), y.max(axis=0).astype(np.float64)
        np.minimum.at(self.lo[row_group], self.group, lo)
        np.maximum.at(self.hi[row_group], self.group, hi)

    def convert(self, row_group: int, y: np.ndarray, saturated: np.ndarray) -> None:
        """Digitise y (rows × columns) in place; rows beyond a range are or-ed into
        ``saturated``."""
        lo, step = self._cols[row_group]
        adc_range_rows(y, lo, step, self.top, saturated)
