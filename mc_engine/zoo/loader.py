"""The ``[model]`` table of a study file turned into a validated torch model in eval mode.

Problems (unknown zoo name, broken factory, missing or ill-fitting checkpoint, NaN/inf weights)
are reported before any trial runs, as one-line :class:`UserInputError` naming the study file and
the ``model.<key>`` at fault.
"""

from __future__ import annotations

import itertools
import pickle
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mc_engine.analog.checks import check_materialised, check_weights
from mc_engine.data.factory import (
    call_factory,
    existing_file,
    import_factory,
    one_line,
    table_checker,
)
from mc_engine.errors import Fail, UserInputError, check_int
from mc_engine.fileio import atomic_write
from mc_engine.zoo.models import CIFAR_MODELS, LM_MODELS, ZOO_NAMES, build
from mc_engine.zoo.train import trainer

_KEYS = ("zoo", "factory", "num_classes", "checkpoint")
#: Far beyond any classification benchmark; a larger value only builds a huge last layer.
MAX_CLASSES = 100_000


def load_model(spec: dict[str, Any], base_dir: Path, source: str | None,
               cache_dir: Path | None, *, untrained_seed: int | None = None) -> nn.Module:
    """The model described by a study's ``[model]`` table, in eval mode.

    Digits zoo models and charlm without a checkpoint are trained once and cached as
    ``cache_dir/<name>.pt``; later calls reload that state_dict, which gives the same weights
    bit for bit. ``untrained_seed`` (``mc-engine train``) builds the freshly initialised model
    instead, its weights drawn from that seed.
    """
    fail = table_checker(spec, "model", _KEYS, "zoo = 'digits_mlp'", source)
    if ("zoo" in spec) == ("factory" in spec):
        raise fail("", f"give exactly one of zoo = <{' | '.join(ZOO_NAMES)}> "
                       "or factory = 'module:function'")
    checkpoint = _checkpoint_path(spec.get("checkpoint"), base_dir, fail)

    if "zoo" in spec:
        name = spec["zoo"]
        if name not in ZOO_NAMES:
            raise fail("zoo", f"unknown zoo model {name!r}; known: {', '.join(ZOO_NAMES)}")
        num_classes = _num_classes(spec, name, fail)
        if trainer(name) is not None and checkpoint is None and untrained_seed is None:
            model = _cached(name, Path(cache_dir))
        else:
            model = build(name, num_classes, seed=untrained_seed or 0)
        source_key = "zoo"
    else:
        if "num_classes" in spec:
            raise fail("num_classes", "only used with a zoo model; a factory builds its own model")
        ref = spec["factory"]
        fn = import_factory(ref, base_dir, source, "model.factory")
        with torch.random.fork_rng(devices=[]) if untrained_seed is not None else nullcontext():
            if untrained_seed is not None:
                torch.manual_seed(untrained_seed)
            model = call_factory(fn, ref, source, "model.factory")
        if not isinstance(model, nn.Module):
            raise fail("factory", f"{ref!r} must return a torch.nn.Module, "
                                  f"got {type(model).__name__}")
        source_key = "factory"
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, fail)
        source_key = "checkpoint"
    check_materialised(model, lambda msg: fail(source_key, msg))
    _check_finite(model, lambda msg: fail(source_key, msg))
    check_weights(model, lambda msg: fail(source_key, msg))
    return model.eval()


def _checkpoint_path(value: object, base_dir: Path, fail: Fail) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise fail("checkpoint", f"expected a file path string, got {value!r}")
    return existing_file(value, base_dir, fail, "checkpoint", "a state_dict file (.pt)")


def _num_classes(spec: dict[str, Any], name: str, fail: Fail) -> int:
    value = spec.get("num_classes", 10)
    if "num_classes" in spec and name not in CIFAR_MODELS:
        has = "predicts the next of 128 ASCII characters" if name in LM_MODELS else \
            "has 10 classes"
        raise fail("num_classes", f"{name} {has}; num_classes applies to "
                                  f"{', '.join(CIFAR_MODELS)}")
    return check_int(value, "num_classes", fail, lo=2, hi=MAX_CLASSES,
                     hint="(10 or 100 for CIFAR)")


def _cached(name: str, cache_dir: Path) -> nn.Module:
    """Trained zoo model from the cache, training (and caching) it on a miss."""
    file = cache_dir / f"{name}.pt"
    model = _read_cache(file, name)
    if model is not None:
        return model
    model = trainer(name)(cache_dir)
    atomic_write(file, lambda temp: torch.save(model.state_dict(), temp))
    return model


def _read_cache(file: Path, name: str) -> nn.Module | None:
    """The cached model, or None when the file is absent, unreadable or stale (then retrain)."""
    if not file.is_file():
        return None
    model = build(name)
    try:
        model.load_state_dict(torch.load(file, map_location="cpu", weights_only=True))
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError):
        return None
    return model


def load_checkpoint(model: nn.Module, path: Path, fail: Fail) -> None:
    """Load the state_dict file ``path`` into ``model`` (weights-only loading); every problem
    (unreadable, not a state_dict, names or shapes that do not fit) is ``fail("checkpoint",
    message)``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file is a user input error
        raise fail("checkpoint", f"{path} is not a readable state_dict file ({one_line(exc)}); "
                                 "save one with torch.save(model.state_dict(), path)") from exc
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor)
                                                 for v in state.values()):
        raise fail("checkpoint", f"{path} does not hold a state_dict (names to tensors); "
                                 "save one with torch.save(model.state_dict(), path)")
    _add_input_ranges(model, state)
    expected = model.state_dict()
    problems = []
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing:
        problems.append(f"missing {_some(missing)}")
    if unexpected:
        problems.append(f"unexpected {_some(unexpected)}")
    problems += [f"{k} has shape {tuple(state[k].shape)}, the model {tuple(v.shape)}"
                 for k, v in expected.items() if k in state and state[k].shape != v.shape][:3]
    if problems:
        raise fail("checkpoint", f"{path} does not fit the model: {'; '.join(problems)}")
    try:
        model.load_state_dict(state)
    except Exception as exc:  # e.g. a dtype torch cannot copy
        raise fail("checkpoint", f"{path} does not fit the model ({one_line(exc)})") from exc


def _add_input_ranges(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Give every Linear/Conv2d whose ``<layer>.input_range`` the checkpoint holds (the static
    input ranges of noise_management = 'learned', mc_engine/analog/input_ranges.py) a buffer
    of that name, so that it loads with the weights and is fingerprinted with them."""
    for key, value in state.items():
        owner, _, leaf = key.rpartition(".")
        if leaf != "input_range":
            continue
        try:
            module = model.get_submodule(owner)
        except AttributeError:
            continue
        if isinstance(module, (nn.Linear, nn.Conv2d)) and "input_range" not in module._buffers:
            module.register_buffer("input_range", torch.empty_like(value, dtype=torch.float32))


def _some(names: list[str], shown: int = 4) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _check_finite(model: nn.Module, fail: Callable[[str], UserInputError]) -> None:
    for pname, tensor in itertools.chain(model.named_parameters(), model.named_buffers()):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise fail(f"weight {pname} contains NaN or inf")
