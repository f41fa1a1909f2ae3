"""The ``[hardware]`` and ``[sweep]`` tables of a study file: device models named in them,
every swept value checked, and the sweep expanded into validated hardware points (and the
checkpoint of each point, for a checkpoint axis).

Errors name the study file and the dotted key that set the offending value, as in
:mod:`mc_engine.study.spec`, which calls these while reading a study.
"""

from __future__ import annotations

import itertools
import math
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mc_engine.data.factory import import_factory
from mc_engine.errors import Fail, UserInputError
from mc_engine.hardware import HardwareConfig, from_dict
from mc_engine.hardware.combinations import inert_keys
from mc_engine.hardware.devices import DeviceModel, declaration_problem, register_device
from mc_engine.hardware.tables import read_table, register_table
from mc_engine.study.keys import point_id

#: Trials per study (points x repeats): each is a Dask task and a few result rows; beyond this
#: the scheduler alone would need more memory than a workstation has. Split bigger studies.
MAX_TRIALS = 1_000_000


def load_device(ref: str, base_dir: Path, source: str | None, key: str) -> type[DeviceModel]:
    """Import the DeviceModel subclass named ``"module:Class"`` (the module looked up in the
    study file's folder first, as factories are) and register it under ``ref``."""
    cls = import_factory(ref, base_dir, source, key, kind="Class")
    problem = declaration_problem(cls)
    if problem:
        raise UserInputError(f"{ref!r} {problem}", source=source, key=key)
    register_device(cls, name=ref)
    return cls


def load_devices(hardware: dict[str, Any], sweep: dict[str, Any], base_dir: Path,
                 source: str) -> None:
    """Import every ``"module:Class"`` device the study names, in [hardware] or swept, so that
    the hardware points can be validated against the class's parameters. Values of the wrong
    shape are left to the hardware and sweep checks."""
    for key, ref in _named("device", hardware, sweep):
        if isinstance(ref, str) and ":" in ref:
            load_device(ref, base_dir, source, key)


def load_tables(hardware: dict[str, Any], sweep: dict[str, Any], base_dir: Path,
                source: str) -> None:
    """Read every table of measurements (``device_table``) the study names, in [hardware] or
    swept, from the study file's folder, and register it under its name, so that the hardware
    points carry it. Values of the wrong shape are left to the hardware and sweep checks."""
    for key, name in _named("device_table", hardware, sweep):
        if isinstance(name, str) and name:
            try:
                register_table(read_table(base_dir / name, name))
            except UserInputError as err:
                message = str(err).removeprefix(f"{err.key}: ")
                raise UserInputError(message, source=source, key=key) from None


def _named(field: str, hardware: dict[str, Any], sweep: dict[str, Any]
           ) -> list[tuple[str, Any]]:
    """(dotted key, value) of every value of ``field`` in [hardware], [sweep] and its zips."""
    refs: list[tuple[str, Any]] = [(f"hardware.{field}", hardware.get(field))]
    if isinstance(sweep.get(field), list):
        refs += [(f"sweep.{field}", v) for v in sweep[field]]
    zips = sweep.get("zip")
    for i, group in enumerate(zips if isinstance(zips, list) else []):
        if isinstance(group, dict) and isinstance(group.get(field), list):
            refs += [(f"sweep.zip[{i}].{field}", v) for v in group[field]]
    return refs


def swept_device(sweep: dict[str, list[Any]], zips: tuple[dict[str, list[Any]], ...]) -> bool:
    return "device" in sweep or any("device" in z for z in zips)


def check_size(sweep: dict[str, list[Any]], zips: tuple[dict[str, list[Any]], ...],
               repeats: int, fail: Fail) -> None:
    """Refuse studies too big to run before expanding them (a few long lists multiply fast)."""
    n_points = math.prod(len(v) for v in sweep.values()) * \
        math.prod(len(next(iter(z.values()))) for z in zips)
    if n_points * repeats > MAX_TRIALS:
        raise fail("sweep" if n_points > MAX_TRIALS else "study.repeats",
                   f"{n_points:_} hardware points x {repeats:_} repeats = "
                   f"{n_points * repeats:_} trials; at most {MAX_TRIALS:_} fit one study: sweep "
                   f"fewer values, use fewer repeats or split the study")


def swept_checkpoint(sweep: dict[str, list[Any]],
                     zips: tuple[dict[str, list[Any]], ...]) -> bool:
    return "checkpoint" in sweep or any("checkpoint" in z for z in zips)


def check_checkpoint_value(value: Any, where: str, fail: Fail) -> None:
    """A checkpoint axis value: a path (relative to the study's folder). That the file exists
    and fits the model and the data is checked when the inputs load (as for [model]
    checkpoint), before anything runs."""
    if not isinstance(value, str) or not value:
        raise fail(where, f"expected checkpoint file paths (strings), got {value!r}")


def check_checkpoint_files(checkpoints: tuple[str, ...], base_dir: Path, fail: Fail) -> None:
    """Refuse two spellings of one checkpoint file on the axis ('a.pt' and './a.pt', a
    symbolic link beside its target): they would be two checkpoints of the same weights."""
    from mc_engine.data.factory import resolve_path

    seen: dict[object, str] = {}
    for label in dict.fromkeys(checkpoints):
        path = resolve_path(label, base_dir)
        try:
            stat = path.stat()
            key: object = (stat.st_dev, stat.st_ino)
        except OSError:   # not there (yet): said when the inputs load; compare the names
            key = os.path.realpath(path)
        if key in seen:
            raise fail("sweep.checkpoint", f"{seen[key]!r} and {label!r} are the same file; "
                                           f"name a checkpoint one way (it is known by its "
                                           f"name), and each once in a list")
        seen[key] = label


def sweep_groups(table: dict[str, Any], fail: Fail,
                 check_name: Callable[[str, str], None] | None = None,
                 check_values: Callable[[str, str, list[Any]], None] | None = None
                 ) -> tuple[dict[str, list[Any]], tuple[dict[str, list[Any]], ...],
                            dict[str, str]]:
    """Split ``[sweep]`` into grid lists and ``[[sweep.zip]]`` groups, checking their shape:
    zips are tables and not empty, every key is swept once, as a non-empty list, and the lists
    of a zip have one length. ``check_name(where, key)`` is told each key before its shape
    checks, ``check_values(where, key, values)`` after them (study and train files' own rules).
    Returns the grid, the zip groups and, for each key, where it is swept
    (``sweep.zip[0].adc_bits``). The study file's grammar; a train file's recipe sweep uses it
    too (mc_engine/train/sweep.py)."""
    raw_zips = table.pop("zip", [])
    if not isinstance(raw_zips, list) or not all(isinstance(z, dict) for z in raw_zips):
        raise fail("sweep.zip", "expected tables written as [[sweep.zip]]")
    groups = [("sweep", table)] + [(f"sweep.zip[{i}]", z) for i, z in enumerate(raw_zips)]
    owner: dict[str, str] = {}
    for prefix, group in groups:
        if prefix != "sweep" and not group:
            raise fail(prefix, "empty [[sweep.zip]] table")
        for key, values in group.items():
            where = f"{prefix}.{key}"
            if check_name is not None:
                check_name(where, key)
            if key in owner:
                raise fail(where, f"swept twice (also in {owner[key]})")
            owner[key] = where
            if not isinstance(values, list):
                raise fail(where, f"expected a list of values, got {values!r}")
            if not values:
                raise fail(where, "empty list: give at least one value")
            if check_values is not None:
                check_values(where, key, values)
        lengths = {k: len(v) for k, v in group.items()}
        if prefix != "sweep" and len(set(lengths.values())) > 1:
            first = next(iter(lengths))
            for key, n in lengths.items():
                if n != lengths[first]:
                    raise fail(f"{prefix}.{key}", f"has {n} values but {prefix}.{first} has "
                                                  f"{lengths[first]}; zipped lists must have "
                                                  f"the same length")
    return table, tuple(raw_zips), owner


def sweep_axes(sweep: dict[str, list[Any]], zips: tuple[dict[str, list[Any]], ...]
               ) -> list[list[dict[str, Any]]]:
    """The axes of the cartesian product: one per grid list (its values one at a time), one
    per zip group (its lists stepped together); each entry is the keys it sets."""
    axes: list[list[dict[str, Any]]] = [[{k: v} for v in values] for k, values in sweep.items()]
    for group in zips:
        n = len(next(iter(group.values())))
        axes.append([{k: values[i] for k, values in group.items()} for i in range(n)])
    return axes


def parse_sweep(table: dict[str, Any], base: dict[str, Any], source: str,
                fail: Fail) -> tuple[dict[str, list[Any]], tuple[dict[str, list[Any]], ...]]:
    """Split ``[sweep]`` into grid lists and ``[[sweep.zip]]`` groups, checking every value."""
    def check_values(where: str, key: str, values: list[Any]) -> None:
        for value in values:
            if key == "checkpoint":
                check_checkpoint_value(value, where, fail)
            else:
                hardware_point({**base, key: value}, source, lambda _f, where=where: where)

    grid, zips, _ = sweep_groups(table, fail, check_values=check_values)
    return grid, zips


def expand_points(base: dict[str, Any], sweep: dict[str, list[Any]],
                  zips: tuple[dict[str, list[Any]], ...], source: str,
                  fail: Fail) -> tuple[tuple[HardwareConfig, ...], tuple[str, ...]]:
    """The cartesian product of the grid lists and the zip groups, each point validated, and
    each point's checkpoint (empty without a checkpoint axis)."""
    axes = sweep_axes(sweep, zips)
    points: list[HardwareConfig] = []
    checkpoints: list[str] = []
    seen: dict[str, dict[str, Any]] = {}
    for combo in itertools.product(*axes):
        changes = {k: v for part in combo for k, v in part.items()}
        swept = set(changes)
        hardware = {k: v for k, v in changes.items() if k != "checkpoint"}
        config = hardware_point(
            {**base, **hardware}, source,
            lambda f, swept=swept: f"{'sweep' if f in swept else 'hardware'}.{f}",
            f" (at the sweep point {changes})" if changes else "")
        pid = point_id(config, changes.get("checkpoint"))
        if "checkpoint" in changes:
            checkpoints.append(changes["checkpoint"])
        if pid in seen:
            raise fail("sweep", f"the sweep points {seen[pid]} and {changes} are the same "
                                f"hardware point; remove the duplicate value")
        seen[pid] = changes
        points.append(config)
    return tuple(points), tuple(checkpoints)


def hardware_point(values: dict[str, Any], source: str, where: Callable[[str], str],
                   suffix: str = "") -> HardwareConfig:
    """A validated hardware point; an error is re-attributed to the study file and its key.

    ``where`` maps the offending hardware field to the dotted study key that set it.
    """
    try:
        return from_dict(values)
    except UserInputError as err:
        field_name = err.key or ""
        message = str(err)
        if field_name and message.startswith(f"{field_name}: "):
            message = message[len(field_name) + 2:]
        raise UserInputError(message + suffix, source=source,
                             key=where(field_name) if field_name else None) from None


def check_inert(points: tuple[HardwareConfig, ...], base: Mapping[str, Any],
                sweep: Mapping[str, list[Any]], zips: tuple[dict[str, list[Any]], ...],
                source: str, fail: Fail) -> None:
    """A key the study sets that can act at none of its points is rejected by name; one inert
    at some points only (a sweep over the option that uses it) is warned about once."""
    swept = {k: "sweep" for k in sweep} | {k: f"sweep.zip[{i}]" for i, z in enumerate(zips)
                                            for k in z}
    given = [k for k in (*base, *swept) if k != "checkpoint"]
    inert = [inert_keys(p) for p in points]
    for key in dict.fromkeys(given):
        where = f"{swept[key]}.{key}" if key in swept else f"hardware.{key}"
        hits = [found[key] for found in inert if key in found]
        if hits and len(hits) == len(points):
            raise fail(where, f"has no effect at any point of this study: {hits[0]}")
        if hits:
            warnings.warn(f"{source}: {where}: has no effect at {len(hits)} of {len(points)} "
                          f"hardware points ({hits[0]})", stacklevel=2)
