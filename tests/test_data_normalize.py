"""[data] normalize: the CIFAR loaders' input normalisation (default unchanged)."""

from __future__ import annotations

import numpy as np
import pytest

from mc_engine.data import CIFAR_STATS, load_dataset
from mc_engine.errors import UserInputError
from tests.test_data import raw_batch, write_cifar


@pytest.fixture
def cifar(tmp_path):
    folder = write_cifar(tmp_path, "cifar10", {"test_batch": 4})
    pixels = raw_batch(folder / "test_batch")[b"data"].reshape(4, 3, 32, 32) / np.float32(255)
    return tmp_path, pixels.astype(np.float32)


def stats(mean, std):
    return (np.array(mean, np.float32).reshape(1, 3, 1, 1),
            np.array(std, np.float32).reshape(1, 3, 1, 1))


@pytest.mark.parametrize("normalize, expected", [
    (None, CIFAR_STATS["cifar10"]),                    # absent: the dataset's own, as before
    ("cifar10", CIFAR_STATS["cifar10"]),
    ("cifar100", CIFAR_STATS["cifar100"]),
    ({"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.5, 1]}, ((0.5,) * 3, (0.25, 0.5, 1.0))),
    ("none", None),
])
def test_normalize_chooses_the_statistics(cifar, normalize, expected):
    root, pixels = cifar
    spec = {"dataset": "cifar10", "path": "."}
    if normalize is not None:
        spec["normalize"] = normalize
    x = load_dataset(spec, root, "s.toml").x
    if expected is None:
        np.testing.assert_array_equal(x, pixels)
    else:
        mean, std = stats(*expected)
        np.testing.assert_allclose(x, (pixels - mean) / std, rtol=1e-6, atol=1e-6)


def test_the_default_is_bitwise_unchanged(cifar):
    root, _ = cifar
    before = load_dataset({"dataset": "cifar10", "path": "."}, root, "s.toml").x
    given = load_dataset({"dataset": "cifar10", "path": ".", "normalize": "cifar10"}, root,
                         "s.toml").x
    np.testing.assert_array_equal(before, given)


@pytest.mark.parametrize("spec, key, fragment", [
    ({"dataset": "cifar10", "path": ".", "normalize": "imagenet"}, "data.normalize",
     "expected 'cifar10', 'cifar100', 'none'"),
    ({"dataset": "cifar10", "path": ".", "normalize": {"mean": [0, 0, 0]}}, "data.normalize",
     "std = [r, g, b]"),
    ({"dataset": "cifar10", "path": ".", "normalize": {"mean": [0, 0], "std": [1, 1, 1]}},
     "data.normalize.mean", "3 finite numbers"),
    ({"dataset": "cifar10", "path": ".", "normalize": {"mean": [0, 0, 0], "std": [1, 0, 1]}},
     "data.normalize.std", "each > 0"),
    ({"dataset": "digits", "normalize": "none"}, "data.normalize", "only for dataset"),
])
def test_bad_normalize_is_one_line(cifar, spec, key, fragment):
    root, _ = cifar
    with pytest.raises(UserInputError) as err:
        load_dataset(spec, root, "s.toml")
    assert err.value.key == key and fragment in str(err.value)
