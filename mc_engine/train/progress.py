"""Progress of ``mc-engine train``: batches within each epoch, as a bar on a terminal (or in a
notebook) and as plain lines in a log, like a run's (:mod:`mc_engine.run.progress`).

A bar redraws itself with carriage returns, which fills a batch job's log with partial lines;
when stderr is not a terminal the training instead prints a line every ``MC_ENGINE_PROGRESS_S``
seconds (default 30) with the epoch, the batch, the running loss and the time left, and one
line at the end of every epoch with its loss and held-out accuracy.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm

from mc_engine.study.units import format_duration
from mc_engine.terminal import in_notebook as _in_notebook
from mc_engine.terminal import is_terminal as _is_terminal
from mc_engine.terminal import seconds_from_env

#: As a run's (mc_engine/run/progress.py): seconds between lines when stderr is not a terminal.
INTERVAL_ENV = "MC_ENGINE_PROGRESS_S"
DEFAULT_INTERVAL_S = 30.0


class TrainProgress:
    """Counts the batches of ``epochs`` epochs of ``per_epoch`` batches each."""

    def __init__(self, name: str, epochs: int, per_epoch: int, *, enabled: bool = True,
                 stream: TextIO | None = None, interval_s: float | None = None):
        self.name, self.epochs, self.per_epoch = name, epochs, max(1, per_epoch)
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.interval_s = interval_s if interval_s is not None else \
            seconds_from_env(INTERVAL_ENV, DEFAULT_INTERVAL_S)
        self._bar: tqdm | None = None
        total = epochs * self.per_epoch
        if enabled and _in_notebook():
            from tqdm.auto import tqdm as auto_tqdm

            self._bar = auto_tqdm(total=total, desc=name, unit="batch")
        elif enabled and _is_terminal(self.stream):
            self._bar = tqdm(total=total, desc=name, unit="batch", dynamic_ncols=True,
                             file=self.stream)
        self._started = self._last = time.monotonic()
        self._done = 0
        self._epoch_loss = 0.0

    def batch(self, epoch: int, index: int, loss: float) -> None:
        """Batch ``index`` (from 0) of epoch ``epoch`` (from 0) is done; ``loss`` its mean."""
        self._done += 1
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix_str(f"epoch {epoch + 1}/{self.epochs}, loss {loss:.4f}",
                                      refresh=False)
        elif time.monotonic() - self._last >= self.interval_s:
            self._last = time.monotonic()
            print(f"{self.name}: epoch {epoch + 1}/{self.epochs}, batch {index + 1}/"
                  f"{self.per_epoch}, loss {loss:.4f}, {self._left()} left", file=self.stream,
                  flush=True)

    def epoch(self, epoch: int, loss: float, held_out: float) -> None:
        """Epoch ``epoch`` (from 0) is done and saved."""
        self._done = (epoch + 1) * self.per_epoch    # a last batch skipped (BatchNorm) counts
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.n = self._done
            self._bar.set_postfix_str(f"epoch {epoch + 1}/{self.epochs}, loss {loss:.4f}, "
                                      f"held-out {held_out:.4f}")
        else:
            self._last = time.monotonic()
            print(f"{self.name}: epoch {epoch + 1}/{self.epochs}, loss {loss:.4f}, "
                  f"held-out accuracy {held_out:.4f}, {self._left()} left", file=self.stream,
                  flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def _left(self) -> str:
        elapsed = time.monotonic() - self._started
        left = self.epochs * self.per_epoch - self._done
        if left <= 0:
            return "0 s"
        return format_duration(round(elapsed / self._done * left)) if self._done else \
            "unknown time"
