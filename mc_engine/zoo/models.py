"""Model definitions as plain ``torch.nn`` modules.

Only ``nn.Linear`` and ``nn.Conv2d`` become analog tiles (DESIGN.md §1); everything else here
(BatchNorm, pooling, the parameter-free ResNet shortcut) stays a digital torch op. All modules are
defined at module level so models pickle by reference when shipped to Dask workers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mc_engine.errors import UserInputError


def digits_mlp() -> nn.Sequential:
    """64–32–10 MLP for 8×8 digits; the layer layout of the aihwkit reference network."""
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def digits_mlp_wide() -> nn.Sequential:
    """64–128–64–10 MLP for 8×8 digits: wide enough that hardware-aware training pays off
    clearly under harsh PCM noise (the hwa_digits study)."""
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                         nn.Linear(64, 10))


def digits_cnn() -> nn.Sequential:
    """Two-conv CNN for 8×8 digits (flat 64-pixel input); the reference network's layout."""
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(256, 10))


def _conv_bn(c_in: int, c_out: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    """3×3 conv (no bias, BatchNorm follows) + BatchNorm + ReLU."""
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, groups=groups, bias=False),
            nn.BatchNorm2d(c_out), nn.ReLU()]


class PadShortcut(nn.Module):
    """ResNet option-A shortcut: subsample by 2 and zero-pad the new channels (no weights)."""

    def __init__(self, extra_channels: int):
        super().__init__()
        self.extra = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.extra // 2
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, half, self.extra - half))


class BasicBlock(nn.Module):
    """Two 3×3 conv + BatchNorm layers with an identity (or option-A) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = (PadShortcut(c_out - c_in) if stride != 1 or c_in != c_out
                                    else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    """He et al. (2016) CIFAR ResNet-(6n+2): 3 stages of n basic blocks, 16/32/64 channels."""

    def __init__(self, blocks_per_stage: int, num_classes: int):
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(3, 16))
        layers: list[nn.Module] = []
        c_in = 16
        for stage, c_out in enumerate((16, 32, 64)):
            for i in range(blocks_per_stage):
                layers.append(BasicBlock(c_in, c_out, 2 if stage > 0 and i == 0 else 1))
                c_in = c_out
        self.stages = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


def resnet20(num_classes: int = 10) -> nn.Module:
    """ResNet-20 for 32×32 inputs (0.27 M weights, ~41 M multiply-adds per image)."""
    return ResNetCifar(3, num_classes)


def vgg8(num_classes: int = 10) -> nn.Sequential:
    """VGG-8 with BatchNorm: 6 conv (48/96/144 channels, as in the IBM toolkit's analog VGG8
    example) in 3 pooled stages, then 2304–384–classes fully connected."""
    layers: list[nn.Module] = []
    c_in = 3
    for c_out in (48, 96, 144):
        layers += _conv_bn(c_in, c_out) + _conv_bn(c_out, c_out) + [nn.MaxPool2d(2)]
        c_in = c_out
    layers += [nn.Flatten(), nn.Linear(144 * 4 * 4, 384), nn.ReLU(), nn.Linear(384, num_classes)]
    return nn.Sequential(*layers)


def mobilenet(num_classes: int = 10) -> nn.Sequential:
    """MobileNet-v1 for 32×32 inputs: a 3×3 stem and 13 depthwise-separable blocks
    (depthwise 3×3 + pointwise 1×1, each with BatchNorm), global pooling, one linear layer."""
    plan = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
            (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]
    layers = _conv_bn(3, 32)
    c_in = 32
    for c_out, stride in plan:
        layers += _conv_bn(c_in, c_in, stride=stride, groups=c_in)
        layers += [nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
        c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes)]
    return nn.Sequential(*layers)


DIGITS_MODELS: dict[str, Callable[[], nn.Module]] = {"digits_mlp": digits_mlp,
                                                      "digits_mlp_wide": digits_mlp_wide,
                                                      "digits_cnn": digits_cnn}
CIFAR_MODELS: dict[str, Callable[[int], nn.Module]] = {"resnet20": resnet20, "vgg8": vgg8,
                                                       "mobilenet": mobilenet}
ZOO_NAMES: tuple[str, ...] = (*DIGITS_MODELS, *CIFAR_MODELS)


def build(name: str, num_classes: int = 10, *, seed: int = 0) -> nn.Module:
    """A freshly initialised zoo model; the same seed gives the same weights (the global torch
    RNG is left untouched). Digits models have 10 classes; CIFAR models take num_classes."""
    if name not in ZOO_NAMES:
        raise UserInputError(f"unknown zoo model {name!r}; known: {', '.join(ZOO_NAMES)}",
                             key="name")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name in DIGITS_MODELS:
            if num_classes != 10:
                raise UserInputError(f"{name} has 10 classes, got {num_classes}",
                                     key="num_classes")
            return DIGITS_MODELS[name]()
        return CIFAR_MODELS[name](num_classes)
