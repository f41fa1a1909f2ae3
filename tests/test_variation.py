"""Random parts of the §2.3 mappings: device-to-device variation, stuck-at faults, slices that
drift on their own, and every mechanism composed with the PCM model on a real network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mc_engine import HardwareConfig, convert
from mc_engine.analog.matrix import AnalogMatrix
from mc_engine.hardware.devices import DEVICES, DeviceModel, register_device
from tests.conftest import AIHWKIT

YEAR = 365 * 86400.0


def _tile(w: np.ndarray, seed: int = 0, **hw):
    m = AnalogMatrix(np.asarray(w, np.float32), HardwareConfig(**hw), 0)
    m.program(seed)
    return m, m.tiles[0][0]


def test_d2d_variation_is_a_fixed_relative_error_of_the_configured_sigma():
    # 2 x 64 x 320 = 40 960 devices at (W/w_max + 1)/2 of the range (one per weight, all > 0).
    # The relative error's std has a standard error of sigma/sqrt(2n) = 0.35 % of sigma; 2 % is
    # ~6 standard errors, while a sigma off by 5 % (or applied twice) fails.
    rng = np.random.default_rng(0)
    w = rng.uniform(-1, 1, (128, 320))
    _, tile = _tile(w, device="ideal", offset="digital", on_off_ratio=10.0, d2d_sigma=0.1)
    rel = tile.g_prog / tile.mapping.targets() - 1.0
    assert rel.std() == pytest.approx(0.1, rel=0.02)
    assert abs(rel.mean()) < 5 * 0.1 / np.sqrt(rel.size)
    # fixed at programming: a read (the ideal device does not drift) keeps it
    w_before = tile.w.copy()
    tile.read(YEAR, np.random.default_rng(1))
    np.testing.assert_array_equal(tile.w, w_before)


def test_d2d_variation_comes_on_top_of_programming_noise():
    # Relative std of the PCM device at g_max alone is sigma_P(25)/25 = 1.0573/25 = 4.2 %; with
    # d2d 10 % on top the two add in quadrature: sqrt(0.042^2 + 0.1^2) = 10.8 %.
    w = np.ones((200, 200))
    hw = dict(offset="digital", on_off_ratio=1e9, read_noise_scale=0.0)
    _, plain = _tile(w, **hw)
    _, varied = _tile(w, **hw, d2d_sigma=0.1)
    sig_p = (plain.g_prog / 25.0).std()
    assert sig_p == pytest.approx(1.0573 / 25, rel=0.03)
    assert (varied.g_prog / 25.0).std() == pytest.approx(np.hypot(sig_p, 0.1), rel=0.03)


@pytest.mark.parametrize("off, on", [(0.05, 0.0), (0.0, 0.02), (0.03, 0.01)])
def test_stuck_fractions_are_binomial_and_stuck_devices_neither_drift_nor_read_noisy(off, on):
    # n = 2 x 100 x 200 = 40 000 devices; counts within 5 binomial standard deviations.
    rng = np.random.default_rng(1)
    w = rng.uniform(-1, 1, (100, 200))
    m, tile = _tile(w, 3, on_off_ratio=10.0, pair_drift="independent", stuck_off_fraction=off,
                    stuck_on_fraction=on)
    n = tile.g_prog.size
    faults = tile.faults
    for fraction, value in ((off, 2.5), (on, 25.0)):
        count = int((faults.value == value).sum())
        assert abs(count - n * fraction) <= 5 * np.sqrt(n * fraction * (1 - fraction)) + 1e-9
    np.testing.assert_array_equal(tile.g_prog[faults.index], faults.value)
    # programming noise never lands exactly on g_min or g_max: the stuck ones are the only ones
    assert np.isin(tile.g_prog, (2.5, 25.0)).sum() == faults.index.size
    # after a year of drift and read noise the stuck devices still read their value
    read = tile.device.read(tile.g_prog, tile.state, YEAR, np.random.default_rng(0))
    pinned = faults.pin(read.copy())
    moved = np.ones(n, bool)
    moved[faults.index] = False
    assert np.all(read[moved] != tile.g_prog[moved])
    tile.read(YEAR, np.random.default_rng(0))
    np.testing.assert_allclose(tile.w.ravel(), tile.mapping.matrix(pinned).ravel())


def test_stuck_draws_are_common_random_numbers_across_fractions():
    # Sweeping stuck_on_fraction keeps the stuck-off devices: one uniform per device decides both.
    w = np.random.default_rng(2).uniform(-1, 1, (50, 100))
    _, a = _tile(w, 4, stuck_off_fraction=0.05)
    _, b = _tile(w, 4, stuck_off_fraction=0.05, stuck_on_fraction=0.05)
    off_a = a.faults.index[a.faults.value == 0.0]
    off_b = b.faults.index[b.faults.value == 0.0]
    np.testing.assert_array_equal(off_a, off_b)


def test_each_slice_drifts_with_its_own_nu():
    # 8-bit weights on 2-bit cells: 4 slices, each a pair of devices with its own drift exponent
    # drawn from its own target. With read noise off, slice i's array matrix at t is exactly
    # (g+ f+ - g- f-)/g_max with f = ((t + t0)/t0)^-nu of each device.
    rng = np.random.default_rng(3)
    w = rng.uniform(-1, 1, (64, 160))
    _, tile = _tile(w, 5, weight_bits=8, cell_bits=2, pair_drift="independent",
                    read_noise_scale=0.0)
    t = 86400.0
    f = ((t + 20.0) / 20.0) ** -tile.state
    tile.read(t, np.random.default_rng(0))
    g = (tile.g_prog * f).reshape(4, 2, -1)
    np.testing.assert_allclose(tile.w.reshape(4, -1), (g[:, 0] - g[:, 1]) / 25.0, rtol=1e-5,
                               atol=1e-7)
    # nu of the + devices of slices 0 and 1 at the same non-zero target: drawn independently,
    # so uncorrelated; |r| < 5/sqrt(n) fails a shared draw (r = 1).
    nu = tile.state.reshape(4, 2, -1)[:, 0]
    targets = tile.mapping.targets().reshape(4, 2, -1)[:, 0]
    same = (targets[0] == targets[1]) & (targets[0] > 0)
    assert same.sum() > 300
    r = np.corrcoef(nu[0][same], nu[1][same])[0, 1]
    assert abs(r) < 5 / np.sqrt(same.sum())


#: Drift alone, on an offset mapping of two 4-bit slices: no programming, read or MVM noise, no
#: DAC or ADC (8-bit weights are the only quantization).
PURE_DRIFT = dict(out_noise=0.0, read_noise_scale=0.0, prog_noise_scale=0.0, dac_bits=0,
                  adc_bits=0, out_bound=float("inf"), weight_bits=8, cell_bits=4,
                  on_off_ratio=20.0, offset="dummy_column")


class UniformDrift(DeviceModel):
    """Exact programming; every device drifts by the same factor ((t + t0)/t0)^-0.1."""

    name = "uniform_drift_for_tests"

    def program(self, g_target, rng):
        return g_target.copy(), np.zeros_like(g_target)

    def read(self, g, state, t_s, rng):
        return g * ((t_s + 20.0) / 20.0) ** -0.1


@pytest.fixture
def uniform_drift():
    register_device(UniformDrift)
    yield UniformDrift.name
    DEVICES.pop(UniformDrift.name)


def _drift_case():
    rng = np.random.default_rng(4)
    lin = nn.Linear(64, 16, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(rng.uniform(-1, 1, (16, 64)).astype(np.float32)))
    return lin, torch.from_numpy(rng.uniform(-1, 1, (200, 64)).astype(np.float32))


@pytest.mark.parametrize("mapping", [dict(offset="dummy_column", cell_bits=0),
                                     dict(offset="differential", cell_bits=4),
                                     dict(offset="differential", cell_bits=2)],
                         ids=["dummy column", "pairs, 2 slices", "pairs, 4 slices"])
def test_drift_compensation_restores_the_output_level_in_conductance_units(uniform_drift,
                                                                         mapping):
    """Every device (each slice, the dummy column) drifting by the same factor d = 0.24 over a
    year: the compensated outputs are those at t = 0 up to float32 rounding, the uncompensated
    ones d times them (the reference column drifts with the weights, so d scales the outputs
    exactly). Offset-binary slices: see the next test."""
    lin, x = _drift_case()
    d = ((YEAR + 20.0) / 20.0) ** -0.1
    hw = {**PURE_DRIFT, **mapping, "device": uniform_drift}
    on = convert(lin, HardwareConfig(**hw)).program(3)
    off = convert(lin, HardwareConfig(**hw, drift_compensation="none")).program(3)
    y0 = on.drift(0.0)(x).numpy()
    scale = np.abs(y0).max()
    np.testing.assert_allclose(off.drift(0.0)(x).numpy(), y0, rtol=0, atol=1e-6 * scale)
    np.testing.assert_allclose(on.drift(YEAR)(x).numpy(), y0, rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(off.drift(YEAR)(x).numpy(), d * y0, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("cell_bits", [2, 4])
def test_drift_compensation_leaves_the_exact_digital_term_of_offset_slices_alone(uniform_drift,
                                                                                cell_bits):
    """NeuroSim's offset-binary slices with a dummy column per slice carry an exact digital term
    ((2^(Sc) - 1)/2 - 127)·Σx̃ that does not drift: compensation scales what the array read, and
    the probe measures it without that term, so uniform drift is restored to float32 rounding.
    (Compensating the term too left errors of 2 % of the outputs at cell_bits = 4.)"""
    lin, x = _drift_case()
    hw = {**PURE_DRIFT, "cell_bits": cell_bits, "device": uniform_drift}
    on = convert(lin, HardwareConfig(**hw)).program(3)
    y0 = on.drift(0.0)(x).numpy()
    np.testing.assert_allclose(on.drift(YEAR)(x).numpy(), y0, rtol=0,
                               atol=1e-5 * np.abs(y0).max())


def test_pcm_drift_compensation_restores_the_level_up_to_the_spread_of_nu():
    """PCM drift after a year, compensated ('global'), over 10 chips.

    The level is not restored exactly, and physically so: nu varies from device to device, so
    the drifted weights carry a random relative error of power s2 (mean (W - beta W_0)^2 over
    mean W_0^2, about 0.10 here: the dummy column's difference makes it large for small
    weights). Global compensation scales the weights to their t = 0 L1 level, error included,
    which for weights uniform in [-1, 1] shrinks the signal to beta = 1 - s2/3, while the
    outputs gain the error's power: mean|y| / mean|y_0| = sqrt(beta^2 + s2) = 1 + s2/6, both
    up to O(s2^2). (No |noise| enters: every noise is off; the reference at t = 0 has no drift.)
    Measured over 40 chips: level 1.0222 +- 0.0017 against 1 + s2/6 = 1.0164, beta 0.9733 +-
    0.0012 against 0.9672; the fixed chip of the former test (level within 5 % of 1) passed
    only because its level, 1.016 to 1.048 between chips, sat below 1.05. Tolerance: 4
    standard errors of the 10-chip mean plus s2^2 (the order the expansion leaves out, 0.010);
    without compensation the level is 0.53, with the factor applied twice about 1.9.
    """
    lin, x = _drift_case()
    eye = torch.eye(64)
    level, beta, s2 = [], [], []
    for seed in range(10):
        am = convert(lin, HardwareConfig(**PURE_DRIFT)).program(seed)
        am.drift(0.0)
        y0, w0 = am(x).numpy(), am(eye).numpy()
        am.drift(YEAR)
        y, w = am(x).numpy(), am(eye).numpy()
        level.append(np.abs(y).mean() / np.abs(y0).mean())
        beta.append((y * y0).sum() / (y0 * y0).sum())
        gain = (w * w0).sum() / (w0 * w0).sum()
        s2.append(((w - gain * w0) ** 2).sum() / (w0 ** 2).sum())
    level, beta, s2 = map(np.asarray, (level, beta, s2))
    spread = s2.mean()
    assert 0.05 < spread < 0.2

    def within(values, expected):
        se = values.std(ddof=1) / np.sqrt(len(values))
        assert abs(values.mean() - expected) < 4 * se + spread**2, (values.mean(), expected)

    within(level, 1 + spread / 6)
    within(beta, 1 - spread / 3)


@pytest.fixture(scope="module")
def digits_cnn():
    model = nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(256, 10))
    model.load_state_dict(torch.load(AIHWKIT / "digits_cnn_public.pt"))
    with np.load(AIHWKIT / "digits_split_public.npz") as d:
        return model.eval(), torch.from_numpy(d["x_test"][:300]), d["y_test"][:300]


def _accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1).numpy() == y).mean())


COMBINED = dict(weight_bits=8, cell_bits=2, input_bits_per_cycle=1, bound_management="none",
                readout="row_by_row", rows_per_adc=64, on_off_ratio=10.0, offset="dummy_column",
                out_bound=16.0, max_input_size=40)


def test_every_mechanism_composes_exactly_without_device_noise(digits_cnn):
    # 8-bit weights on 2-bit cells, 1-bit bit-serial inputs, 64 rows per conversion, on/off 10
    # with a dummy column, tiles of <= 40 rows: with exact devices only the quantizers remain,
    # and the classifier keeps its accuracy (0.973 digitally on these 300 images).
    model, x, y = digits_cnn
    ideal = _accuracy(model, x, y)
    am = convert(model, HardwareConfig(**COMBINED, device="ideal", out_noise=0.0)).program(0)
    assert _accuracy(am.drift(YEAR), x, y) >= ideal - 0.02


def test_every_mechanism_composes_with_pcm_drift_variation_and_faults(digits_cnn):
    # The same with PCM devices, d2d 5 % and 0.1 % devices stuck each way, read at 1 year:
    # reproducible bit for bit, and both schemes keep most of the accuracy (0.973 digitally;
    # chance 0.1). Measured at seeds 7, 8, 9: dummy column (NeuroSim's offset-binary slices)
    # 0.79, 0.76, 0.70; differential pairs 0.80, 0.72, 0.82. (The signed-digit offset slices
    # this engine used before gave 0.44: every zero digit sat on a drifting mid-range device.)
    model, x, y = digits_cnn
    hw = HardwareConfig(**COMBINED, d2d_sigma=0.05, stuck_off_fraction=0.001,
                        stuck_on_fraction=0.001)
    logits = convert(model, hw).program(7).drift(YEAR)(x).numpy()
    again = convert(model, hw).program(7).drift(YEAR)(x).numpy()
    np.testing.assert_array_equal(again, logits)
    dummy = float((logits.argmax(1) == y).mean())
    pairs = _accuracy(convert(model, hw.replace(offset="differential")).program(7).drift(YEAR),
                      x, y)
    assert dummy > 0.6
    assert pairs > 0.7


def test_stuck_on_devices_cost_more_than_stuck_off(digits_cnn):
    # A device stuck at g_max in a high-significance slice adds up to 64/127 of w_max to its
    # weight; one stuck at g_min removes at most that slice's digit. Measured at 0.5 %: 0.40
    # (on) against 0.86 (off) on seed 7.
    model, x, y = digits_cnn
    hw = HardwareConfig(**dict(COMBINED, offset="differential"))
    off = _accuracy(convert(model, hw.replace(stuck_off_fraction=0.005)).program(7).drift(YEAR),
                    x, y)
    on = _accuracy(convert(model, hw.replace(stuck_on_fraction=0.005)).program(7).drift(YEAR),
                   x, y)
    assert on < off - 0.2


def test_grouped_convolutions_take_the_mapping_too():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, padding=1, groups=4)
    x = torch.rand(4, 8, 6, 6)
    hw = HardwareConfig(device="ideal", out_noise=0.0, drift_compensation="none", dac_bits=0,
                        adc_bits=0, out_bound=float("inf"), noise_management="none",
                        weight_bits=6, cell_bits=2, offset="digital", on_off_ratio=4.0,
                        readout="row_by_row", rows_per_adc=5)
    w = conv.weight.detach().numpy().astype(np.float64)
    w_max = np.abs(w).max()
    wq = w_max * np.rint(w / w_max * 31) / 31
    ref = nn.functional.conv2d(x.double(), torch.from_numpy(wq), conv.bias.detach().double(),
                               padding=1, groups=4)
    y = convert(conv, hw).program(0).drift(0.0)(x)
    np.testing.assert_allclose(y.numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)
