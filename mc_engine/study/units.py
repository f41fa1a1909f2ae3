"""Inference times: parsing the study file's duration strings and printing them back.

A study names inference times the way people talk about retention ("1h", "1d", "1y"); the engine
and the result columns use seconds (``t_inference_s``). A year is 365 days (31 536 000 s), the
value the IBM toolkit's examples and the aihwkit reference data use, so times match theirs.
"""

from __future__ import annotations

import math
import re

from mc_engine.errors import UserInputError, short_repr

#: Seconds per unit accepted in a study file.
UNIT_SECONDS: dict[str, float] = {
    "s": 1.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "y": 365 * 86400.0,
}

_DURATION = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?inf|nan)\s*"
                       r"([A-Za-z]*)\s*$", re.IGNORECASE)


def parse_duration(value: object, *, source: str | None = None, key: str | None = None) -> float:
    """Seconds for a duration given as a number of seconds or a string such as ``"1.5h"``.

    Negative, infinite and NaN durations are rejected: an inference time is a finite time after
    programming.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UserInputError(f"expected a duration such as '1h' or a number of seconds, "
                             f"got {value!r}", source=source, key=key)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise UserInputError(f"expected a duration such as '1h' (units: "
                                 f"{', '.join(UNIT_SECONDS)}), got {value!r}",
                                 source=source, key=key)
        number, unit = match.groups()
        if unit and unit not in UNIT_SECONDS:
            raise UserInputError(f"unknown time unit {unit!r} in {value!r}; allowed: "
                                 f"{', '.join(UNIT_SECONDS)}", source=source, key=key)
        seconds = float(number) * UNIT_SECONDS[unit or "s"]
    else:
        try:
            seconds = float(value)
        except OverflowError:  # an integer beyond the float range, such as 10**400
            seconds = math.inf
    if math.isnan(seconds) or math.isinf(seconds):
        raise UserInputError(f"a duration must be finite (below 1e308 s), got "
                             f"{short_repr(value)}", source=source, key=key)
    if seconds < 0:
        raise UserInputError(f"a duration must be >= 0 (time after programming), got {value!r}",
                             source=source, key=key)
    return seconds


def format_duration(seconds: float) -> str:
    """A short label for a time in seconds, in the largest unit it reaches (3600 -> "1 h")."""
    if seconds == 0:
        return "0 s"
    for unit in ("y", "d", "h", "min"):
        amount = seconds / UNIT_SECONDS[unit]
        if amount >= 1:
            return f"{amount:.3g} {unit}"
    return f"{seconds:.3g} s"
