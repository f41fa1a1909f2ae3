"""A stop signal is never lost: SIGTERM (and Ctrl-C) during the collection of results only sets
a flag the loop checks, so the run always ends with 143 (130) and the rows received so far,
even when the signal lands in a finalizer or in the final write."""

from __future__ import annotations

import signal
import threading

import distributed
import pytest

from mc_engine.cli import main
from mc_engine.results import ResultStore, load_results
from mc_engine.run import run_study
from mc_engine.run.progress import Progress
from mc_engine.signals import STOP, Terminated, stop_signals
from mc_engine.study import load_study
from tests.test_run_recovery import write

N_TRIALS = 2 * 10   # two hardware points x 10 repeats: far more than are collected below


def trials_on_disk(folder) -> set[tuple[str, int]]:
    return ResultStore(folder).done_trials((0.0, 86400.0))


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_landing_in_a_finalizer_still_stops_the_run(tmp_path, cache_dir,
                                                             warm_cluster, monkeypatch, signum,
                                                             status):
    """The signal is raised inside ``Future.__del__`` on the main thread while futures are
    being collected: an exception raised there by the handler is printed as "Exception
    ignored" and lost, and the run went on to exit 0 (seen in 2 of ~23 kill tests). Now the run
    stops with the signal's status, keeping the rows received, and a resume completes it."""
    original = distributed.Future.__del__
    calls = []

    def finalizer(self):
        original(self)
        if threading.current_thread() is threading.main_thread() and \
                STOP._checking:   # collecting results
            calls.append(1)
            if len(calls) == 3:
                signal.raise_signal(signum)

    monkeypatch.setattr(distributed.Future, "__del__", finalizer)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".cache").symlink_to(cache_dir, target_is_directory=True)
    path = write(tmp_path, "stop", repeats=10)
    assert main(["run", str(path), "--out", str(out), "--scheduler", warm_cluster]) == status
    assert len(calls) >= 3
    written = trials_on_disk(out / "stop")
    assert 0 < len(written) < N_TRIALS
    monkeypatch.setattr(distributed.Future, "__del__", original)
    assert main(["run", str(path), "--out", str(out), "--scheduler", warm_cluster]) == 0
    assert len(trials_on_disk(out / "stop")) == N_TRIALS
    assert len(load_results(out / "stop")) == 2 * N_TRIALS   # each trial once, two times each


def test_sigterm_while_collecting_stops_after_writing_every_result_received(
        tmp_path, cache_dir, warm_cluster, monkeypatch):
    """Through the Python API: SIGTERM after the second trial received, and again inside the
    final write. The run raises Terminated once the write is complete: every trial received
    is on disk (with batch_trials large, the final flush is the only write)."""
    received = []
    update = Progress.update

    def counting(self, n=1):
        update(self, n)
        received.append(n)
        if len(received) == 2:
            signal.raise_signal(signal.SIGTERM)

    write_trials = ResultStore.write_trials

    def interrupted_write(self, *args, **kwargs):
        signal.raise_signal(signal.SIGTERM)   # lands in the middle of the flush
        return write_trials(self, *args, **kwargs)

    monkeypatch.setattr(Progress, "update", counting)
    monkeypatch.setattr(ResultStore, "write_trials", interrupted_write)
    study = load_study(write(tmp_path, "api", repeats=10))
    with stop_signals(), pytest.raises(Terminated):
        run_study(study, tmp_path, scheduler=warm_cluster, batch_trials=10_000,
                  progress=False, cache_dir=cache_dir)
    assert not STOP.requested   # cleared on leaving stop_signals
    assert len(ResultStore(tmp_path / "api").parts()) == 1
    assert len(trials_on_disk(tmp_path / "api")) == sum(received) == 2


def test_outside_the_collection_a_signal_raises_at_once():
    with stop_signals(), pytest.raises(Terminated):
        signal.raise_signal(signal.SIGTERM)
    with stop_signals(), pytest.raises(KeyboardInterrupt) as stop:
        signal.raise_signal(signal.SIGINT)
    assert not isinstance(stop.value, Terminated)
    with stop_signals(), STOP.checked():
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGINT)
        with pytest.raises(Terminated):   # SIGTERM (exit 143) wins over Ctrl-C
            STOP.check()


def test_a_connection_lost_after_sigterm_is_the_stop_not_an_error(tmp_path, cache_dir,
                                                                   warm_cluster, monkeypatch):
    """A batch job's time limit signals every process of the job at once: the scheduler may
    stop before the client has collected, and the next result fails with CommClosedError.
    With a SIGTERM received, that is the stop: the run writes what it received and raises
    Terminated (exit 143), not an error (exit 1, seen in the SLURM recipe test)."""
    from distributed.comm import CommClosedError

    from mc_engine.run import runner

    windowed = runner.windowed
    received = []

    def scheduler_gone_at_sigterm(*args, **kwargs):
        for n, (job, result) in enumerate(windowed(*args, **kwargs)):
            if n == 3:   # the ideal accuracy and two chip batches received
                signal.raise_signal(signal.SIGTERM)
                raise CommClosedError("in <TCP (closed) ConnectionPool.gather>: Stream is closed")
            received.append(0 if isinstance(job, runner._Ideal) else len(job))
            yield job, result

    monkeypatch.setattr(runner, "windowed", scheduler_gone_at_sigterm)
    study = load_study(write(tmp_path, "lost", repeats=10))
    with stop_signals(), pytest.raises(Terminated):
        run_study(study, tmp_path, scheduler=warm_cluster, batch_trials=10_000,
                  progress=False, cache_dir=cache_dir)
    assert len(trials_on_disk(tmp_path / "lost")) == sum(received) > 0
    # Without a SIGTERM, a lost connection is an error.
    monkeypatch.setattr(runner, "windowed", lambda *a, **k: (_ for _ in ()).throw(
        CommClosedError("Stream is closed")))
    with stop_signals(), pytest.raises(CommClosedError):
        run_study(study, tmp_path, scheduler=warm_cluster, progress=False, cache_dir=cache_dir)
