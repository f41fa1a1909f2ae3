"""How the swept parameters of a study are named in figures and tables.

Parameters swept together (``[[sweep.zip]]``, or any whose values determine each other over the
points) form one *group*, named by its first member (the others are listed where the group is
introduced); labels name only the groups whose value differs between the curves they tell
apart; checkpoints are shown by their file stem without the prefix all of them share.
"""

from __future__ import annotations

import math
import os
from pathlib import PurePath

import pandas as pd


def tied_groups(points: pd.DataFrame, columns: list[str]) -> list[list[str]]:
    """``columns`` in groups of parameters tied over the rows of ``points``: each group has a
    lead whose value determines every other member's (swept in one zip, or a device model's
    parameter that follows the device). Leads are taken most values first (the first of
    ``columns`` among equals); the groups come in the order of their first member in
    ``columns``, each lead first."""
    count = {c: points[c].nunique(dropna=False) for c in columns}
    groups: list[list[str]] = []
    used: set[str] = set()
    for lead in sorted(columns, key=lambda c: -count[c]):   # stable: ties keep column order
        if lead in used:
            continue
        group = [lead] + [other for other in columns if other not in used and other != lead
                          and len(points[[lead, other]].drop_duplicates()) == count[lead]]
        used.update(group)
        groups.append(group)
    position = {c: i for i, c in enumerate(columns)}
    return sorted(groups, key=lambda g: min(position[c] for c in g))


def order_by_sweep(columns: list[str], sweep_keys: list[str]) -> list[str]:
    """``columns`` with those the study file sweeps first, in its order (the study's question
    first), the rest after them as they came."""
    first = [k for k in sweep_keys if k in columns]
    return first + [c for c in columns if c not in first]


def format_value(value: object) -> str:
    """A parameter value as a label shows it: ``0.02``, ``8``, ``inf``, ``calibrated``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return "inf" if math.isinf(value) else f"{value:.6g}"
    return str(value)


class Names:
    """Short display names of the checkpoints of a study (stems without their shared
    prefix) and of any other value (:func:`format_value`)."""

    def __init__(self, checkpoints: list[str] | None = None):
        stems = [PurePath(str(c)).stem for c in (checkpoints or [])]
        cut = _shared_prefix(stems) if len(set(stems)) > 1 else 0
        self.checkpoint = {c: (s[cut:] or s) for c, s in zip(checkpoints or [], stems)}

    @classmethod
    def of(cls, frame: pd.DataFrame) -> Names:
        return cls(list(frame["checkpoint"].unique()) if "checkpoint" in frame else None)

    def value(self, column: str, value: object) -> str:
        if column == "checkpoint":
            return self.checkpoint.get(value, PurePath(str(value)).stem)
        return format_value(value)

    def label(self, row: pd.Series | dict, groups: list[list[str]], with_keys: bool) -> str:
        """``adc_bits=8, w_noise=0.02`` (``8, 0.02`` without keys) of the group leads."""
        parts = [self.value(g[0], row[g[0]]) for g in groups]
        if with_keys:
            parts = [f"{g[0]}={p}" for g, p in zip(groups, parts)]
        return ", ".join(parts)


def group_title(group: list[str]) -> str:
    """``device`` or ``device (with g_max)`` or ``out_noise (with 3 tied)``."""
    if len(group) == 1:
        return group[0]
    rest = group[1:]
    return f"{group[0]} (with {rest[0]})" if len(rest) == 1 else \
        f"{group[0]} (with {len(rest)} tied)"


def _shared_prefix(names: list[str]) -> int:
    """Length of the prefix all ``names`` share, cut back to just after a separator (``-``, ``_``,
    ``.``, space) so that no word is split."""
    prefix = os.path.commonprefix(names)
    if all(len(n) == len(prefix) for n in names):
        return 0
    cut = max((prefix.rfind(sep) for sep in "-_. "), default=-1)
    return cut + 1 if cut >= 0 else 0
