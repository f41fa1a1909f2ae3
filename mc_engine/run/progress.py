"""Progress of a run: a tqdm bar on a terminal (a notebook's bar in Jupyter), plain lines in a
batch job's log.

A bar redraws itself with carriage returns, which fills a job log (SLURM's slurm-*.out, a pod's
log) with thousands of partial lines. When stderr is not a terminal the run instead prints one
line every ``MC_ENGINE_PROGRESS_S`` seconds (default 30) with the trials done, the rate and the
estimated time left, and a last line when it ends.

Trials of a big network take minutes each, so tasks also send heartbeats while they run (the
images they have evaluated, every ``MC_ENGINE_HEARTBEAT_S`` seconds, default 10:
:class:`mc_engine.run.tasks.Heartbeat`); they count as fractions of trials in the rate and the
time left, and they keep the lines coming while no task finishes.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from tqdm import tqdm

from mc_engine.study.units import format_duration
from mc_engine.terminal import in_notebook as _in_notebook
from mc_engine.terminal import is_terminal as _is_terminal
from mc_engine.terminal import seconds_from_env as _seconds_from_env

#: Environment variable: seconds between progress lines when stderr is not a terminal.
INTERVAL_ENV = "MC_ENGINE_PROGRESS_S"
DEFAULT_INTERVAL_S = 30.0
#: Environment variable: seconds between a running task's heartbeats.
HEARTBEAT_ENV = "MC_ENGINE_HEARTBEAT_S"
DEFAULT_HEARTBEAT_S = 10.0


class Progress:
    """Counts finished trials out of ``total`` (``initial`` of them already on disk)."""

    def __init__(self, total: int, initial: int, name: str, *, enabled: bool = True,
                 stream: TextIO | None = None, interval_s: float | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self.total, self.done, self.name = total, initial, name
        self.enabled = enabled
        self._initial = initial
        self._bar: tqdm | None = None
        self._lock = threading.Lock()     # heartbeats arrive on the client's event-loop thread
        #: Running tasks' (images done, images in the task), by task key; finished keys.
        self._running: dict[str, tuple[int, int]] = {}
        self._finished: set[str] = set()
        if enabled and _in_notebook():
            from tqdm.auto import tqdm as auto_tqdm

            self._bar = auto_tqdm(total=total, initial=initial, unit="trial", desc=name)
        elif enabled and _is_terminal(self.stream):
            self._bar = tqdm(total=total, initial=initial, unit="trial", desc=name,
                             dynamic_ncols=True, file=self.stream)
        self.interval_s = interval_s if interval_s is not None else \
            _seconds_from_env(INTERVAL_ENV, DEFAULT_INTERVAL_S)
        self._started = self._last_line = time.monotonic()

    def finished(self, task: str | None) -> None:
        """``task`` is done (or was submitted again): its heartbeats stop counting."""
        if task is None:
            return
        with self._lock:
            self._running.pop(task, None)
            self._finished.add(task)

    def update(self, n: int = 1) -> None:
        """``n`` more trials done."""
        with self._lock:
            self.done += n
            if self._bar is not None:
                self._bar.update(n)
                self._postfix()
            elif self.enabled and time.monotonic() - self._last_line >= self.interval_s:
                self._line()

    def heartbeat(self, task: str, done: int, total: int) -> None:
        """A running ``task`` has evaluated ``done`` of its ``total`` images."""
        with self._lock:
            if task in self._finished or total <= 0:
                return
            self._running[task] = (min(done, total), total)
            if self._bar is not None:
                self._postfix()
            elif self.enabled and time.monotonic() - self._last_line >= self.interval_s:
                self._line()

    def on_event(self, event: tuple[float, dict]) -> None:
        """A Dask event of the heartbeat topic: (time, {"task", "done", "total"})."""
        _, msg = event
        try:
            self.heartbeat(str(msg["task"]), int(msg["done"]), int(msg["total"]))
        except (KeyError, TypeError, ValueError):   # not ours: ignored
            pass

    @property
    def partial(self) -> float:
        """Trials' worth of work done in the running tasks (images done / images per task's
        trial, summed), as counted by their heartbeats."""
        return sum(d / t for d, t in self._running.values()) if self._running else 0.0

    def _images(self) -> str:
        done = sum(d for d, _ in self._running.values())
        total = sum(t for _, t in self._running.values())
        return f"{done:,}/{total:,} images in {len(self._running)} running task" + \
            ("s" if len(self._running) != 1 else "")

    def _postfix(self) -> None:
        if self._running:
            self._bar.set_postfix_str(self._images(), refresh=True)

    def add_total(self, n: int) -> None:
        """``n`` more trials to run (the next round of an adaptive study)."""
        self.total += n
        if self._bar is not None:
            self._bar.total += n
            self._bar.refresh()

    def close(self) -> None:
        with self._lock:
            self._running.clear()
            if self._bar is not None:
                self._bar.close()
            elif self.enabled and self.done > self._initial:
                self._line()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _line(self) -> None:
        """``name: 120/400 trials (30 %), 3.21 trials/s, 1 min 27 s left``, with the running
        tasks' images when heartbeats came (``+ 1.7 running: 2,400/8,000 images in ...``)."""
        now = time.monotonic()
        self._last_line = now
        partial = self.partial
        ran = self.done - self._initial + partial
        rate = ran / max(now - self._started, 1e-9)
        left = self.total - self.done - partial
        eta = format_duration(round(left / rate)) if rate > 0 and left > 0 else \
            "0 s" if left <= 0 else "unknown time"
        percent = 100 * (self.done + partial) / self.total if self.total else 100.0
        running = f" + {partial:.2f} running ({self._images()})" if self._running else ""
        print(f"{self.name}: {self.done}/{self.total} trials{running} ({percent:.0f} %), "
              f"{rate:.3g} trials/s, {eta} left", file=self.stream, flush=True)


def heartbeat_interval() -> float:
    """Seconds between a running task's heartbeats (``MC_ENGINE_HEARTBEAT_S``, default 10)."""
    return _seconds_from_env(HEARTBEAT_ENV, DEFAULT_HEARTBEAT_S)
