"""Progress while trials run: tasks send heartbeats (images done) to the client, which counts
them as fractions of trials, so a run whose trials take minutes never goes quiet."""

from __future__ import annotations

import io
import time

from distributed import Client

from mc_engine.run import run_study
from mc_engine.run.progress import Progress
from mc_engine.run.tasks import HEARTBEAT_TOPIC
from mc_engine.study import load_study

STUDY = """
[study]
name = "beat"
seed = 3
repeats = 2
inference_times = ["0s", "1h", "1d"]

[model]
zoo = "digits_mlp"

[data]
dataset = "digits"

[hardware]
out_noise = 0.06
"""


def test_running_tasks_send_heartbeats_to_the_client(warm_cluster, tmp_path, cache_dir,
                                                     monkeypatch, capsys):
    """A real LocalCluster on loopback, heartbeats every image batch (interval 0): the
    scheduler logs, from inside each running task, the images done so far (< the task's
    total), and the client's plain progress lines show them."""
    monkeypatch.setenv("MC_ENGINE_PROGRESS_S", "0")
    study_file = tmp_path / "beat.toml"
    study_file.write_text(STUDY)
    started = time.time()
    outcome = run_study(load_study(study_file), tmp_path, scheduler=warm_cluster,
                        cache_dir=cache_dir, heartbeat_s=0.0)
    assert outcome.n_run == 2
    with Client(warm_cluster) as client:
        beats = [msg for t, msg in client.get_events(HEARTBEAT_TOPIC) if t >= started]
    n_test = 1797 - 1797 // 2          # the digits test half
    per_task = {b["task"]: b["total"] for b in beats}
    # Each trial is its own task here (2 trials: chip batches of 1): 3 times x n_test images.
    assert set(per_task.values()) == {3 * n_test}
    # 500-image batches: ceil(n_test / 500) per read time, one heartbeat after each.
    per_time = -(-n_test // 500)
    for task in per_task:
        done = sorted(b["done"] for b in beats if b["task"] == task)
        assert len(done) == 3 * per_time
        assert done[0] == 500 and done[-1] == 3 * n_test    # counted from inside the task
    err = capsys.readouterr().err
    assert "beat: 2/2 trials (100 %)" in err


def test_heartbeats_count_as_fractions_of_trials_in_the_lines():
    stream = io.StringIO()
    bar = Progress(4, 0, "s", stream=stream, interval_s=0.0)
    bar.on_event((0.0, {"task": "a", "done": 300, "total": 1200}))
    bar.on_event((0.0, {"task": "b", "done": 600, "total": 1200}))
    assert abs(bar.partial - 0.75) < 1e-12
    lines = stream.getvalue().splitlines()
    assert lines[-1].startswith("s: 0/4 trials + 0.75 running (900/2,400 images in 2 "
                                "running tasks) (19 %)")
    bar.finished("a")                    # a finished: its heartbeats stop counting
    bar.update(1)
    bar.on_event((0.0, {"task": "a", "done": 1200, "total": 1200}))   # a late one: ignored
    assert abs(bar.partial - 0.5) < 1e-12
    assert "s: 1/4 trials + 0.50 running (600/1,200 images in 1 running task)" in \
        stream.getvalue().splitlines()[-1]
    bar.on_event((0.0, {"nonsense": 1}))  # not a heartbeat: ignored
    bar.close()
    assert stream.getvalue().splitlines()[-1].startswith("s: 1/4 trials (25 %)")


def test_a_quiet_interval_prints_no_line_between_heartbeats():
    stream = io.StringIO()
    bar = Progress(2, 0, "q", stream=stream, interval_s=3600.0)
    for done in (100, 200, 300):
        bar.on_event((0.0, {"task": "t", "done": done, "total": 400}))
    assert stream.getvalue() == ""


SLOW_MODEL = """
import time
from torch import nn

class Slow(nn.Module):
    def forward(self, x):
        time.sleep(0.5)        # a batch that takes long: the timer thread beats meanwhile
        return x

def net():
    return nn.Sequential(nn.Linear(64, 10), Slow())
"""


def test_a_long_batch_still_beats(warm_cluster, tmp_path, cache_dir):
    """While one image batch runs longer than the heartbeat interval, the task's timer thread
    keeps sending (done = 0 before its first batch ends); with 0.5 s a batch and a 0.05 s
    interval about 10 such beats are sent, and one is enough to pass."""
    (tmp_path / "slow_beats.py").write_text(SLOW_MODEL)
    study_file = tmp_path / "slow.toml"
    study_file.write_text(STUDY.replace('zoo = "digits_mlp"', 'factory = "slow_beats:net"')
                          .replace("repeats = 2", "repeats = 1")
                          .replace('["0s", "1h", "1d"]', '["0s"]')
                          .replace('dataset = "digits"', 'dataset = "digits"\nlimit = 100')
                          .replace('name = "beat"', 'name = "slow"'))
    started = time.time()
    run_study(load_study(study_file), tmp_path, scheduler=warm_cluster, cache_dir=cache_dir,
              heartbeat_s=0.05)
    with Client(warm_cluster) as client:
        beats = [msg for t, msg in client.get_events(HEARTBEAT_TOPIC) if t >= started]
    assert any(b["done"] == 0 and b["total"] == 100 for b in beats)
    assert max(b["done"] for b in beats) <= 100


def test_a_notebook_gets_a_notebook_bar(monkeypatch):
    """In a Jupyter kernel (IPython's ZMQInteractiveShell) the bar is tqdm.auto's."""
    import sys
    import types

    import tqdm.auto

    class ZMQInteractiveShell:
        pass

    monkeypatch.setitem(sys.modules, "IPython",
                        types.SimpleNamespace(get_ipython=lambda: ZMQInteractiveShell()))
    made = []
    monkeypatch.setattr(tqdm.auto, "tqdm", lambda **kw: made.append(kw) or
                        types.SimpleNamespace(update=lambda n: None, close=lambda: None,
                                              set_postfix_str=lambda *a, **k: None))
    bar = Progress(3, 1, "nb", stream=io.StringIO())
    bar.update(1)
    bar.close()
    assert made == [{"total": 3, "initial": 1, "unit": "trial", "desc": "nb"}]
