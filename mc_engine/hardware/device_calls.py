"""Calls into a device model that does not ship with the engine, checked at the boundary.

A custom device (``device = "module:Class"`` or a registered subclass) is the user's code: its
``program`` and ``read`` may raise, return the wrong shape, ``None``, a list, or NaN, infinite,
negative or absurd conductances. Every such problem becomes one :class:`UserInputError` that
names the device and what was wrong, instead of a numpy error deep in a worker or a plausible
looking accuracy. The engine's own PCM and ideal devices are called directly (their kernels
guarantee their outputs, and their path stays as fast as it was).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mc_engine.errors import UserInputError
from mc_engine.hardware.devices import DEVICES, DeviceModel, IdealDevice, PCMDevice

#: Conductances beyond this many times g_max are taken as a unit or overflow mistake.
ABSURD = 1e3
_TRUSTED = (PCMDevice, IdealDevice)


def _fail(device: DeviceModel, message: str) -> UserInputError:
    return UserInputError(f"device {device.hw.device!r} ({type(device).__module__}."
                          f"{type(device).__qualname__}): {message}", key="hardware.device")


def _check_array(device: DeviceModel, what: str, g_in: np.ndarray, out: object,
                 conductance: bool = True) -> np.ndarray:
    if not isinstance(out, np.ndarray) or out.shape != g_in.shape:
        got = f"an array of shape {out.shape}" if isinstance(out, np.ndarray) else \
            f"a {type(out).__name__}"
        raise _fail(device, f"{what} returned {got}; expected a float array of shape "
                            f"{g_in.shape} (one value per device)")
    if not np.issubdtype(out.dtype, np.number):
        raise _fail(device, f"{what} returned an array of {out.dtype}; expected floats")
    if conductance:
        if not np.isfinite(out).all():
            raise _fail(device, f"{what} returned NaN or infinite conductances")
        if out.size and out.min() < 0:
            raise _fail(device, f"{what} returned negative conductances (down to "
                                f"{out.min():.3g} µS); conductances are >= 0")
        if out.size and out.max() > ABSURD * device.hw.g_max:
            raise _fail(device, f"{what} returned conductances up to {out.max():.3g} µS, more "
                                f"than {ABSURD:g} x g_max = {device.hw.g_max:g} µS")
    return out.astype(np.float64, copy=False)


def program(device: DeviceModel, g_target: np.ndarray, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray]:
    """``device.program``; for a device that is not the engine's own, checked."""
    if type(device) in _TRUSTED:
        return device.program(g_target, rng)
    try:
        out = device.program(g_target, rng)
    except Exception as exc:
        raise _fail(device, f"program() raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(out, tuple) or len(out) != 2:
        raise _fail(device, f"program() returned a {type(out).__name__}; expected a tuple "
                            f"(programmed conductances, per-device state)")
    g, state = out
    return (_check_array(device, "program()", g_target, g),
            _check_array(device, "program()'s state", g_target, state, conductance=False))


def read(device: DeviceModel, g: np.ndarray, state: np.ndarray, t_s: float,
         rng: np.random.Generator) -> np.ndarray:
    """``device.read``; for a device that is not the engine's own, checked."""
    if type(device) in _TRUSTED:
        return device.read(g, state, t_s, rng)
    try:
        out = device.read(g, state, t_s, rng)
    except Exception as exc:
        raise _fail(device, f"read() at {t_s:g} s raised {type(exc).__name__}: {exc}") from exc
    return _check_array(device, f"read() at {t_s:g} s", g, out)


def probe(hardware: Sequence, times_s: Sequence[float]) -> None:
    """Program and read a small array on every distinct custom device point, at every read
    time, so that a broken device is reported before any worker starts."""
    seen = set()
    for hw in hardware:
        cls = DEVICES[hw.device]
        if cls in _TRUSTED or hw in seen:
            continue
        seen.add(hw)
        try:
            device = cls(hw)
        except Exception as exc:
            raise UserInputError(f"device {hw.device!r}: constructing {cls.__qualname__} "
                                 f"raised {type(exc).__name__}: {exc}",
                                 key="hardware.device") from exc
        rng = np.random.default_rng(0)
        targets = np.linspace(hw.g_min, hw.g_max, 16)
        g, state = program(device, targets, rng)
        for t in times_s:
            read(device, g.copy(), state.copy(), float(t), rng)
