"""Stop signals that are never lost: SIGTERM and Ctrl-C as a flag the work loops check, and
short sections during which SIGINT and SIGTERM wait.

A batch system's time limit sends SIGTERM. Raising an exception from the signal handler stops
Python wherever the signal lands, which may be inside a finalizer (``Future.__del__``), where the
exception is printed as "Exception ignored" and lost, or inside the final write of the rows
received, which it would cut short. Instead the handler records the signal in :data:`STOP` and
raises only while no loop is checking it (:meth:`StopFlag.checked`): the collection loop of a run
checks the flag between results and stops in order, and the command line checks it once more when
a run returns, so a SIGTERM always ends with exit 143 (Ctrl-C: 130) and what was written.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """SIGTERM: stop like Ctrl-C (keeping what was received); the CLI exits with 143."""


class StopFlag:
    """A stop asked for by a signal (SIGTERM or SIGINT), set by the handler and checked by a
    loop."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._checking = 0
        self._signum: int | None = None

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def request(self, signum: int = signal.SIGTERM) -> None:
        """Called by the signal handler: raises at once unless a loop checks."""
        if self._signum != signal.SIGTERM:   # SIGTERM (exit 143) wins over Ctrl-C
            self._signum = signum
        self._event.set()
        if not self._checking:
            self.check()

    def clear(self) -> None:
        self._event.clear()
        self._signum = None

    def wait(self, timeout_s: float) -> bool:
        """Sleep up to ``timeout_s``, less when a stop is asked for; whether it was."""
        return self._event.wait(timeout_s)

    def check(self) -> None:
        """Raise Terminated (SIGTERM) or KeyboardInterrupt (SIGINT) if a stop was asked for."""
        if self._event.is_set():
            raise Terminated if self._signum == signal.SIGTERM else KeyboardInterrupt

    @contextmanager
    def checked(self) -> Iterator[None]:
        """The ``with`` block checks the flag itself (``check``, ``wait``): a signal arriving
        inside it only sets the flag."""
        self._checking += 1
        try:
            yield
        finally:
            self._checking -= 1


#: The process's stop flag (signals are delivered to the main thread, one process-wide flag).
STOP = StopFlag()


@contextmanager
def stop_signals() -> Iterator[None]:
    """Treat SIGTERM (a batch system's time limit, ``kill``) like Ctrl-C, and both through
    :data:`STOP`: stop cleanly, keeping what was received. Outside the main thread (where
    handlers cannot be set) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    STOP.clear()

    def handler(signum: int, frame: object) -> None:
        STOP.request(signum)

    previous = {signum: signal.signal(signum, handler)
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
        STOP.clear()


@contextmanager
def signals_deferred() -> Iterator[list[int]]:
    """Hold back SIGINT and SIGTERM for the ``with`` block; yields the list of those that came
    meanwhile, for the caller to raise again (``signal.raise_signal``) once the block is over:
    a section that must not be cut in the middle (a cluster's start-up, a checkpoint written
    beside its sidecar). Outside the main thread nothing is held back."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {signum: signal.signal(signum, lambda n, frame: received.append(n))
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
