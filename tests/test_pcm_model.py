"""The PCM statistical model of docs/physics.md, pinned formula by formula (>= 1e6 draws)."""

from __future__ import annotations

import numpy as np
import pytest

from mc_engine.hardware import HardwareConfig
from mc_engine.hardware.devices import DEVICES, DeviceModel
from mc_engine.kernels.pcm import T0_S, T_READ_S

N = 1_000_000
G_MAX = 25.0


def sigma_prog(g, g_max=G_MAX):
    x = g / g_max
    return (0.26348 + 1.9650 * x - 1.1731 * x**2) * g_max / 25.0


def nu_params(g, g_max=G_MAX):
    lx = np.log(max(g / g_max, 1e-7))
    return (np.clip(-0.0155 * lx + 0.0244, 0.049, 0.1),
            np.clip(-0.0125 * lx - 0.0059, 0.008, 0.045))


def pcm(**kw) -> DeviceModel:
    return DEVICES["pcm"](HardwareConfig(**kw))


@pytest.mark.parametrize("g", [2.5, 6.25, 12.5, 20.0, 25.0])
@pytest.mark.parametrize("g_max,scale", [(25.0, 1.0), (40.0, 1.5)])
def test_programming_noise_sigma_follows_polynomial(g, g_max, scale):
    # Targets >= 2.5 µS sit > 5 sigma above 0, so the clip at 0 does not bias the moments.
    g = g * g_max / 25.0
    g_prog, _ = pcm(g_max=g_max, prog_noise_scale=scale).program(np.full(N, g),
                                                              np.random.default_rng(1))
    # sample std of 1e6 normals is within 0.3 % (4 standard errors); 2 % catches any wrong term
    assert g_prog.std() == pytest.approx(scale * sigma_prog(g, g_max), rel=0.02)
    assert g_prog.mean() == pytest.approx(g, abs=5 * scale * sigma_prog(g, g_max) / np.sqrt(N))


def test_programming_noise_clips_at_zero_and_programs_zero_targets():
    g_prog, _ = pcm().program(np.zeros(N), np.random.default_rng(2))
    assert g_prog.min() == 0.0
    # a clipped N(0, 0.26348): mean sigma/sqrt(2 pi), half the devices exactly at 0
    assert g_prog.mean() == pytest.approx(0.26348 / np.sqrt(2 * np.pi), rel=0.01)
    assert np.mean(g_prog == 0.0) == pytest.approx(0.5, abs=0.002)


@pytest.mark.parametrize("g", [0.0, 0.25, 1.25, 6.25, 25.0])
def test_drift_exponent_mean_and_sigma_follow_clipped_fits(g):
    _, nu = pcm().program(np.full(N, g), np.random.default_rng(3))
    mu, sd = nu_params(g)
    # nu = |mu + sd xi|: the folded normal's moments (exact, also where folding matters)
    from scipy.stats import foldnorm
    ref = foldnorm(mu / sd, scale=sd)
    assert nu.mean() == pytest.approx(ref.mean(), abs=5 * ref.std() / np.sqrt(N))
    assert nu.std() == pytest.approx(ref.std(), rel=0.01)


def test_drift_scale_multiplies_nu():
    rng = np.random.default_rng(4)
    _, nu1 = pcm().program(np.full(1000, 10.0), np.random.default_rng(5))
    _, nu2 = pcm(drift_scale=2.5).program(np.full(1000, 10.0), np.random.default_rng(5))
    np.testing.assert_allclose(nu2, 2.5 * nu1)
    del rng


@pytest.mark.parametrize("t", [0.0, 3600.0, 86400.0, 3.15e7])
@pytest.mark.parametrize("g", [1.25, 12.5])
def test_read_noise_sigma_follows_one_over_f_law(t, g):
    device = pcm(read_noise_scale=1.0)
    gp = np.full(N, g)
    nu = np.full(N, 0.05)
    out = device.read(gp, nu, t, np.random.default_rng(6))
    g_drift = g * ((t + T0_S) / T0_S) ** -0.05
    q = min(0.0088 / max((g / G_MAX) ** 0.65, 1e-3), 0.2)
    sigma = g_drift * q * np.sqrt(np.log((t + T0_S + T_READ_S) / (2 * T_READ_S)))
    assert out.mean() == pytest.approx(g_drift, abs=5 * sigma / np.sqrt(N))
    assert out.std() == pytest.approx(sigma, rel=0.02)


def test_drift_is_a_power_law_in_time():
    device = pcm(read_noise_scale=0.0)
    gp, nu = np.array([10.0, 20.0]), np.array([0.05, 0.1])
    for t in (0.0, 100.0, 1e6):
        np.testing.assert_allclose(device.read(gp, nu, t, np.random.default_rng(0)),
                                   gp * ((t + 20.0) / 20.0) ** -nu, rtol=2e-6)
