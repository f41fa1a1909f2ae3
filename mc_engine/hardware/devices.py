"""Device models: how a target conductance is programmed and how it reads back over time.

This is the documented extension point of the device model (docs/devices.md): subclass
:class:`DeviceModel`, implement ``program`` and ``read``, declare the model's own parameters in
``params``, and register it with :func:`register_device`; the name then becomes a valid
``device`` value in ``HardwareConfig`` and in study files. A study file can also name a class in
a module beside it, ``device = "my_devices:MyDevice"``, which the study layer imports and
registers under that name. The engine calls only ``program`` and ``read``, with flat float64
arrays of conductances in microsiemens (and, where a model defines it, ``use(execution)``: where
the analog pass runs, :mod:`mc_engine.analog.execution`; the PCM model then computes on the
torch device and still hands back numpy arrays).

A model may also declare what it needs from the rest of the hardware point: its own defaults of
hardware fields (``hardware_defaults``: HERMES's g_max), rules that combine its parameters with
other fields (``combination_rules``), the read times it is defined at (``time_problem``) and a
table of measurements beside the study (``table_columns``). The measured devices of the
literature (:mod:`mc_engine.hardware.measured`) and the table device
(:mod:`mc_engine.hardware.table`) use these.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from mc_engine.kernels.pcm import pcm_drift_read, pcm_program

if TYPE_CHECKING:
    from mc_engine.analog.execution import Execution
    from mc_engine.hardware.config import HardwareConfig
    from mc_engine.hardware.tables import DeviceTable


#: Names a device parameter cannot take: they are result columns already.
RESERVED_NAMES = frozenset({"study", "point_id", "repeat", "t_inference_s", "accuracy",
                            "n_correct", "n_samples", "seed", "wall_s", "engine_version",
                            "device_params", "checkpoint", "layer", "loss", "perplexity", "backend",
                            "compute_device",
                            # summary and ranking columns, and the read time as printed
                            "t", "n", "mean", "std", "q05", "q50", "q95", "ci95_lo", "ci95_hi",
                            "ci95_clipped", "ideal_accuracy", "drop_from_ideal", "n_first",
                            "std_first", "rank", "gap_to_next"})


@dataclass(frozen=True)
class DeviceParam:
    """One parameter of a device model: a float with a default, a doc line and its range.

    ``lo``/``hi`` bound the value (``lo_open``: strictly above ``lo``); values must be finite.
    ``choices``: the only values allowed (HERMES's ``num_devices`` 1 or 2). The parameter is set
    in a study file's ``[hardware]`` table under its own name, swept like any hardware
    parameter, and stored as a float64 result column of that name.
    """

    default: float
    doc: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    choices: tuple[float, ...] | None = None

    def allowed(self) -> str:
        """The allowed values in words: 'a finite number > 0 and <= 1', 'one of 1, 2'."""
        if self.choices is not None:
            return "one of " + ", ".join(f"{c:g}" for c in self.choices)
        parts = []
        if self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {self.lo:g}")
        if self.hi is not None:
            parts.append(f"<= {self.hi:g}")
        return "a finite number" + (f" {' and '.join(parts)}" if parts else "")

    def check(self, value: object) -> str | None:
        """Why ``value`` is not allowed, or None if it is."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"expected {self.allowed()}, got {value!r}"
        try:
            value = float(value)
        except OverflowError:
            return f"expected {self.allowed()}, got a number beyond the floating-point range"
        if not math.isfinite(value) or (self.lo is not None and (
                value < self.lo or (self.lo_open and value == self.lo))) or \
                (self.hi is not None and value > self.hi) or \
                (self.choices is not None and value not in self.choices):
            return f"expected {self.allowed()}, got {value!r}"
        return None


class DeviceModel:
    """Base class of a device model. ``exact = True`` marks a model without any randomness.

    ``params`` declares the model's own parameters (name -> :class:`DeviceParam`); their values
    for the hardware point being simulated are in ``self.values`` (defaults filled in).
    """

    name: ClassVar[str] = ""
    exact: ClassVar[bool] = False
    params: ClassVar[dict[str, DeviceParam]] = {}
    #: The columns of the table of measurements the model reads (``device_table``, a CSV file
    #: beside the study); () for a model without one.
    table_columns: ClassVar[tuple[str, ...]] = ()

    def __init__(self, hw: HardwareConfig):
        self.hw = hw
        given = dict(hw.device_params)
        self.values: dict[str, float] = {k: float(given.get(k, p.default))
                                         for k, p in self.params.items()}

    @classmethod
    def hardware_defaults(cls, values: dict[str, float], table: DeviceTable | None
                          ) -> dict[str, Any]:
        """The model's own defaults of hardware fields that have a device-dependent default
        (``g_max``, ``on_off_ratio``, ``g_converter``), from its parameter values and table; a
        field left out takes the engine's default."""
        return {}

    @classmethod
    def combination_rules(cls, hw: HardwareConfig) -> Iterable[tuple[str, bool, str]]:
        """(key, allowed, message) of every rule that ties the model to other hardware fields:
        a point where one is not allowed is rejected naming ``key``."""
        return ()

    @classmethod
    def table_problem(cls, table: DeviceTable) -> str | None:
        """What is wrong with ``table`` as this model's table of measurements, or None."""
        return None

    def time_problem(self, times_s: Sequence[float]) -> str | None:
        """Why the model cannot be read at some of ``times_s`` (seconds after programming),
        or None: a study is rejected before anything runs, naming its inference_times."""
        return None

    def check_time(self, t_s: float) -> None:
        """Raise UserInputError (key t_inference_s) if the model is not defined at ``t_s``."""
        problem = self.time_problem((t_s,))
        if problem:
            from mc_engine.errors import UserInputError

            raise UserInputError(problem, key="t_inference_s")

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
    """The PCM statistical model (Nandakumar et al. 2019; Joshi et al. 2020), docs/physics.md.

    Runs where the analog pass runs (:meth:`use`): the Numba kernels of
    :mod:`mc_engine.kernels.pcm` by default, their torch port :mod:`mc_engine.analog.torch_pcm`
    on the device of a torch execution. Both draw from the same key, so the programmed and read
    conductances do not depend on the execution (bitwise on the CPU)."""

    name = "pcm"
    #: Where program and read run: ``None`` = the Numba kernels; else the torch device.
    torch_device: Any = None

    def use(self, execution: Execution) -> None:
        """Program and read on ``execution``: the torch port on its device (conductances go
        there and come back as the numpy arrays the engine holds), or the Numba kernels."""
        self.torch_device = execution.torch_device if execution.torch else None

    def program(self, g_target, rng):
        hw = self.hw
        key = _key(rng)
        if self.torch_device is not None:
            from mc_engine.analog import torch_pcm

            g, nu = torch_pcm.program(self._tensor(g_target), key, hw.g_max,
                                      hw.prog_noise_scale, hw.drift_scale)
            return _array(g, g_target.dtype), _array(nu, g_target.dtype)
        g_prog = np.empty_like(g_target)
        nu = np.empty_like(g_target)
        pcm_program(g_target, key, hw.g_max, hw.prog_noise_scale, hw.drift_scale, g_prog, nu)
        return g_prog, nu

    def read(self, g, state, t_s, rng):
        key = _key(rng)
        if self.torch_device is not None:
            from mc_engine.analog import torch_pcm

            out = torch_pcm.drift_read(self._tensor(g), self._tensor(state), key, float(t_s),
                                       self.hw.g_max, self.hw.read_noise_scale)
            return _array(out, g.dtype)
        out = np.empty_like(g)
        pcm_drift_read(g, state, key, float(t_s), self.hw.g_max, self.hw.read_noise_scale, out)
        return out

    def _tensor(self, a: np.ndarray):
        import torch

        return torch.from_numpy(np.ascontiguousarray(a)).to(self.torch_device)


def _array(t, dtype: np.dtype) -> np.ndarray:
    """A torch result as the numpy array (of the input's dtype) the engine holds."""
    return t.cpu().numpy().astype(dtype, copy=False)


def _key(rng: np.random.Generator) -> np.uint64:
    """A counter-based stream key from the generator the engine hands a device model: the PCM
    kernels draw their normals in the loop (:mod:`mc_engine.kernels.rng`), one pass, no arrays."""
    return np.uint64(rng.integers(0, np.iinfo(np.uint64).max, dtype=np.uint64, endpoint=True))


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


def declaration_problem(cls: object) -> str | None:
    """What is wrong with ``cls`` as a device model (not a subclass, bad ``params``), or None."""
    if not (isinstance(cls, type) and issubclass(cls, DeviceModel)) or cls is DeviceModel:
        what = cls.__name__ if isinstance(cls, type) else type(cls).__name__
        return f"is not a subclass of mc_engine.hardware.devices.DeviceModel (it is {what!r})"
    params = cls.params
    if not isinstance(params, dict):
        return f"params must be a dict of name -> DeviceParam, got {type(params).__name__}"
    from mc_engine.hardware.config import HardwareConfig

    fields = set(HardwareConfig.field_names())
    for key, param in params.items():
        if not isinstance(key, str) or not key.isidentifier():
            return f"parameter name {key!r} is not a valid identifier"
        if key in fields:
            return (f"parameter {key!r} has the name of a HardwareConfig field; a device "
                    f"parameter needs a name of its own (it becomes a study key and a result "
                    f"column)")
        if key in RESERVED_NAMES:
            return f"parameter {key!r} has the name of a result column; rename it"
        if not isinstance(param, DeviceParam):
            return f"params[{key!r}] must be a DeviceParam, got {type(param).__name__}"
        problem = param.check(param.default)
        if problem:
            return f"the default of parameter {key!r} is not allowed: {problem}"
    return None


def register_device(cls: type[DeviceModel], name: str | None = None) -> type[DeviceModel]:
    """Make ``cls`` available as ``device = name`` (default ``cls.name``); usable as a class
    decorator. Raises TypeError for a class that is not a valid device model."""
    name = cls.name if name is None and isinstance(cls, type) else name
    problem = declaration_problem(cls)
    if problem:
        raise TypeError(f"register_device: {getattr(cls, '__name__', cls)!r} {problem}")
    if not name or not isinstance(name, str):
        raise TypeError("register_device expects a DeviceModel subclass with a non-empty name")
    DEVICES[name] = cls
    return cls


def check_device_params(device: str, values: object) -> tuple[tuple[str, float], ...]:
    """The canonical parameter values of registered ``device``: every declared parameter (the
    defaults filled in), sorted by name, as floats. ``values`` is a mapping or (name, value)
    pairs; an unknown name or a value out of range raises UserInputError keyed by the name."""
    from mc_engine.errors import UserInputError

    params = DEVICES[device].params
    try:
        given = dict(values)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise UserInputError(f"expected a mapping of parameter name -> value, got {values!r}",
                             key="device_params") from None
    for key, value in given.items():
        if key not in params:
            allowed = ", ".join(sorted(params)) or "none"
            raise UserInputError(f"not a parameter of device {device!r}; its parameters: "
                                 f"{allowed}", key=str(key))
        problem = params[key].check(value)
        if problem:
            raise UserInputError(f"{problem} (a parameter of device {device!r})", key=key)
    return tuple(sorted((k, float(given.get(k, p.default))) for k, p in params.items()))


#: The models that ship with the engine (the rest are shipped to Dask workers by the runner).
BUILTIN_DEVICES = ("pcm", "ideal", "state_independent", "hermes", "reram_wan2022", "reram_cmo",
                   "pcm_custom_drift", "table")

for _cls in (PCMDevice, IdealDevice, StateIndependentDevice):
    register_device(_cls)
