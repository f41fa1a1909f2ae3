"""One exception type for every user-facing input problem.

Everything a user can get wrong (a study file, a hardware parameter, a dataset path, a model with
unsupported layers) raises :class:`UserInputError` with one line that names the place, the key and
what is allowed. The CLI prints that line and exits with status 2; nothing else becomes a traceback.
"""

from __future__ import annotations


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
