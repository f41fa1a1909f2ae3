"""The CIFAR networks of the literature in the zoo: layouts, analog conversion, checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mc_engine import HardwareConfig, convert
from mc_engine.zoo import build, load_model
from mc_engine.zoo import models as zoo

#: Small-width versions (same layer structure) so that the analog forward of every network on
#: two images takes a fraction of a second.
SMALL = {
    "resnet18": lambda: zoo.resnet18(10, width=4),
    "resnet34": lambda: zoo.resnet34(10, width=4),
    "resnet32": lambda: zoo.resnet32(10),
    "resnet56": lambda: zoo.resnet56(10),
    "vgg11": lambda: zoo.vgg11(10, width=8),
    "vgg16": lambda: zoo.vgg16(10, width=8),
    "mobilenetv2": lambda: zoo.mobilenetv2(10, width_mult=0.1),
    "lenet5": lambda: zoo.lenet5(10),
}
#: Weights (Linear + Conv2d + BatchNorm) of the full-size networks, as published.
STUDIES = Path(__file__).parent.parent / "studies"
WEIGHTS_M = {"resnet18": 11.17, "resnet34": 21.28, "resnet32": 0.46, "resnet56": 0.85,
             "vgg11": 9.23, "vgg16": 14.73, "mobilenetv2": 2.24, "lenet5": 0.062}


def n_layers(model: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.mark.parametrize("name", list(SMALL))
def test_network_converts_and_runs_analog_on_two_images(name):
    torch.manual_seed(0)
    model = SMALL[name]().eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        digital = model(x)
    quiet = convert(model, HardwareConfig(device="ideal", out_noise=0.0, dac_bits=0,
                                          adc_bits=0, out_bound=float("inf"),
                                          drift_compensation="none")).program(0).drift(0.0)
    # No noise, no quantizers: the analog model is the digital one up to float32 rounding.
    np.testing.assert_allclose(quiet(x).numpy(), digital.numpy(), rtol=1e-3, atol=1e-3)
    noisy = convert(model, HardwareConfig(drift_compensation="none")).program(1).drift(86400.0)(x)
    assert noisy.shape == (2, 10) and torch.isfinite(noisy).all()
    assert not torch.equal(noisy, digital)


def test_layouts_follow_the_published_networks_and_load_their_state_dicts(tmp_path):
    built = {}
    for name in WEIGHTS_M:
        trained = built[name] = build(name, 100, seed=7)
        n_weights = sum(p.numel() for p in trained.parameters()) - trained_head(trained, 90)
        assert n_weights / 1e6 == pytest.approx(WEIGHTS_M[name], rel=0.02), name
        path = tmp_path / f"{name}.pt"
        torch.save(trained.state_dict(), path)
        model = load_model({"zoo": name, "num_classes": 100, "checkpoint": str(path)},
                           Path("."), "study.toml", tmp_path)
        state = model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in trained.state_dict().items()), name
        with torch.no_grad():
            assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 100)
    assert n_layers(built["resnet18"], nn.Conv2d) == 20           # 17 3x3 + 3 projections
    assert n_layers(built["resnet34"], nn.Conv2d) == 36
    assert n_layers(built["resnet56"], nn.Conv2d) == 55
    assert n_layers(built["vgg16"], nn.Conv2d) == 13 and n_layers(built["vgg11"], nn.Conv2d) == 8
    assert n_layers(built["vgg16"], nn.BatchNorm2d) == 13
    stem = built["resnet18"].stem[0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    assert n_layers(built["resnet18"], nn.MaxPool2d) == 0
    v2 = built["mobilenetv2"]
    assert n_layers(v2, zoo.InvertedResidual) == 17
    assert sum(isinstance(m, nn.Conv2d) and m.groups > 1 for m in v2.modules()) == 17


def trained_head(model: nn.Module, extra_classes: int) -> int:
    """Weights the last layer has beyond a 10-class head (the counts are for 10 classes)."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    return extra_classes * (last.in_features + 1)


def test_cifar_templates_train_and_validate_on_a_tiny_cifar_folder(tmp_path, capsys):
    """The shipped CIFAR-10 train files and studies as they are (only the epochs cut to one):
    train plain, fine-tune HWA from it, train VGG-16, then both studies validate (every
    checkpoint loaded and checked against the model and data)."""
    from mc_engine.cli import main
    from tests.test_data import write_cifar

    studies = tmp_path / "studies"
    studies.mkdir()
    write_cifar(studies / "data", "cifar10",
                {**{f"data_batch_{i}": 4 for i in range(1, 6)}, "test_batch": 3})
    for template in STUDIES.glob("cifar10_*.toml"):
        text = template.read_text()
        for epochs in ("epochs = 200", "epochs = 30"):
            text = text.replace(epochs, "epochs = 1")
        (studies / template.name).write_text(text)
    out = tmp_path / "results"
    for train_file in ("cifar10_resnet18_train_plain", "cifar10_resnet18_train_hwa",
                       "cifar10_vgg16_train"):
        assert main(["train", str(studies / f"{train_file}.toml"), "--out",
                     str(out / "checkpoints")]) == 0, capsys.readouterr().err
    for study in ("cifar10_resnet18_hwa", "cifar10_vgg16_adc"):
        assert main(["validate", str(studies / f"{study}.toml"), "--out", str(out)]) == 0
    assert "1 hardware point x 2 checkpoints (2 combinations) x 20 repeats" in \
        capsys.readouterr().out


# --- tile splitting (docs/physics.md) ----------------------------------

def tiles_expected(layer: nn.Module, hw: HardwareConfig) -> list[int]:
    """Tiles of each matrix of a torch layer: ceil(rows/max_input_size)·ceil(cols/max_output)
    per group (a convolution's rows are its im2col inputs in/groups·kh·kw)."""
    if isinstance(layer, nn.Linear):
        shape, groups = (layer.in_features, layer.out_features), 1
    else:
        kh, kw = layer.kernel_size
        groups = layer.groups
        shape = (layer.in_channels // groups * kh * kw, layer.out_channels // groups)
    n = -(-shape[0] // hw.max_input_size) * -(-shape[1] // hw.max_output_size)
    return [n] * groups


SPLIT = {"resnet32": 576, "vgg11": 576, "mobilenetv2": 1280}   # the widest layer's inputs


def layer_inputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """An input for each Linear / Conv2d of ``model``, in module order: uniform on [-1, 1], of
    the shape the layer sees on ``x`` (the activations of a randomly initialised network fade
    layer by layer, down to ~1e-6 in MobileNetV2's last layers, and would hide wrong outputs)."""
    seen = []
    hooks = [m.register_forward_hook(lambda m, inp, out: seen.append(torch.rand_like(inp[0])))
             for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return [2 * a - 1 for a in seen]


@pytest.mark.parametrize("name", sorted(SPLIT))
def test_wide_layers_split_into_tiles_and_stay_exact(name):
    """Planted bugs: layers never split, split along the wrong axis, a chunk reading the
    columns of another (the column offset of a split convolution's im2col lost) or chunk outputs
    not summed. Each analog layer is checked against its digital layer on its own input (a
    randomly initialised network's logits hide most errors of inner layers)."""
    torch.manual_seed(0)
    model = SMALL[name]().eval()
    x = torch.randn(1, 3, 32, 32)
    torch_layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    inputs = layer_inputs(model, x)
    quiet = dict(device="ideal", out_noise=0.0, dac_bits=0, adc_bits=0,
                 out_bound=float("inf"), drift_compensation="none")
    split = []                   # layers split into tiles: default sizes, then small tiles
    for sizes in ({}, dict(max_input_size=128, max_output_size=32)):
        hw = HardwareConfig(**quiet, **sizes)
        analog = convert(model, hw).program(0).drift(0.0)
        layers = list(analog.analog_layers())
        tiles = [[m.n_tiles for m in layer.matrices] for layer in layers]
        assert tiles == [tiles_expected(m, hw) for m in torch_layers]
        assert max(m.in_features for layer in layers for m in layer.matrices) == SPLIT[name]
        split.append(sum(n > 1 for layer in tiles for n in layer))
        # no noise, no quantizers: every split layer is its digital layer up to float32 rounding
        # (1e-4 of the layer's largest output: sums of up to 1280 float32 products)
        for layer, digital, inp in zip(layers, torch_layers, inputs):
            with torch.no_grad():
                ref = digital(inp).numpy()
            np.testing.assert_allclose(layer(inp).numpy(), ref, rtol=1e-4,
                                       atol=1e-4 * np.abs(ref).max())
    assert 1 <= split[0] < split[1]


def test_each_tile_of_a_split_layer_adds_its_own_output_noise():
    """ResNet-32's 576-input convolutions are two tiles of 288 rows at the default
    max_input_size of 512, one tile at 1024. Each tile adds out_noise before its own ADC and the
    tile outputs are summed digitally, so (alpha = 1, no quantizers) the layer's output noise is
    out_noise·sqrt(2) split and out_noise whole. 65 536 noise samples: the std's standard error
    is 0.3 %; 3 % is 10 of them, and the two cases differ by 41 %."""
    torch.manual_seed(0)
    model = SMALL["resnet32"]().eval()
    x = torch.rand(16, 64, 8, 8) * 2 - 1
    base = dict(device="ideal", dac_bits=0, adc_bits=0, out_bound=float("inf"),
                drift_compensation="none", noise_management="none")
    noise = {}
    for max_in, n_tiles in ((512, 2), (1024, 1)):
        layers = {}
        for sigma in (0.0, 0.1):
            analog = convert(model, HardwareConfig(**base, out_noise=sigma,
                                                   max_input_size=max_in)).program(0).drift(0.0)
            layers[sigma] = next(layer for layer in analog.analog_layers()
                                 if layer.matrices[0].in_features == 576)
        assert layers[0.1].matrices[0].n_tiles == n_tiles
        noise[n_tiles] = (layers[0.1](x) - layers[0.0](x)).numpy()
    assert noise[2].size == 65_536
    assert noise[2].std() == pytest.approx(0.1 * np.sqrt(2), rel=0.03)
    assert noise[1].std() == pytest.approx(0.1, rel=0.03)
