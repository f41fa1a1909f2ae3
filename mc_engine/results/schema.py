"""The Parquet schema of study results (the README's "Results"), declared once for writing and
checking.

Every hardware parameter is its own typed column, named as in :class:`HardwareConfig` and the
study file, so results filter and group with plain pandas (``df[df.adc_bits == 8]``). A device
model's own parameters (``DeviceModel.params``, docs/devices.md) are float64 columns of their
own, right after ``device``; a study on the built-in devices has none. A study with a checkpoint
axis (``[sweep] checkpoint = [...]``) has a ``checkpoint`` string column after ``point_id``, in
its trial rows and in ideal.parquet; other studies' files are unchanged. Every row records where
its trial ran (an execution, not a physics parameter: it is in no point id or seed): ``backend``
(``numba`` or ``torch``) and ``compute_device`` (``cpu``, ``cuda``, ``cuda:N``, as given to the
run; the hardware column ``device`` is the device model). Part files written before these
columns read as ``numba`` on ``cpu`` (:mod:`mc_engine.results.conform`).

The metrics of a row (the README's "Metrics"): ``accuracy`` (correct predictions over
``n_samples`` predictions: images, or a language model's predicted tokens), ``loss`` (the mean
cross-entropy per prediction, natural log) and ``perplexity`` (exp(loss), language models only;
null for classification). Files written before ``loss`` and ``perplexity`` read as NaN there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from mc_engine.hardware import HardwareConfig

_ARROW_TYPES = {int: pa.int64(), float: pa.float64(), str: pa.string(), bool: pa.bool_()}

#: Per-row columns after the hardware ones; units in the names where ambiguous.
TRIAL_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    ("repeat", pa.int64()),
    ("t_inference_s", pa.float64()),
    ("accuracy", pa.float64()),
    ("loss", pa.float64()),
    ("perplexity", pa.float64()),
    ("n_correct", pa.int64()),
    ("n_samples", pa.int64()),
    ("seed", pa.int64()),
    ("wall_s", pa.float64()),
    ("engine_version", pa.string()),
    ("backend", pa.string()),
    ("compute_device", pa.string()),
)
#: What the execution columns of a part file written before them hold (the engine ran Numba
#: on the CPU only).
EXECUTION_DEFAULTS = {"backend": "numba", "compute_device": "cpu"}

#: The metric columns added after the first result files: a file without them reads as NaN
#: there (:func:`mc_engine.results.conform.fill_metric_defaults`).
METRIC_FIELDS: tuple[tuple[str, pa.DataType], ...] = (("loss", pa.float64()),
                                                     ("perplexity", pa.float64()))
IDEAL_SCHEMA = pa.schema([("study", pa.string()), ("n_correct", pa.int64()),
                          ("n_samples", pa.int64()), ("accuracy", pa.float64()),
                          *METRIC_FIELDS, ("engine_version", pa.string())])
#: The columns an ideal.parquet must have (one written before the metric columns has these).
IDEAL_COLUMNS = ("study", "n_correct", "n_samples", "accuracy", "engine_version")
CHECKPOINT_FIELD = ("checkpoint", pa.string())


def ideal_schema(checkpoint: bool = False) -> pa.Schema:
    """ideal.parquet's schema: one row per study, or per checkpoint of a checkpoint axis."""
    return IDEAL_SCHEMA.insert(1, pa.field(*CHECKPOINT_FIELD)) if checkpoint else IDEAL_SCHEMA


def hardware_columns() -> list[str]:
    """The hardware parameter columns, in declaration order."""
    return HardwareConfig.field_names()


def result_schema(device_params: Sequence[str] = (), checkpoint: bool = False,
                  layer: bool = False) -> pa.Schema:
    """study, point_id (then ``checkpoint`` for a checkpoint axis, then ``layer`` for a
    layer-sensitivity study), one typed column per hardware parameter (the ``device_params``
    names, float64, after ``device``), then :data:`TRIAL_FIELDS`."""
    hardware: list[tuple[str, pa.DataType]] = []
    for name, kind in HardwareConfig.field_types().items():
        hardware.append((name, _ARROW_TYPES[kind]))
        if name == "device":
            hardware += [(param, pa.float64()) for param in device_params]
    first = [("study", pa.string()), ("point_id", pa.string())]
    if checkpoint:
        first.append(CHECKPOINT_FIELD)
    if layer:
        first.append(("layer", pa.string()))
    return pa.schema([*first, *hardware, *TRIAL_FIELDS])


def fixed_columns() -> frozenset[str]:
    """The columns every result file has (or, ``checkpoint`` and ``layer``, may have); any
    other column is a device parameter."""
    return frozenset(result_schema(checkpoint=True, layer=True).names)


def trial_rows(study: str, point_id: str, hardware: HardwareConfig, repeat: int, seed: int,
               evaluations: Sequence[Mapping[str, Any]], engine_version: str,
               checkpoint: str | None = None, layer: str | None = None, *,
               backend: str = "numba", compute_device: str = "cpu") -> list[dict]:
    """One result row per inference time of a trial, from ``evaluate_trial``'s dicts (a metric
    that one lacks, ``perplexity`` of a classifier, is null); a
    ``checkpoint`` (checkpoint axis) or ``layer`` (layer-sensitivity trials) is carried in a
    column of that name; ``backend`` and ``compute_device``: where the trial ran."""
    fixed = {"study": study, "point_id": point_id, **hardware.to_dict(), "repeat": repeat}
    if checkpoint is not None:
        fixed["checkpoint"] = checkpoint
    if layer is not None:
        fixed["layer"] = layer
    return [{**fixed, "t_inference_s": float(e["t_inference_s"]),
             "accuracy": float(e["accuracy"]), **{m: float(e[m]) if e.get(m) is not None else None
                                                   for m, _ in METRIC_FIELDS},
             "n_correct": int(e["n_correct"]),
             "n_samples": int(e["n_samples"]), "seed": seed, "wall_s": float(e["wall_s"]),
             "engine_version": engine_version, "backend": backend,
             "compute_device": compute_device} for e in evaluations]


def rows_to_table(rows: Sequence[Mapping[str, Any]],
                  device_params: Sequence[str] = (), checkpoint: bool = False) -> pa.Table:
    """Rows as an Arrow table with exactly :func:`result_schema` (of ``device_params``; a row
    of a device without one of them holds null there; a ``layer`` column when rows have one)."""
    rows = list(rows)
    layer = any("layer" in row for row in rows)
    return pa.Table.from_pylist(rows, schema=result_schema(device_params, checkpoint, layer))
