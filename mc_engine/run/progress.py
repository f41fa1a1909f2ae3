"""Progress of a run: a tqdm bar on a terminal, plain dated lines in a batch job's log.

A bar redraws itself with carriage returns, which fills a job log (SLURM's slurm-*.out, a pod's
log) with thousands of partial lines. When stderr is not a terminal the run instead prints one
line every ``MC_ENGINE_PROGRESS_S`` seconds (default 30) with the trials done, the rate and the
estimated time left, and a last line when it ends.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

from tqdm import tqdm

from mc_engine.study.units import format_duration

#: Environment variable: seconds between progress lines when stderr is not a terminal.
INTERVAL_ENV = "MC_ENGINE_PROGRESS_S"
DEFAULT_INTERVAL_S = 30.0


class Progress:
    """Counts finished trials out of ``total`` (``initial`` of them already on disk)."""

    def __init__(self, total: int, initial: int, name: str, *, enabled: bool = True,
                 stream: TextIO | None = None, interval_s: float | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self.total, self.done, self.name = total, initial, name
        self.enabled = enabled
        self._initial = initial
        self._bar: tqdm | None = None
        if enabled and _is_terminal(self.stream):
            self._bar = tqdm(total=total, initial=initial, unit="trial", desc=name,
                             dynamic_ncols=True, file=self.stream)
        self.interval_s = interval_s if interval_s is not None else _interval_from_env()
        self._started = self._last_line = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled and time.monotonic() - self._last_line >= self.interval_s:
            self._line()

    def add_total(self, n: int) -> None:
        """``n`` more trials to run (the next round of an adaptive study)."""
        self.total += n
        if self._bar is not None:
            self._bar.total += n
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled and self.done > self._initial:
            self._line()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _line(self) -> None:
        """``name: 120/400 trials (30 %), 3.21 trials/s, 1 min 27 s left``."""
        now = time.monotonic()
        self._last_line = now
        ran = self.done - self._initial
        rate = ran / max(now - self._started, 1e-9)
        left = self.total - self.done
        eta = format_duration(round(left / rate)) if rate > 0 and left else "0 s"
        percent = 100 * self.done / self.total if self.total else 100.0
        print(f"{self.name}: {self.done}/{self.total} trials ({percent:.0f} %), "
              f"{rate:.3g} trials/s, {eta} left", file=self.stream, flush=True)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _interval_from_env() -> float:
    text = os.environ.get(INTERVAL_ENV, "")
    try:
        value = float(text)
    except ValueError:
        return DEFAULT_INTERVAL_S
    return value if value >= 0 else DEFAULT_INTERVAL_S
