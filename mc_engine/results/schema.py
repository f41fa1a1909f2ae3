"""The Parquet schema of study results (DESIGN.md §5), declared once for writing and checking.

Every hardware parameter is its own typed column, named as in :class:`HardwareConfig` and the
study file, so results filter and group with plain pandas (``df[df.adc_bits == 8]``).
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
    ("n_correct", pa.int64()),
    ("n_samples", pa.int64()),
    ("seed", pa.int64()),
    ("wall_s", pa.float64()),
    ("engine_version", pa.string()),
)

IDEAL_SCHEMA = pa.schema([("study", pa.string()), ("n_correct", pa.int64()),
                          ("n_samples", pa.int64()), ("accuracy", pa.float64()),
                          ("engine_version", pa.string())])


def hardware_columns() -> list[str]:
    """The hardware parameter columns, in declaration order."""
    return HardwareConfig.field_names()


def result_schema() -> pa.Schema:
    """study, point_id, one typed column per hardware parameter, then :data:`TRIAL_FIELDS`."""
    hardware = [(name, _ARROW_TYPES[kind]) for name, kind in HardwareConfig.field_types().items()]
    return pa.schema([("study", pa.string()), ("point_id", pa.string()), *hardware,
                      *TRIAL_FIELDS])


def trial_rows(study: str, point_id: str, hardware: HardwareConfig, repeat: int, seed: int,
               evaluations: Sequence[Mapping[str, Any]], engine_version: str) -> list[dict]:
    """One result row per inference time of a trial, from ``evaluate_trial``'s dicts."""
    fixed = {"study": study, "point_id": point_id, **hardware.to_dict(), "repeat": repeat}
    return [{**fixed, "t_inference_s": float(e["t_inference_s"]),
             "accuracy": float(e["accuracy"]), "n_correct": int(e["n_correct"]),
             "n_samples": int(e["n_samples"]), "seed": seed, "wall_s": float(e["wall_s"]),
             "engine_version": engine_version} for e in evaluations]


def rows_to_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Rows as an Arrow table with exactly :func:`result_schema`."""
    return pa.Table.from_pylist(list(rows), schema=result_schema())
