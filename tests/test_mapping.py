"""Hardware mappings of docs/physics.md pinned on exact cases: CrossSim's outputs, the integer
recombination of bit slices, the offset schemes, bit-serial inputs and row-by-row read-out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mc_engine import HardwareConfig, UserInputError, convert
from mc_engine.analog.mapping import slice_digits
from mc_engine.analog.matrix import AnalogMatrix

CROSSSIM = Path(__file__).parent / "data" / "crosssim"
# Every noise source and the device physics off: what is left is the mapping and the periphery.
EXACT = dict(device="ideal", out_noise=0.0, drift_compensation="none", noise_management="none",
             bound_management="none")
NO_QUANT = dict(EXACT, dac_bits=0, adc_bits=0, out_bound=float("inf"))


def _linear(w: np.ndarray) -> nn.Linear:
    layer = nn.Linear(w.shape[1], w.shape[0], bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(np.asarray(w, np.float32)))
    return layer


def analog_out(w, x, **hw) -> np.ndarray:
    """Forward of ``x`` through ``nn.Linear(w)`` converted with ``hw``, programmed, read at 0 s."""
    model = convert(_linear(np.asarray(w)), HardwareConfig(**hw)).program(0).drift(0.0)
    return model(torch.from_numpy(np.asarray(x, np.float32))).numpy()


def quantized(w: np.ndarray, bits: int) -> np.ndarray:
    """W_q = w_max·rint(W/w_max·(2^(B-1) - 1))/(2^(B-1) - 1), w_max = max|W| of the layer."""
    levels = 2 ** (bits - 1) - 1
    w_max = np.abs(w).max()
    return w_max * np.rint(w / w_max * levels) / levels


@pytest.fixture(scope="module")
def crosssim():
    cases = json.loads((CROSSSIM / "crosssim_mapping.json").read_text())
    return cases, np.load(CROSSSIM / "crosssim_mapping.npz")


@pytest.mark.parametrize("case", ["w6_c2_adc7", "w8_c3_adc8", "bitserial1_dac6_adc7",
                                  "offset_digital_r5_dac7_adc8", "dummy_r20_split40_adc8",
                                  "w8_rowbyrow24_adc8"])
def test_crosssim_outputs_are_reproduced_exactly(crosssim, case):
    # float32 tolerance: the outputs are multiples of ADC steps (~0.1 in conductance units,
    # rescaled by up to ~10), computed here in float32 and by CrossSim in float64; an error of one
    # ADC or DAC step anywhere would be 1e-2 or more.
    cases, data = crosssim
    y = analog_out(data["W"], data["X"], **cases[case]["hardware"])
    ref = data[f"Y_{case}"]
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def test_layer_wide_w_max_is_shared_by_split_tiles(crosssim):
    # The dummy-column case splits 96 rows into 3 tiles; a per-tile w_max changes the ADC input
    # of each tile and misses CrossSim by far more than float32 (checked once: 0.25 absolute).
    cases, data = crosssim
    hw = HardwareConfig(**cases["dummy_r20_split40_adc8"]["hardware"])
    m = AnalogMatrix(data["W"].astype(np.float32), hw, 0)
    assert len(m.tiles) == 3
    assert {t.mapping.w_max for row in m.tiles for t in row} == {np.abs(data["W"]).max()
                                                                 .astype(np.float32)}


def test_slice_digits_are_lsb_first_with_the_top_slice_taking_the_rest():
    mags = np.array([0, 5, 7, 13, 127])
    d = slice_digits(mags, 2, 3)            # 2-bit cells: 4 levels each, top slice unbounded
    assert d.tolist() == [[0, 1, 3, 1, 3], [0, 1, 1, 3, 3], [0, 0, 0, 0, 7]]
    np.testing.assert_array_equal((d * np.array([[1], [4], [16]])).sum(0), mags)


def test_4_bit_weight_on_2_bit_cells_recombines_to_the_integer():
    # 4 bits: W_int in [-7, 7], 2 slices of 2 bits; with the quantizers off the output is
    # X·W_intᵀ·w_max/7 exactly, and each slice's devices hold their digit.
    w_int = np.array([[5.0, -7.0, 3.0, 0.0], [-1.0, 6.0, -2.0, 4.0]])
    w = w_int / 7.0                                 # w_max = 1
    hw = HardwareConfig(**NO_QUANT, weight_bits=4, cell_bits=2)
    assert hw.n_slices == 2
    m = AnalogMatrix(w.astype(np.float32), hw, 0)
    tile = m.tiles[0][0]
    g = tile.mapping.targets().reshape(2, 2, 2, 4)  # slice, (+, -), out, in
    digits = g[:, 0] - g[:, 1]                       # g_min = 0 here
    np.testing.assert_allclose(digits[0] / 25 * 3, np.sign(w_int) * (np.abs(w_int) % 4))
    np.testing.assert_allclose(digits[1] / 25 * 3, np.sign(w_int) * (np.abs(w_int) // 4))
    x = np.random.default_rng(0).uniform(-1, 1, (16, 4))
    np.testing.assert_allclose(analog_out(w, x, **NO_QUANT, weight_bits=4, cell_bits=2),
                               x @ w_int.T / 7.0, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("offset", ["differential", "dummy_column", "digital"])
@pytest.mark.parametrize("ratio", [float("inf"), 10.0, 2.0])
def test_every_offset_scheme_gives_x_w_with_quantizers_off(offset, ratio):
    rng = np.random.default_rng(1)
    w, x = rng.uniform(-1, 1, (6, 20)), rng.uniform(-1, 1, (10, 20))
    y = analog_out(w, x, **NO_QUANT, offset=offset, on_off_ratio=ratio)
    np.testing.assert_allclose(y, x @ w.T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("offset", ["dummy_column", "digital"])
def test_offset_schemes_remove_the_g_min_offset_through_the_adc(offset):
    # With an ADC and on/off 5 the offset current (g_max + g_min)/2 per unit input is large; the
    # dummy column and the digital subtraction remove it, so an all-zero weight reads ~0 and the
    # result stays within a few ADC steps (rescaled) of X·Wᵀ.
    rng = np.random.default_rng(2)
    w = rng.uniform(-1, 1, (6, 32))
    w[0] = 0.0
    x = rng.uniform(0, 1, (12, 32))          # positive inputs: the offset adds up, not cancels
    hw = dict(EXACT, dac_bits=0, adc_bits=10, out_bound=40.0, offset=offset, on_off_ratio=5.0)
    y = analog_out(w, x, **hw)
    step = 2 * 40.0 / (2 ** 10 - 2) * 2 * 1.0 * 25 / 20          # ADC step in weight units
    assert np.abs(y[:, 0]).max() <= 2 * step
    np.testing.assert_allclose(y, x @ w.T, atol=2 * step)
    without = analog_out(w, x, **dict(hw, offset="differential"))  # sanity: a real comparison
    assert np.abs(without - x @ w.T).max() <= step


def test_sliced_offset_schemes_recombine_like_pairs():
    rng = np.random.default_rng(3)
    w, x = rng.uniform(-1, 1, (5, 24)), rng.uniform(-1, 1, (8, 24))
    expected = x @ quantized(w, 8).T
    for offset in ("differential", "dummy_column", "digital"):
        for mode in ("digital", "analog"):
            y = analog_out(w, x, **NO_QUANT, weight_bits=8, cell_bits=3, offset=offset,
                           on_off_ratio=20.0, slice_recombination=mode)
            np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_analog_and_digital_slice_recombination_agree_with_quantizers_off():
    rng = np.random.default_rng(4)
    w, x = rng.normal(size=(10, 50)), rng.uniform(-1, 1, (20, 50))   # inputs clip at ±1
    hw = dict(NO_QUANT, weight_bits=8, cell_bits=2)
    digital = analog_out(w, x, **hw)
    analog = analog_out(w, x, **hw, slice_recombination="analog")
    np.testing.assert_allclose(digital, analog, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(digital, x @ quantized(w, 8).T, rtol=1e-5, atol=1e-5)


def test_analog_recombination_has_one_adc_and_digital_one_per_slice():
    # A coarse ADC (4 bits) sees each slice separately with digital recombination and the summed
    # current once with analog recombination: different rounding, both close to X·W_qᵀ.
    rng = np.random.default_rng(5)
    w, x = rng.uniform(-1, 1, (4, 16)), rng.uniform(-1, 1, (6, 16))
    hw = dict(EXACT, dac_bits=0, adc_bits=4, out_bound=60.0, weight_bits=6, cell_bits=2)
    digital = analog_out(w, x, **hw)
    analog = analog_out(w, x, **hw, slice_recombination="analog")
    assert not np.allclose(digital, analog)
    tile = AnalogMatrix(w.astype(np.float32), HardwareConfig(**hw, slice_recombination="analog"),
                        0).tiles[0][0]
    assert tile.w.shape == (4, 16)                       # one summed column per output
    tile = AnalogMatrix(w.astype(np.float32), HardwareConfig(**hw), 0).tiles[0][0]
    assert tile.w.shape == (3 * 4, 16)                   # 3 slices of 4 columns


def test_row_by_row_with_all_rows_equals_parallel():
    rng = np.random.default_rng(6)
    w, x = rng.uniform(-1, 1, (8, 40)), rng.uniform(-1, 1, (16, 40))
    hw = dict(EXACT, dac_bits=7, adc_bits=7, out_bound=10.0, weight_bits=8)
    parallel = analog_out(w, x, **hw)
    for rows in (40, 64):
        np.testing.assert_array_equal(
            analog_out(w, x, **hw, readout="row_by_row", rows_per_adc=rows), parallel)


def test_row_by_row_quantizes_each_partial_sum():
    # 4 rows, 2 per conversion, 3-bit ADC over ±2 (step 2/3): each partial rounds on its own.
    w = np.array([[1.0, 1.0, 1.0, 1.0]])
    x = np.array([[0.3, 0.3, 0.3, 0.3]])
    hw = dict(EXACT, dac_bits=0, adc_bits=3, out_bound=2.0)
    step = 4.0 / 6
    partial = np.rint(0.6 / step) * step                 # 0.6 -> 2/3
    y = analog_out(w, x, **hw, readout="row_by_row", rows_per_adc=2)
    assert y[0, 0] == pytest.approx(2 * partial)
    assert analog_out(w, x, **hw)[0, 0] == pytest.approx(np.rint(1.2 / step) * step)


def test_row_by_row_in_weight_units_keeps_the_default_mapping():
    rng = np.random.default_rng(7)
    w, x = rng.uniform(-1, 1, (5, 30)), rng.uniform(-1, 1, (9, 30))
    y = analog_out(w, x, **NO_QUANT, readout="row_by_row", rows_per_adc=7)
    np.testing.assert_allclose(y, x @ w.T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dac_bits", [4, 6, 8])
def test_bit_serial_with_all_bits_in_one_cycle_equals_the_whole_input(dac_bits):
    rng = np.random.default_rng(8)
    w, x = rng.uniform(-1, 1, (6, 32)), rng.uniform(-1, 1, (12, 32))
    hw = dict(EXACT, dac_bits=dac_bits, adc_bits=8, out_bound=12.0, weight_bits=8)
    whole = analog_out(w, x, **hw)
    one_cycle = analog_out(w, x, **hw, input_bits_per_cycle=dac_bits - 1)
    np.testing.assert_allclose(one_cycle, whole, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_bit_serial_without_adc_equals_the_dac_quantized_product(k):
    # Shift-and-add of the cycles recovers the DAC output exactly; only the ADC (off here) could
    # lose anything. 7-bit DAC: m = 6 magnitude bits, K = ceil(6/k) cycles; k = 4 and 5 do not
    # divide m, so the gain's 2^(kK - m) factor (4 and 16) matters.
    rng = np.random.default_rng(9)
    w, x = rng.uniform(-1, 1, (6, 32)), rng.uniform(-1, 1, (12, 32))
    xq = np.rint(x * 63) / 63
    y = analog_out(w, x, **dict(NO_QUANT, dac_bits=7), input_bits_per_cycle=k)
    np.testing.assert_allclose(y, xq @ w.T, rtol=1e-5, atol=1e-5)


def test_bit_serial_digitises_every_cycle():
    # One input 45/63 = 0b101101 on a 1-bit-per-cycle line, weight 1, ADC step 0.4 over ±2:
    # cycles read 1, 0, 1, 1, 0, 1 (each rounds to 1.2 or 0), recombined 1.2·45/63... exactly.
    w = np.array([[1.0]])
    x = np.array([[45 / 63]])
    hw = dict(EXACT, dac_bits=7, adc_bits=4, out_bound=2.8, input_bits_per_cycle=1)
    step = 2 * 2.8 / 14
    cycle = np.rint(1.0 / step) * step                   # a '1' bit reads 1.2
    y = analog_out(w, x, **hw)
    assert y[0, 0] == pytest.approx(cycle * 45 / 63, rel=1e-6)


def test_weight_quantization_is_symmetric_with_a_layer_wide_w_max():
    rng = np.random.default_rng(10)
    w, x = rng.uniform(-1, 1, (6, 90)), rng.uniform(-1, 1, (7, 90))
    w[0, 0] = 3.0                                          # in the first of three tiles only
    y = analog_out(w, x, **NO_QUANT, weight_bits=4, max_input_size=30)
    np.testing.assert_allclose(y, x @ quantized(w, 4).T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("changes, key", [
    (dict(cell_bits=2), "cell_bits"),
    (dict(slice_recombination="analog"), "slice_recombination"),
    (dict(input_bits_per_cycle=1), "bound_management"),
    (dict(input_bits_per_cycle=1, bound_management="none", dac_bits=0), "input_bits_per_cycle"),
    (dict(rows_per_adc=8), "rows_per_adc"),
    (dict(weight_bits=8, weight_scaling_omega=1.0), "weight_scaling_omega"),
    (dict(offset="digital", weight_scaling_omega=1.0), "weight_scaling_omega"),
    (dict(stuck_off_fraction=0.6, stuck_on_fraction=0.5), "stuck_on_fraction"),
    (dict(weight_bits=1), "weight_bits"),
    (dict(on_off_ratio=1.0), "on_off_ratio"),
    (dict(offset="dummy"), "offset"),
    (dict(readout="serial"), "readout"),
    (dict(d2d_sigma=-0.1), "d2d_sigma"),
])
def test_meaningless_combinations_are_rejected_by_name(changes, key):
    with pytest.raises(UserInputError) as err:
        HardwareConfig(**changes)
    assert err.value.key == key
    assert str(err.value).startswith(f"{key}: ")


def test_binary_cells_are_allowed():
    assert HardwareConfig(weight_bits=8, cell_bits=1).n_slices == 7
