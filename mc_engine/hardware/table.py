"""A device from a table of measurements (``device = "table"``, docs/devices.md).

The idea of NeuroSim 1.5's ``mem_states.csv`` (the measured conductance statistics of each
programmable level), extended with time: the table (``device_table``, a CSV file beside the
study) gives, for each programmed level (``level_us``) and each measured time after programming
(``time_s`` > 0), the mean (``mean_us``) and standard deviation (``std_us``) of the conductance
over the measured devices; every level is measured at the same times.

- Programming: a target goes to the nearest level k; the device draws its deviation xi ~ N(0, 1)
  once and is programmed to g_P = max(0, m_k(t_1) + s_k(t_1) xi), t_1 the first measured time.
- Read at t (within the measured times; outside them the study is rejected): m_k(t) and s_k(t)
  interpolated linearly in ln t between the neighbouring measured times, and
  g = max(0, g − g_P + m_k(t) + s_k(t) xi_t) with xi_t = rho xi + sqrt(1 − rho^2) zeta, zeta
  fresh: with ``table_correlation`` rho = 1 (the default) a device keeps its place in the
  distribution (its programming error moves with the level), with rho = 0 every read is a fresh
  draw (as aihwkit's ReRamWan2022NoiseModel). g − g_P carries what acts on top of the device
  model (variation, the net re-mapping of pair_drift); it is 0 otherwise.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from mc_engine.hardware.devices import DeviceModel, DeviceParam, register_device
from mc_engine.hardware.tables import DeviceTable

#: The per-device state packs the level index k and the deviation xi in one float:
#: PACK*k + xi, xi clipped to +-XI_MAX (a clip that moves one draw in 10^13).
PACK, XI_MAX = 16.0, 7.5


@dataclass(frozen=True)
class LevelStats:
    """A table as arrays: levels (L, ascending), times (T, ascending), mean and std (L × T)."""

    levels: np.ndarray
    times: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    def at(self, t_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std of every level at ``t_s``, linear in ln t between measured times."""
        if self.times.size == 1:
            return self.mean[:, 0], self.std[:, 0]
        i = int(np.clip(np.searchsorted(self.times, t_s, side="right") - 1, 0,
                        self.times.size - 2))
        lo, hi = math.log(self.times[i]), math.log(self.times[i + 1])
        w = (math.log(t_s) - lo) / (hi - lo)
        return ((1 - w) * self.mean[:, i] + w * self.mean[:, i + 1],
                (1 - w) * self.std[:, i] + w * self.std[:, i + 1])

    def nearest(self, g: np.ndarray) -> np.ndarray:
        """The index of the nearest level of every conductance (the lower one at a tie)."""
        return np.searchsorted((self.levels[1:] + self.levels[:-1]) / 2, g)


def _grid(table: DeviceTable) -> tuple[LevelStats | None, str | None]:
    level, time = table.column("level_us"), table.column("time_s")
    mean, std = table.column("mean_us"), table.column("std_us")
    levels, times = np.unique(level), np.unique(time)
    if levels.size < 2:
        return None, "a table needs at least 2 levels (level_us)"
    if times[0] <= 0:
        return None, "time_s must be > 0 (reads interpolate in log-time)"
    if np.any(std < 0) or levels[0] < 0:
        return None, "level_us and std_us must be >= 0"
    if level.size != levels.size * times.size:
        return None, (f"{level.size} rows for {levels.size} levels x {times.size} times: "
                      f"every level needs one row at every measured time")
    rows = np.searchsorted(levels, level), np.searchsorted(times, time)
    out_mean = np.full((levels.size, times.size), np.nan)
    out_mean[rows] = mean
    if np.isnan(out_mean).any():
        return None, "every level needs one row at every measured time (a pair is repeated)"
    out_std = np.zeros_like(out_mean)
    out_std[rows] = std
    return LevelStats(levels, times, out_mean, out_std), None


@functools.lru_cache(maxsize=16)
def level_stats(table: DeviceTable) -> LevelStats:
    stats, problem = _grid(table)
    if stats is None:
        raise ValueError(problem)
    return stats


@register_device
class TableDevice(DeviceModel):
    """Per-level conductance statistics over time from a table of measurements (module
    docstring; docs/devices.md)."""

    name = "table"
    table_columns = ("level_us", "time_s", "mean_us", "std_us")
    params = {"table_correlation": DeviceParam(
        1.0, "table device: correlation rho of a device's deviation at a read with its "
             "programming deviation (1: keeps its place in the distribution; 0: a fresh draw "
             "at every read).", lo=0.0, hi=1.0)}

    @classmethod
    def table_problem(cls, table):
        return _grid(table)[1]

    @classmethod
    def hardware_defaults(cls, values, table):
        levels = level_stats(table).levels
        return {"g_max": float(levels[-1]),
                "on_off_ratio": float(levels[-1] / levels[0]) if levels[0] > 0 else math.inf}

    @classmethod
    def combination_rules(cls, hw):
        levels = level_stats(hw.table).levels
        yield ("g_max", levels[0] <= hw.g_min * (1 + 1e-12) and
               hw.g_max <= levels[-1] * (1 + 1e-12),
               f"the table {hw.table.name!r} has levels from {levels[0]:g} to {levels[-1]:g} "
               f"µS, the mapping programs g_min = {hw.g_min:g} to g_max = {hw.g_max:g} µS: "
               f"set g_max and on_off_ratio inside the levels (or leave them out)")

    @property
    def stats(self) -> LevelStats:
        return level_stats(self.hw.table)

    def time_problem(self, times_s):
        t = self.stats.times
        bad = [x for x in times_s if not t[0] <= x <= t[-1]]
        if bad:
            return (f"device 'table' ({self.hw.table.name!r}) is measured from {t[0]:g} s to "
                    f"{t[-1]:g} s after programming; got {bad[0]:g} s")
        return None

    def program(self, g_target, rng):
        stats = self.stats
        k = stats.nearest(g_target)
        xi = np.clip(rng.standard_normal(g_target.size), -XI_MAX, XI_MAX)
        g_prog = np.maximum(stats.mean[k, 0] + stats.std[k, 0] * xi, 0.0)
        return g_prog, PACK * k + xi

    def read(self, g, state, t_s, rng):
        self.check_time(t_s)
        stats = self.stats
        k = np.rint(state / PACK).astype(np.int64)
        xi = state - PACK * k
        g_prog = np.maximum(stats.mean[k, 0] + stats.std[k, 0] * xi, 0.0)
        rho = self.values["table_correlation"]
        if rho < 1:
            xi = rho * xi + math.sqrt(1 - rho * rho) * rng.standard_normal(g.size)
        mean, std = stats.at(float(t_s))
        return np.maximum(g - g_prog + mean[k] + std[k] * xi, 0.0)
