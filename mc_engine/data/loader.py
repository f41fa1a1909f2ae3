"""The ``[data]`` table of a study file turned into a validated test set.

Every problem a user can make here (unknown key, wrong type, missing file, broken factory, NaN
inputs) is reported before any trial runs, as a one-line :class:`UserInputError` naming the study
file and the ``data.<key>`` at fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mc_engine.data.cifar import load_cifar
from mc_engine.data.digits import digits_split
from mc_engine.data.factory import (
    call_factory,
    import_factory,
    one_line,
    resolve_path,
    table_checker,
)
from mc_engine.errors import Fail, UserInputError, check_int

DATASETS = ("digits", "cifar10", "cifar100", "npz")
_KEYS = ("dataset", "factory", "path", "limit")


@dataclass(eq=False)
class Dataset:
    """A labelled test set: float32 inputs (N×…) and int64 class labels (N)."""

    name: str
    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


def load_dataset(spec: dict[str, Any], base_dir: Path, source: str | None,
                 split: str = "test") -> Dataset:
    """The test set described by a study's ``[data]`` table (digits when the table is empty).

    ``split = "train"`` gives the training split instead (``mc-engine train``): digits' train
    half, CIFAR's ``data_batch_*``, an npz file's x_train/y_train, or what a factory returns
    when called as ``factory(split="train")``.
    """
    fail = table_checker(spec, "data", _KEYS, "dataset = 'digits'", source)
    if "dataset" in spec and "factory" in spec:
        raise fail("factory", "give either dataset or factory, not both")
    limit = spec.get("limit")
    if limit is not None:
        check_int(limit, "limit", fail)

    if "factory" in spec:
        if "path" in spec:
            raise fail("path", "not used with factory (the factory loads its own data)")
        ref = spec["factory"]
        fn = import_factory(ref, base_dir, source, "data.factory")
        kwargs = {"split": "train"} if split == "train" else {}
        name, (x, y) = ref, _factory_arrays(call_factory(fn, ref, source, "data.factory",
                                                         **kwargs), fail)
    else:
        name = spec.get("dataset", "digits")
        if name not in DATASETS:
            raise fail("dataset", f"expected one of {', '.join(DATASETS)}, got {name!r}")
        x, y = _builtin_arrays(name, spec, base_dir, fail, split)
        if name == "npz":
            name = f"npz:{spec['path']}"
    x, y = _validated(x, y, fail, "factory" if "factory" in spec else "path")
    if limit is not None and limit < len(y):
        x, y = x[:limit].copy(), y[:limit].copy()  # copies: do not keep the full set alive
    return Dataset(name=name, x=x, y=y)


def _builtin_arrays(name: str, spec: dict[str, Any], base_dir: Path, fail: Fail,
                    split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    if name == "digits":
        if "path" in spec:
            raise fail("path", "not used with dataset = 'digits' (it is embedded)")
        halves = digits_split()
        return halves[f"x_{split}"], halves[f"y_{split}"]
    if "path" not in spec:
        raise fail("path", f"required with dataset = {name!r}")
    if not isinstance(spec["path"], str):
        raise fail("path", f"expected a string, got {spec['path']!r}")
    path = resolve_path(spec["path"], base_dir)
    if not path.exists():
        raise fail("path", f"{path} does not exist")
    if name == "npz":
        return _npz_arrays(path, fail, split)
    try:
        return load_cifar(path, kind=name, split=split)
    except UserInputError as err:
        raise fail("path", str(err)) from err


def _npz_arrays(path: Path, fail: Fail, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    keys = (f"x_{split}", f"y_{split}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in keys if k not in npz.files]
            if missing:
                have = ", ".join(npz.files) or "none"
                raise fail("path", f"{path} lacks array {missing[0]!r}; an npz dataset holds "
                                   f"{' and '.join(keys)} (it has {have})")
            return npz[keys[0]], npz[keys[1]]
    except UserInputError:
        raise
    except Exception as exc:  # any unreadable file is a user input error
        raise fail("path", f"{path} is not a readable .npz file ({one_line(exc)})") from exc


def _factory_arrays(result: object, fail: Fail) -> tuple[object, object]:
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise fail("factory", f"must return (x, y), got {type(result).__name__}")
    return tuple(_as_numpy(a) for a in result)  # type: ignore[return-value]


def _as_numpy(a: object) -> object:
    detach = getattr(a, "detach", None)  # a torch tensor, without importing torch for everyone
    return detach().cpu().numpy() if callable(detach) else a


def _validated(x: object, y: object, fail: Fail, key: str) -> tuple[np.ndarray, np.ndarray]:
    """float32 x with a sample axis, int64 labels ≥ 0 of the same length, no NaN or inf."""
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype.kind not in "fiub" or x.ndim < 2:
        raise fail(key, f"inputs x must be a numeric array of shape N x ..., got dtype {x.dtype} "
                        f"with shape {x.shape}")
    if y.dtype.kind not in "iu" or y.ndim != 1:
        raise fail(key, f"labels y must be a 1-D integer array, got dtype {y.dtype} "
                        f"with shape {y.shape}")
    if len(x) != len(y) or len(y) == 0:
        raise fail(key, f"x and y must hold the same number (> 0) of samples, got {len(x)} "
                        f"and {len(y)}")
    if y.min() < 0:
        raise fail(key, f"labels must be class indices >= 0, got {y.min()}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise fail(key, f"inputs x contain NaN or inf ({int((~np.isfinite(x)).sum())} values)")
    return x, np.ascontiguousarray(y, dtype=np.int64)
