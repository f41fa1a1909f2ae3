"""A study's model and test set given as Python objects (the Python API's ``model=`` and
``data=``), checked and fingerprinted as :func:`mc_engine.study.inputs.load_inputs` does for
the ``[model]`` and ``[data]`` tables.

Their tables in the study are stand-ins that say what was given (``{in_memory = "ResNet"}``);
the fingerprint, the sha256 of the module's state_dict and of the arrays, is what ties results
on disk to them: a resumed run with other weights or other data is refused by it, and one with
the same ones resumes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from mc_engine.analog import convert
from mc_engine.data import Dataset, load_dataset
from mc_engine.data.loader import _factory_arrays, _validated
from mc_engine.errors import UserInputError
from mc_engine.hardware.device_calls import probe as probe_devices
from mc_engine.study.inputs import (
    Inputs,
    _checked_model,
    calibration_inputs,
    check_learned_ranges,
    check_model_fits,
    fingerprint,
)
from mc_engine.study.spec import Study

#: The key of the stand-in [model] and [data] tables of objects given in memory.
IN_MEMORY = "in_memory"


def model_table(model: object) -> dict[str, str]:
    """The stand-in [model] table of an in-memory ``model`` (an nn.Module), checked."""
    if not isinstance(model, nn.Module):
        raise UserInputError(f"expected a torch nn.Module, got {type(model).__name__}",
                             key="model")
    return {IN_MEMORY: type(model).__name__}


def data_table(data: object) -> dict[str, str]:
    """The stand-in [data] table of in-memory ``data`` ((x_test, y_test) arrays), checked."""
    if not isinstance(data, tuple | list) or len(data) != 2:
        raise UserInputError(f"expected (x_test, y_test): two arrays (or tensors), got "
                             f"{type(data).__name__}", key="data")
    return {IN_MEMORY: "arrays"}


def load_in_memory(study: Study, cache_dir: Path, model: nn.Module | None,
                   data: tuple[Any, Any] | None) -> Inputs:
    """The study's inputs with ``model`` and/or ``data`` given as objects (the other from its
    table), checked against each other and fingerprinted; every problem a UserInputError."""
    source = study.source
    try:
        probe_devices(study.points, study.inference_times_s)
    except UserInputError as exc:
        raise exc.with_source(source) from None
    if data is not None:
        def fail(key: str, message: str) -> UserInputError:
            return UserInputError(message, source=source, key="data")

        x, y = _validated(*_factory_arrays(tuple(data), fail), fail, "")
        dataset = Dataset(name="in-memory arrays", x=x, y=y)
    else:
        dataset = load_dataset(study.data, study.base_dir, source)
    calibrated = [p for p in study.points
                  if p.adc_range == "calibrated" or p.noise_management == "calibrated"]
    if calibrated and data is not None:
        key = "adc_range" if calibrated[0].adc_range == "calibrated" else "noise_management"
        raise UserInputError("'calibrated' ranges are calibrated on the training split of "
                             "[data]; in-memory data holds the test split only: give a [data] "
                             "table instead", source=source, key=f"hardware.{key}")
    calibration = calibration_inputs(study)
    if study.checkpoints and model is not None:
        raise UserInputError("a checkpoint axis loads each checkpoint into the [model] table's "
                             "network; with an in-memory model, run one study per model",
                             source=source, key="sweep.checkpoint")
    if model is None:    # from its table, as a study file's
        loaded = {label: _checked_model(study, label, dataset, cache_dir)
                  for label in study.checkpoint_labels or (None,)}
    else:
        loaded = {None: model.eval()}
        check_model_fits(model, dataset, {"factory": f"in-memory {type(model).__name__}"},
                         source)
        try:        # layers that cannot go on tiles, non-finite weights: before any worker
            convert(model)
        except UserInputError as exc:
            raise exc.with_source(source) from None
    check_learned_ranges(study, loaded)
    first = next(iter(loaded.values()))
    prints = fingerprint(first, dataset, calibration)
    if study.checkpoints:
        import hashlib
        import json

        per = {label: fingerprint(m, dataset, calibration)["model"] for label, m in loaded.items()}
        prints = {"model": hashlib.sha256(json.dumps(per, sort_keys=True).encode()).hexdigest(),
                  "data": prints["data"], "checkpoints": per}
    if study.device_tables:
        prints["device_tables"] = study.device_tables
    return Inputs(model=first, dataset=dataset, fingerprint=prints, models=loaded,
                  calibration=calibration)
