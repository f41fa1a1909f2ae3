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
    assert "2 hardware points x 20 repeats" in capsys.readouterr().out
