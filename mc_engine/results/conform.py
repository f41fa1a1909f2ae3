"""Part files of different engine versions read as one table.

A results folder can hold part files written by several versions of mc-engine: an older one
lacks the hardware columns added since, and a file rewritten by other tools may hold a column
as double that the schema declares int64. :func:`read_part` reads one file with every column of
the current schema at its declared type (a value that does not fit is refused, naming the file
and the column), and :func:`fill_hardware_defaults` gives the rows of a file that predates a
hardware column the value the engine of that file used: the one every point had before the
field existed (``LATER_FIELDS`` of :mod:`mc_engine.study.keys`, which keeps their point ids too),
else the field's default (a new field defaults to the behaviour before it).
:func:`fill_execution_defaults` does the same for where a trial ran (``backend``,
``compute_device``): a file written before those columns holds trials of the Numba kernels on
the CPU; :func:`fill_metric_defaults` gives the rows of a file written before the ``loss`` and
``perplexity`` columns NaN there (the metrics were not measured).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mc_engine.errors import UserInputError


def _declared_types() -> dict[str, pa.DataType]:
    from mc_engine.results.schema import result_schema

    schema = result_schema(checkpoint=True, layer=True)
    return {f.name: f.type for f in schema}


def read_part(path: Path, columns: Sequence[str] | None = None) -> pa.Table:
    """``columns`` (default all) of the part file ``path``, each column of the result schema at
    its declared type and every other column (a device model's parameters) as float64.

    Raises UserInputError naming the file and the column when a value does not convert
    (2.5 in an integer column, text in a number column)."""
    if columns is not None:
        present = set(pq.read_schema(path).names)
        columns = [c for c in columns if c in present]
    table = pq.read_table(path, columns=columns)
    declared = _declared_types()
    for i, field in enumerate(table.schema):
        wanted = declared.get(field.name, pa.float64() if pa.types.is_integer(field.type)
                              else field.type)
        if field.type == wanted:
            continue
        try:
            column = pc.cast(table.column(i), wanted)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise UserInputError(f"the column {field.name!r} holds {field.type} values that "
                                 f"are not {wanted} as the result schema declares "
                                 f"({' '.join(str(err).split())[:120]}); move the file out of "
                                 f"{path.parent}", source=str(path)) from None
        table = table.set_column(i, pa.field(field.name, wanted), column)
    return table


def fill_hardware_defaults(table: pa.Table) -> pa.Table:
    """``table`` with every hardware column present and without nulls: a row of a part file
    written before the column existed takes the field's default (the device's, for the fields
    whose default is the device model's)."""
    from mc_engine.hardware.config import _DEFAULTS
    from mc_engine.results.schema import result_schema
    from mc_engine.study.keys import LATER_FIELDS

    schema = result_schema()
    hardware = [f for f in schema if f.name in _DEFAULTS]
    devices = table.column("device").to_pylist() if "device" in table.column_names else None
    for field in hardware:
        name = field.name
        if name in table.column_names and table.column(name).null_count == 0:
            continue
        column = table.column(name).to_pylist() if name in table.column_names \
            else [None] * table.num_rows
        default = LATER_FIELDS.get(name, _DEFAULTS[name])   # what points had before it
        values = [v if v is not None else
                  (default if default is not None else
                   _device_default(name, devices[i] if devices else _DEFAULTS["device"]))
                  for i, v in enumerate(column)]
        array = pa.array(values, field.type)
        if name in table.column_names:
            table = table.set_column(table.schema.get_field_index(name), field, array)
        else:
            table = table.append_column(field, array)
    return table


def fill_execution_defaults(table: pa.Table) -> pa.Table:
    """``table`` with the ``backend`` and ``compute_device`` columns present and without nulls:
    rows of a part file written before them ran on Numba on the CPU (``EXECUTION_DEFAULTS``)."""
    from mc_engine.results.schema import EXECUTION_DEFAULTS

    for name, default in EXECUTION_DEFAULTS.items():
        if name not in table.column_names:
            table = table.append_column(pa.field(name, pa.string()),
                                        pa.array([default] * table.num_rows, pa.string()))
        elif table.column(name).null_count:
            i = table.schema.get_field_index(name)
            table = table.set_column(i, pa.field(name, pa.string()),
                                     pc.fill_null(table.column(i), default))
    return table


def fill_metric_defaults(table: pa.Table) -> pa.Table:
    """``table`` with every metric column of ``METRIC_FIELDS`` (``loss``, ``perplexity``): a
    file written before them (or a classifier's ``perplexity``) reads as NaN there."""
    from mc_engine.results.schema import METRIC_FIELDS

    for name, kind in METRIC_FIELDS:
        if name not in table.column_names:
            table = table.append_column(pa.field(name, kind),
                                        pa.array([float("nan")] * table.num_rows, kind))
        elif table.column(name).null_count:
            i = table.schema.get_field_index(name)
            table = table.set_column(i, pa.field(name, kind),
                                     pc.fill_null(table.column(i), float("nan")))
    return table


def _device_default(name: str, device: str | None) -> object:
    """The default of ``name`` for ``device`` (a registered model's own, else the engine's)."""
    from mc_engine.hardware.device_fields import DEVICE_DEFAULTS, device_defaults

    try:
        return device_defaults(device, (), None).get(name, DEVICE_DEFAULTS.get(name))
    except Exception:   # a custom device not registered here, or one that needs its table
        return DEVICE_DEFAULTS.get(name)
