"""Device-to-device variation and stuck-at faults (docs/physics.md), on top of any device model.

They belong to the devices, not to a particular device model: whatever model programs the array,
each device then carries a fixed relative error ``g <- g*(1 + d2d_sigma*xi)`` drawn at programming,
and a fraction of devices is stuck at g_min or g_max. A stuck device keeps its value: it neither
drifts nor takes read noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mc_engine.hardware.config import HardwareConfig


@dataclass(frozen=True)
class Faults:
    """Which devices of an array are stuck (flat indices) and the conductance each is stuck at."""

    index: np.ndarray
    value: np.ndarray

    def pin(self, g: np.ndarray) -> np.ndarray:
        """``g`` with every stuck device at its stuck value (in place; returned for chaining)."""
        if self.index.size:
            g[self.index] = self.value
        return g


NO_FAULTS = Faults(np.zeros(0, np.int64), np.zeros(0))


def has_variation(hw: HardwareConfig) -> bool:
    return hw.d2d_sigma > 0 or hw.stuck_off_fraction > 0 or hw.stuck_on_fraction > 0


def apply_variation(g_prog: np.ndarray, hw: HardwareConfig, rng: np.random.Generator
                    ) -> tuple[np.ndarray, Faults]:
    """Programmed conductances with d2d variation and stuck devices, and the stuck set.

    Both draws come from ``rng`` in a fixed order (d2d normals, then one uniform per device that
    decides stuck-off below stuck_off_fraction and stuck-on in the next stuck_on_fraction), so
    sweeping one fraction does not reshuffle the other's devices (common random numbers).
    """
    n = g_prog.size
    xi = rng.standard_normal(n)
    u = rng.random(n)
    g = g_prog
    if hw.d2d_sigma > 0:
        g = np.maximum(g * (1.0 + hw.d2d_sigma * xi), 0.0)
    off = u < hw.stuck_off_fraction
    on = (u >= hw.stuck_off_fraction) & (u < hw.stuck_off_fraction + hw.stuck_on_fraction)
    index = np.flatnonzero(off | on)
    if not index.size:
        return g, NO_FAULTS
    faults = Faults(index, np.where(on[index], hw.g_max, hw.g_min))
    return faults.pin(g.copy() if g is g_prog else g), faults
