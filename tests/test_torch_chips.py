"""Chips batched in one call (mc_engine/analog/torch_chips.py): a chip's outputs and rows must
not depend on the batch it runs in. Every chip of a batch is compared, bit for bit, with the
same chip (same seed) run alone through the torch execution, for the fused default pass (with
every noise source on, bound management retrying saturated rows, silent images) and for the
tiles that fall back to chip-by-chip read-out inside the batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mc_engine.analog import convert, evaluate_chips, evaluate_trial
from mc_engine.analog.execution import Execution
from mc_engine.analog.torch_chips import ChipBatch
from mc_engine.hardware import HardwareConfig
from tests.test_torch_pass import _inputs, _model

TORCH_CPU = Execution("torch", "cpu")
CASES = {
    "default": {},
    "all_noise_tight_adc": dict(inp_noise=0.02, w_noise=0.02, out_bound=3.0, adc_bits=6),
    "pcm_read_split_ir": dict(w_noise=0.02, w_noise_type="pcm_read", max_input_size=20,
                              max_output_size=6, ir_drop=0.5),
    "constant_nm": dict(noise_management="constant", nm_constant=2.0, out_bound=4.0),
    "slices_fallback": dict(weight_bits=8, cell_bits=2, offset="digital"),
    "calibrated_ranges_split": dict(noise_management="calibrated", max_input_size=20,
                                    max_output_size=6, out_bound=3.0),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_chip_in_a_batch_is_the_chip_alone(name):
    hw = HardwareConfig(**CASES[name])
    model, x = _model(), _inputs()
    seeds = [11, 12, 13]
    alone = []
    for seed in seeds:
        chip = convert(model, hw).use(TORCH_CPU).program(seed, x.numpy()).drift(600.0)
        alone.append(chip(x).numpy())
    chips = [convert(model, hw).use(TORCH_CPU).program(s, x.numpy()).drift(600.0)
             for s in seeds]
    batched = ChipBatch(chips)(x).numpy()
    assert batched.shape == (3, *alone[0].shape)
    for k in range(3):
        assert np.array_equal(batched[k], alone[k]), \
            f"chip {k}: {np.count_nonzero(batched[k] != alone[k])} outputs differ"
    assert not np.array_equal(alone[0], alone[1])          # the chips are different chips


def test_trial_rows_do_not_depend_on_the_chip_batch():
    model, x = _model(), _inputs(60)
    y = np.arange(60) % 10
    hw = HardwareConfig(out_bound=3.0)
    times = [1.0, 3600.0]
    batch = evaluate_chips(model, hw, x.numpy(), y, times, [5, 6, 7, 8], batch_size=25,
                           execution=TORCH_CPU)
    pairs = evaluate_chips(model, hw, x.numpy(), y, times, [7, 8], batch_size=25,
                           execution=TORCH_CPU)
    alone = [evaluate_trial(model, hw, x.numpy(), y, times, s, batch_size=25,
                            execution=ex) for s in (5, 6, 7, 8) for ex in (TORCH_CPU,)]
    key = [[r["n_correct"] for r in rows] for rows in batch]
    assert key == [[r["n_correct"] for r in rows] for rows in alone]
    assert key[2:] == [[r["n_correct"] for r in rows] for rows in pairs]


def test_chip_batch_needs_the_torch_execution_for_batching_only():
    """On the Numba execution evaluate_chips runs the chips one by one: the same rows."""
    model, x = _model(), _inputs(30)
    y = np.arange(30) % 10
    numba = evaluate_chips(model, HardwareConfig(), x.numpy(), y, [60.0], [1, 2])
    torch_rows = evaluate_chips(model, HardwareConfig(), x.numpy(), y, [60.0], [1, 2],
                                execution=TORCH_CPU)
    assert [r[0]["n_correct"] for r in numba] == [r[0]["n_correct"] for r in torch_rows]


def test_batched_model_is_unchanged_after_the_batch():
    model = nn.Sequential(nn.Linear(6, 4))
    chips = [convert(model, HardwareConfig()).use(TORCH_CPU).program(s) for s in (1, 2)]
    x = torch.randn(5, 6)
    before = chips[0](x)
    ChipBatch(chips)(x)
    assert all(layer.batch is None for layer in chips[0].analog_layers())
    assert chips[0](x).shape == before.shape


@pytest.mark.parametrize("hardware", [{}, dict(out_bound=2.0, adc_bits=6, w_noise=0.02)])
def test_chips_with_mostly_silent_rows_run_as_alone(hardware):
    """A chip whose rows are mostly all-zero multiplies only its live rows when alone (and the
    GEMM's last bits may depend on which rows it gets): inside a batch it must too. Chip 0 gets
    80 % silent rows, chip 1 none, chip 2 one; each equals the same chip alone, bit for bit."""
    from mc_engine.analog import torch_chips, torch_pass

    hw = HardwareConfig(**hardware)
    w = torch.randn(12, 30, generator=torch.Generator().manual_seed(3))
    layer = nn.Linear(30, 12, bias=False)
    layer.weight.data = w
    x = torch.randn(3, 50, 30, generator=torch.Generator().manual_seed(4))
    x[0, :40] = 0.0
    x[2, 7] = 0.0

    def chips():
        return [convert(layer, hw).use(TORCH_CPU).program(s).drift(10.0) for s in (1, 2, 3)]

    def matrix(chip):
        return next(chip.analog_layers()).matrices[0]

    batched = torch_chips.matrix_forward([matrix(c) for c in chips()], x)
    for k, chip in enumerate(chips()):
        alone = torch_pass.matrix_forward(matrix(chip), x[k])
        assert torch.equal(batched[k], alone), f"chip {k}"
    assert torch.all(batched[0, :40] == 0)
