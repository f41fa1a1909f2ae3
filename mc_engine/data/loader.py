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

from mc_engine.data.cifar import CIFAR_STATS, OWN_STATS, load_cifar
from mc_engine.data.digits import digits_split
from mc_engine.data.factory import (
    call_factory,
    existing_file,
    import_factory,
    one_line,
    resolve_path,
    table_checker,
)
from mc_engine.data.pydocs import DEFAULT_SEQ_LEN, pydocs_tokens, python_version
from mc_engine.data.sequences import TASKS, check_tokens, shifted
from mc_engine.errors import Fail, UserInputError, check_int

DATASETS = ("digits", "cifar10", "cifar100", "npz", "pydocs")
#: Datasets of token sequences (the language-model task).
TOKEN_DATASETS = ("npz", "pydocs")
#: Longest pydocs window accepted (characters).
MAX_SEQ_LEN = 4096
#: Largest input magnitude accepted. The analog forward squares and sums inputs in float32
#: (noise management, pcm_read weight noise), which overflows near 1e19; real test inputs
#: (normalised features, raw 8- or 16-bit pixels) are many decades below this bound.
MAX_ABS_INPUT = 1e9
#: Largest class index accepted (a model needs this many outputs + 1).
MAX_LABEL = 1_000_000
_KEYS = ("dataset", "factory", "path", "limit", "task", "seq_len", "normalize")


@dataclass(eq=False)
class Dataset:
    """A labelled test set: float32 inputs (N×…) and int64 class labels (N); for the
    language-model task int64 token inputs (N × T) and their next tokens (N × T)."""

    name: str
    x: np.ndarray
    y: np.ndarray
    task: str = "classification"
    #: What else made the data, when not only the arrays (pydocs: "python 3.11", the
    #: standard library its text comes from); part of the data fingerprint.
    version: str | None = None

    def __len__(self) -> int:
        return len(self.y)


def load_dataset(spec: dict[str, Any], base_dir: Path, source: str | None,
                 split: str = "test", cache_dir: Path | None = None) -> Dataset:
    """The test set described by a study's ``[data]`` table (digits when the table is empty).

    ``split = "train"`` gives the training split instead (``mc-engine train``): digits' train
    half, CIFAR's ``data_batch_*``, an npz file's x_train/y_train, or what a factory returns
    when called as ``factory(split="train")``. ``task = "language_model"`` loads token
    sequences (:func:`_token_dataset`); ``cache_dir``: where the pydocs corpus is cached.
    """
    fail = table_checker(spec, "data", _KEYS, "dataset = 'digits'", source)
    if "dataset" in spec and "factory" in spec:
        raise fail("factory", "give either dataset or factory, not both")
    kind = spec.get("factory", spec.get("dataset", "digits"))
    if "normalize" in spec and kind not in ("cifar10", "cifar100"):
        given = "factory" if "factory" in spec else "dataset"
        raise fail("normalize", f"only for dataset = 'cifar10' or 'cifar100' (other inputs are "
                                f"used as given), got {given} = {kind!r}")
    limit = spec.get("limit")
    if limit is not None:
        check_int(limit, "limit", fail)
    pydocs = spec.get("dataset") == "pydocs"
    task = spec.get("task", "language_model" if pydocs else "classification")
    if task not in TASKS:
        raise fail("task", f"expected one of {', '.join(TASKS)}, got {task!r}")
    if "seq_len" in spec and not pydocs:
        raise fail("seq_len", "only used with dataset = 'pydocs' (other token data come in "
                              "sequences of their own length)")
    if task == "language_model":
        return _token_dataset(spec, base_dir, source, split, cache_dir, fail)
    if pydocs:
        raise fail("task", "dataset = 'pydocs' is a text corpus for language models: give "
                           "task = 'language_model' (or leave task out)")

    if "factory" in spec:
        name, (x, y) = spec["factory"], _factory_arrays(
            _from_factory(spec, base_dir, source, split, fail), fail)
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


def _from_factory(spec: dict[str, Any], base_dir: Path, source: str | None, split: str,
                  fail: Fail) -> Any:
    """What ``[data] factory`` returns for ``split`` (called with ``split="train"`` for the
    training split, with no argument for the test split); ``path`` beside it is refused."""
    if "path" in spec:
        raise fail("path", "not used with factory (the factory loads its own data)")
    ref = spec["factory"]
    fn = import_factory(ref, base_dir, source, "data.factory")
    kwargs = {"split": "train"} if split == "train" else {}
    return call_factory(fn, ref, source, "data.factory", **kwargs)


def _token_dataset(spec: dict[str, Any], base_dir: Path, source: str | None, split: str,
                   cache_dir: Path | None, fail: Fail) -> Dataset:
    """Token sequences N × T of the language-model task, from pydocs, an npz file's
    ``x_<split>`` (int64 tokens; no y: the targets are the inputs shifted by one) or a factory
    returning the token array; inputs the first T − 1 tokens, targets the last T − 1."""
    name, version = spec.get("dataset", spec.get("factory")), None
    if "factory" in spec:
        ref = spec["factory"]
        tokens = check_tokens(_from_factory(spec, base_dir, source, split, fail), fail,
                              "factory", f"what {ref!r} returns (task = 'language_model': one "
                                         f"token array)")
    elif name == "pydocs":
        if "path" in spec:
            raise fail("path", "not used with dataset = 'pydocs' (it is embedded)")
        seq_len = check_int(spec.get("seq_len", DEFAULT_SEQ_LEN), "seq_len", fail, lo=1,
                            hi=MAX_SEQ_LEN, hint="(characters a model reads)")
        tokens = pydocs_tokens(split, seq_len, cache_dir)
        version = f"python {python_version()}"
    elif name == "npz":
        if not isinstance(spec.get("path"), str):
            raise fail("path", f"expected the path of an .npz file, got {spec.get('path')!r}")
        path = existing_file(spec["path"], base_dir, fail, "path",
                             f"an .npz file holding x_{split}")
        (x,) = _npz_arrays(path, fail, split, (f"x_{split}",))
        tokens = check_tokens(x, fail, "path", f"{path}: x_{split}")
        name = f"npz:{spec['path']}"
    else:
        raise fail("task", f"task = 'language_model' needs token sequences: dataset = "
                           f"{' or '.join(map(repr, TOKEN_DATASETS))}, or a factory; got "
                           f"dataset = {name!r}")
    limit = spec.get("limit")
    if limit is not None and limit < len(tokens):
        tokens = tokens[:limit]
    x, y = shifted(tokens)
    return Dataset(name=name, x=x, y=y, task="language_model", version=version)


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
    if name == "npz":
        return _npz_arrays(existing_file(spec["path"], base_dir, fail, "path",
                                         f"an .npz file holding x_{split} and y_{split}"),
                           fail, split)
    if not spec["path"].strip():
        raise fail("path", f"empty path; expected the folder of the {name} batches")
    path = resolve_path(spec["path"], base_dir)
    if not path.exists():
        raise fail("path", f"{path} does not exist")
    stats = cifar_normalization(spec.get("normalize", OWN_STATS), fail)
    try:
        return load_cifar(path, kind=name, split=split, normalize_with=stats)
    except UserInputError as err:
        raise fail("path", str(err)) from err


def cifar_normalization(value: object, fail: Fail
                        ) -> tuple[tuple[float, ...], tuple[float, ...]] | str | None:
    """``[data] normalize`` of a CIFAR dataset: "cifar10" or "cifar100" (those training
    statistics), "none" (pixels in [0, 1]) or {mean = [r, g, b], std = [r, g, b]}; absent: the
    dataset's own statistics (:data:`mc_engine.data.cifar.CIFAR_STATS`)."""
    if value == OWN_STATS:
        return OWN_STATS
    if value == "none":
        return None
    if isinstance(value, str) and value in CIFAR_STATS:
        return value
    if isinstance(value, dict) and sorted(value) == ["mean", "std"]:
        stats = []
        for key in ("mean", "std"):
            v = value[key]
            if not isinstance(v, list) or len(v) != 3 or not all(
                    isinstance(c, int | float) and not isinstance(c, bool) for c in v) or \
                    not all(np.isfinite(c) and (key == "mean" or c > 0) for c in v):
                raise fail(f"normalize.{key}", f"expected 3 finite numbers (R, G, B, of pixels "
                                               f"in [0, 1]){', each > 0' if key == 'std' else ''}"
                                               f", got {v!r}")
            stats.append(tuple(float(c) for c in v))
        return stats[0], stats[1]
    raise fail("normalize", f"expected 'cifar10', 'cifar100', 'none' or {{mean = [r, g, b], "
                            f"std = [r, g, b]}}, got {value!r}")


def _npz_arrays(path: Path, fail: Fail, split: str = "test",
                keys: tuple[str, ...] | None = None) -> tuple[np.ndarray, ...]:
    keys = keys or (f"x_{split}", f"y_{split}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in keys if k not in npz.files]
            if missing:
                have = ", ".join(npz.files) or "none"
                raise fail("path", f"{path} lacks array {missing[0]!r}; an npz dataset holds "
                                   f"{' and '.join(keys)} (it has {have})")
            return tuple(npz[k] for k in keys)
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
    if not callable(detach):
        return a
    tensor = detach().cpu()
    if tensor.is_floating_point() and tensor.element_size() < 4:  # bfloat16 has no numpy type
        tensor = tensor.float()
    return tensor.numpy()


def _array(value: object, what: str, fail: Fail, key: str) -> np.ndarray:
    """``value`` as a numpy array; ragged nested lists and other non-arrays fail by name."""
    try:
        array = np.asarray(value)
    except Exception as exc:  # ragged lists, objects numpy cannot hold
        raise fail(key, f"{what} must be an array (or a tensor, or equal-length nested lists): "
                        f"{one_line(exc)}") from exc
    if array.dtype == object:
        raise fail(key, f"{what} must be a numeric array, got Python objects of shape "
                        f"{array.shape} (ragged lists?)")
    return array


def _validated(x: object, y: object, fail: Fail, key: str) -> tuple[np.ndarray, np.ndarray]:
    """float32 x with a sample axis, int64 labels ≥ 0 of the same length, no NaN or inf."""
    x, y = _array(x, "inputs x", fail, key), _array(y, "labels y", fail, key)
    if x.dtype.kind not in "fiub" or x.ndim < 2:
        raise fail(key, f"inputs x must be a numeric array of shape N x ..., got dtype {x.dtype} "
                        f"with shape {x.shape}")
    if y.dtype.kind not in "iu" or y.ndim != 1:
        raise fail(key, f"labels y must be a 1-D integer array, got dtype {y.dtype} "
                        f"with shape {y.shape}")
    if len(x) != len(y) or len(y) == 0:
        raise fail(key, f"x and y must hold the same number (> 0) of samples, got {len(x)} "
                        f"and {len(y)}")
    if y.min() < 0 or y.max() > MAX_LABEL:
        raise fail(key, f"labels must be class indices >= 0 and <= {MAX_LABEL:_}, got "
                        f"{y.min() if y.min() < 0 else y.max()}")
    with np.errstate(over="ignore", invalid="ignore"):  # beyond float32 becomes inf: below
        x = np.ascontiguousarray(x, dtype=np.float32)
        bad = ~(np.abs(x) <= MAX_ABS_INPUT)
    if bad.any():
        raise fail(key, f"inputs x must be finite numbers within +-{MAX_ABS_INPUT:g} (normalise "
                        f"them), got {int(bad.sum())} values that are NaN, inf or larger, "
                        f"e.g. {_first(x, bad)}")
    return x, np.ascontiguousarray(y, dtype=np.int64)


def _first(x: np.ndarray, bad: np.ndarray) -> str:
    """The first offending value (in float32: values beyond its range show as inf)."""
    return f"{float(x[bad].flat[0]):g}"
