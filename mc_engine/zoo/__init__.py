"""Model zoo: digits networks (trained on demand) and the CIFAR networks of the literature."""

from mc_engine.zoo.loader import load_model
from mc_engine.zoo.models import ZOO_NAMES, build
from mc_engine.zoo.train import train_digits

__all__ = ["ZOO_NAMES", "build", "load_model", "train_digits"]
