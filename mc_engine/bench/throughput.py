"""Monte Carlo throughput through the product path: trials, devices, workers and memory.

Every figure is a ratio to a reference measured in the same run (a clean torch forward of the
same model on the same data, one worker against two) or a rate (devices per second) whose
absolute value is printed with the machine it came from:

* ``trial``: the digits CNN split into 64-row tiles, cost of one (trial, read time) through
  ``mc-engine run --workers 1`` (marginal: two studies of different repeat counts, so start-up,
  model loading and the cluster are subtracted out) / the clean forward of the same 899 images.
* ``devices``: PCM programming (with the drift-compensation reference) and drift + read noise +
  compensation at one time, devices per second, on a whole converted model, warm.
* ``workers``: wall time of one study on 1 and on 2 local workers (speed-up).
* ``memory``: peak RSS of the ``mc-engine run`` client process on a tiny study of 2 000 and
  10 000 trials (flat is the goal), and of a worker process evaluating one ResNet trial.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch

from mc_engine.analog import convert
from mc_engine.bench.forward import _best_of
from mc_engine.hardware import HardwareConfig

BIN = Path(sys.executable).parent
TIMES = '["0s", "1h", "1d", "1y"]'


def _study(name: str, zoo: str, repeats: int, hardware: str = "", limit: int | None = None,
           times: str = TIMES) -> str:
    data = f"limit = {limit}\n" if limit else ""
    return textwrap.dedent(f"""\
        [study]
        name = "{name}"
        seed = 1
        repeats = {repeats}
        inference_times = {times}
        [model]
        zoo = "{zoo}"
        [data]
        dataset = "digits"
        """) + data + "[hardware]\n" + hardware


def _run(study_text: str, folder: Path, workers: int | str, sample_rss: bool = False
         ) -> tuple[float, float]:
    """Run a study through the CLI on ``workers`` local workers or at the scheduler address
    ``workers``; (wall seconds, peak RSS of the client in MiB or nan)."""
    import psutil

    path = folder / f"{abs(hash(study_text))}.toml"
    path.write_text(study_text)
    start = time.perf_counter()
    where = ["--scheduler", workers] if isinstance(workers, str) else ["--workers", str(workers)]
    proc = subprocess.Popen([BIN / "mc-engine", "run", str(path), "--out", str(folder / "out"),
                             *where], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    peak = 0
    if sample_rss:
        client = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                peak = max(peak, client.memory_info().rss)
            except psutil.Error:
                break
            time.sleep(0.05)
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"mc-engine run failed ({proc.returncode}): {err.strip()[-500:]}")
    return time.perf_counter() - start, peak / 2**20 if sample_rss else float("nan")


def trial_cost(folder: Path, repeats: tuple[int, int] = (4, 64)) -> dict:
    """Marginal wall time of one (trial, read time) of the digits CNN on 64-row tiles through
    ``mc-engine run --workers 1``, against its clean forward of the same 899 images."""
    from mc_engine.data.loader import load_dataset
    from mc_engine.zoo.loader import load_model

    hw = "max_input_size = 64\nmax_output_size = 64\n"
    _run(_study("trial-warm-up", "digits_cnn", 1, hw), folder, 1)   # trains the zoo model
    walls = [_run(_study(f"trial-{r}", "digits_cnn", r, hw), folder, 1)[0] for r in repeats]
    n_times = len(json.loads(TIMES))
    per = (walls[1] - walls[0]) / ((repeats[1] - repeats[0]) * n_times)
    torch.set_num_threads(1)
    model = load_model({"zoo": "digits_cnn"}, folder, None, folder / "out" / ".cache").eval()
    x = torch.from_numpy(load_dataset({"dataset": "digits"}, folder, None).x)
    with torch.no_grad():
        clean = _best_of(lambda: model(x), 20)
    return {"workload": "digits CNN, 64-row tiles, 899 images, per (trial, time), "
                        "mc-engine run --workers 1",
            "seconds": per, "reference_s": clean, "ratio": per / clean, "goal": 2.0}


def device_rates(model_name: str = "resnet18") -> dict:
    """PCM programming and drift devices/s on a whole converted model (warm, one thread)."""
    from mc_engine.zoo import build

    torch.set_num_threads(1)
    model = build(model_name).eval()
    analog = convert(model, HardwareConfig())
    devices = sum(tile.mapping.targets().size for layer in analog.analog_layers()
                  for matrix in layer.matrices for row in matrix.tiles for tile in row)
    analog.program(0)
    analog.drift(3600.0)
    program = _best_of(lambda: analog.program(1), 3)
    drift = _best_of(lambda: analog.drift(86400.0), 3)
    return {"model": model_name, "devices": devices,
            "program_devices_per_s": devices / program, "drift_devices_per_s": devices / drift,
            "goal_devices_per_s": 50e6}


def worker_scaling(folder: Path, repeats: tuple[int, int] = (8, 168)) -> dict:
    """Marginal wall time of the same trials on a cluster of one and of two `dask worker`
    processes already up (`mc-engine run --scheduler`): each cluster runs the study at two
    repeat counts (best of two runs each), so the run's start-up cancels and only the trials'
    throughput is compared."""
    from mc_engine.run.processes import dask_processes

    hw = "max_input_size = 64\nmax_output_size = 64\n"
    marginal = {}
    for workers in (1, 2):
        with dask_processes(folder, workers) as address:
            _run(_study(f"scale-warm-{workers}", "digits_cnn", 2, hw), folder, address)
            walls = [min(_run(_study(f"scale-{workers}-{r}-{k}", "digits_cnn", r, hw), folder,
                              address)[0] for k in range(2)) for r in repeats]
        marginal[workers] = walls[1] - walls[0]
    n = repeats[1] - repeats[0]
    return {"workload": f"digits CNN, {n} trials x 4 times (marginal, dask workers up)",
            "one_worker_s": marginal[1], "two_workers_s": marginal[2],
            "speedup": marginal[1] / marginal[2], "goal": 1.8}


def client_memory(folder: Path, trials: tuple[int, ...] = (2000, 10000)) -> dict:
    """Peak RSS of the `mc-engine run` client on a tiny study of each number of trials."""
    peaks = {}
    for n in trials:
        text = _study(f"memory-{n}", "digits_mlp", n, limit=20, times='["1h"]')
        peaks[n] = _run(text, folder, 2, sample_rss=True)[1]
    return {"workload": "digits MLP, 20 images, 1 time, 2 workers",
            "client_peak_mib": {str(n): peaks[n] for n in trials},
            "growth_kib_per_trial": (peaks[trials[-1]] - peaks[trials[0]]) * 1024
            / (trials[-1] - trials[0])}


_WORKER = """
import resource, sys, numpy as np, torch
from mc_engine.run.tasks import portable_model, run_trial
from mc_engine.hardware import HardwareConfig
from mc_engine.zoo import build
blob = portable_model(build(sys.argv[1]).eval(), '.')
x = np.random.default_rng(0).standard_normal((100, 3, 32, 32), dtype=np.float32)
y = np.zeros(100, np.int64)
run_trial(blob, x, y, HardwareConfig(), [3600.0, 86400.0], 0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def worker_memory(model_name: str = "resnet18") -> dict:
    """Peak RSS of a fresh process running one trial (two read times, 100 CIFAR-shaped
    images) of a zoo model the way a Dask worker does."""
    out = subprocess.run([sys.executable, "-c", _WORKER, model_name], capture_output=True,
                         text=True, check=True)
    return {"model": model_name, "worker_peak_mib": float(out.stdout.split()[-1])}


def run_all() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        return {"trial": trial_cost(folder), "devices": device_rates(),
                "workers": worker_scaling(folder), "memory": client_memory(folder),
                "worker_memory": worker_memory()}
