"""CIFAR-10 / CIFAR-100 from the official python-pickle batches on local disk.

Nothing is downloaded: users point ``path`` at ``cifar-10-batches-py`` / ``cifar-100-python``
(or the folder holding it). The pickles are read with an unpickler that only admits the few
numpy globals the official files use, so a stray or hostile file cannot run code.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path

import numpy as np

from mc_engine.data.factory import one_line
from mc_engine.errors import UserInputError

#: Per-channel mean and std of the training images (RGB, pixels in [0, 1]); the values the
#: IBM toolkit's CIFAR examples normalise with, so checkpoints trained there evaluate correctly.
CIFAR_STATS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}

# Folder name, batch files per split and label key of each kind, as published.
_LAYOUT = {
    "cifar10": ("cifar-10-batches-py",
                {"test": ["test_batch"], "train": [f"data_batch_{i}" for i in range(1, 6)]},
                b"labels"),
    "cifar100": ("cifar-100-python", {"test": ["test"], "train": ["train"]}, b"fine_labels"),
}

_ALLOWED_GLOBALS = {
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler limited to plain containers and numpy arrays."""

    def find_class(self, module: str, name: str) -> object:
        if module.startswith("numpy.core"):  # written by numpy 1.x
            module = "numpy._core" + module[len("numpy.core"):]
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return getattr(importlib.import_module(module), name)


def normalize(x: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(x − mean) / std per channel of an N×C×H×W float array, in float32."""
    m = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
    out = x.astype(np.float32, copy=True)
    out -= m
    out /= s
    return out


def _read_batch(file: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(file, "rb") as fh:
            batch = _ArrayUnpickler(fh, encoding="bytes").load()
    except Exception as exc:  # any unreadable file is a user input error
        raise UserInputError(f"{file} is not a CIFAR python batch ({one_line(exc)})") from exc
    data = batch.get(b"data") if isinstance(batch, dict) else None
    labels = batch.get(label_key) if isinstance(batch, dict) else None
    if (not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2
            or data.shape[1] != 3072 or labels is None or len(labels) != len(data)):
        raise UserInputError(f"{file} is not a CIFAR python batch: expected {b'data'!r} "
                             f"(uint8, N x 3072) and {label_key!r} (N labels)")
    try:
        y = np.asarray(labels)
    except Exception as exc:  # ragged or unconvertible label lists
        raise UserInputError(f"{file}: {label_key.decode()} are not class indices "
                             f"({one_line(exc)})") from exc
    if y.ndim != 1 or y.dtype.kind not in "iu" or (y.size and y.min() < 0):
        example = y.flat[0] if y.size else None
        raise UserInputError(f"{file}: {label_key.decode()} must be integer class indices "
                             f">= 0, got dtype {y.dtype} (e.g. {example!r})")
    return data, y.astype(np.int64)


#: ``normalize`` of :func:`load_cifar`: the dataset's own statistics (CIFAR_STATS[kind]).
OWN_STATS = "own"


def load_cifar(path: str | Path, kind: str = "cifar10", split: str = "test",
               normalize_with: tuple[tuple[float, ...], tuple[float, ...]] | str | None =
               OWN_STATS) -> tuple[np.ndarray, np.ndarray]:
    """Images (float32 N×3×32×32, pixels in [0, 1], normalised per channel) and int64 labels of
    one split. ``normalize_with``: (mean, std) per channel, a key of CIFAR_STATS, None for
    none (pixels in [0, 1]), or the dataset's own statistics (the default)."""
    if kind not in _LAYOUT:
        raise UserInputError(f"expected 'cifar10' or 'cifar100', got {kind!r}", key="kind")
    if split not in ("test", "train"):
        raise UserInputError(f"expected 'test' or 'train', got {split!r}", key="split")
    path = Path(path)
    folder_name, files, label_key = _LAYOUT[kind]
    folder = path / folder_name if (path / folder_name).is_dir() else path
    for f in files[split]:
        if not (folder / f).is_file():
            raise UserInputError(f"missing {kind} batch file {folder / f}; expected the "
                                 f"extracted {folder_name} folder or the folder that holds it")
    parts = [_read_batch(folder / f, label_key) for f in files[split]]
    data = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    x = data.reshape(-1, 3, 32, 32).astype(np.float32)
    x /= 255
    if normalize_with is None:
        return x, y
    stats = CIFAR_STATS[kind if normalize_with == OWN_STATS else normalize_with] \
        if isinstance(normalize_with, str) else normalize_with
    return normalize(x, *stats), y
