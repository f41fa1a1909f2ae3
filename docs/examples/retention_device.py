"""A non-PCM device model with a retention law, as a study file names it (docs/devices.md).

    [hardware]
    device = "retention_device:Retention"   # this file, beside the study file
    tau_s = 1e5                             # the parameters below, under their own names

Programming: a Gaussian error relative to the target, g_P = max(0, g_T·(1 + prog_sigma_rel·ξ)).
Retention: every device relaxes from its programmed conductance toward a resting value,
    g(t) = g_rest + (g_P − g_rest)·exp(−(t/tau_s)^beta),   g_rest = g_rest_frac·g_max,
a stretched exponential (beta = 1: plain exponential; beta < 1: a fast start and a long tail).
Read noise (optional): fresh at every read, relative to the read value,
    g = max(0, g(t)·(1 + read_sigma_rel·ξ)).
"""

from __future__ import annotations

import numpy as np

from mc_engine.hardware.devices import DeviceModel, DeviceParam


class Retention(DeviceModel):
    """Relative programming noise, stretched-exponential retention toward g_rest, read noise."""

    name = "retention"  # the name it would have if registered in Python with register_device
    params = {
        "tau_s": DeviceParam(1e5, "Retention time constant, in seconds.", lo=0.0, lo_open=True),
        "beta": DeviceParam(0.5, "Stretch exponent of the relaxation (1 = exponential).",
                            lo=0.0, hi=1.0, lo_open=True),
        "g_rest_frac": DeviceParam(0.0, "Resting conductance as a fraction of g_max.",
                                   lo=0.0, hi=1.0),
        "prog_sigma_rel": DeviceParam(0.03, "Programming-noise sigma relative to the target.",
                                      lo=0.0, hi=1.0),
        "read_sigma_rel": DeviceParam(0.0, "Read-noise sigma relative to the read value.",
                                      lo=0.0, hi=1.0),
    }

    def program(self, g_target, rng):
        xi = rng.standard_normal(g_target.size)
        g_prog = np.maximum(g_target * (1.0 + self.values["prog_sigma_rel"] * xi), 0.0)
        return g_prog, np.zeros_like(g_target)  # no per-device state

    def retained(self, g, t_s):
        """The noise-free retention law at t_s seconds after programming."""
        v = self.values
        g_rest = v["g_rest_frac"] * self.hw.g_max
        return g_rest + (g - g_rest) * np.exp(-((t_s / v["tau_s"]) ** v["beta"]))

    def read(self, g, state, t_s, rng):
        g_t = self.retained(g, float(t_s))
        sigma = self.values["read_sigma_rel"]
        if sigma > 0:
            g_t = g_t * (1.0 + sigma * rng.standard_normal(g.size))
        return np.maximum(g_t, 0.0)
