"""The PCM statistical model of DESIGN.md §2.2, pinned formula by formula (>= 1e6 draws)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from mc_engine.hardware import HardwareConfig, from_dict
from mc_engine.hardware.devices import DEVICES, DeviceModel, register_device
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


@register_device
class _StuckDevice(DeviceModel):
    """A user device model (the extension point): programs exactly, reads at 90 %."""

    name = "test_ninety_percent"

    def program(self, g_target, rng):
        return g_target.copy(), np.zeros_like(g_target)

    def read(self, g, state, t_s, rng):
        return 0.9 * g


def _retention_example() -> type[DeviceModel]:
    """The worked example of docs/devices.md (a non-PCM retention device)."""
    spec = importlib.util.spec_from_file_location(
        "retention_device", Path(__file__).parents[1] / "docs" / "examples" / "retention_device.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Retention


@pytest.fixture
def registered(request):
    """The device under test registered for the test only (the docs example is not built in)."""
    name = request.param
    if name == "test_retention_example":
        register_device(_retention_example(), name)
    yield name
    if name == "test_retention_example":
        del DEVICES[name]


@pytest.mark.parametrize("registered", ["pcm", "ideal", "state_independent",
                                        "test_ninety_percent", "test_retention_example"],
                         indirect=True)
def test_device_model_conformance(registered):
    """Every registered device model: shapes, non-negative conductances, determinism by rng."""
    name = registered
    device = DEVICES[name](HardwareConfig(device=name))
    g_t = np.linspace(0, 25, 1001)
    g1, s1 = device.program(g_t, np.random.default_rng(7))
    g2, s2 = device.program(g_t, np.random.default_rng(7))
    assert g1.shape == g_t.shape and np.all(g1 >= 0)
    np.testing.assert_array_equal(g1, g2)
    r1 = device.read(g1, s1, 3600.0, np.random.default_rng(8))
    assert r1.shape == g_t.shape and np.all(r1 >= 0) and np.all(np.isfinite(r1))
    np.testing.assert_array_equal(r1, device.read(g2, s2, 3600.0, np.random.default_rng(8)))


def test_registered_device_is_a_valid_hardware_value():
    assert HardwareConfig(device="test_ninety_percent").device == "test_ninety_percent"


def _pcm_read_sigma(mean: np.ndarray, g_prog: np.ndarray, t: float,
                    hw: HardwareConfig) -> np.ndarray:
    """DESIGN.md §2.2: sigma_R = Q_s(g_P/g_max) sqrt(ln((t + t0 + t_read)/(2 t_read))), relative
    to the drifted conductance."""
    q = np.minimum(0.0088 / np.maximum((g_prog / hw.g_max) ** 0.65, 1e-3), 0.2)
    return hw.read_noise_scale * q * np.sqrt(np.log((t + T0_S + T_READ_S) / (2 * T_READ_S))) \
        * np.abs(mean)


#: What each device model of the conformance suite declares about its read noise: the hardware
#: it is read with and the std of one read given the mean read value, the programmed
#: conductance and the time (DESIGN.md §2.2-2.3 for the built-ins, the docstring for the others).
READ_NOISE = {
    "pcm": ({}, _pcm_read_sigma),
    "ideal": ({}, lambda mean, g, t, hw: np.zeros_like(mean)),
    "state_independent": ({"sigma_read": 0.02},
                          lambda mean, g, t, hw: np.full_like(mean, hw.sigma_read * hw.g_max)),
    "test_ninety_percent": ({}, lambda mean, g, t, hw: np.zeros_like(mean)),
    "test_retention_example": ({"read_sigma_rel": 0.05},
                               lambda mean, g, t, hw: 0.05 * np.abs(mean)),
}


@pytest.mark.parametrize("t", [0.0, 3600.0])
@pytest.mark.parametrize("registered", sorted(READ_NOISE), indirect=True)
def test_device_read_noise_has_the_declared_statistics(registered, t):
    """Two reads of the same programmed devices differ by read noise only: (r1 - r2)/sqrt(2)
    has the declared std per device. 200 000 devices at 10-25 uS (far from the clip at 0):
    the std of the ratio to the declared sigma is 1 within 1.5 % (the standard error is
    0.16 %); a noise 25x too small or large, or of the wrong law, fails."""
    name = registered
    extra, sigma = READ_NOISE[name]
    hw = from_dict({"device": name, **extra})  # device parameters by name, as in a study
    device = DEVICES[name](hw)
    g_prog, state = device.program(np.linspace(10.0, 25.0, 200_000), np.random.default_rng(1))
    r1 = device.read(g_prog, state, t, np.random.default_rng(2))
    r2 = device.read(g_prog, state, t, np.random.default_rng(3))
    expected = sigma((r1 + r2) / 2, g_prog, t, hw)
    diff = (r1 - r2) / np.sqrt(2)
    if not expected.any():
        np.testing.assert_array_equal(diff, 0.0)
    else:
        assert np.std(diff / expected) == pytest.approx(1.0, abs=0.015)
        assert abs(np.mean(diff / expected)) < 0.01
