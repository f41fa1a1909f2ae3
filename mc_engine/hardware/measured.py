"""The measured device models of IBM aihwkit 1.2.0 (``aihwkit/inference/noise/*.py``), as devices.

Each follows its aihwkit class formula by formula, with the same constants and defaults; the
engine converts the programmed and read conductances back to weights before the MVM, as aihwkit
does (weight units at the ADC, docs/devices.md). Conductances are in µS, x = g/g_max.

- ``hermes``: ``HermesNoiseModel``, the PCM of IBM's HERMES chip (Le Gallo et al., Nature
  Electronics 2023), for one or two devices per weight (``num_devices``).
- ``reram_wan2022``: ``ReRamWan2022NoiseModel``, the ReRAM of NeuRRAM (Wan et al., Nature 2022):
  fitted only at 1 s, 1 d and 2 d after programming.
- ``reram_cmo``: ``ReRamCMONoiseModel``, the CMO/HfOx ReRAM of IBM Research Zurich, one device
  per weight, with the program-and-verify acceptance range as a parameter.
- ``pcm_custom_drift``: ``CustomDriftPCMLikeNoiseModel``, the PCM model with the drift exponent's
  statistics interpolated from a user's table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mc_engine.hardware.devices import DeviceModel, DeviceParam, PCMDevice, register_device


def _poly(coeffs: tuple[float, ...], x: np.ndarray) -> np.ndarray:
    """sum_i c_i x^i (coefficients from the constant term up)."""
    out = np.full_like(x, coeffs[-1])
    for c in coeffs[-2::-1]:
        out = out * x + c
    return out


def _log(x: np.ndarray) -> np.ndarray:
    """ln x with 0 taken as the smallest positive double: every fit below has a negative log
    slope clipped from above, so this gives the clip value that ln 0 = -inf gives in aihwkit."""
    return np.log(np.maximum(x, np.finfo(np.float64).tiny))


@dataclass(frozen=True)
class Branch:
    """aihwkit's two-branch fits: clip(a ln x + b, lo, hi) below ``split``, a polynomial in x
    (constant term first) from ``split`` on."""

    split: float
    a: float
    b: float
    lo: float
    hi: float
    high: tuple[float, ...]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        low = np.clip(self.a * _log(x) + self.b, self.lo, self.hi)
        return np.where(x < self.split, low, _poly(self.high, x))


@dataclass(frozen=True)
class HermesFit:
    """The HERMES fits for one number of devices per weight (aihwkit 1.2.0, hermes.py)."""

    prog: tuple[float, ...]     # sigma_P polynomial in x, µS at g_max = g_ref
    g_ref: float                # the characterised g_max (the default and the largest allowed)
    t0_s: float                 # drift reference time
    nu_sigma: Branch            # standard deviation of the drift exponent
    q_s: Branch                 # 1/f read-noise amplitude


HERMES_NU_MEAN = Branch(0.0945, -0.0387, -0.0182, 0.0720, 0.13, (0.0736, -0.0126, -0.0436))
HERMES = {
    2: HermesFit(prog=(0.16603222, 4.71806468, -8.48101252, 4.68961419), g_ref=20.7, t0_s=300.0,
                 nu_sigma=Branch(0.3055, -0.0117, -0.0057, 0.0091, 0.04,
                                 (0.0073, 0.0093, -0.0118)),
                 q_s=Branch(0.16, -0.0117, -0.0069, 0.015, 0.04,
                            (0.0123, 0.0211, -0.0280, 0.0069))),
    1: HermesFit(prog=(0.15781817, 2.32443916, -2.16310839, 0.68841818), g_ref=10.35,
                 t0_s=200.0,
                 nu_sigma=Branch(0.3039, -0.0120, -0.0023, 0.0124, 0.04,
                                 (0.0104, 0.0116, -0.0165)),
                 q_s=Branch(0.1591, -0.0078, 0.0038, 0.0179, 0.04,
                            (0.0088, 0.0768, -0.1352, 0.0664))),
}
HERMES_T_READ_S = 512e-9
#: Relative conductances below this are clamped in the drift-exponent fits (aihwkit's _ZERO_CLIP).
ZERO_CLIP = 1e-7


@register_device
class HermesDevice(DeviceModel):
    """IBM HERMES PCM (aihwkit ``HermesNoiseModel``): sigma_P a cubic in x scaled by
    g_max/g_ref; nu = |mu(x) + sigma_nu(x) xi| from two-branch fits; drift
    ((t + t0)/t0)^-nu and 1/f read noise Q_s(x) sqrt(ln((t + t0 + t_read)/(2 t_read))), with
    t0 = 300 s (two devices) or 200 s (one) and t_read = 512 ns."""

    name = "hermes"
    params = {"num_devices": DeviceParam(2.0, "HERMES: devices per weight, 1 or 2 (2: the "
                                              "multi-device programming of Vasilopoulos et "
                                              "al. 2023, more accurate).", choices=(1.0, 2.0))}

    @property
    def fit(self) -> HermesFit:
        return HERMES[int(self.values["num_devices"])]

    @classmethod
    def hardware_defaults(cls, values, table):
        return {"g_max": HERMES[int(values["num_devices"])].g_ref}

    @classmethod
    def combination_rules(cls, hw):
        n = int(dict(hw.device_params)["num_devices"])
        yield ("g_max", hw.g_max <= HERMES[n].g_ref,
               f"hermes with num_devices = {n} is characterised up to g_max = {HERMES[n].g_ref} "
               f"µS, got {hw.g_max:g}")

    def program(self, g_target, rng):
        hw, fit = self.hw, self.fit
        x = g_target / hw.g_max
        sigma = _poly(fit.prog, x) * (hw.g_max / fit.g_ref) * hw.prog_noise_scale
        g_prog = np.maximum(g_target + sigma * rng.standard_normal(g_target.size), 0.0)
        x_nu = np.maximum(np.abs(x), ZERO_CLIP)
        nu = np.abs(HERMES_NU_MEAN(x_nu) + fit.nu_sigma(x_nu) * rng.standard_normal(x.size))
        return g_prog, nu * hw.drift_scale

    def read(self, g, state, t_s, rng):
        hw, fit = self.hw, self.fit
        t = t_s + fit.t0_s
        g_drift = g * (t / fit.t0_s) ** -state if t_s > 0 else g
        sigma = fit.q_s(np.abs(g) / hw.g_max) * math.sqrt(
            math.log((t + HERMES_T_READ_S) / (2 * HERMES_T_READ_S)))
        out = g_drift + np.abs(g_drift) * hw.read_noise_scale * sigma * rng.standard_normal(g.size)
        return np.maximum(out, 0.0)


#: NeuRRAM's fits (aihwkit 1.2.0, reram.py): sigma(x) in µS, constant term first, per time (s).
WAN2022 = {
    1.0: (0.348, 16.030, -43.853, 45.393, -16.815),
    86400.0: (0.701, 22.086, -50.773, 47.095, -16.458),
    172800.0: (0.782, 20.274, -43.507, 37.062, -11.934),
}


@register_device
class ReRamWan2022Device(DeviceModel):
    """NeuRRAM ReRAM (aihwkit ``ReRamWan2022NoiseModel``): at each fitted time t the device
    reads max(0, g_T + sigma_t(g_T/g_max) xi), a fresh draw around its programmed target (no
    drift law); programming is the 1 s draw. sigma_t in µS as fitted (aihwkit 1.2.0 rescales it
    by g_max/g_max = 1). ``prog_noise_scale`` scales the programming draw and
    ``read_noise_scale`` the reads (both aihwkit's noise_scale)."""

    name = "reram_wan2022"

    def program(self, g_target, rng):
        sigma = _poly(WAN2022[1.0], g_target / self.hw.g_max) * self.hw.prog_noise_scale
        g_prog = np.maximum(g_target + sigma * rng.standard_normal(g_target.size), 0.0)
        return g_prog, g_target.copy()

    def read(self, g, state, t_s, rng):
        self.check_time(t_s)
        sigma = _poly(WAN2022[float(t_s)], state / self.hw.g_max) * self.hw.read_noise_scale
        return np.maximum(state + sigma * rng.standard_normal(state.size), 0.0)

    def time_problem(self, times_s):
        bad = [t for t in times_s if float(t) not in WAN2022]
        if bad:
            return (f"device 'reram_wan2022' is fitted at 1 s, 1 d and 2 d after programming "
                    f"only (1, 86400 and 172800 s); got {bad[0]:g} s")
        return None


#: CMO/HfOx ReRAM fits (aihwkit 1.2.0, reram.py): programming sigma c0 + c1 g (µS) for each
#: acceptance range (%), conductance decay and read noise.
CMO_PROG = {0.2: (0.00081107, 0.00106879), 2.0: (0.0112185391, 0.01129027418)}
CMO_DECAY_MEAN = -0.08900206
CMO_DECAY_STD = (0.04201137, 0.41183342)
CMO_READ_K = 0.0277316483
CMO_T_READ_S = 1e-6
CMO_G_MAX, CMO_ON_OFF = 88.2, 9.8     # aihwkit's SingleDeviceConductanceConverter: 88.2, 9 µS


@register_device
class ReRamCMODevice(DeviceModel):
    """CMO/HfOx ReRAM (aihwkit ``ReRamCMONoiseModel``), one device per weight between g_min
    and g_max: programming g_T + (c0 + c1 g_T) xi for the acceptance range; at t > 0 the
    conductance relaxes by m ln t (independent of g) with a spread s0 ln t + s1, then 1/f read
    noise K log10(g) sqrt(ln((t + t_read)/(2 t_read))), clipped to [g_min, g_max]. The read at
    t = 0 is the programmed conductance. Programmed conductances are clipped at 0 (aihwkit does
    not clip them; that matters only when g_min is within a few sigma of 0)."""

    name = "reram_cmo"
    params = {"acceptance_range": DeviceParam(
        0.2, "reram_cmo: acceptance range of program-and-verify, in % of the target: 0.2 or 2 "
             "(aihwkit 1.2.0's default falls back to 0.2).", choices=(0.2, 2.0))}

    @classmethod
    def hardware_defaults(cls, values, table):
        return {"g_max": CMO_G_MAX, "on_off_ratio": CMO_ON_OFF, "g_converter": "single_device"}

    @classmethod
    def combination_rules(cls, hw):
        yield ("g_converter", hw.g_converter == "single_device",
               f"reram_cmo is one device per weight (aihwkit's SingleDeviceConductanceConverter): "
               f"set g_converter = 'single_device', got {hw.g_converter!r}")
        yield ("on_off_ratio", math.isfinite(hw.on_off_ratio),
               "reram_cmo's read noise grows with log10(g) and is fitted on 9-88 µS: give a "
               "finite on_off_ratio (g_min > 0; default 9.8)")

    def time_problem(self, times_s):
        bad = [t for t in times_s if 0 < t < CMO_T_READ_S]
        if bad:
            return (f"device 'reram_cmo' reads at 0 s or from t_read = 1 µs on (its read noise "
                    f"integrates from t_read); got {bad[0]:g} s")
        return None

    def program(self, g_target, rng):
        c0, c1 = CMO_PROG[self.values["acceptance_range"]]
        sigma = (c0 + c1 * g_target) * self.hw.prog_noise_scale
        g_prog = np.maximum(g_target + sigma * rng.standard_normal(g_target.size), 0.0)
        return g_prog, np.zeros_like(g_target)

    def read(self, g, state, t_s, rng):
        self.check_time(t_s)
        if t_s == 0:
            return g.copy()
        hw = self.hw
        log_t = math.log(t_s)
        spread = CMO_DECAY_STD[0] * log_t + CMO_DECAY_STD[1]
        g_drift = g + CMO_DECAY_MEAN * log_t * hw.drift_scale + \
            rng.standard_normal(g.size) * spread * hw.drift_scale
        k = CMO_READ_K * math.sqrt(math.log((t_s + CMO_T_READ_S) / (2 * CMO_T_READ_S)))
        sigma = np.where(g_drift > 0, k * np.log10(np.maximum(g_drift, 1e-300)), 0.0)
        out = g_drift + sigma * rng.standard_normal(g.size) * hw.read_noise_scale
        return np.clip(out, hw.g_min, hw.g_max)


@register_device
class CustomDriftPCMDevice(PCMDevice):
    """The PCM model with a user's drift table (aihwkit ``CustomDriftPCMLikeNoiseModel``):
    programming and read exactly as ``pcm``; nu = |m(g_T) + s(g_T) xi|·drift_scale with m, s
    interpolated linearly in g_T (µS, clipped to the table) from the table's g_us, nu_mean,
    nu_std columns (``device_table``)."""

    name = "pcm_custom_drift"
    table_columns = ("g_us", "nu_mean", "nu_std")

    @classmethod
    def table_problem(cls, table):
        g, std = table.column("g_us"), table.column("nu_std")
        if g.size < 2:
            return "a drift table needs at least 2 rows (g_us, nu_mean, nu_std)"
        if np.any(np.diff(g) <= 0) or g[0] < 0:
            return "g_us must be >= 0 and strictly ascending"
        if np.any(std < 0):
            return "nu_std must be >= 0"
        return None

    @classmethod
    def combination_rules(cls, hw):
        g = hw.table.column("g_us")
        yield ("g_max", g[0] <= hw.g_min and hw.g_max <= g[-1],
               f"the drift table {hw.table.name!r} covers {g[0]:g} to {g[-1]:g} µS, the mapping "
               f"programs g_min = {hw.g_min:g} to g_max = {hw.g_max:g} µS: set g_max (and "
               f"on_off_ratio, g_min = g_max/on_off_ratio) inside the table")

    def program(self, g_target, rng):
        g_prog, _ = super().program(g_target, rng)
        table = self.hw.table
        g = table.column("g_us")
        at = np.clip(g_target, g[0], g[-1])
        mean = np.interp(at, g, table.column("nu_mean"))
        std = np.interp(at, g, table.column("nu_std"))
        nu = np.abs(mean + std * rng.standard_normal(g_target.size))
        return g_prog, nu * self.hw.drift_scale
