"""The direct-convolution path (mc_engine/analog/direct_conv.py) against the im2col path.

With a static alpha the DAC output of every patch is the patch of the quantized feature map, so
the two paths compute the same physics; only the MVM's float32 sums run in another order (a
direct convolution against a GEMM of patches). The noise of an output element is the same
draw in both (same keys, counters by output element). So: with every noise source on, all
outputs must agree except the few that sit on an ADC rounding edge, and those differ by
exactly one ADC step (times the tile's digital factors). A path that drew other noise, missed
a group, a stride or a dilation, or mishandled a retried row would differ almost everywhere.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mc_engine.analog import convert, direct_conv
from mc_engine.analog.execution import Execution
from mc_engine.hardware import HardwareConfig

STATIC = dict(noise_management="constant", nm_constant=2.0, w_noise=0.02)
LAYERS = {
    "plain": lambda: nn.Conv2d(6, 10, 3, padding=1),
    "stride_dilation": lambda: nn.Conv2d(6, 10, 3, stride=2, padding=2, dilation=2),
    "kernel_5_no_pad": lambda: nn.Conv2d(6, 10, 5),
    "groups": lambda: nn.Conv2d(6, 12, 3, padding=1, groups=3),
    "depthwise": lambda: nn.Conv2d(6, 6, 3, padding=1, groups=6),
    "split_outputs": lambda: nn.Conv2d(6, 10, 3, padding=1),
}
HARDWARE = {
    "static_noise": STATIC,
    "pcm_read_ir_drop": dict(STATIC, w_noise_type="pcm_read", ir_drop=1.0),
    "saturating_retries": dict(STATIC, nm_constant=0.5, out_bound=3.0, adc_bits=6),
}


NUMBA = Execution()


def _outputs(layer: nn.Module, hw: HardwareConfig, x: torch.Tensor, direct: bool,
             execution: Execution = NUMBA) -> np.ndarray:
    direct_conv.ENABLED = direct
    try:
        analog = convert(layer, hw).use(execution).program(3).drift(3600.0)
        return analog(x).numpy()
    finally:
        direct_conv.ENABLED = True


@pytest.mark.parametrize("hardware", sorted(HARDWARE))
@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_direct_path_is_the_im2col_path_up_to_rounding_edges(kind, hardware):
    torch.manual_seed(0)
    layer = LAYERS[kind]()
    extra = dict(max_output_size=4) if kind == "split_outputs" else {}
    hw = HardwareConfig(**HARDWARE[hardware], **extra)
    x = torch.randn(12, 6, 11, 11, generator=torch.Generator().manual_seed(1))
    direct, im2col = _outputs(layer, hw, x, True), _outputs(layer, hw, x, False)
    differ = direct != im2col
    # Rounding-edge flips: a few per 10^4 outputs; a wrong draw or a wrong patch flips most.
    assert differ.mean() < 2e-3, f"{differ.sum()} of {differ.size} outputs differ"
    if differ.any():
        step = float(hw.out_bound) * 2 / (2 ** hw.adc_bits - 2) * hw.nm_constant
        gaps = np.abs(direct - im2col)[differ]
        # one ADC step at alpha, r = 1 or 2 (a retried row), times ω's 1/k = 1 here
        assert np.all(np.isclose(gaps[:, None], [step, 2 * step], rtol=1e-3).any(axis=1)), gaps


def test_both_executions_take_the_direct_path_bit_for_bit():
    torch.manual_seed(0)
    layer = nn.Conv2d(6, 12, 3, padding=1, groups=3)
    hw = HardwareConfig(**HARDWARE["saturating_retries"])
    x = torch.randn(8, 6, 9, 9, generator=torch.Generator().manual_seed(2))
    numba = _outputs(layer, hw, x, True)
    on_torch = _outputs(layer, hw, x, True, Execution("torch", "cpu"))
    assert np.array_equal(numba, on_torch)


def test_the_path_is_taken_only_where_every_vector_shares_its_alpha():
    layer = nn.Conv2d(6, 10, 3, padding=1)

    def taken(**hw):
        return direct_conv.eligible(next(convert(layer, HardwareConfig(**hw)).analog_layers()))

    assert taken(noise_management="constant") and taken(noise_management="none")
    assert not taken()                                        # abs_max: alpha per vector
    assert not taken(noise_management="constant", inp_noise=0.01)   # noise per patch line
    assert not taken(noise_management="constant", max_input_size=20)  # split input chunks
    assert not taken(noise_management="constant", weight_bits=8)      # a read-out scheme
