"""Model definitions as plain ``torch.nn`` modules: the digits networks and the CIFAR networks of
the literature (ResNet-20/32/56 and -18/34, VGG-8/11/16, MobileNet v1/v2, LeNet-5); the
attention and recurrent models (vit_digits, lstm_digits, charlm) are in
:mod:`mc_engine.zoo.sequence`.

Only ``nn.Linear`` and ``nn.Conv2d`` become analog tiles (docs/architecture.md); everything else
here (BatchNorm, pooling, the parameter-free ResNet shortcut) stays a digital torch op. All
modules are defined at module level so models pickle by reference when shipped to Dask workers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mc_engine.errors import UserInputError
from mc_engine.zoo.sequence import charlm, lstm_digits, vit_digits


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


def resnet32(num_classes: int = 10) -> nn.Module:
    """ResNet-32 for 32×32 inputs (5 blocks per stage, 0.46 M weights)."""
    return ResNetCifar(5, num_classes)


def resnet56(num_classes: int = 10) -> nn.Module:
    """ResNet-56 for 32×32 inputs (9 blocks per stage, 0.85 M weights)."""
    return ResNetCifar(9, num_classes)


class ProjectionBlock(BasicBlock):
    """ResNet-18/34 basic block: two 3×3 conv + BatchNorm, a 1×1 conv + BatchNorm shortcut
    (option B) where the stride or the width changes."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__(c_in, c_out, stride)
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))


class ResNetWide(nn.Module):
    """ResNet-18/34 adapted to 32×32 inputs: a 3×3 stem (stride 1) and no max-pool, then four
    stages of ``width``·(1, 2, 4, 8) channels (64: the usual 11 M / 21 M weights)."""

    def __init__(self, blocks: tuple[int, ...], num_classes: int, width: int = 64):
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(3, width))
        layers: list[nn.Module] = []
        c_in = width
        for stage, n in enumerate(blocks):
            c_out = width * 2 ** stage
            for i in range(n):
                layers.append(ProjectionBlock(c_in, c_out, 2 if stage > 0 and i == 0 else 1))
                c_in = c_out
        self.stages = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


def resnet18(num_classes: int = 10, width: int = 64) -> nn.Module:
    """CIFAR ResNet-18 (11 M weights, ~0.56 G multiply-adds per image at width 64)."""
    return ResNetWide((2, 2, 2, 2), num_classes, width)


def resnet34(num_classes: int = 10, width: int = 64) -> nn.Module:
    """CIFAR ResNet-34 (21 M weights, ~1.2 G multiply-adds per image at width 64)."""
    return ResNetWide((3, 4, 6, 3), num_classes, width)


_VGG_PLANS = {11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
              16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                   512, 512, 512, "M")}


def vgg(depth: int, num_classes: int = 10, width: int = 64) -> nn.Sequential:
    """VGG-11/16 with BatchNorm for 32×32 inputs (five pooled stages down to 1×1, then one
    linear layer); ``width`` scales the channel plan (64 is the published one)."""
    layers: list[nn.Module] = []
    c_in = 3
    for item in _VGG_PLANS[depth]:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
            continue
        c_out = max(1, int(item) * width // 64)
        layers += _conv_bn(c_in, c_out)
        c_in = c_out
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c_in, num_classes))


def vgg11(num_classes: int = 10, width: int = 64) -> nn.Sequential:
    """VGG-11 with BatchNorm (9.2 M weights at width 64)."""
    return vgg(11, num_classes, width)


def vgg16(num_classes: int = 10, width: int = 64) -> nn.Sequential:
    """VGG-16 with BatchNorm (14.7 M weights at width 64)."""
    return vgg(16, num_classes, width)


def _divisible(value: float, by: int = 8) -> int:
    """Channels rounded to a multiple of 8, never below 90 % of ``value`` (MobileNetV2's rule)."""
    out = max(by, int(value + by / 2) // by * by)
    return out + by if out < 0.9 * value else out


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1×1 expansion, 3×3 depthwise, 1×1 linear projection (each with
    BatchNorm), a residual add when the shape is kept."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int):
        super().__init__()
        hidden = c_in * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden),
                       nn.ReLU6()]
        layers += [nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden,
                             bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
                   nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


def mobilenetv2(num_classes: int = 10, width_mult: float = 1.0) -> nn.Sequential:
    """MobileNetV2 for 32×32 inputs (Sandler et al. 2018; stem and second stage at stride 1,
    as usual for CIFAR): 17 inverted residual blocks, a 1×1 conv to 1280 channels, pooling and
    one linear layer (2.2 M weights at width_mult 1)."""
    plan = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
            (6, 160, 3, 2), (6, 320, 1, 1)]
    c_in = _divisible(32 * width_mult)
    layers: list[nn.Module] = [nn.Conv2d(3, c_in, 3, padding=1, bias=False),
                               nn.BatchNorm2d(c_in), nn.ReLU6()]
    for expand, channels, n, stride in plan:
        c_out = _divisible(channels * width_mult)
        for i in range(n):
            layers.append(InvertedResidual(c_in, c_out, stride if i == 0 else 1, expand))
            c_in = c_out
    last = _divisible(1280 * max(1.0, width_mult))
    layers += [nn.Conv2d(c_in, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6(),
               nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(last, num_classes)]
    return nn.Sequential(*layers)


def lenet5(num_classes: int = 10) -> nn.Sequential:
    """LeNet-5 for 32×32 RGB inputs: two 5×5 conv + max-pool stages, then 400–120–84–classes
    (62 k weights)."""
    return nn.Sequential(nn.Conv2d(3, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                         nn.Linear(84, num_classes))


DIGITS_MODELS: dict[str, Callable[[], nn.Module]] = {"digits_mlp": digits_mlp,
                                                      "digits_mlp_wide": digits_mlp_wide,
                                                      "digits_cnn": digits_cnn,
                                                      "vit_digits": vit_digits,
                                                      "lstm_digits": lstm_digits}
#: Language models (their own vocabulary; trained on demand like the digits models).
LM_MODELS: dict[str, Callable[[], nn.Module]] = {"charlm": charlm}
CIFAR_MODELS: dict[str, Callable[[int], nn.Module]] = {
    "resnet20": resnet20, "resnet32": resnet32, "resnet56": resnet56, "resnet18": resnet18,
    "resnet34": resnet34, "vgg8": vgg8, "vgg11": vgg11, "vgg16": vgg16, "mobilenet": mobilenet,
    "mobilenetv2": mobilenetv2, "lenet5": lenet5}
ZOO_NAMES: tuple[str, ...] = (*DIGITS_MODELS, *LM_MODELS, *CIFAR_MODELS)


def build(name: str, num_classes: int = 10, *, seed: int = 0) -> nn.Module:
    """A freshly initialised zoo model; the same seed gives the same weights (the global torch
    RNG is left untouched). Digits models have 10 classes, language models their vocabulary;
    CIFAR models take num_classes."""
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
        if name in LM_MODELS:
            return LM_MODELS[name]()
        return CIFAR_MODELS[name](num_classes)
