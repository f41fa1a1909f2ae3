"""A recipe sweep in one train file: ``[sweep]`` over ``[train]`` and ``[noise]`` keys (README,
"Training recipes").

The grammar is the study file's (mc_engine/study/sweep.py): ``[sweep]`` lists are a grid (the
cartesian product, in the order written), ``[[sweep.zip]]`` tables hold lists of one length
stepped together; every key is a ``[train]`` or ``[noise]`` key given by its plain name (its
table is known from the name), besides ``label``: a list of names for the points (in a zip,
or alone). Each point is the train file with the point's values in place; it trains into
``<out>/<name>__<label>.pt``, the label being ``label``'s value or the point's swept values
(``optimizer-sam__sam_adaptive-true``). ``name``, ``seed``, ``init`` and ``description`` are not
swept: every point starts from the same initial weights and seed, so that the checkpoints differ
by their recipe alone, and each is bit for bit the checkpoint its point trains alone
(tests/test_train_recipes_sweep.py).

A key that does nothing at some points (``sam_rho`` beside ``optimizer = "adam"`` in a zip over
optimizers) is accepted there; one that does nothing at every point is refused by name, as in a
train file without a sweep.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mc_engine.errors import UserInputError
from mc_engine.study.sweep import sweep_axes, sweep_groups
from mc_engine.train.spec import NOISE_KEYS, TRAIN_KEYS, TrainSpec, parse_train, read_train_file

#: [train] keys a sweep leaves alone (the points share them).
FIXED = ("name", "seed", "init", "description")
SWEPT = tuple(k for k in (*TRAIN_KEYS, *NOISE_KEYS) if k not in FIXED)
LABEL = "label"
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def load_points(path: str | Path) -> list[TrainSpec]:
    """The train file's points (one without a ``[sweep]``), each validated."""
    path = Path(path)
    return parse_points(read_train_file(path), source=str(path), base_dir=path.parent)


def parse_points(doc: Mapping[str, Any], *, source: str = "<train>",
                 base_dir: Path | None = None) -> list[TrainSpec]:
    """:func:`load_points` of a parsed train file."""

    def fail(key: str, message: str) -> UserInputError:
        return UserInputError(message, source=source, key=key)

    sweep = doc.get("sweep")
    if sweep is None:
        return [parse_train(doc, source=source, base_dir=base_dir)]
    if not isinstance(sweep, dict):
        raise fail("sweep", f"expected a table [sweep], got {sweep!r}")
    base = {k: v for k, v in doc.items() if k != "sweep"}
    owner, axes = _axes(dict(sweep), fail)
    if not axes:
        raise fail("sweep", "empty [sweep]: give lists of [train] or [noise] values")
    stem = base.get("train", {}).get("name") if isinstance(base.get("train"), dict) else None
    parse_train(base, source=source, base_dir=base_dir, inert=lambda key, message: None)
    points: list[TrainSpec] = []
    inert: dict[str, list[str]] = {}
    names: dict[str, dict[str, Any]] = {}
    for combo in itertools.product(*axes):
        changes = {k: v for part in combo for k, v in part.items()}
        label = changes.pop(LABEL, None) or "__".join(f"{k}-{_text(v)}"
                                                       for k, v in changes.items())
        name = f"{stem}__{label}"
        if name in names:
            raise fail("sweep", f"the sweep points {names[name]} and {changes} both train "
                                f"{name}.pt; give a label list naming each point")
        names[name] = changes
        point = copy.deepcopy(base)
        point["train"]["name"] = name
        for key, value in changes.items():
            point.setdefault("train" if key in TRAIN_KEYS else "noise", {})[key] = value
        found: list[tuple[str, str]] = []
        try:
            spec = parse_train(point, source=source, base_dir=base_dir,
                               inert=lambda key, message, found=found:
                               found.append((key, message)))
        except UserInputError as err:
            key = (err.key or "").partition(".")[2]
            message = str(err).removeprefix(f"{source}: ").removeprefix(f"{err.key}: ")
            if key in owner:
                raise fail(owner[key], f"{message} (at the sweep point {changes})") from None
            raise fail(err.key, f"{message} (at the sweep point {changes})") from None
        for key, message in found:
            inert.setdefault(key, []).append(message)
        points.append(spec)
    for key, messages in inert.items():
        if len(messages) == len(points):
            bare = key.partition(".")[2]
            raise fail(owner.get(bare, key), f"{messages[0]} (at every point of the sweep)")
    return points


def _axes(table: dict[str, Any], fail) -> tuple[dict[str, str], list[list[dict[str, Any]]]]:
    """The grid lists and zip groups of [sweep], checked for shape (the study file's grammar,
    :func:`mc_engine.study.sweep.sweep_groups`; the values are checked by the train file's own
    checks at each point)."""
    def check_name(where: str, key: str) -> None:
        if key in FIXED:
            raise fail(where, "not swept: every point of a recipe sweep trains from the "
                              "same initial weights and seed, under a name of its own "
                              "(<name>__<label>)")
        if key not in SWEPT and key != LABEL:
            raise fail(where, f"unknown key; a recipe sweep takes [train] and [noise] keys "
                              f"({', '.join(SWEPT)}) and label")

    def check_values(where: str, key: str, values: list[Any]) -> None:
        if key == LABEL:
            for v in values:
                if not isinstance(v, str) or not _LABEL.match(v):
                    raise fail(where, f"expected names of letters, digits, '.', '_' or '-' "
                                      f"(they name the checkpoints), got {v!r}")

    grid, zips, owner = sweep_groups(table, fail, check_name, check_values)
    return owner, sweep_axes(grid, zips)


def _text(value: Any) -> str:
    """A swept value as it appears in a checkpoint name."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:g}"
    if isinstance(value, list):
        return "_".join(_text(v) for v in value) or "none"
    return _UNSAFE.sub("_", str(value)) or "_"


def check_points_free(points: list[TrainSpec], out_dir: str | Path, fresh: bool) -> None:
    """Before a sweep's first point trains: every point's folder and name fit, and no
    checkpoint of a point's name is there (unless ``fresh``), as one training checks its own."""
    from mc_engine.train.guards import check_out_folder
    from mc_engine.train.loop import _check_free

    for spec in points:
        check_out_folder(spec, Path(out_dir))
        _check_free(spec, Path(out_dir), fresh)
