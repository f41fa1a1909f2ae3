"""The tile forward of docs/physics.md and the model conversion, pinned on exact and noisy cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import mc_engine
from mc_engine import HardwareConfig, UserInputError
from mc_engine.analog.matrix import AnalogMatrix
from mc_engine.analog.rows import PatchRows
from mc_engine.analog.tile import split_sizes
from tests.conftest import AIHWKIT, linear_with

QUIET = dict(device="ideal", out_noise=0.0, drift_compensation="none")


def forward(w, x, **hw):
    m = AnalogMatrix(np.asarray(w, np.float32), HardwareConfig(**{**QUIET, **hw}), 0)
    return m.forward(np.asarray(x, np.float32))


def test_dac_rounds_half_to_even_on_the_7_bit_grid():
    # alpha = 1 (largest input 1); step 1/63; 0.5/63 rounds to 0 and 1.5/63 to 2/63 (half-even)
    x = np.array([[1.0, 0.5 / 63, 1.5 / 63, 0.3, -0.7]], np.float32)
    w = np.eye(5, dtype=np.float32)
    y = forward(w, x, adc_bits=0, out_bound=1e6)
    expected = np.array([1.0, 0.0, 2 / 63, np.rint(0.3 * 63) / 63, np.rint(-0.7 * 63) / 63])
    np.testing.assert_allclose(y[0], expected, rtol=1e-6)


def test_adc_rounds_to_its_grid_and_clips_at_the_bound():
    # 6-bit ADC over ±12: step 24/62; no bound management so outputs just clip.
    w = np.array([[1.0], [5.0], [20.0], [-30.0]], np.float32)
    y = forward(w, [[1.0]], dac_bits=0, adc_bits=6, bound_management="none")
    step = 24 / 62
    np.testing.assert_allclose(y[0], [np.rint(1 / step) * step, np.rint(5 / step) * step, 12, -12],
                               rtol=1e-6)


def test_bits_map_to_toolkit_resolutions():
    hw = HardwareConfig(dac_bits=7, adc_bits=9)
    assert hw.inp_res == pytest.approx(1 / 126) and hw.out_res == pytest.approx(1 / 510)


def test_bound_management_halves_inputs_until_nothing_saturates():
    # y = 40 with out_bound 12: r = 1, 2 saturate (40, 20 > 12), r = 4 gives 10, times 4 = 40.
    w = np.full((1, 4), 10.0, np.float32)
    x = np.ones((1, 4), np.float32)
    assert forward(w, x, dac_bits=0, adc_bits=0)[0, 0] == pytest.approx(40.0)
    assert forward(w, x, dac_bits=0, adc_bits=0, bound_management="none")[0, 0] == 12.0


def test_bound_management_stops_at_r_16_for_7_bit_dac():
    # 1000 needs r = 128; at 7 bits the pass with r = 16 is the last: 12 * 16 = 192.
    w = np.full((1, 1), 1000.0, np.float32)
    assert forward(w, [[1.0]], adc_bits=0)[0, 0] == pytest.approx(192.0)


def test_split_sizes_are_near_equal_with_larger_chunks_first():
    assert split_sizes(1000, 512) == [(0, 500), (500, 1000)]
    assert split_sizes(100, 40) == [(0, 34), (34, 67), (67, 100)]
    assert split_sizes(512, 512) == [(0, 512)]


def test_split_layer_has_one_adc_and_alpha_per_tile():
    # 1000 inputs -> 2 tiles of 500. The first half of x is large, the second tiny: with one
    # shared alpha the tiny half would round to 0 on the DAC; per tile it survives.
    x = np.concatenate([np.full(500, 1.0), np.full(500, 1e-3)])[None].astype(np.float32)
    w = np.zeros((2, 1000), np.float32)
    w[0, :500] = 0.01
    w[1, 500:] = 0.01
    y = forward(w, x, adc_bits=0)
    assert y[0, 0] == pytest.approx(5.0, rel=1e-5)
    assert y[0, 1] == pytest.approx(5e-3, rel=1e-4)
    m = AnalogMatrix(w, HardwareConfig(**QUIET), 0)
    assert [len(r) for r in m.tiles] == [1, 1] and len(m.tiles) == 2
    # each tile clips at its own ADC bound: 500 * 0.05 = 25 > 12 per tile without retries
    w2 = np.full((1, 1000), 0.05, np.float32)
    y2 = forward(w2, np.ones((1, 1000)), adc_bits=0, bound_management="none")
    assert y2[0, 0] == pytest.approx(24.0)


def test_additive_constant_weight_noise_equals_fresh_noise_on_every_weight():
    rng = np.random.default_rng(0)
    w = rng.uniform(-0.5, 0.5, (6, 30)).astype(np.float32)
    x = rng.uniform(-1, 1, (1, 30)).astype(np.float32)
    x[0, 0] = 1.0
    n = 40_000
    y = forward(w, np.repeat(x, n, 0), w_noise=0.05, dac_bits=0, adc_bits=0)
    # brute force: fresh N(0, 0.05^2) on every weight, every MVM
    noisy_w = w[None] + 0.05 * rng.standard_normal((n, 6, 30)).astype(np.float32)
    ref = np.einsum("nij,j->ni", noisy_w, x[0])
    # std estimates from 4e4 draws agree within 1.5 % (4 standard errors: 4/sqrt(2 * 4e4))
    np.testing.assert_allclose(y.std(0), ref.std(0), rtol=0.03)
    np.testing.assert_allclose(y.mean(0), ref.mean(0), atol=5 * 0.05 * np.linalg.norm(x) / 200)
    # the whole distribution, output by output: two-sample Kolmogorov-Smirnov tests (4e4 draws
    # each), Bonferroni-corrected to a 1e-4 family-wise false-alarm rate. Critical distance
    # ~0.017; a non-Gaussian shape of the same variance (uniform: distance ~0.03) fails.
    from scipy.stats import ks_2samp
    p_values = [ks_2samp(y[:, i], ref[:, i]).pvalue for i in range(6)]
    assert min(p_values) > 1e-4 / 6


def test_pcm_read_weight_noise_scales_with_sqrt_abs_weight():
    w = np.array([[0.04], [0.64]], np.float32)
    y = forward(w, np.ones((200_000, 1)), w_noise=0.1, w_noise_type="pcm_read", dac_bits=0,
                adc_bits=0)
    np.testing.assert_allclose(y.std(0), [0.1 * 0.2, 0.1 * 0.8], rtol=0.01)


def test_output_noise_has_the_configured_sigma_before_the_adc():
    w = np.ones((3, 1), np.float32)
    y = forward(w, np.ones((200_000, 1)), out_noise=0.2, dac_bits=0, adc_bits=0)
    np.testing.assert_allclose(y.std(0), 0.2, rtol=0.01)


def test_global_drift_compensation_restores_mean_output_under_pure_drift():
    rng = np.random.default_rng(1)
    w = rng.uniform(-1, 1, (16, 64)).astype(np.float32)
    lin = linear_with(w)
    x = torch.from_numpy(rng.uniform(-1, 1, (200, 64)).astype(np.float32))
    ref = lin(x).detach().numpy()
    pure = dict(out_noise=0.0, read_noise_scale=0.0, prog_noise_scale=0.0, dac_bits=0, adc_bits=0,
                out_bound=1e6)
    on = mc_engine.convert(lin, HardwareConfig(**pure)).program(3).drift(3.15e7)
    off = mc_engine.convert(lin, HardwareConfig(**pure, drift_compensation="none")).program(3)
    off.drift(3.15e7)
    y_on, y_off = on(x).numpy(), off(x).numpy()
    # uncompensated outputs shrink by ~((t + t0)/t0)^-0.05 ~ 0.5; compensated mean |y| returns
    assert np.abs(y_off).mean() < 0.6 * np.abs(ref).mean()
    assert np.abs(y_on).mean() == pytest.approx(np.abs(ref).mean(), rel=0.02)


@pytest.fixture(scope="module")
def digits_mlp():
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    model.load_state_dict(torch.load(AIHWKIT / "digits_mlp_public.pt"))
    with np.load(AIHWKIT / "digits_split_public.npz") as d:
        return model.eval(), torch.from_numpy(d["x_test"]), d["y_test"]


def accuracy(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(1).numpy() == y).mean())


def test_all_noise_off_loses_no_accuracy_and_matches_torch(digits_mlp):
    model, x, y = digits_mlp
    exact = HardwareConfig(**QUIET, dac_bits=0, adc_bits=0, out_bound=1e6)
    am = mc_engine.convert(model, exact).program(0).drift(0.0)
    np.testing.assert_allclose(am(x).numpy(), model(x).detach().numpy(), rtol=1e-5, atol=1e-5)
    quantized = mc_engine.convert(model, HardwareConfig(**QUIET)).program(0)
    assert accuracy(quantized, x, y) >= accuracy(model, x, y) - 0.005


def test_accuracy_falls_monotonically_with_output_noise(digits_mlp):
    model, x, y = digits_mlp
    means = []
    for sigma in (0.0, 0.5, 1.5, 3.0):
        accs = [accuracy(mc_engine.convert(model, HardwareConfig(**{**QUIET, "out_noise": sigma}))
                         .program(s), x, y) for s in range(6)]
        means.append(np.mean(accs))
    # steps chosen so that each drop (>= 3 points) dwarfs the MC error of a 6-trial mean (< 0.5)
    assert all(a > b + 0.01 for a, b in zip(means, means[1:])), means


def test_same_seed_gives_bitwise_identical_logits_and_other_seeds_differ(digits_mlp):
    model, x, _ = digits_mlp
    hw = HardwareConfig(w_noise=0.02, inp_noise=0.01)
    runs = [mc_engine.convert(model, hw).program(seed).drift(3600.0)(x).numpy()
            for seed in (5, 5, 6)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_drift_result_does_not_depend_on_earlier_read_times(digits_mlp):
    model, x, _ = digits_mlp
    a = mc_engine.convert(model, HardwareConfig()).program(1)
    a.drift(0.0)
    a(x)
    y1 = a.drift(86400.0)(x).numpy()
    y2 = mc_engine.convert(model, HardwareConfig()).program(1).drift(86400.0)(x).numpy()
    np.testing.assert_array_equal(y1, y2)


@pytest.mark.parametrize("kwargs", [dict(stride=2, padding=1), dict(padding=2, dilation=2),
                                    dict(groups=4, padding=1), dict(groups=8, bias=False),
                                    dict(padding="same"), dict(stride=(1, 2), padding=(0, 1))])
def test_conv2d_without_quantization_equals_torch(kwargs):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16 if kwargs.get("groups") != 8 else 8, 3, **kwargs)
    x = torch.randn(3, 8, 10, 11)
    am = mc_engine.convert(conv, HardwareConfig(**QUIET, dac_bits=0, adc_bits=0, out_bound=1e6))
    np.testing.assert_allclose(am(x).numpy(), conv(x).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_unsupported_layer_is_rejected_with_its_name():
    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Conv3d(1, 1, 3)))
    with pytest.raises(UserInputError, match=r"'1\.0' \(Conv3d\)"):
        mc_engine.convert(model, HardwareConfig())


def test_nan_weights_are_rejected_with_the_layer_name():
    layer = nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight[0, 0] = float("nan")
    with pytest.raises(UserInputError, match="layer '0' has NaN"):
        mc_engine.convert(layer, HardwareConfig())


def test_negative_inference_time_is_rejected():
    am = mc_engine.convert(nn.Linear(3, 2), HardwareConfig()).program(0)
    with pytest.raises(UserInputError, match="t_inference_s"):
        am.drift(-1.0)


@pytest.mark.parametrize("field,value,match", [("adc_bits", -1, "adc_bits: must be >= 0"),
                                               ("device", "rram", "device: expected one of"),
                                               ("out_noise", "x", "out_noise: expected a number"),
                                               ("g_max", 0.0, "g_max: must be >= 0.001"),
                                               ("g_max", float("inf"), "g_max: expected a finite"),
                                               ("w_noise", 10**400, "w_noise: a number beyond"),
                                               ("out_noise", float("nan"), "expected a finite")])
def test_invalid_hardware_values_name_the_field(field, value, match):
    with pytest.raises(UserInputError, match=match):
        HardwareConfig(**{field: value})


def _programmed_tile(pair_drift: str):
    w = np.array([[0.5, -1.0, 0.0, 0.25]], np.float32)
    hw = HardwareConfig(pair_drift=pair_drift, read_noise_scale=0.0)
    m = AnalogMatrix(w, hw, 0)
    m.program(11)
    return m.tiles[0][0]


def test_net_pair_drift_remaps_the_programmed_net_weight_to_one_device():
    tile = _programmed_tile("net")
    n = tile.w_ideal.size
    w_p = (tile.g_prog[:n] - tile.g_prog[n:]) / tile.mapping.scale
    nu = np.where(w_p >= 0, tile.state[:n], tile.state[n:])
    t = 86400.0
    tile.read(t, np.random.default_rng(0))
    expected = w_p * ((t + 20.0) / 20.0) ** -nu
    np.testing.assert_allclose(tile.w.ravel(), expected, rtol=1e-5)


def test_independent_pair_drift_drifts_both_programmed_devices():
    tile = _programmed_tile("independent")
    n = tile.w_ideal.size
    t = 86400.0
    f = ((t + 20.0) / 20.0) ** -tile.state
    tile.read(t, np.random.default_rng(0))
    expected = (tile.g_prog[:n] * f[:n] - tile.g_prog[n:] * f[n:]) / tile.mapping.scale
    np.testing.assert_allclose(tile.w.ravel(), expected, rtol=1e-5)


def test_per_column_drift_compensation_restores_each_columns_probe_level():
    rng = np.random.default_rng(2)
    w = rng.uniform(-1, 1, (8, 32)).astype(np.float32)
    w[0] *= 0.05                      # one column of small weights: low conductance, larger nu
    lin = linear_with(w)
    probe = torch.eye(32)
    pure = dict(out_noise=0.0, read_noise_scale=0.0, prog_noise_scale=0.0, dac_bits=0,
                adc_bits=0, out_bound=1e6)
    ideal_level = np.abs(w).mean(1)
    levels = {}
    for mode in ("per_column", "global"):
        am = mc_engine.convert(lin, HardwareConfig(**pure, drift_compensation=mode))
        levels[mode] = np.abs(am.program(0).drift(3.15e7)(probe).numpy()).mean(0)
    # per column: every output's mean |response| to the one-hot probe is restored exactly
    np.testing.assert_allclose(levels["per_column"], ideal_level, rtol=1e-4)
    # global: only the tile-wide mean is; the fast-drifting small column stays low
    assert levels["global"].mean() == pytest.approx(ideal_level.mean(), rel=1e-4)
    assert levels["global"][0] < 0.9 * ideal_level[0]


@pytest.mark.parametrize("hardware", [dict(), dict(bound_management="none"),
                                      dict(noise_management="none"),
                                      dict(noise_management="constant", nm_constant=2.0)])
def test_batched_grouped_conv_equals_running_each_group_alone(hardware):
    # Large weights make rows saturate, so the per-(row, group) bound-management retries run.
    torch.manual_seed(3)
    conv = nn.Conv2d(12, 24, 3, padding=1, groups=6)
    with torch.no_grad():
        conv.weight.mul_(40.0)
    x = torch.randn(4, 12, 7, 7)
    x[0, :2] = 0.0                       # a group with all-zero patches: alpha = 0 rows
    am = mc_engine.convert(conv, HardwareConfig(**{**QUIET, **hardware})).program(0)
    layer = am.module[0]
    batched = am(x).numpy()
    rows = PatchRows(torch.nn.functional.pad(x, (1, 1, 1, 1)).numpy(), (3, 3), (1, 1), (1, 1),
                     (7, 7))
    alone = np.concatenate([m.forward(rows, g * 18) for g, m in enumerate(layer.matrices)], 1)
    alone = alone.reshape(4, 49, 24).transpose(0, 2, 1).reshape(4, 24, 7, 7)
    alone += conv.bias.detach().numpy()[None, :, None, None]
    np.testing.assert_array_equal(batched, alone)
    if hardware.get("bound_management") != "none":
        assert np.abs(batched).max() > 12.0        # retries with r > 1 happened


def test_batched_grouped_conv_noise_has_the_per_tile_statistics():
    conv = nn.Conv2d(4, 4, 3, groups=4, bias=False)
    with torch.no_grad():
        conv.weight.fill_(0.1)
    x = torch.ones(20000, 4, 3, 3)
    hw = HardwareConfig(**{**QUIET, "out_noise": 0.2, "w_noise": 0.1, "dac_bits": 0,
                           "adc_bits": 0})
    y = mc_engine.convert(conv, hw)(x).numpy().reshape(20000, 4)
    # out noise 0.2 and additive weight noise 0.1 * ||x|| = 0.3 per output: sigma sqrt(0.13)
    np.testing.assert_allclose(y.std(0), np.sqrt(0.2**2 + 0.3**2), rtol=0.03)
    np.testing.assert_allclose(y.mean(0), 0.9, atol=0.01)


@pytest.mark.parametrize("hw", [HardwareConfig(), HardwareConfig(noise_management="constant",
                                                                  nm_constant=2.0),
                                HardwareConfig(out_bound=0.3), HardwareConfig(inp_noise=0.05)],
                         ids=["default", "constant alpha", "saturating", "input noise"])
def test_drift_probe_without_gemm_equals_the_full_forward(hw):
    """The compensation probe computes its one-hot MVM as q*W (no GEMM); noise, ADC and bound
    management then run as for any input, so it must equal the forward of the identity rows
    bitwise, including the saturating rows that bound management retries."""
    from mc_engine.analog.noise import MVMNoise
    from mc_engine.analog.rows import DenseRows

    w = np.random.default_rng(4).standard_normal((12, 40)).astype(np.float32)
    matrix = AnalogMatrix(w, hw, 0)
    matrix.program(3)
    tile = matrix.tiles[0][0]
    fast = tile.probe(MVMNoise(11))
    eye = DenseRows(np.eye(40, dtype=np.float32))
    full = np.empty_like(fast)
    tile.forward(eye, 0, tile.per.alpha(eye, 0, 40), MVMNoise(11), full,
                 np.ones(12, np.float32))
    np.testing.assert_array_equal(fast, full)
    assert np.abs(fast).max() > 0


@pytest.mark.parametrize("hw", [HardwareConfig(), HardwareConfig(d2d_sigma=0.1,
                                                                  stuck_on_fraction=0.01,
                                                                  weight_bits=6, cell_bits=2,
                                                                  out_bound=20.0)],
                         ids=["default", "faults+slices"])
def test_reprogrammed_conversion_is_the_same_chip_as_a_fresh_one(digits_mlp, hw):
    """evaluate_trial converts once per (model, hardware) and re-programs per chip: chip 5 after
    chip 9 must equal chip 5 on a fresh conversion, at every time."""
    from mc_engine.analog import evaluate
    from mc_engine.analog.evaluate import evaluate_trial

    model, x, y = digits_mlp
    x = x.numpy()
    evaluate._CONVERTED.clear()
    fresh = evaluate_trial(model, hw, x, y, [0.0, 3.15e7], 5)
    evaluate_trial(model, hw, x, y, [3600.0], 9)
    assert evaluate._CONVERTED and evaluate._CONVERTED[0][0] is model
    again = evaluate_trial(model, hw, x, y, [0.0, 3.15e7], 5)
    assert [r["n_correct"] for r in fresh] == [r["n_correct"] for r in again]
    reused = evaluate._CONVERTED[0][2]
    logits = [reused.program(5).drift(60.0)(torch.from_numpy(x)),
              mc_engine.analog.convert(model, hw).program(5).drift(60.0)(torch.from_numpy(x))]
    assert torch.equal(*logits)


def test_convert_itself_rejects_weights_that_would_stay_digital():
    """The API path (mc_engine.convert) checks every parameter too, not only study loading:
    a root-level parameter and a Linear hidden in a plain list are named."""
    class RootScale(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)
            self.scale = nn.Parameter(torch.ones(2))

        def forward(self, x):
            return self.fc(x) * self.scale

    class Hidden(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)
            self.extra = [nn.Linear(2, 2)]

        def forward(self, x):
            return self.extra[0](self.fc(x))

    with pytest.raises(UserInputError, match="parameter scale"):
        mc_engine.convert(RootScale())
    with pytest.raises(UserInputError, match="'extra'"):
        mc_engine.convert(Hidden())
