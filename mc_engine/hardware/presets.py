"""Hardware presets: named base points, as data (``presets.toml`` beside this module).

``[hardware] preset = "<name>"`` in a study (or ``"preset"`` in :func:`from_dict`'s mapping)
starts the point from the preset's values; keys given beside it override them, and a sweep
overrides both. The resolved point is what runs, what ``mc-engine validate`` prints and what the
result rows and point ids hold: a preset is a way to write a point, not a parameter.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

from mc_engine.errors import UserInputError

PRESET_KEY = "preset"


@cache
def presets() -> dict[str, dict[str, Any]]:
    """Every preset by name: its hardware values (``description`` left out)."""
    text = resources.files("mc_engine.hardware").joinpath("presets.toml").read_text("utf-8")
    return {name: {k: v for k, v in table.items() if k != "description"}
            for name, table in tomllib.loads(text).items()}


@cache
def descriptions() -> dict[str, str]:
    """Each preset's one-line description."""
    text = resources.files("mc_engine.hardware").joinpath("presets.toml").read_text("utf-8")
    return {name: table.get("description", "") for name, table in tomllib.loads(text).items()}


def resolve_preset(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with its ``preset`` replaced by the preset's values, the keys given beside
    it taking precedence; unchanged (a copy) without one. An unknown name is one
    UserInputError (key ``preset``) listing the presets."""
    values = dict(values)
    if PRESET_KEY not in values:
        return values
    name = values.pop(PRESET_KEY)
    known = presets()
    if not isinstance(name, str) or name not in known:
        raise UserInputError(f"unknown preset {name!r}; presets: {', '.join(sorted(known))}",
                             key=PRESET_KEY)
    return {**known[name], **values}
