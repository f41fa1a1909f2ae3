"""The sequence layers' matrices are ordinary analog matrices: every mapping, read-out and
periphery option applies to them, both executions agree bit for bit on the CPU (a single
differing element is a divergence in the description, as in tests/test_torch_pass.py), a chip
batch gives each chip its own result, the calibrated ranges hook them in the digital twin, and
layer sensitivity names them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mc_engine.analog import analog_layer_names, convert, evaluate_chips, evaluate_trial
from mc_engine.analog.execution import Execution
from mc_engine.analog.torch_chips import ChipBatch
from mc_engine.hardware import HardwareConfig
from tests.test_torch_pass import assert_executions_equal

TORCH_CPU = Execution("torch", "cpu")
VOCAB, E, T = 13, 16, 4
CASES = {
    "split_tiles": dict(max_input_size=10, max_output_size=12, inp_noise=0.02),
    "bit_slices": dict(weight_bits=8, cell_bits=2, w_noise=0.01),
    "calibrated_ranges": dict(noise_management="calibrated", inp_noise=0.02),
    "calibrated_adc": dict(weight_bits=8, adc_range="calibrated", bound_management="none"),
    "constant_nm_direct_conv": dict(noise_management="constant", nm_constant=2.0,
                                    w_noise=0.02),
}


class TinySeq(nn.Module):
    """Tokens -> embedding -> Conv1d -> self-attention (sequence first) -> LSTM -> GRU -> head."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, E)
        self.conv = nn.Conv1d(E, E, 3, padding=1, groups=2)
        self.attn = nn.MultiheadAttention(E, 4)
        self.lstm = nn.LSTM(E, 8, bidirectional=True)
        self.gru = nn.GRU(16, 8, batch_first=True)
        self.head = nn.Linear(8, 5)

    def forward(self, tokens):
        x = self.conv(self.emb(tokens).transpose(1, 2)).transpose(1, 2)   # N, T, E
        s = x.transpose(0, 1)
        a, _ = self.attn(s, s, s, need_weights=False)
        h, _ = self.lstm(torch.relu(a) + s)
        g, _ = self.gru(h.transpose(0, 1))
        return self.head(g[:, -1])


def _model() -> nn.Module:
    torch.manual_seed(0)
    return TinySeq().eval()


def _tokens(n: int = 10, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n, T), generator=torch.Generator().manual_seed(seed))


def test_layer_names():
    assert analog_layer_names(_model()) == [
        "conv", "attn.in_proj", "attn.out_proj", "lstm.l0.ih", "lstm.l0.hh",
        "lstm.l0_reverse.ih", "lstm.l0_reverse.hh", "gru.l0.ih", "gru.l0.hh", "head"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_torch_equals_numba_bitwise(name):
    hw = HardwareConfig(**CASES[name])
    model, x = _model(), _tokens()
    calibration = _tokens(40, seed=2).numpy()
    outs = assert_executions_equal(model, hw, x, calibration)
    assert not np.array_equal(outs[0], outs[1])                 # fresh noise at each read


def test_chip_batch_equals_chips_alone():
    model, x = _model(), _tokens()
    hw = HardwareConfig(w_noise=0.02, inp_noise=0.01)
    chips = [convert(model, hw).use(TORCH_CPU).program(s).drift(60.0) for s in (1, 2)]
    together = ChipBatch(chips)(x)
    for k, s in enumerate((1, 2)):
        alone = convert(model, hw).use(TORCH_CPU).program(s).drift(60.0)(x)
        assert torch.equal(together[k], alone)
    assert not torch.equal(together[0], together[1])


def test_trial_rows_and_layer_sensitivity_run_on_the_new_layers():
    model, x = _model(), _tokens(30).numpy()
    y = np.arange(30) % 5
    hw = HardwareConfig(prog_noise_scale=2.0)
    rows = evaluate_chips(model, hw, x, y, [1.0, 86400.0], [3, 4], execution=TORCH_CPU)
    alone = [evaluate_trial(model, hw, x, y, [1.0, 86400.0], s) for s in (3, 4)]
    assert [[r["n_correct"] for r in c] for c in rows] == \
        [[r["n_correct"] for r in c] for c in alone]
    # one matrix alone draws what it draws in the all-analog model (common random numbers)
    a, b = (convert(model, HardwareConfig(w_noise=0.02), layers).program(5).drift(60.0)
            for layers in (None, ["lstm.l0_reverse.hh"]))
    assert type(b.module.lstm.l0.hh) is nn.Linear                 # the others digital
    h = torch.randn(4, 8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.module.lstm.l0_reverse.hh(h), b.module.lstm.l0_reverse.hh(h))
