"""IR drop (docs/physics.md, "Tile forward"): aihwkit 1.2.0's model, reproduced on its exact case
and by hand, applied to every array read (slices, row groups)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mc_engine import HardwareConfig, convert
from mc_engine.analog.execution import Execution
from mc_engine.analog.matrix import AnalogMatrix
from tests.conftest import AIHWKIT, linear_with
from tests.test_mapping import NO_QUANT, analog_out


def dropped(w: np.ndarray, x: np.ndarray, s: float, g_ratio: float, n: int | None = None,
            j0: int = 0) -> np.ndarray:
    """X·Wᵀ minus the IR drop, in float64: a = (n/G)·|x|·|W|ᵀ, c = a(a(0.05a − 0.2) + 0.5),
    y −= s·c·((x·f)·Wᵀ), f_j = 1 − (1 − j/n)², j the row index in the tile (from j0)."""
    n = w.shape[1] if n is None else n
    f = 1 - (1 - (j0 + np.arange(w.shape[1])) / n) ** 2
    a = (n / g_ratio) * (np.abs(x) @ np.abs(w).T)
    c = a * (a * (0.05 * a - 0.2) + 0.5)
    return x @ w.T - s * c * ((x * f) @ w.T)


def test_aihwkit_exact_case_is_reproduced_to_float32_precision():
    # aihwkit's AnalogLinear output with every quantizer and noise source off, ir_drop 1 and
    # ir_drop_g_ratio 2000: the drop moves outputs by up to 19 % of max|X·Wᵀ|; float32 leaves
    # errors of ~1e-7 of max|Y|, a wrong row order or cubic 5e-3 or more.
    ref = np.load(AIHWKIT / "ir_drop_exact.npz")
    y = analog_out(ref["W"], ref["X"], **NO_QUANT, ir_drop=float(ref["ir_drop"]),
                   ir_drop_g_ratio=float(ref["g_ratio"]))
    np.testing.assert_allclose(y, ref["Y"], rtol=0, atol=1e-5 * np.abs(ref["Y"]).max())
    # The torch execution (the GPU's code, here on the CPU) is the same numbers exactly.
    hw = HardwareConfig(**NO_QUANT, ir_drop=float(ref["ir_drop"]),
                        ir_drop_g_ratio=float(ref["g_ratio"]))
    on_torch = convert(linear_with(ref["W"]), hw).use(Execution("torch", "cpu"))
    assert np.array_equal(on_torch(torch.from_numpy(ref["X"].astype(np.float32))).numpy(), y)


def test_a_hand_computed_two_by_three_case():
    # Rows weighted f = 1 - (1 - j/3)^2 = 0, 5/9, 8/9: the first row (farthest from the ADC)
    # adds no drop; a = (3/10)·(|x|·|W|ᵀ) = 0.3·(0.5 + 0.5 + 0.25) = 0.375 for column 0.
    w = np.array([[1.0, -1.0, 0.5], [0.5, 0.5, 0.5]])
    x = np.array([[0.5, -0.5, 0.5]])
    a0 = 0.3 * 1.25
    c0 = a0 * (a0 * (0.05 * a0 - 0.2) + 0.5)
    y0 = 0.5 + 0.5 + 0.25 - 2.0 * c0 * (0.5 * 5 / 9 + 0.25 * 8 / 9)
    y = analog_out(w, x, **NO_QUANT, ir_drop=2.0, ir_drop_g_ratio=10.0)
    assert y[0, 0] == pytest.approx(y0, rel=1e-6)
    np.testing.assert_allclose(y, dropped(w, x, 2.0, 10.0), rtol=1e-6)


def test_ir_drop_applies_to_every_slice_and_row_group_read():
    # 8-bit weights on 2-bit slices (conductance units, g_min 0), two row groups of 12: every
    # slice column and every group is its own read with its own drop, n = the tile's 24 rows
    # and j its row index in the tile; then the shift-and-add and the rescale.
    rng = np.random.default_rng(3)
    w, x = rng.uniform(-1, 1, (3, 24)), rng.uniform(-1, 1, (5, 24))
    hw = dict(NO_QUANT, weight_bits=8, cell_bits=2, readout="row_by_row", rows_per_adc=12,
              ir_drop=1.0, ir_drop_g_ratio=50.0)
    tile = AnalogMatrix(w.astype(np.float32), HardwareConfig(**hw), 0).tiles[0][0]
    cols, layout = tile.w.astype(np.float64), tile.mapping.layout
    reads = sum(dropped(cols[:, j0:j0 + 12], x[:, j0:j0 + 12], 1.0, 50.0, n=24, j0=j0)
                for j0 in (0, 12))
    expected = layout.rescale * sum(c * reads[:, i * 3:(i + 1) * 3]
                                    for i, c in enumerate(layout.coefs))
    np.testing.assert_allclose(analog_out(w, x, **hw), expected, rtol=1e-5, atol=1e-6)
    off = analog_out(w, x, **dict(hw, ir_drop=0.0))
    assert np.abs(off - expected).max() > 1e-2              # the drop is there to see


def test_grouped_convolutions_see_the_drop_too():
    import torch
    from torch import nn

    from mc_engine import convert
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)
    x = torch.rand(2, 4, 5, 5)
    hw = HardwareConfig(**NO_QUANT, ir_drop=1.0, ir_drop_g_ratio=5.0)
    with_drop = convert(conv, hw).program(0).drift(0.0)(x)
    plain = conv(x).detach()
    assert (with_drop - plain).abs().max() > 1e-3
    per_group = [convert(nn.Conv2d(1, 1, 3, padding=1, bias=False), hw) for _ in range(4)]
    for g, m in enumerate(per_group):
        with torch.no_grad():
            m.module[0].matrices[0].tiles[0][0].set_weights(
                conv.weight[g].reshape(1, -1).numpy())
        y_g = m(x[:, g:g + 1])
        np.testing.assert_allclose(with_drop[:, g:g + 1].numpy(), y_g.numpy(), rtol=1e-5,
                                   atol=1e-6)
