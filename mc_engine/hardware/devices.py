"""Device models: how a target conductance is programmed and how it reads back over time.

This is the documented extension point of DESIGN.md §2.2: subclass :class:`DeviceModel`,
implement ``program`` and ``read``, and register it with :func:`register_device`; the name then
becomes a valid ``device`` value in ``HardwareConfig`` and in study files. The engine calls only
these two methods, with flat float64 arrays of conductances in microsiemens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np

from mc_engine.kernels.pcm import pcm_drift_read, pcm_program

if TYPE_CHECKING:
    from mc_engine.hardware.config import HardwareConfig


class DeviceModel:
    """Base class of a device model. ``exact = True`` marks a model without any randomness."""

    name: ClassVar[str] = ""
    exact: ClassVar[bool] = False

    def __init__(self, hw: HardwareConfig):
        self.hw = hw

    def program(self, g_target: np.ndarray, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
        """Program every device once. Returns (programmed conductance, per-device state).

        The state (e.g. PCM's drift exponent) is drawn here, once, and handed back to ``read``.
        """
        raise NotImplementedError

    def read(self, g: np.ndarray, state: np.ndarray, t_s: float,
             rng: np.random.Generator) -> np.ndarray:
        """The conductances read ``t_s`` seconds after programming (drift + fresh read noise)."""
        raise NotImplementedError


class IdealDevice(DeviceModel):
    """Exact conductances: no programming noise, no drift, no read noise."""

    name = "ideal"
    exact = True

    def program(self, g_target, rng):
        return g_target.copy(), np.zeros_like(g_target)

    def read(self, g, state, t_s, rng):
        return g.copy()


class PCMDevice(DeviceModel):
    """The PCM statistical model (Nandakumar et al. 2019; Joshi et al. 2020), DESIGN.md §2.2."""

    name = "pcm"

    def program(self, g_target, rng):
        xi = rng.standard_normal((2, g_target.size))
        g_prog = np.empty_like(g_target)
        nu = np.empty_like(g_target)
        hw = self.hw
        pcm_program(g_target, xi[0], xi[1], hw.g_max, hw.prog_noise_scale, hw.drift_scale,
                    g_prog, nu)
        return g_prog, nu

    def read(self, g, state, t_s, rng):
        out = np.empty_like(g)
        pcm_drift_read(g, state, rng.standard_normal(g.size), float(t_s), self.hw.g_max,
                       self.hw.read_noise_scale, out)
        return out


class StateIndependentDevice(DeviceModel):
    """Gaussian programming and read noise of fixed size (sigma_prog, sigma_read × g_max).

    No drift.
    """

    name = "state_independent"

    def program(self, g_target, rng):
        g = g_target + self.hw.sigma_prog * self.hw.g_max * rng.standard_normal(g_target.size)
        return np.maximum(g, 0.0), np.zeros_like(g_target)

    def read(self, g, state, t_s, rng):
        return np.maximum(g + self.hw.sigma_read * self.hw.g_max * rng.standard_normal(g.size),
                          0.0)


DEVICES: dict[str, type[DeviceModel]] = {}


def register_device(cls: type[DeviceModel]) -> type[DeviceModel]:
    """Make ``cls`` available as ``device = cls.name`` (usable as a class decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, DeviceModel)) or not cls.name:
        raise TypeError("register_device expects a DeviceModel subclass with a non-empty name")
    DEVICES[cls.name] = cls
    return cls


for _cls in (PCMDevice, IdealDevice, StateIndependentDevice):
    register_device(_cls)
