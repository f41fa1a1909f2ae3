"""Vectorised PCM device statistics (docs/physics.md; Nandakumar et al. 2019, Joshi et al. 2020).

All conductances are in microsiemens; ``g_max`` sets the scale of the polynomial fits, which are
given for g_max = 25 µS.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from mc_engine.kernels.fastmath import exp, log
from mc_engine.kernels.rng import normal

T0_S = 20.0          # drift reference time t_0
T_READ_S = 250e-9    # read duration t_read


_F1E7 = np.float32(1e-7)
_F1E6 = np.float32(1e-6)
_TWO = np.uint64(2)
_ONE = np.uint64(1)


@njit(cache=True, nogil=True)
def pcm_program(g_target: np.ndarray, key: np.uint64, g_max: float, prog_scale: float,
                drift_scale: float, g_prog: np.ndarray, nu: np.ndarray) -> None:
    """Programming noise and drift exponent of every device, from its target conductance.

    g_P = max(0, g_T + sigma_P(g_T) xi), sigma_P = (0.26348 + 1.9650 x - 1.1731 x^2) g_max/25;
    nu = |mu_nu + sigma_nu xi'| with mu_nu, sigma_nu clipped log-linear fits in x = g_T/g_max.
    xi and xi' of device i are draws 2i and 2i + 1 of the counter-based stream ``key``
    (:mod:`mc_engine.kernels.rng`), drawn in the loop: one pass over the devices, vectorised.
    """
    inv = 1.0 / g_max
    scale = (g_max / 25.0) * prog_scale
    for i in range(g_target.shape[0]):
        c = np.uint64(i) * _TWO
        gt = g_target[i]
        x = gt * inv
        sig = (0.26348 + 1.9650 * x - 1.1731 * x * x) * scale
        gp = gt + sig * normal(key, c)
        g_prog[i] = gp if gp > 0.0 else 0.0
        xl = log(max(np.float32(x), _F1E7))
        mu = min(max(-0.0155 * xl + 0.0244, 0.049), 0.1)
        sd = min(max(-0.0125 * xl - 0.0059, 0.008), 0.045)
        nu[i] = abs(mu + sd * normal(key, c + _ONE)) * drift_scale


@njit(cache=True, nogil=True)
def pcm_drift_read(g_prog: np.ndarray, nu: np.ndarray, key: np.uint64, t: float,
                   g_max: float, read_scale: float, out: np.ndarray) -> None:
    """Conductance read at time t after programming: drift, then fresh 1/f read noise.

    g_D = g_P ((t + t0)/t0)^-nu; sigma_R = Q_s sqrt(ln((t + t0 + t_r)/(2 t_r))),
    Q_s = min(0.0088 / max(x^0.65, 1e-3), 0.2), x = g_P/g_max; g = max(0, g_D + |g_D| sigma_R xi),
    xi of device i draw i of the stream ``key``. The powers are float32 exp/log (relative
    error ~1e-7, :mod:`mc_engine.kernels.fastmath`), so the loop vectorises.
    """
    log_ratio = np.float32(math.log((t + T0_S) / T0_S))
    noise = math.sqrt(math.log((t + T0_S + T_READ_S) / (2.0 * T_READ_S))) * read_scale
    inv = 1.0 / g_max
    for i in range(g_prog.shape[0]):
        gp = g_prog[i]
        gd = gp * exp(-np.float32(nu[i]) * log_ratio)
        x_pow = exp(np.float32(0.65) * log(max(np.float32(gp * inv), _F1E6)))
        q = min(0.0088 / max(x_pow, 1e-3), 0.2)
        g = gd + abs(gd) * q * noise * normal(key, np.uint64(i))
        out[i] = g if g > 0.0 else 0.0
