"""nn.MultiheadAttention on analog matrices (mc_engine/analog/sequence.py): the packed
in-projection is one matrix of 3E rows (q, k, v separate when kdim/vdim differ), out_proj one
more, the attention products digital.

Equality with torch: with noise and quantizers off (ideal device, no DAC/ADC, no output noise,
no drift compensation) the analog pass computes (x/α)·Wᵀ·α in float32, so outputs equal torch's
to float32 rounding: atol 2e-6 on outputs of order 1 (the largest deviation seen is 3e-7;
a wrong mask, head split or transpose moves outputs by O(0.1))."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mc_engine.analog import analog_layer_names, convert
from mc_engine.analog.convert import AnalogLinear
from mc_engine.analog.execution import Execution
from mc_engine.analog.torch_chips import ChipBatch
from mc_engine.errors import UserInputError
from mc_engine.hardware import HardwareConfig

EXACT = HardwareConfig(device="ideal", out_noise=0.0, drift_compensation="none", dac_bits=0,
                       adc_bits=0, out_bound=1e6)
TOL = dict(rtol=0, atol=2e-6, equal_nan=True)
E, H, L, S, N = 16, 4, 5, 6, 3


class Attn(nn.Module):
    def __init__(self, **kw):
        super().__init__()
        self.attn = nn.MultiheadAttention(E, H, **kw)

    def forward(self, q, k, v, **kw):
        return self.attn(q, k, v, **kw)


def _pair(**kw):
    torch.manual_seed(0)
    model = Attn(**kw).eval()
    return model, convert(model, EXACT).program(0).drift(0.0)


def _seq(n_seq: int, batch_first: bool, dim: int = E, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (N, n_seq, dim) if batch_first else (n_seq, N, dim)
    return torch.randn(*shape, generator=g)


def _check(model, analog, *args, **kw):
    with torch.no_grad():
        ref, out = model(*args, **kw), analog.module(*args, **kw)
    torch.testing.assert_close(out[0], ref[0], **TOL)
    if ref[1] is None:
        assert out[1] is None
    else:
        torch.testing.assert_close(out[1], ref[1], **TOL)


CAUSAL = torch.triu(torch.ones(L, L, dtype=torch.bool), 1)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("masks", ["none", "bool", "float", "padding", "both", "3d"])
@pytest.mark.parametrize("need_weights", [True, False])
def test_self_attention_equals_torch(batch_first, masks, need_weights):
    model, analog = _pair(batch_first=batch_first)
    x = _seq(L, batch_first)
    pad = torch.zeros(N, L, dtype=torch.bool)
    pad[0, -2:] = True
    kw = {"none": {}, "bool": dict(attn_mask=CAUSAL),
          "float": dict(attn_mask=torch.randn(L, L, generator=torch.Generator().manual_seed(2))),
          "padding": dict(key_padding_mask=pad),
          "both": dict(attn_mask=CAUSAL, key_padding_mask=pad),
          "3d": dict(attn_mask=CAUSAL.expand(N * H, L, L))}[masks]
    _check(model, analog, x, x, x, need_weights=need_weights, **kw)
    if need_weights:
        _check(model, analog, x, x, x, average_attn_weights=False, **kw)


@pytest.mark.parametrize("batch_first", [False, True])
def test_cross_attention_and_causal_hint_equal_torch(batch_first):
    model, analog = _pair(batch_first=batch_first)
    q, mem = _seq(L, batch_first), _seq(S, batch_first, seed=3)
    _check(model, analog, q, mem, mem)                            # key is value
    _check(model, analog, q, mem, _seq(S, batch_first, seed=4))   # all three differ
    x = _seq(L, batch_first)
    _check(model, analog, x, x, x, attn_mask=CAUSAL, is_causal=True, need_weights=False)


def test_unbatched_input_equals_torch():
    model, analog = _pair()
    x = torch.randn(L, E, generator=torch.Generator().manual_seed(5))
    _check(model, analog, x, x, x)


def test_bias_kv_zero_attn_no_bias_and_kdim_vdim_equal_torch():
    for kw in (dict(add_bias_kv=True, add_zero_attn=True), dict(bias=False),
               dict(kdim=8, vdim=12, batch_first=True)):
        model, analog = _pair(**kw)
        bf = kw.get("batch_first", False)
        q = _seq(L, bf)
        k, v = _seq(S, bf, kw.get("kdim", E), 3), _seq(S, bf, kw.get("vdim", E), 4)
        pad = torch.zeros(N, S, dtype=torch.bool)
        pad[1, 0] = True
        _check(model, analog, q, k, v, key_padding_mask=pad)


def test_layer_names_and_matrix_shapes():
    model, analog = _pair()
    assert analog_layer_names(model) == ["attn.in_proj", "attn.out_proj"]
    mats = {n: m.matrices[0] for n, m in analog.module.named_modules()
            if isinstance(m, AnalogLinear)}
    assert {n: (m.out_features, m.in_features, m.key) for n, m in mats.items()} == {
        "attn.in_proj": (3 * E, E, (0, 0)), "attn.out_proj": (E, E, (1, 0))}
    separate = Attn(kdim=8, vdim=12)
    assert analog_layer_names(separate) == [f"attn.{p}_proj" for p in "qkvo"[:3]] + \
        ["attn.out_proj"]
    part = convert(model, EXACT, layers=["attn.out_proj"])
    assert isinstance(part.module.attn.in_proj, nn.Linear)        # digital, same weight
    assert isinstance(part.module.attn.out_proj, AnalogLinear)


def test_transformer_encoder_runs_its_analog_layers():
    """nn.TransformerEncoder's fused fast paths read the weights directly; converted, it must
    take the unfused path through the analog layers and still equal torch."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(E, H, dim_feedforward=32, dropout=0.0, batch_first=True)
    model = nn.TransformerEncoder(layer, 2).eval()
    analog = convert(model, EXACT).program(0)
    assert analog_layer_names(model) == [f"layers.{i}.{n}" for i in range(2) for n in
                                         ("self_attn.in_proj", "self_attn.out_proj",
                                          "linear1", "linear2")]
    x = _seq(L, True)
    pad = torch.zeros(N, L, dtype=torch.bool)
    pad[0, -1] = True
    with torch.no_grad():
        for kw in ({}, dict(src_key_padding_mask=pad)):
            ref = model(x, **kw)
            out = analog(x, **kw) if not kw else analog.module(x, **kw)
            # the fast path of the original zeroes padded positions: compare the others
            keep = ~pad[..., None].expand_as(ref) if kw else torch.ones_like(ref, dtype=bool)
            torch.testing.assert_close(out[keep], ref[keep], rtol=0, atol=1e-5)


def test_projection_noise_is_that_of_the_same_matrix_as_a_linear():
    """Same weights, same layer index, same seed: the packed in-projection of a self-attention
    call draws exactly the programming, read and MVM noise of that matrix as an nn.Linear
    (one call each, the same rows)."""
    torch.manual_seed(0)
    model = Attn(batch_first=True).eval()
    twin = nn.Sequential(nn.Linear(E, 3 * E), nn.Linear(E, E)).eval()
    with torch.no_grad():
        twin[0].weight.copy_(model.attn.in_proj_weight)
        twin[0].bias.copy_(model.attn.in_proj_bias)
    hw = HardwareConfig(w_noise=0.02, inp_noise=0.01)
    x = _seq(L, True)
    seen = {}
    analog = convert(model, hw).program(9).drift(3600.0)
    analog.module.attn.in_proj.register_forward_hook(lambda m, a, out: seen.update(attn=out))
    analog.module(x, x, x)
    linear = convert(twin, hw).program(9).drift(3600.0)
    ref = linear.module[0](x)
    assert torch.equal(seen["attn"], ref)
    assert not torch.equal(ref, linear.module[0](x))            # the noise is on


@pytest.mark.parametrize("batch_first", [False, True])
def test_both_executions_and_the_chip_batch_are_bitwise_equal(batch_first):
    torch.manual_seed(0)
    model = Attn(batch_first=batch_first).eval()
    hw = HardwareConfig(w_noise=0.02, inp_noise=0.01)
    x = _seq(L, batch_first)
    outs = []
    for ex in (Execution(), Execution("torch", "cpu")):
        a = convert(model, hw).use(ex).program(3).drift(60.0)
        outs.append(a.module(x, x, x)[0])
    assert torch.equal(outs[0], outs[1])
    if not batch_first:
        return
    # the chip batch runs the model on C·N stacked images: chip c is rows c·N..
    ex = Execution("torch", "cpu")
    chips = [convert(model, hw).use(ex).program(s).drift(60.0) for s in (1, 2)]
    for group in zip(*(c.analog_layers() for c in chips)):
        group[0].batch = list(group)
    xx = x.repeat(2, 1, 1)
    batched = chips[0].module(xx, xx, xx)[0]
    for k, seed in enumerate((1, 2)):
        alone = convert(model, hw).use(ex).program(seed).drift(60.0).module(x, x, x)[0]
        assert torch.equal(batched[k * N:(k + 1) * N], alone)
    assert ChipBatch  # the class that sets .batch this way (tests/test_torch_chips.py)


def test_a_custom_attention_with_a_raw_parameter_is_still_rejected():
    class RawAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Parameter(torch.randn(3 * E, E))
            self.out = nn.Linear(E, E)

        def forward(self, x):
            q, k, v = (x @ self.qkv.T).chunk(3, -1)
            return self.out(torch.softmax(q @ k.transpose(-1, -2), -1) @ v)

    model = nn.Sequential(nn.Linear(E, E), RawAttention())
    with pytest.raises(UserInputError, match=r"1\.qkv is owned by module '1' \(RawAttention\)"):
        convert(model, EXACT)


def test_embedding_stays_digital():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(10, E), nn.Linear(E, 4)).eval()
    analog = convert(model, EXACT).program(0)
    assert analog_layer_names(model) == ["1"]
    assert isinstance(analog.module[0], nn.Embedding)
    tokens = torch.arange(10).view(2, 5)
    np.testing.assert_allclose(analog(tokens).numpy(), model(tokens).detach().numpy(),
                               atol=2e-6, rtol=0)


def test_transformer_decoder_cross_attention_equals_torch():
    torch.manual_seed(0)
    model = nn.TransformerDecoder(nn.TransformerDecoderLayer(E, H, 32, dropout=0.0), 1).eval()
    assert analog_layer_names(model)[:4] == [
        "layers.0.self_attn.in_proj", "layers.0.self_attn.out_proj",
        "layers.0.multihead_attn.in_proj", "layers.0.multihead_attn.out_proj"]
    analog = convert(model, EXACT).program(0)
    tgt, mem = _seq(L, False), _seq(S, False, seed=3)
    mask = nn.Transformer.generate_square_subsequent_mask(L)
    with torch.no_grad():
        torch.testing.assert_close(analog.module(tgt, mem, tgt_mask=mask, tgt_is_causal=True),
                                   model(tgt, mem, tgt_mask=mask, tgt_is_causal=True),
                                   rtol=0, atol=1e-5)
