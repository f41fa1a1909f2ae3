"""aihwkit 1.2.0's measured devices (hermes, reram_wan2022, reram_cmo, pcm_custom_drift) against
the formulas of aihwkit's source (tests/device_laws.py): programming noise as a function of the
target, the drift exponent's distribution, the drift or decay mean at 1 d, their parameters,
defaults and the read times they are defined at.

Tolerances: 200 000 draws per statistic, where the standard error of a mean is sigma/447 and of
a std 0.16 %; means are held within 5 standard errors, stds within 2 % (12 standard errors,
while every planted coefficient error moves them by 5 % or more).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import foldnorm, norm

from mc_engine.errors import UserInputError
from mc_engine.hardware import HardwareConfig, from_dict
from mc_engine.hardware.devices import DEVICES
from mc_engine.hardware.tables import parse_table, register_table
from mc_engine.study import load_study, parse_study
from tests import device_laws as law

N = 200_000
DAY = 86400.0


def device(name: str, **values):
    hw = from_dict({"device": name, **values})
    return DEVICES[name](hw), hw


def assert_clipped_normal(sample: np.ndarray, mean: float, sigma: float) -> None:
    """``sample`` is max(0, N(mean, sigma^2)): the rectified normal's mean within 5 standard
    errors and its std within 2 % (exact moments, so targets near 0 are checked too)."""
    a = mean / sigma
    m1 = mean * norm.cdf(a) + sigma * norm.pdf(a)
    m2 = (mean**2 + sigma**2) * norm.cdf(a) + mean * sigma * norm.pdf(a)
    std = np.sqrt(m2 - m1**2)
    assert abs(sample.mean() - m1) < 5 * std / np.sqrt(sample.size), (sample.mean(), m1)
    assert sample.std() == pytest.approx(std, rel=0.02)


# ---- HERMES ----

@pytest.mark.parametrize("n", [1, 2])
def test_hermes_defaults_follow_num_devices(n):
    _, hw = device("hermes", num_devices=n)
    assert hw.g_max == law.HERMES_PROG[n][1] and hw.g_converter == "single_pair"
    assert HardwareConfig(device="hermes").g_max == 20.7


def test_hermes_rejects_conductances_beyond_its_characterisation():
    with pytest.raises(UserInputError, match=r"g_max: hermes with num_devices = 1 is "
                                             r"characterised up to g_max = 10.35 µS, got 20.7"):
        from_dict({"device": "hermes", "num_devices": 1, "g_max": 20.7})
    with pytest.raises(UserInputError, match=r"num_devices: expected one of 1, 2, got 3"):
        from_dict({"device": "hermes", "num_devices": 3})


@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("x", [0.05, 0.2, 0.5, 0.9])
def test_hermes_programming_noise_and_drift_exponent_follow_the_fits(n, x):
    """x spans both branches of every fit (splits at 0.0945, 0.16 and 0.30)."""
    dev, hw = device("hermes", num_devices=n)
    g = x * hw.g_max
    g_prog, nu = dev.program(np.full(N, g), np.random.default_rng(1))
    assert_clipped_normal(g_prog, g, law.hermes_sigma_prog(np.array(g), hw.g_max, n))
    mu, sd = (float(v) for v in law.hermes_nu_moments(np.array(g), hw.g_max, n))
    folded = foldnorm(mu / sd, scale=sd)
    assert abs(nu.mean() - folded.mean()) < 5 * folded.std() / np.sqrt(N)
    assert nu.std() == pytest.approx(folded.std(), rel=0.02)


@pytest.mark.parametrize("n", [1, 2])
def test_hermes_drift_mean_at_one_day(n):
    """Without programming and read noise a device reads g ((t + t0)/t0)^-nu, t0 = 300 s (two
    devices) or 200 s (one): the mean at 1 d is g E[r^-nu] over the folded normal of nu."""
    dev, hw = device("hermes", num_devices=n, prog_noise_scale=0.0, read_noise_scale=0.0)
    g = 0.6 * hw.g_max
    g_prog, nu = dev.program(np.full(N, g), np.random.default_rng(2))
    t0 = law.HERMES_T0[n]
    ratio = (DAY + t0) / t0
    read = dev.read(g_prog, nu, DAY, np.random.default_rng(3))
    np.testing.assert_allclose(read, g * ratio ** -nu, rtol=1e-12)
    mu, sd = (float(v) for v in law.hermes_nu_moments(np.array(g), hw.g_max, n))
    folded = foldnorm(mu / sd, scale=sd)
    expected = g * folded.expect(lambda v: ratio ** -v)
    spread = g * np.sqrt(folded.expect(lambda v: ratio ** (-2 * v)) - (expected / g) ** 2)
    assert abs(read.mean() - expected) < 5 * spread / np.sqrt(N)
    np.testing.assert_array_equal(dev.read(g_prog, nu, 0.0, np.random.default_rng(3)), g_prog)


# ---- NeuRRAM (Wan et al. 2022) ----

@pytest.mark.parametrize("x", [0.1, 0.5, 0.9])
def test_wan2022_programs_with_the_one_second_fit_and_reads_fresh_around_the_target(x):
    dev, hw = device("reram_wan2022", g_max=40.0)
    g = x * 40.0
    g_prog, state = dev.program(np.full(N, g), np.random.default_rng(4))
    assert_clipped_normal(g_prog, g, law.wan_sigma(np.array(g), 40.0, 1.0))
    for t in (1.0, DAY, 2 * DAY):      # no drift: the mean is the target's
        read = dev.read(g_prog, state, t, np.random.default_rng(5))
        assert_clipped_normal(read, g, law.wan_sigma(np.array(g), 40.0, t))
        assert abs(np.corrcoef(read, g_prog)[0, 1]) < 0.02      # a fresh draw, not g_prog


def test_wan2022_reads_only_at_its_fitted_times():
    dev, hw = device("reram_wan2022")
    g, state = dev.program(np.full(10, 10.0), np.random.default_rng(0))
    with pytest.raises(UserInputError, match=r"t_inference_s: device 'reram_wan2022' is fitted "
                                             r"at 1 s, 1 d and 2 d .*\(1, 86400 and 172800 s\); "
                                             r"got 3600 s"):
        dev.read(g, state, 3600.0, np.random.default_rng(0))


STUDY = {"study": {"name": "wan", "seed": 1, "repeats": 1, "inference_times": ["1s", "1d", "2d"]},
         "model": {"zoo": "digits_mlp"}, "data": {"dataset": "digits"},
         "hardware": {"device": "reram_wan2022", "g_max": 40.0}}


def test_wan2022_study_times_are_checked_before_anything_runs():
    assert len(parse_study(STUDY).points) == 1
    bad = {**STUDY, "study": {**STUDY["study"], "inference_times": ["0s", "1d"]}}
    with pytest.raises(UserInputError, match=r"<study>: study.inference_times: device "
                                             r"'reram_wan2022' is fitted at 1 s, 1 d and 2 d "
                                             r"after programming only .*; got 0 s") as info:
        parse_study(bad)
    assert "\n" not in str(info.value)
    swept = {**bad, "hardware": {}, "sweep": {"device": ["pcm", "reram_wan2022"]}}
    with pytest.raises(UserInputError, match="study.inference_times: device 'reram_wan2022'"):
        parse_study(swept)


# ---- CMO/HfOx ReRAM ----

def test_cmo_defaults_are_aihwkits_single_device_converter():
    _, hw = device("reram_cmo")
    assert (hw.g_max, hw.g_min, hw.g_converter) == (88.2, pytest.approx(9.0), "single_device")
    assert dict(hw.device_params) == {"acceptance_range": 0.2}
    with pytest.raises(UserInputError, match=r"g_converter: reram_cmo is one device per weight"):
        from_dict({"device": "reram_cmo", "g_converter": "single_pair"})
    with pytest.raises(UserInputError, match=r"acceptance_range: expected one of 0.2, 2"):
        from_dict({"device": "reram_cmo", "acceptance_range": 1.0})
    with pytest.raises(UserInputError, match=r"on_off_ratio: reram_cmo's read noise"):
        from_dict({"device": "reram_cmo", "on_off_ratio": float("inf")})


@pytest.mark.parametrize("acceptance", [0.2, 2])
@pytest.mark.parametrize("g", [10.0, 45.0, 85.0])
def test_cmo_programming_noise_follows_the_acceptance_range(acceptance, g):
    dev, _ = device("reram_cmo", acceptance_range=acceptance)
    g_prog, _ = dev.program(np.full(N, g), np.random.default_rng(6))
    sigma = law.cmo_sigma_prog(np.array(g), acceptance)
    assert g_prog.std() == pytest.approx(sigma, rel=0.02)
    assert abs(g_prog.mean() - g) < 5 * sigma / np.sqrt(N)


def test_cmo_acceptance_range_switches_the_programming_spread():
    """2 % acceptance programs ~10x wider than 0.2 % (0.0112 + 0.0113 g against 0.0008 +
    0.0011 g at 45 uS: 0.519 against 0.0489 uS)."""
    wide, _ = device("reram_cmo", acceptance_range=2)
    narrow, _ = device("reram_cmo")
    g = np.full(N, 45.0)
    ratio = wide.program(g, np.random.default_rng(7))[0].std() / \
        narrow.program(g, np.random.default_rng(7))[0].std()
    assert ratio == pytest.approx(0.519246 / 0.048907, rel=0.02)


@pytest.mark.parametrize("drift_scale", [1.0, 2.0])
def test_cmo_decay_at_one_day(drift_scale):
    """Without read noise the decay at t is m ln t (mean) and (s0 ln t + s1) (std), both times
    drift_scale, whatever the conductance; the read noise adds K log10(g) sqrt(ln(...))."""
    dev, hw = device("reram_cmo", prog_noise_scale=0.0, read_noise_scale=0.0,
                     drift_scale=drift_scale)
    g = np.full(N, 50.0)
    g_prog, state = dev.program(g, np.random.default_rng(8))
    shift, spread = (drift_scale * v for v in law.cmo_decay(DAY))
    read = dev.read(g_prog, state, DAY, np.random.default_rng(9))
    assert abs(read.mean() - 50.0 - shift) < 5 * spread / np.sqrt(N)
    assert read.std() == pytest.approx(spread, rel=0.02)
    noisy, _ = device("reram_cmo", prog_noise_scale=0.0, drift_scale=drift_scale)
    total = np.sqrt(spread**2 + law.cmo_read_sigma(50.0 + shift, DAY) ** 2)
    assert noisy.read(g_prog, state, DAY, np.random.default_rng(9)).std() == \
        pytest.approx(total, rel=0.02)
    np.testing.assert_array_equal(dev.read(g_prog, state, 0.0, None), g_prog)


def test_cmo_reads_are_clipped_to_the_conductance_range():
    dev, hw = device("reram_cmo")
    g_prog, state = dev.program(np.full(N, hw.g_min), np.random.default_rng(10))
    read = dev.read(g_prog, state, DAY, np.random.default_rng(11))
    assert read.min() == hw.g_min and np.mean(read == hw.g_min) > 0.8   # decays below g_min
    assert read.max() <= hw.g_max


# ---- PCM with a custom drift table ----

register_table(parse_table("g_us,nu_mean,nu_std\n0,0.1,0.04\n10,0.06,0.02\n25,0.02,0.01",
                           "measured_drift.csv"))


@pytest.mark.parametrize(("g", "mean", "std"), [(5.0, 0.08, 0.03), (10.0, 0.06, 0.02),
                                                (17.5, 0.04, 0.015), (25.0, 0.02, 0.01)])
def test_custom_drift_exponent_is_interpolated_from_the_table(g, mean, std):
    dev, hw = device("pcm_custom_drift", device_table="measured_drift.csv", drift_scale=1.5)
    g_prog, nu = dev.program(np.full(N, g), np.random.default_rng(12))
    folded = foldnorm(mean / std, scale=std)
    assert abs(nu.mean() / 1.5 - folded.mean()) < 5 * folded.std() / np.sqrt(N)
    assert (nu / 1.5).std() == pytest.approx(folded.std(), rel=0.02)
    assert g_prog.std() == pytest.approx(law.pcm_sigma_prog(np.array(g), 25.0), rel=0.02)


def test_custom_drift_table_must_cover_the_conductance_range():
    register_table(parse_table("g_us,nu_mean,nu_std\n2,0.1,0.04\n20,0.06,0.02", "narrow.csv"))
    with pytest.raises(UserInputError, match=r"g_max: the drift table 'narrow.csv' covers 2 to "
                                             r"20 µS, the mapping programs g_min = 0 to g_max "
                                             r"= 25 µS"):
        from_dict({"device": "pcm_custom_drift", "device_table": "narrow.csv"})
    assert from_dict({"device": "pcm_custom_drift", "device_table": "narrow.csv",
                      "g_max": 20.0, "on_off_ratio": 10.0}).g_min == 2.0
    register_table(parse_table("g_us,nu_mean,nu_std\n0,0.1,0.04\n0,0.06,0.02", "flat.csv"))
    with pytest.raises(UserInputError, match=r"device_table: 'flat.csv': g_us must be >= 0 "
                                             r"and strictly ascending"):
        from_dict({"device": "pcm_custom_drift", "device_table": "flat.csv"})
    with pytest.raises(UserInputError, match=r"device_table: device 'pcm_custom_drift' reads "
                                             r"a table of measurements: give device_table"):
        from_dict({"device": "pcm_custom_drift"})
    with pytest.raises(UserInputError, match=r"device_table: device 'pcm' reads no table"):
        from_dict({"device": "pcm", "device_table": "narrow.csv"})


def test_the_technologies_study_is_valid():
    study = load_study(Path(__file__).parents[1] / "studies" / "technologies.toml")
    assert [(p.device, p.g_max, p.g_converter) for p in study.points] == [
        ("pcm", 25.0, "single_pair"), ("hermes", 20.7, "single_pair"),
        ("reram_wan2022", 40.0, "single_pair"), ("reram_cmo", 88.2, "single_device")]
    assert study.inference_times_s == (1.0, DAY, 2 * DAY)
