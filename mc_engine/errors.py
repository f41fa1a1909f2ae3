"""One exception type for every user-facing input problem.

Everything a user can get wrong (a study file, a hardware parameter, a dataset path, a model with
unsupported layers) raises :class:`UserInputError` with one line that names the place, the key and
what is allowed. The CLI prints that line and exits with status 2; nothing else becomes a traceback.
The few checks every input layer (study, data, zoo) shares live here too.
"""

from __future__ import annotations

from collections.abc import Callable


class UserInputError(ValueError):
    """Invalid user input; ``str(err)`` is a complete one-line message."""

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None):
        self.source = source
        self.key = key
        where = ": ".join(p for p in (source, key) if p)
        super().__init__(f"{where}: {message}" if where else message)

    def with_source(self, source: str) -> UserInputError:
        """The same problem, attributed to a file (e.g. the study file that set the value)."""
        if self.source:
            return self
        msg = str(self)
        return UserInputError(msg, source=source)


#: ``fail(key, message)``: builds the one-line error for a key of the input being checked.
Fail = Callable[[str, str], UserInputError]


def check_int(value: object, key: str, fail: Fail, *, lo: int = 1, hi: int | None = None,
              hint: str = "") -> int:
    """``value`` if it is an integer (not a bool) in [lo, hi], else ``fail(key, ...)``.

    The bound ``hi`` keeps values that size lists or tensors (repeats, classes) from asking for
    more memory than any machine has; ``hint`` is added to the message (allowed values, why).
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or \
            (hi is not None and value > hi):
        wanted = "a positive integer" if lo == 1 and hi is None else f"an integer >= {lo}"
        if hi is not None:
            wanted += f" and <= {hi:_}"
        raise fail(key, f"expected {wanted}{f' {hint}' if hint else ''}, got {short_repr(value)}")
    return value


def short_repr(value: object) -> str:
    """repr, except for integers too long to print usefully (10**400 in a study file)."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    return repr(value)


def did_you_mean(key: str, choices) -> str:
    """" (did you mean 'x'?)" for the allowed name closest to a mistyped ``key``, or ""."""
    import difflib

    close = difflib.get_close_matches(str(key), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
