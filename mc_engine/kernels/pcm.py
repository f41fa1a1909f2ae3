"""Vectorised PCM device statistics (DESIGN.md §2.2; Nandakumar et al. 2019, Joshi et al. 2020).

All conductances are in microsiemens; ``g_max`` sets the scale of the polynomial fits, which are
given for g_max = 25 µS.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

T0_S = 20.0          # drift reference time t_0
T_READ_S = 250e-9    # read duration t_read


@njit(cache=True, nogil=True)
def pcm_program(g_target: np.ndarray, xi_prog: np.ndarray, xi_nu: np.ndarray, g_max: float,
                prog_scale: float, drift_scale: float, g_prog: np.ndarray,
                nu: np.ndarray) -> None:
    """Programming noise and drift exponent of every device, from its target conductance.

    g_P = max(0, g_T + sigma_P(g_T) xi), sigma_P = (0.26348 + 1.9650 x - 1.1731 x^2) g_max/25;
    nu = |mu_nu + sigma_nu xi'| with mu_nu, sigma_nu clipped log-linear fits in x = g_T/g_max.
    """
    for i in range(g_target.shape[0]):
        gt = g_target[i]
        x = gt / g_max
        sig = (0.26348 + 1.9650 * x - 1.1731 * x * x) * (g_max / 25.0) * prog_scale
        gp = gt + sig * xi_prog[i]
        g_prog[i] = gp if gp > 0.0 else 0.0
        xl = math.log(max(x, 1e-7))
        mu = min(max(-0.0155 * xl + 0.0244, 0.049), 0.1)
        sd = min(max(-0.0125 * xl - 0.0059, 0.008), 0.045)
        nu[i] = abs(mu + sd * xi_nu[i]) * drift_scale


@njit(cache=True, nogil=True)
def pcm_drift_read(g_prog: np.ndarray, nu: np.ndarray, xi_read: np.ndarray, t: float,
                   g_max: float, read_scale: float, out: np.ndarray) -> None:
    """Conductance read at time t after programming: drift, then fresh 1/f read noise.

    g_D = g_P ((t + t0)/t0)^-nu; sigma_R = Q_s sqrt(ln((t + t0 + t_r)/(2 t_r))),
    Q_s = min(0.0088 / max(x^0.65, 1e-3), 0.2), x = g_P/g_max; g = max(0, g_D + |g_D| sigma_R xi).
    """
    ratio = (t + T0_S) / T0_S
    log_term = math.sqrt(math.log((t + T0_S + T_READ_S) / (2.0 * T_READ_S)))
    for i in range(g_prog.shape[0]):
        gp = g_prog[i]
        gd = gp * ratio ** (-nu[i])
        x = gp / g_max
        q = min(0.0088 / max(x ** 0.65, 1e-3), 0.2)
        g = gd + abs(gd) * q * log_term * read_scale * xi_read[i]
        out[i] = g if g > 0.0 else 0.0
