"""Reference laws of aihwkit 1.2.0's measured noise models, re-typed for the tests from
``aihwkit/inference/noise/{hermes,reram,pcm}.py`` in the branch form that source uses (boolean
masks, coefficient lists highest power first, as aihwkit writes them before its ``[::-1]``), so
that they share nothing with the engine's tables of fits.

Every function takes conductances in µS and returns a standard deviation or a mean in µS (or the
drift exponent's moments).
"""

from __future__ import annotations

import numpy as np


def _poly_low_first(coeffs, x):
    """sum_i c_i x^i, written out as aihwkit's ``mat *= x; sig += mat * c`` loop."""
    mat, out = 1.0, np.full_like(x, coeffs[0], dtype=np.float64)
    for c in coeffs[1:]:
        mat = mat * x
        out = out + mat * c
    return out


# ---- HERMES (hermes.py) ----

HERMES_PROG = {2: ([0.16603222, 4.71806468, -8.48101252, 4.68961419], 20.7),
               1: ([0.15781817, 2.32443916, -2.16310839, 0.68841818], 10.35)}
HERMES_T0 = {2: 300.0, 1: 200.0}


def hermes_sigma_prog(g, g_max, n):
    coeffs, ref = HERMES_PROG[n]
    return _poly_low_first(coeffs, g / g_max) * g_max / ref


def hermes_nu_moments(g, g_max, n):
    """(mu_nu, sigma_nu) before folding, for targets g."""
    x = np.maximum(np.abs(np.asarray(g, np.float64) / g_max), 1e-7)
    mu = np.where(x < 0.0945, np.clip(-0.0387 * np.log(x) - 0.0182, 0.0720, 0.13),
                  -0.0436 * x**2 - 0.0126 * x + 0.0736)
    if n == 1:
        sd = np.where(x < 0.3039, np.clip(-0.0120 * np.log(x) - 0.0023, 0.0124, 0.04),
                      -0.0165 * x**2 + 0.0116 * x + 0.0104)
    else:
        sd = np.where(x < 0.3055, np.clip(-0.0117 * np.log(x) - 0.0057, 0.0091, 0.04),
                      -0.0118 * x**2 + 0.0093 * x + 0.0073)
    return mu, sd


def hermes_read_sigma(g_drift, g_prog, t, g_max, n, read_scale=1.0):
    """Std of one read: |g_D| Q_s(g_P/g_max) sqrt(ln((t + t0 + t_read)/(2 t_read)))."""
    x = np.abs(g_prog) / g_max
    with np.errstate(divide="ignore"):
        if n == 1:
            q = np.where(x < 0.1591, np.clip(-0.0078 * np.log(x) + 0.0038, 0.0179, 0.04),
                         0.0664 * x**3 - 0.1352 * x**2 + 0.0768 * x + 0.0088)
        else:
            q = np.where(x < 0.16, np.clip(-0.0117 * np.log(x) - 0.0069, 0.015, 0.04),
                         0.0069 * x**3 - 0.0280 * x**2 + 0.0211 * x + 0.0123)
    t_read = 512e-9
    return np.abs(g_drift) * read_scale * q * np.sqrt(
        np.log((t + HERMES_T0[n] + t_read) / (2 * t_read)))


# ---- NeuRRAM, Wan et al. 2022 (reram.py) ----

WAN_COEFFS = {1.0: [-16.815, 45.393, -43.853, 16.030, 0.348][::-1],
              3600 * 24.0: [-16.458, 47.095, -50.773, 22.086, 0.701][::-1],
              3600 * 24.0 * 2: [-11.934, 37.062, -43.507, 20.274, 0.782][::-1]}


def wan_sigma(g_target, g_max, t):
    return _poly_low_first(WAN_COEFFS[t], g_target / g_max)


# ---- CMO/HfOx ReRAM (reram.py) ----

CMO_COEFFS = {0.2: [0.00106879, 0.00081107][::-1], 2: [0.01129027418, 0.0112185391][::-1]}
CMO_DECAY = {"mean": [-0.08900206], "std": [0.04201137, 0.41183342]}
CMO_READ = {"K": 0.0277316483, "t_read": 1e-6}


def cmo_sigma_prog(g_target, acceptance):
    return _poly_low_first(CMO_COEFFS[acceptance], g_target)      # g not normalised


def cmo_decay(t):
    """(mean shift, std) of the relaxation at t > 0 s."""
    return CMO_DECAY["mean"][0] * np.log(t), CMO_DECAY["std"][0] * np.log(t) + CMO_DECAY["std"][1]


def cmo_read_sigma(g_drift, t):
    t_read = CMO_READ["t_read"]
    return CMO_READ["K"] * np.log10(g_drift) * np.sqrt(np.log((t + t_read) / (2 * t_read)))


# ---- PCM (pcm.py), for pcm_custom_drift ----

def pcm_sigma_prog(g, g_max):
    return _poly_low_first([0.26348, 1.9650, -1.1731], g / g_max) * g_max / 25.0


def pcm_read_sigma(g_drift, g_prog, t, g_max, read_scale=1.0):
    q = np.minimum(0.0088 / np.maximum((np.abs(g_prog) / g_max) ** 0.65, 1e-3), 0.2)
    return np.abs(g_drift) * read_scale * q * np.sqrt(
        np.log((t + 20.0 + 250e-9) / (2 * 250e-9)))
