"""What a study evaluates, loaded: its model and test set, checked against each other and
fingerprinted.

``mc-engine validate`` and ``mc-engine run`` both go through :func:`load_inputs`, so a model that
cannot process the data (a CIFAR network on 8x8 digits, too few classes) is reported before any
worker starts, as one line naming the study file and ``model``. The fingerprint is the sha256 of
the model's weights and of the test arrays: a resumed run compares it with the one stored in the
results' study.toml, because a changed checkpoint file, data file or cached zoo model changes it
while the study's tables stay the same.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from mc_engine.analog import convert
from mc_engine.analog.input_ranges import check_learned
from mc_engine.data import Dataset, load_dataset
from mc_engine.data.factory import one_line
from mc_engine.errors import UserInputError
from mc_engine.hardware.device_calls import probe as probe_devices
from mc_engine.study.spec import FINGERPRINT_KEYS
from mc_engine.zoo import load_model

if TYPE_CHECKING:
    from mc_engine.study.spec import Study

#: Inputs run through the model to check that it fits the data.
PROBE_SAMPLES = 2
#: What changes each fingerprint, for the messages.
CHANGED = {"model": "the checkpoint file or the cached zoo model", "data": "the data file"}
#: The prefix of a mismatch's ``what`` for a table of measurements (``device_table``).
TABLE = "device table "


def what_changed(what: str) -> str:
    """The file behind a fingerprint mismatch (``fingerprint_mismatch``'s first item)."""
    if what.startswith(TABLE):
        return "the table file"
    return CHANGED.get(what, "the checkpoint file")


@dataclass(frozen=True, eq=False)
class Inputs:
    """A study's model (eval mode), test set and their fingerprint {"model": .., "data": ..}.

    With a checkpoint axis, ``models`` holds the model of every checkpoint (``model`` is the
    first) and the fingerprint each one's sha256 under "checkpoints"; "model" then hashes those.
    """

    model: nn.Module
    dataset: Dataset
    fingerprint: dict[str, Any]
    models: dict[str | None, nn.Module] = field(default_factory=dict)
    #: The calibration inputs (first samples of the training split) when a point calibrates its
    #: ADC ranges (adc_range = 'calibrated'), else None.
    calibration: np.ndarray | None = None


def load_inputs(study: Study, cache_dir: Path) -> Inputs:
    """Load ``[data]`` and ``[model]``, check that they fit and that they match the study's
    fingerprint if it has one; every problem is a :class:`UserInputError`."""
    try:        # a broken custom device is reported before anything runs
        probe_devices(study.points, study.inference_times_s)
    except UserInputError as exc:
        raise exc.with_source(study.source) from None
    dataset = load_dataset(study.data, study.base_dir, study.source, cache_dir=cache_dir)
    calibration = calibration_inputs(study)
    models = {label: _checked_model(study, label, dataset, cache_dir)
              for label in study.checkpoint_labels or (None,)}
    model = next(iter(models.values()))
    check_learned_ranges(study, models)
    prints = fingerprint(model, dataset, calibration)
    if study.checkpoints:
        per = {label: fingerprint(m, dataset, calibration)["model"]
               for label, m in models.items()}
        prints = {"model": _sha256_text(json.dumps(per, sort_keys=True)), "data": prints["data"],
                  "checkpoints": per}
    if study.device_tables:
        prints["device_tables"] = study.device_tables
    problem = fingerprint_mismatch(study.fingerprint, prints) if study.fingerprint else None
    if problem:
        key, ours, theirs = problem
        raise UserInputError(
            f"the {key} (sha256 {ours[:12]}...) differs from the one this study was "
            f"run with ({theirs[:12]}...): {what_changed(key)} changed; "
            f"remove study.fingerprint to use it anyway", source=study.source,
            key=f"study.fingerprint.{_print_key(key)}")
    return Inputs(model=model, dataset=dataset, fingerprint=prints, models=models,
                  calibration=calibration)


def calibration_inputs(study: Study) -> np.ndarray | None:
    """The first ``calibration_samples`` (the most any point asks for) of the training split
    of ``[data]``, when a hardware point has ``adc_range = 'calibrated'`` or
    ``noise_management = 'calibrated'``; else None."""
    users = [p for p in study.points
             if p.adc_range == "calibrated" or p.noise_management == "calibrated"]
    if not users:
        return None
    key = "adc_range" if users[0].adc_range == "calibrated" else "noise_management"
    try:
        train = load_dataset(study.data, study.base_dir, study.source, split="train")
    except UserInputError as exc:
        raise UserInputError(f"{key} = 'calibrated' calibrates its ranges on the training "
                             f"split of [data], which cannot be loaded: {exc}",
                             source=study.source, key=f"hardware.{key}") from None
    return np.ascontiguousarray(train.x[:max(p.calibration_samples for p in users)])


def check_learned_ranges(study: Study, models: Mapping[str | None, nn.Module]) -> None:
    """Every model of a point with noise_management = 'learned' carries input ranges that fit
    the point's tiles (one clear error before any worker starts)."""
    seen = set()
    for hw in study.points:
        if hw.noise_management != "learned" or hw.max_input_size in seen:
            continue
        seen.add(hw.max_input_size)
        for label, model in models.items():
            try:
                check_learned(model, hw)
            except UserInputError as exc:
                message = str(exc)
                if exc.key and message.startswith(f"{exc.key}: "):
                    message = message[len(exc.key) + 2:]
                where = "" if label is None else f"checkpoint {label!r}: "
                if exc.key == "noise_management":
                    key = "hardware.noise_management"
                else:       # the state_dict entry at fault
                    key, where = "model.checkpoint", f"{where}{exc.key}: "
                raise UserInputError(f"{where}{message}", source=study.source,
                                     key=key) from None


def fingerprint_mismatch(old: Mapping[str, Any], new: Mapping[str, Any]
                         ) -> tuple[str, str, str] | None:
    """The first (what, new sha256, old sha256) that differs between two fingerprints, or None.

    With a checkpoint axis on both sides only the checkpoints both name are compared, so that
    adding a checkpoint to a study resumes it like adding any other point.
    """
    checkpoints = old.get("checkpoints"), new.get("checkpoints")
    if checkpoints[0] and checkpoints[1]:
        for label in checkpoints[1]:
            if label in checkpoints[0] and checkpoints[0][label] != checkpoints[1][label]:
                return f"checkpoint {label!r}", checkpoints[1][label], checkpoints[0][label]
        keys: tuple[str, ...] = ("data",)
    else:
        keys = FINGERPRINT_KEYS
    for key in keys:
        if old[key] != new[key]:
            return key, new[key], old[key]
    tables = old.get("device_tables") or {}
    for name, sha in (new.get("device_tables") or {}).items():
        if name in tables and tables[name] != sha:
            return f"{TABLE}{name!r}", sha, tables[name]
    return None


def _print_key(what: str) -> str:
    if what in FINGERPRINT_KEYS:
        return what
    return "device_tables" if what.startswith(TABLE) else "checkpoints"


def _checked_model(study: Study, checkpoint: str | None, dataset: Dataset,
                   cache_dir: Path) -> nn.Module:
    """The [model] (with ``checkpoint`` of the checkpoint axis) loaded and checked against the
    data and the analog conversion; a checkpoint's problems are reported at sweep.checkpoint."""
    spec = study.model if checkpoint is None else {**study.model, "checkpoint": checkpoint}
    try:
        model = load_model(spec, study.base_dir, study.source, cache_dir)
        check_model_fits(model, dataset, spec, study.source)
        try:   # layers that cannot go on tiles, non-finite weights: before any worker starts
            convert(model)
        except UserInputError as exc:
            raise exc.with_source(study.source) from None
    except UserInputError as exc:
        if checkpoint is None:
            raise
        message = str(exc)
        prefix = f"{exc.source}: {exc.key}: " if exc.key else f"{exc.source}: "
        if message.startswith(prefix):
            message = message[len(prefix):]
        raise UserInputError(f"checkpoint {checkpoint!r}: {message}", source=study.source,
                             key="sweep.checkpoint") from None
    return model


def check_model_fits(model: nn.Module, dataset: Dataset, spec: Mapping[str, Any],
                     source: str | None) -> None:
    """Run the model digitally on the first test inputs: it must give one row of class scores
    per input (a language model: one per input token, N × T × vocabulary), with a score for
    every label (next token) in the test set."""
    what = ", ".join(f"{k} = {spec[k]!r}" for k in ("zoo", "factory", "checkpoint") if k in spec)
    x = torch.from_numpy(dataset.x[:PROBE_SAMPLES])
    inputs = f"the [data] inputs of shape {tuple(x.shape)} ({dataset.name})"

    def fail(message: str) -> UserInputError:
        return UserInputError(message, source=source, key="model")

    try:
        with torch.no_grad():
            out = model.eval()(x)
    except Exception as exc:  # any failure inside the user's model is a user input error
        raise fail(f"the model ({what}) cannot process {inputs}: {type(exc).__name__}: "
                   f"{one_line(exc)}") from exc
    expected = (*dataset.y[:PROBE_SAMPLES].shape, "classes")
    if dataset.task == "language_model":
        expected = (*expected[:-1], "vocabulary")
    if not isinstance(out, torch.Tensor) or out.shape[:-1] != expected[:-1] or out.ndim < 2:
        got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else \
            f"a {type(out).__name__}"
        shape = ", ".join(map(str, expected))
        raise fail(f"the model ({what}) returns {got} for {inputs}; expected "
                   f"{'next-token scores' if dataset.task == 'language_model' else 'class scores'}"
                   f" of shape ({shape})")
    top = int(dataset.y.max())
    if out.shape[-1] <= top:
        scores, labels = ("next-token scores per position", "next tokens") \
            if dataset.task == "language_model" else ("class scores per input", "labels")
        raise fail(f"the model ({what}) gives {out.shape[-1]} {scores}, but the {labels} of "
                   f"[data] ({dataset.name}) go up to {top}: it needs at least {top + 1}")


def fingerprint(model: nn.Module, dataset: Dataset,
                calibration: np.ndarray | None = None) -> dict[str, str]:
    """sha256 of the model's state_dict (names, dtypes, shapes, bytes, in order) and of the
    test arrays x and y (after ``limit``), and of the calibration inputs when there are any;
    the data's ``version`` (pydocs: the Python its text comes from) when it has one."""
    arrays = [("x", dataset.x), ("y", dataset.y)]
    if dataset.version is not None:
        arrays.append((f"version {dataset.version}", np.zeros(0, np.uint8)))
    if calibration is not None:
        arrays.append(("calibration", calibration))
    tensors = ((name, t.detach().cpu().contiguous()) for name, t in model.state_dict().items())
    return {"model": _sha256((name, str(t.dtype), t.reshape(-1).view(torch.uint8).numpy(),
                              tuple(t.shape)) for name, t in tensors),
            "data": _sha256((name, a.dtype.str, np.ascontiguousarray(a).reshape(-1).view(np.uint8),
                             a.shape) for name, a in arrays)}


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _sha256(items: Iterable[tuple[str, str, np.ndarray, tuple[int, ...]]]) -> str:
    digest = hashlib.sha256()
    for name, dtype, data, shape in items:
        digest.update(f"{name}:{dtype}:{shape}:".encode())
        digest.update(data)
    return digest.hexdigest()
