"""nn.LSTM, nn.GRU and nn.RNN on analog matrices (mc_engine/analog/sequence.py): per layer and
direction an input-hidden and a hidden-hidden matrix, gates digital, the recurrence stepping
through the analog tiles.

Equality with torch: with noise and quantizers off the analog MVM is (x/α)·Wᵀ·α in float32,
so outputs and final states equal torch's to float32 rounding: atol 2e-6 on values in (−1, 1)
(largest deviation seen 2e-7; a wrong gate order, direction or state moves them by O(0.1))."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mc_engine.analog import analog_layer_names, convert
from mc_engine.analog.convert import AnalogLinear
from mc_engine.analog.execution import Execution
from mc_engine.errors import UserInputError
from mc_engine.hardware import HardwareConfig

EXACT = HardwareConfig(device="ideal", out_noise=0.0, drift_compensation="none", dac_bits=0,
                       adc_bits=0, out_bound=1e6)
TOL = dict(rtol=0, atol=2e-6)
IN, HID, T, N = 6, 8, 5, 4


class Seq(nn.Module):
    def __init__(self, cls, **kw):
        super().__init__()
        self.rnn = cls(IN, HID, **kw)

    def forward(self, x, hx=None):
        return self.rnn(x, hx)


def _inputs(batch_first: bool, seed: int = 1, batched: bool = True) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if not batched:
        return torch.randn(T, IN, generator=g)
    return torch.randn(*((N, T, IN) if batch_first else (T, N, IN)), generator=g)


def _flat(out):
    """output, then every final state tensor."""
    out, states = out
    return [out, *(states if isinstance(states, tuple) else (states,))]


CASES = [(cls, dict(num_layers=layers, bidirectional=bi, batch_first=bf, bias=bias))
         for cls in (nn.LSTM, nn.GRU) for layers, bi, bf, bias in
         [(1, False, False, True), (2, True, True, True), (3, True, False, False),
          (2, False, True, False)]]
CASES += [(nn.RNN, dict(num_layers=2, bidirectional=True, nonlinearity="relu")),
          (nn.RNN, dict(batch_first=True)),
          (nn.LSTM, dict(num_layers=2, bidirectional=True, proj_size=3, batch_first=True))]


@pytest.mark.parametrize("cls,kw", CASES,
                         ids=[f"{c.__name__}-{'-'.join(f'{k}={v}' for k, v in kw.items())}"
                              for c, kw in CASES])
def test_recurrent_layer_equals_torch(cls, kw):
    torch.manual_seed(0)
    model = Seq(cls, **kw).eval()
    analog = convert(model, EXACT).program(0).drift(0.0)
    x = _inputs(kw.get("batch_first", False))
    with torch.no_grad():
        for ref, out in zip(_flat(model(x)), _flat(analog.module(x))):
            torch.testing.assert_close(out, ref, **TOL)
        # given initial states, and an unbatched sequence
        states = _flat(model(x))[1:]
        hx = tuple(states) if cls is nn.LSTM else states[0]
        for ref, out in zip(_flat(model(x, hx)), _flat(analog.module(x, hx))):
            torch.testing.assert_close(out, ref, **TOL)
        u = _inputs(False, seed=3, batched=False)
        for ref, out in zip(_flat(model(u)), _flat(analog.module(u))):
            torch.testing.assert_close(out, ref, **TOL)


def test_layer_names_follow_layers_and_directions():
    model = Seq(nn.LSTM, num_layers=2, bidirectional=True)
    assert analog_layer_names(model) == [f"rnn.l{k}{d}.{m}" for k in (0, 1)
                                         for d in ("", "_reverse") for m in ("ih", "hh")]
    assert analog_layer_names(Seq(nn.LSTM, proj_size=2)) == ["rnn.l0.ih", "rnn.l0.hh",
                                                             "rnn.l0.hr"]
    analog = convert(model, EXACT, layers=["rnn.l1.hh"])
    kinds = {n: type(m).__name__ for n, m in analog.module.named_modules()
             if n.count(".") == 2}
    assert kinds["rnn.l1.hh"] == "AnalogLinear" and kinds["rnn.l0.hh"] == "Linear"
    shapes = {n: (m.matrices[0].out_features, m.matrices[0].in_features)
              for n, m in convert(model, EXACT).module.named_modules()
              if isinstance(m, AnalogLinear)}
    assert shapes["rnn.l0.ih"] == (4 * HID, IN) and shapes["rnn.l1.ih"] == (4 * HID, 2 * HID)
    assert shapes["rnn.l1_reverse.hh"] == (4 * HID, HID)


def test_packed_sequences_are_rejected_by_name():
    model = Seq(nn.GRU).eval()
    analog = convert(model, EXACT).program(0)
    packed = nn.utils.rnn.pack_padded_sequence(_inputs(False), [T] * N)
    with pytest.raises(UserInputError, match="model.rnn.*PackedSequence"):
        analog.module(packed)


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU])
def test_both_executions_are_bitwise_equal(cls):
    torch.manual_seed(0)
    model = Seq(cls, num_layers=2, bidirectional=True).eval()
    hw = HardwareConfig(w_noise=0.02, inp_noise=0.01)
    x = _inputs(False)
    outs = [_flat(convert(model, hw).use(ex).program(4).drift(60.0).module(x))
            for ex in (Execution(), Execution("torch", "cpu"))]
    for a, b in zip(*outs):
        assert torch.equal(a, b)
    assert not torch.equal(outs[0][0], _flat(model(x))[0])      # the noise is on


def _hh_calls(analog, x):
    """(input, output) of every call of the analog hidden-hidden matrix rnn.l0.hh."""
    calls = []
    hh = analog.module.rnn.l0.hh
    handle = hh.register_forward_hook(lambda m, a, out: calls.append((a[0].clone(), out)))
    with torch.no_grad():
        analog.module(x)
    handle.remove()
    return calls


def test_recurrence_steps_draw_independent_mvm_noise():
    """Output noise only (sigma 0.1, ideal device, no quantizers, alpha = 1): the noise of each
    step's hidden-hidden MVM is its output minus W·h + b of the step's own input. Over
    N·4H = 2048 elements per step the correlation of two steps' noise has std 1/sqrt(2048) =
    0.022, so |corr| < 0.1 (4.5 sigma) for every pair, and each step's std is 0.1 within 6 %
    (the std of a sample std of 2048 normals is 1.6 %)."""
    torch.manual_seed(0)
    model = Seq(nn.LSTM, batch_first=True).eval()
    hw = HardwareConfig(device="ideal", drift_compensation="none", dac_bits=0, adc_bits=0,
                        out_bound=1e6, out_noise=0.1, noise_management="none")
    analog = convert(model, hw).program(2).drift(0.0)
    n = 64
    x = torch.randn(n, T, IN, generator=torch.Generator().manual_seed(4))
    calls = _hh_calls(analog, x)
    assert len(calls) == T                                      # one MVM per step
    assert analog.module.rnn.l0.hh.matrices[0].noise.calls == T
    w, b = model.rnn.weight_hh_l0.detach(), model.rnn.bias_hh_l0.detach()
    noise = np.stack([(out - (h @ w.T + b)).numpy().ravel() for h, out in calls])
    assert noise.shape == (T, n * 4 * HID)
    np.testing.assert_allclose(noise.std(1), 0.1, rtol=0.06)
    corr = np.corrcoef(noise)
    off = corr[~np.eye(T, dtype=bool)]
    assert np.abs(off).max() < 0.1, corr


def test_recurrence_keeps_its_programmed_weights_across_steps():
    """Programming noise on, MVM noise off: every step multiplies by the same programmed
    (and drifted) matrix, so each step's output equals that matrix applied again to the same
    input afterwards, and differs from the ideal W·h + b."""
    torch.manual_seed(0)
    model = Seq(nn.GRU, batch_first=True).eval()
    hw = HardwareConfig(dac_bits=0, adc_bits=0, out_bound=1e6, out_noise=0.0,
                        prog_noise_scale=3.0)
    analog = convert(model, hw).program(2).drift(86400.0)
    x = _inputs(True)
    calls = _hh_calls(analog, x)
    hh = analog.module.rnn.l0.hh
    w, b = model.rnn.weight_hh_l0.detach(), model.rnn.bias_hh_l0.detach()
    for h, out in calls[1:]:                                    # step 0 has h = 0
        with torch.no_grad():
            torch.testing.assert_close(out, hh(h), rtol=0, atol=1e-6)
        assert (out - (h @ w.T + b)).abs().max() > 1e-3

