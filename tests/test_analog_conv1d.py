"""nn.Conv1d (a Conv2d of kernel height 1 on the analog tiles) and HuggingFace's GPT-2 Conv1D
(a transposed Linear) against torch.

With noise and quantizers off the analog pass is (x/α)·Wᵀ·α in float32: outputs of order 1
equal torch's to atol 1e-5 (sums of up to 48 products; the largest deviation seen is 5e-7; a
wrong stride, dilation, group or padding moves them by O(0.1))."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mc_engine.analog import analog_layer_names, convert
from mc_engine.analog.convert import AnalogConv1d, AnalogLinear
from mc_engine.analog.execution import Execution
from mc_engine.hardware import HardwareConfig

EXACT = dict(device="ideal", out_noise=0.0, drift_compensation="none", dac_bits=0, adc_bits=0,
             out_bound=1e6)
TOL = dict(rtol=0, atol=1e-5)


@pytest.mark.parametrize("kwargs", [
    dict(stride=2, padding=1), dict(padding=2, dilation=2), dict(groups=4, padding=1),
    dict(groups=8, bias=False), dict(padding="same"), dict(padding="valid", stride=3),
    dict(padding=2, padding_mode="reflect"), dict(padding=1, padding_mode="circular",
                                                   stride=2),
    dict(padding="same", padding_mode="replicate", dilation=2)])
@pytest.mark.parametrize("nm", ["abs_max", "constant"])    # im2col, and the direct path
def test_conv1d_without_quantization_equals_torch(kwargs, nm):
    torch.manual_seed(0)
    conv = nn.Conv1d(8, 16 if kwargs.get("groups") != 8 else 8, 3, **kwargs).eval()
    x = torch.randn(3, 8, 17)
    hw = HardwareConfig(**EXACT, noise_management=nm, nm_constant=8.0)
    am = convert(conv, hw).program(0)
    with torch.no_grad():
        torch.testing.assert_close(am(x), conv(x), **TOL)
        torch.testing.assert_close(am(x[0]), conv(x[0]), **TOL)          # unbatched
    assert isinstance(am.module[0], AnalogConv1d)


@pytest.mark.parametrize("nm", ["abs_max", "constant", "calibrated"])
def test_conv1d_executions_are_bitwise_equal(nm):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(4, 8, 3, padding=1, padding_mode="reflect"), nn.ReLU(),
                          nn.Conv1d(8, 8, 3, stride=2, groups=2), nn.Flatten(),
                          nn.Linear(8 * 8, 3)).eval()
    hw = HardwareConfig(noise_management=nm, w_noise=0.02)
    x = torch.randn(6, 4, 18, generator=torch.Generator().manual_seed(1))
    outs = [convert(model, hw).use(ex).program(2, calibration=x.numpy()).drift(60.0)(x)
            for ex in (Execution(), Execution("torch", "cpu"))]
    assert torch.equal(outs[0], outs[1])


def _gpt2():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=40, n_positions=12,
                                  bos_token_id=0, eos_token_id=0, resid_pdrop=0.0,
                                  embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg).eval()


def test_hf_conv1d_is_the_linear_it_is():
    transformers = pytest.importorskip("transformers")
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    layer = Conv1D(12, 5)                       # nf = 12 outputs, nx = 5 inputs: weight 5 × 12
    with torch.no_grad():
        layer.bias.normal_()
    model = nn.Sequential(layer, nn.ReLU(), nn.Linear(12, 2)).eval()
    am = convert(model, HardwareConfig(**EXACT)).program(0)
    assert isinstance(am.module[0], AnalogLinear)
    assert am.module[0].matrices[0].out_features == 12
    x = torch.randn(4, 3, 5)
    with torch.no_grad():
        torch.testing.assert_close(am(x), model(x), **TOL)
    assert transformers


def test_tiny_gpt2_equals_torch_and_names_its_matrices():
    """A random tiny GPT-2 (nothing downloaded): c_attn, c_proj, c_fc and the (tied) lm_head
    on tiles, the embeddings and LayerNorms digital; logits equal torch's to 1e-5 noise-free,
    both executions bitwise with noise on."""
    model = _gpt2()
    assert analog_layer_names(model) == [
        "transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj",
        "transformer.h.0.mlp.c_fc", "transformer.h.0.mlp.c_proj", "lm_head"]
    tokens = torch.randint(0, 40, (3, 10), generator=torch.Generator().manual_seed(1))
    am = convert(model, HardwareConfig(**EXACT)).program(0)
    with torch.no_grad():
        torch.testing.assert_close(am(tokens).logits, model(tokens).logits, **TOL)
    hw = HardwareConfig(w_noise=0.02)
    outs = [convert(model, hw).use(ex).program(4).drift(60.0)(tokens).logits
            for ex in (Execution(), Execution("torch", "cpu"))]
    assert torch.equal(outs[0], outs[1])
    assert not np.allclose(outs[0].numpy(), model(tokens).logits.detach().numpy(), atol=1e-3)
