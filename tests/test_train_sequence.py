"""Hardware-aware training of the sequence layers (mc_engine/train/sequence.py): with the
noise off, the training forward of MultiheadAttention, LSTM/GRU, Conv1d and HuggingFace's
Conv1D equals the engine's torch execution bit for bit (the same torch pass on the same tile
matrices, as tests/test_train_tiles.py checks for Linear and Conv2d); gradients reach every
matrix; the matrix reused at every time step holds one noise draw per forward."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mc_engine.analog import convert
from mc_engine.analog.execution import Execution
from mc_engine.errors import UserInputError
from mc_engine.hardware import HardwareConfig
from mc_engine.train import NoiseSpec, noisy_forward
from mc_engine.train.noisy import TRAIN_PERIPHERY, NoiseSource, clip_weights

QUIET = {"device": "ideal", "out_noise": 0.0, "drift_compensation": "none"}
E, T, N = 16, 5, 4


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(E, E, 3, padding=1, padding_mode="reflect", groups=2)
        self.attn = nn.MultiheadAttention(E, 4, batch_first=True)
        self.lstm = nn.LSTM(E, 8, bidirectional=True, batch_first=True)
        self.gru = nn.GRU(16, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):                                   # N, T, E
        x = self.conv(x.transpose(1, 2)).transpose(1, 2)
        a, _ = self.attn(x, x, x, need_weights=False)
        h, _ = self.lstm(a + x)
        g, _ = self.gru(h.transpose(0, 1))
        return self.head(g[-1])


def _setup():
    torch.manual_seed(0)
    x = torch.randn(N, T, E, generator=torch.Generator().manual_seed(1))
    x[0] = 0.0
    return Model().eval(), x


@pytest.mark.parametrize("hw", [
    dict(dac_bits=7, adc_bits=8, out_bound=4.0),
    dict(max_input_size=7, max_output_size=12, dac_bits=5, adc_bits=6, out_bound=0.5),
    dict(weight_bits=6, cell_bits=2, dac_bits=7, adc_bits=8),
])
def test_training_forward_equals_the_engine_exactly(hw):
    model, x = _setup()
    config = HardwareConfig(**QUIET, **hw)
    want = convert(model, config).use(Execution("torch", "cpu")).program(0).drift(0.0)(x)
    with torch.no_grad(), noisy_forward(model, NoiseSpec(hardware=config),
                                        NoiseSource.from_seed(0)):
        got = model(x)
    assert torch.equal(got, want), (got - want).abs().max()
    assert not hasattr(model.attn, "forward") or "forward" not in vars(model.attn)


def test_gpt2_conv1d_training_forward_equals_the_engine():
    transformers = pytest.importorskip("transformers")
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    model = nn.Sequential(Conv1D(12, E), nn.ReLU(), nn.Linear(12, 3)).eval()
    x = torch.randn(N, T, E)
    config = HardwareConfig(**QUIET, dac_bits=7, adc_bits=8, out_bound=4.0)
    want = convert(model, config).use(Execution("torch", "cpu")).program(0).drift(0.0)(x)
    with torch.no_grad(), noisy_forward(model, NoiseSpec(hardware=config),
                                        NoiseSource.from_seed(0)):
        got = model(x)
    assert torch.equal(got, want)
    assert transformers


def test_gradients_reach_every_matrix_and_clipping_covers_them():
    model, x = _setup()
    model.train()
    hw = HardwareConfig(**{**TRAIN_PERIPHERY, "out_noise": 0.02})
    with noisy_forward(model, NoiseSpec(hardware=hw, weight_noise=(0.1,)),
                       NoiseSource.from_seed(0)):
        model(x).square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    with torch.no_grad():
        model.lstm.weight_hh_l0[0, 0] = 100.0
        model.attn.in_proj_weight[0, 0] = 100.0
    clip_weights(model, 2.0)
    assert float(model.lstm.weight_hh_l0.detach().max()) < 100.0
    assert float(model.attn.in_proj_weight.detach().max()) < 100.0


def test_recurrent_matrix_holds_one_weight_noise_draw_per_forward():
    """Weight noise only (digital path): every step of one forward multiplies by the same
    noisy hh matrix, so hh(h) - W_noisy·h is 0 for all steps; a second forward draws anew."""
    torch.manual_seed(0)
    rnn = nn.RNN(E, 8, batch_first=True, bias=False).eval()
    x = torch.randn(N, T, E)
    spec = NoiseSpec(weight_noise=(0.3,))
    src = NoiseSource.from_seed(0)
    outs = []
    with torch.no_grad(), noisy_forward(rnn, spec, src):
        for _ in range(2):
            outs.append(rnn(x)[0])
    # solve for the noisy matrices from the first forward's states: h_t = tanh(A x_t + B h_{t-1})
    h = outs[0]
    pre = torch.atanh(h.clamp(-1 + 1e-6, 1 - 1e-6))              # N, T, 8
    inputs = torch.cat([x[:, 1:], h[:, :-1]], -1).reshape(-1, E + 8)
    sol = torch.linalg.lstsq(inputs.double(), pre[:, 1:].reshape(-1, 8).double()).solution
    resid = inputs.double() @ sol - pre[:, 1:].reshape(-1, 8).double()
    assert float(resid.abs().max()) < 1e-3           # one matrix pair explains every step
    assert not torch.equal(outs[0], outs[1])


def test_learned_ranges_are_rejected_for_the_sequence_layers():
    from mc_engine.train.ranges import RangeLearning

    hw = HardwareConfig(**{**TRAIN_PERIPHERY, "dac_bits": 7, "noise_management": "learned"})
    spec = NoiseSpec(hardware=hw, ranges=RangeLearning())
    model, _ = _setup()
    with pytest.raises(UserInputError, match=r"'conv' \(Conv1d\): learned input ranges"):
        with noisy_forward(model, spec, NoiseSource.from_seed(0)):
            pass
