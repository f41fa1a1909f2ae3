"""Model zoo: digits networks (trained on demand), CIFAR ResNet-20 / VGG-8 / MobileNet."""

from mc_engine.zoo.loader import load_model
from mc_engine.zoo.models import ZOO_NAMES, build
from mc_engine.zoo.train import train_digits

__all__ = ["ZOO_NAMES", "build", "load_model", "train_digits"]
