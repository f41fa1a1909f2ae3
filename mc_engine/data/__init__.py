"""Datasets: the embedded digits default, CIFAR-10/100 from local files, user factories."""

from mc_engine.data.cifar import CIFAR_STATS, load_cifar, normalize
from mc_engine.data.digits import digits_split
from mc_engine.data.loader import DATASETS, Dataset, load_dataset

__all__ = ["CIFAR_STATS", "DATASETS", "Dataset", "digits_split", "load_cifar", "load_dataset",
           "normalize"]
