"""Runs that survive what goes wrong around them: damaged result files, a Ctrl-C during
start-up, a scheduler found through its file, and a bounded number of tasks in flight."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mc_engine import cli
from mc_engine.cli import main
from mc_engine.results import ResultStore, load_results
from mc_engine.run import cluster, run_study
from mc_engine.run.window import windowed
from mc_engine.study import load_study

STUDY = """
[study]
name = "{name}"
seed = 4
repeats = {repeats}
inference_times = ["0s", "1d"]

[model]
zoo = "digits_mlp"

[data]
dataset = "digits"
limit = 50

[sweep]
adc_bits = [6, 8]
"""


def write(folder: Path, name: str = "rec", repeats: int = 3) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(STUDY.format(name=name, repeats=repeats))
    return path


def test_a_truncated_part_is_set_aside_and_its_trials_run_again(tmp_path, cache_dir,
                                                                warm_cluster, capsys):
    study = load_study(write(tmp_path))
    first = run_study(study, tmp_path, scheduler=warm_cluster, batch_trials=1, progress=False,
                      cache_dir=cache_dir)
    reference = load_results(first.results_dir).drop(columns="wall_s")
    parts = ResultStore(first.results_dir).parts()
    assert len(parts) == 6  # one trial per part
    damaged = parts[2]
    intact = {p: p.read_bytes() for p in parts if p != damaged}
    damaged.write_bytes(damaged.read_bytes()[:-100])  # a copy cut short
    (first.results_dir / "ideal.parquet").write_bytes(b"garbage")

    assert main(["summary", str(first.results_dir)]) == 0  # the rest is still summarised
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("warning: ") for line in err), err
    assert str(damaged) in err[0] and "ideal.parquet" in err[1]

    assert main(["run", str(write(tmp_path)), "--out", str(tmp_path), "--scheduler",
                 warm_cluster]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2, err
    assert f"set aside as {damaged.name}.corrupt" in warnings[0]
    assert "set aside as ideal.parquet.corrupt" in warnings[1]
    assert (damaged.parent / f"{damaged.name}.corrupt").is_file()
    for path, data in intact.items():  # nothing intact deleted or rewritten
        assert path.read_bytes() == data
    again = load_results(first.results_dir).drop(columns="wall_s")
    assert again.equals(reference)  # the damaged trial was run again, bit for bit
    assert pq.read_table(first.results_dir / "ideal.parquet").num_rows == 1


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_cluster_start_stops_the_run(monkeypatch, signum):
    """Ctrl-C or SIGTERM while the local cluster starts is held until start-up is over, then
    stops the run as it would later (it used to be swallowed and the run went on)."""
    started = threading.Event()

    class SignalledCluster(cluster.LocalCluster):
        def __init__(self, *args, **kwargs):
            os.kill(os.getpid(), signum)
            started.set()
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(cluster, "LocalCluster", SignalledCluster)
    with cli._sigterm_as_interrupt(), pytest.raises(KeyboardInterrupt) as stop, \
            cluster.open_client(1):
        pytest.fail("the run went on after the signal")
    assert started.is_set()
    assert isinstance(stop.value, cli.Terminated) == (signum == signal.SIGTERM)


def test_a_run_through_a_scheduler_file(tmp_path, cache_dir, warm_cluster):
    scheduler_file = tmp_path / "scheduler.json"
    scheduler_file.write_text(json.dumps({"type": "Scheduler", "address": warm_cluster}))
    out = tmp_path / "out"
    out.mkdir()
    (out / ".cache").symlink_to(cache_dir, target_is_directory=True)
    assert main(["run", str(write(tmp_path, "sf", 1)), "--out", str(out), "--scheduler-file",
                 str(scheduler_file)]) == 0
    assert len(load_results(out / "sf")) == 2 * 2


def test_a_refused_scheduler_fails_at_once(tmp_path, capsys):
    started = time.monotonic()
    assert main(["run", str(write(tmp_path)), "--out", str(tmp_path / "out"), "--scheduler",
                 f"tcp://127.0.0.1:{_closed_port()}"]) == 1
    assert time.monotonic() - started < 5
    assert "Connection refused" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _closed_port() -> int:
    from tests.conftest import free_port

    return free_port()


def test_windowed_submission_keeps_at_most_the_window_in_flight(warm_cluster):
    """The client never holds more than the window of futures, whatever the number of jobs,
    each job is yielded exactly once, and the window follows later changes."""
    from distributed import Client

    in_flight, most = set(), [0]
    with Client(warm_cluster) as client:
        def submit(job: int):
            future = client.submit(lambda j: j * j, job, pure=False)
            in_flight.add(job)
            most[0] = max(most[0], len(in_flight))
            return future

        seen = []
        for job, result in windowed(submit, range(200), lambda: 5):
            assert result == job * job
            in_flight.discard(job)
            seen.append(job)
    assert sorted(seen) == list(range(200))
    assert most[0] == 5 + 1  # the window, plus the finished job being handed over
