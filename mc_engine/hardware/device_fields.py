"""The hardware fields a device model completes (docs/devices.md): the defaults it gives
``g_max``, ``on_off_ratio`` and ``g_converter``, its table of measurements (``device_table``),
and the significance factors of the ``n_pair`` converter. :class:`HardwareConfig` calls these
while it validates a point, after the device and its parameters and before the other fields.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from mc_engine.errors import UserInputError

if TYPE_CHECKING:
    from mc_engine.hardware.tables import DeviceTable

#: aihwkit's conductance converters (docs/devices.md), the values of ``g_converter``.
CONVERTERS = ("single_pair", "single_device", "dual_pair", "n_pair")
#: The defaults of the fields whose default is the device model's (``hardware_defaults``), for
#: a model that declares none.
DEVICE_DEFAULTS: dict[str, Any] = {"g_max": 25.0, "on_off_ratio": math.inf,
                                   "g_converter": "single_pair"}
#: Most significance factors n_pair_f takes (aihwkit has no bound; 16 pairs is far beyond any
#: unit cell).
MAX_PAIRS = 16


def factor_list(value: Any, name: str) -> str:
    """A list of positive significance factors (or its stored form '1.0,3.0') as the canonical
    string; '' for none."""
    items: Any = value
    if isinstance(value, str):
        items = [v for v in value.split(",") if v.strip()] if value.strip() else []
        try:
            items = [float(v) for v in items]
        except ValueError:
            items = None
    wanted = f"a list of 1 to {MAX_PAIRS} positive numbers such as [1, 3, 9]"
    if not isinstance(items, list | tuple) or len(items) > MAX_PAIRS or any(
            isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)
            or v <= 0 for v in items):
        raise UserInputError(f"expected {wanted}, got {value!r}", key=name)
    return ",".join(repr(float(v)) for v in items)


def factors(value: str) -> tuple[float, ...]:
    """The significance factors of a canonical ``n_pair_f`` string."""
    return tuple(float(v) for v in value.split(",")) if value else ()


def device_table(device: str, name: str, table: DeviceTable | None) -> DeviceTable | None:
    """The parsed table of measurements of a point on ``device`` named ``name`` (the given one
    when it is that table, else the registered one or the file read), checked against what the
    device reads; None for a device that reads none."""
    from mc_engine.hardware.devices import DEVICES
    from mc_engine.hardware.tables import lookup_table

    cls = DEVICES[device]
    if not cls.table_columns:
        if name:
            readers = ", ".join(repr(n) for n, c in DEVICES.items() if c.table_columns)
            raise UserInputError(f"device {device!r} reads no table of measurements; "
                                 f"device_table applies to the devices {readers}",
                                 key="device_table")
        return None
    columns = ", ".join(cls.table_columns)
    if not name:
        raise UserInputError(f"device {device!r} reads a table of measurements: give "
                             f"device_table = 'file.csv' (columns {columns}; docs/devices.md)",
                             key="device_table")
    if table is None or table.name != name:
        table = lookup_table(name)
    missing = [c for c in cls.table_columns if c not in table.columns]
    if missing:
        raise UserInputError(f"{name!r} has no column {missing[0]!r}; device {device!r} reads "
                             f"the columns {columns}", key="device_table")
    problem = cls.table_problem(table)
    if problem:
        raise UserInputError(f"{name!r}: {problem}", key="device_table")
    return table


def device_defaults(device: str, params: tuple[tuple[str, float], ...],
                     table: DeviceTable | None) -> dict[str, Any]:
    from mc_engine.hardware.devices import DEVICES

    return {**DEVICE_DEFAULTS, **DEVICES[device].hardware_defaults(dict(params), table)}
