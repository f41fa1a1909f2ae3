"""The execution options of a run (--backend, --device) and Dask on GPUs, on a CPU machine.

The GPU plumbing is exercised with fake GPU resources: workers started with ``--resources
GPU=1`` and a run that requires the resource (``require_gpu=True``, what a CUDA device sets)
while its trials run on the CPU.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from distributed import Client

from mc_engine.analog.cuda import cuda_batch_size, image_batch_size
from mc_engine.analog.execution import NUMBA_CPU, Execution
from mc_engine.cli import main
from mc_engine.errors import UserInputError
from mc_engine.results import ResultStore, load_results
from mc_engine.results.store import STAMP_KEY
from mc_engine.run import RunError, run_study
from mc_engine.run.gpu import local_gpus, task_execution
from mc_engine.run.tasks import inputs_on
from mc_engine.study import load_study
from tests.conftest import dask_processes
from tests.test_run import comparable, write_study
from tests.test_train import write_train

TORCH_CPU = Execution("torch", "cpu")
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


@functools.cache
def linked_out(tmp_path, cache_dir):
    """An --out folder whose .cache is the session's zoo cache (the CLI has no --cache)."""
    out = tmp_path / "out"
    out.mkdir(parents=True)
    (out / ".cache").symlink_to(cache_dir, target_is_directory=True)
    return out


@pytest.fixture(scope="module")
def fake_gpu_cluster(tmp_path_factory):
    """A `dask scheduler`, a worker with `--resources GPU=1` and one without."""
    with dask_processes(tmp_path_factory.mktemp("fakegpu"), 2, resources=["GPU=1"]) as address:
        yield address


@pytest.mark.parametrize(("args", "key", "fragment"), [
    (["--backend", "numba", "--device", "cuda"], "--backend", "runs on the CPU only"),
    (["--device", "gpu"], "--device", "allowed: cpu, cuda, cuda:N"),
    (["--backend", "jax"], "--backend", "allowed: numba, torch"),
    pytest.param(["--device", "cuda:1"], "--device", "torch sees no CUDA device", marks=NO_CUDA),
])
def test_cli_refuses_bad_executions_in_one_line(args, key, fragment, tmp_path, capsys):
    study = write_study(tmp_path)
    for command in ("run", "validate"):
        assert main([command, str(study), "--out", str(tmp_path), *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"{key}: ") and fragment in err, err
    assert not (tmp_path / "tiny").exists()   # refused before anything was written


def test_cli_train_refuses_numba_and_trains_on_the_given_device(tmp_path, capsys):
    path = write_train(tmp_path, "dev", epochs=1, noise="")
    assert main(["train", str(path), "--backend", "numba"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("--backend: training runs on torch") and err.count("\n") == 1, err
    if not torch.cuda.is_available():
        assert main(["train", str(path), "--device", "cuda"]) == 2
        assert "--device: device 'cuda': torch sees no CUDA" in capsys.readouterr().err
    assert main(["train", str(path), "--out", str(tmp_path / "ck"), "--backend", "torch",
                 "--device", "cpu"]) == 0
    assert (tmp_path / "ck" / "dev.pt").is_file()


def test_help_documents_the_execution_options(capsys):
    for command in ("run", "validate", "train"):
        assert main([command, "--help"]) == 0
        text = capsys.readouterr().out
        assert "--device {cpu,cuda,cuda:N}" in text and "--backend {numba,torch}" in text


def test_validate_names_the_execution(tmp_path, cache_dir, capsys):
    out = linked_out(tmp_path, cache_dir)
    assert main(["validate", str(write_study(tmp_path)), "--out", str(out), "--backend",
                 "torch"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("torch on cpu")        # the check, then the cost estimate
    assert lines[-1].startswith("estimate: ") and "(torch on cpu)" in lines[-1]


def test_rows_record_the_execution_and_a_resume_keeps_to_it(warm_cluster, tmp_path, cache_dir,
                                                            capsys):
    study = load_study(write_study(tmp_path))
    out = linked_out(tmp_path, cache_dir)
    first = run_study(study, out, scheduler=warm_cluster, progress=False)
    df = load_results(first.results_dir)
    assert set(df["backend"]) == {"numba"} and set(df["compute_device"]) == {"cpu"}
    assert "backend" not in df.attrs["device_params"]   # fixed columns, not device parameters

    # Another backend (or device type) on these results: refused by name, nothing written.
    parts = ResultStore(first.results_dir).parts()
    with pytest.raises(UserInputError, match=r"^--backend: .* computed with --backend numba "
                                             r"--device cpu, this run is --backend torch "
                                             r"--device cpu: .* --fresh"):
        run_study(study, out, scheduler=warm_cluster, progress=False, execution=TORCH_CPU)
    assert main(["run", str(study.source), "--out", str(out), "--scheduler", warm_cluster,
                 "--backend", "torch"]) == 2
    assert "run with --backend numba --device cpu to resume them" in capsys.readouterr().err
    assert ResultStore(first.results_dir).parts() == parts

    # Part files written before the execution columns: Numba on the CPU, resumable as such.
    for part in parts:
        table = pq.read_table(part)
        table = table.drop_columns(["backend", "compute_device"])
        pq.write_table(table.replace_schema_metadata(
            {STAMP_KEY: pq.read_schema(part).metadata[STAMP_KEY]}), part)
    old = load_results(first.results_dir)
    assert set(old["backend"]) == {"numba"} and set(old["compute_device"]) == {"cpu"}
    pd.testing.assert_frame_equal(old, df)
    again = run_study(study, out, scheduler=warm_cluster, progress=False)
    assert (again.n_run, again.n_skipped) == (0, 4)
    with pytest.raises(UserInputError, match=r"^--backend: "):
        run_study(study, out, scheduler=warm_cluster, progress=False, execution=TORCH_CPU)


def _executed(address: str) -> dict[str, tuple[float, int]]:
    """Per worker: its GPU resource and how many tasks it has run."""
    with Client(address, timeout="20s") as client:
        counts = client.run(lambda dask_worker: dask_worker.state.executed_count)
        info = client.scheduler_info(n_workers=-1)["workers"]
        return {a: (info[a]["resources"].get("GPU", 0), counts[a]) for a in counts}


@pytest.mark.parametrize("execution", [NUMBA_CPU,
                                       TORCH_CPU],
                         ids=str)
def test_gpu_tasks_run_only_on_workers_with_the_gpu_resource(execution, fake_gpu_cluster,
                                                             warm_cluster, tmp_path, cache_dir):
    """A run that requires the GPU resource, on a cluster of a worker with GPU=1 and one
    without: all 8 trial tasks run on the first (without the restriction both idle workers
    would share them), and the rows are those of an unrestricted run."""
    study = load_study(write_study(tmp_path, repeats=4))
    before = _executed(fake_gpu_cluster)
    gpu = run_study(study, tmp_path / "gpu", scheduler=fake_gpu_cluster, progress=False,
                    cache_dir=cache_dir, execution=execution, require_gpu=True)
    assert gpu.n_run == 8
    ran = {a: n - before[a][1] for a, n in
           ((a, count) for a, (_, count) in _executed(fake_gpu_cluster).items())}
    on_gpu = [ran[a] for a, (units, _) in before.items() if units >= 1]
    off_gpu = [ran[a] for a, (units, _) in before.items() if units < 1]
    assert on_gpu[0] >= 8 and off_gpu[0] <= 1, ran   # 8 trial tasks; the ideal may go anywhere
    plain = run_study(study, tmp_path / "plain", scheduler=warm_cluster, progress=False,
                      cache_dir=cache_dir, execution=execution)
    pd.testing.assert_frame_equal(comparable(load_results(gpu.results_dir)),
                                  comparable(load_results(plain.results_dir)))


def test_a_cluster_without_gpu_workers_is_refused_at_once(warm_cluster, tmp_path, cache_dir,
                                                          capsys):
    study = load_study(write_study(tmp_path))
    with pytest.raises(RunError, match="none of the 2 workers .* advertises a GPU resource"):
        run_study(study, tmp_path, scheduler=warm_cluster, progress=False, cache_dir=cache_dir,
                  require_gpu=True)
    # --device cuda with --scheduler: the client need not have a GPU, the workers must.
    out = linked_out(tmp_path, cache_dir)
    assert main(["run", str(study.source), "--out", str(out), "--scheduler", warm_cluster,
                 "--device", "cuda"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-2].startswith("error: none of the 2 workers") and \
        "--resources GPU=1" in err[-1], err
    assert not ResultStore(out / "tiny").parts()


def test_a_local_gpu_cluster_gives_each_worker_its_own_gpu():
    """The cluster without dask-cuda (not installed here): one nanny per GPU entry, each with
    that CUDA_VISIBLE_DEVICES, deterministic cuBLAS and the GPU resource (one worker: which
    entry each worker gets is the next test)."""
    from mc_engine.run.cluster import open_client

    with open_client(gpus=["5"]) as client:
        env = client.run(lambda: (os.environ.get("CUDA_VISIBLE_DEVICES"),
                                  os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
                                  os.environ.get("OMP_NUM_THREADS")))
        info = client.scheduler_info(n_workers=-1)["workers"]
    assert list(env.values()) == [("5", ":4096:8", "1")]
    assert all(w["resources"] == {"GPU": 1} and w["nthreads"] == 1 for w in info.values())


def test_dask_cuda_starts_the_gpu_workers_where_installed(monkeypatch):
    """With dask-cuda importable (a stand-in here), LocalCUDACluster gets the GPUs, one worker
    each, the GPU resource, and the worker environment before the spawn (it replaces a
    worker's ``env`` with its own CUDA_VISIBLE_DEVICES)."""
    import sys
    import types

    import dask

    from mc_engine.run.gpu import gpu_cluster

    calls = []

    class LocalCUDACluster:
        def __init__(self, **kwargs):
            calls.append((kwargs, dask.config.get("distributed.nanny.pre-spawn-environ")))

    monkeypatch.setitem(sys.modules, "dask_cuda", types.SimpleNamespace(
        LocalCUDACluster=LocalCUDACluster))
    assert isinstance(gpu_cluster(["2", "3"], {"OMP_NUM_THREADS": "1"}, 2**30),
                      LocalCUDACluster)
    (kwargs, environ), = calls
    assert kwargs["CUDA_VISIBLE_DEVICES"] == ["2", "3"] and kwargs["n_workers"] == 2
    assert kwargs["threads_per_worker"] == 1 and kwargs["resources"] == {"GPU": 1}
    assert environ == {"OMP_NUM_THREADS": "1", "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}


def test_local_workers_take_the_gpus_in_turn(monkeypatch):
    monkeypatch.setattr(Execution, "check_available", lambda self: None)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6,GPU-9f2c")
    cuda, one = Execution.parse(None, "cuda"), Execution.parse(None, "cuda:1")
    assert local_gpus(cuda) == ["4", "6", "GPU-9f2c"]
    assert local_gpus(cuda, workers=5) == ["4", "6", "GPU-9f2c", "4", "6"]
    assert local_gpus(one) == ["6"] and local_gpus(one, workers=2) == ["6", "6"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert local_gpus(cuda) == ["0", "1", "2"]
    # Local workers see their GPU alone: 'cuda' there; an existing cluster's get it as given.
    assert task_execution(one, local=True) == Execution("torch", "cuda")
    assert task_execution(one, local=False) == one
    assert task_execution(TORCH_CPU, local=True) == TORCH_CPU


def test_image_batches_follow_the_device_memory():
    """BATCH_SIZE on the CPU; on a GPU the multiple of it that fills a quarter of its memory at
    4 KiB per input value of an image, at most 20x and no more than the test set needs."""
    assert image_batch_size(TORCH_CPU, 3072, 10_000) == 500
    gpu_80 = 80 * 2**30
    assert cuda_batch_size(gpu_80, 3 * 32 * 32, 10_000) == 1500    # CIFAR: 3 x 500
    assert cuda_batch_size(gpu_80, 64, 10_000) == 10_000           # digits: capped at 20 x
    assert cuda_batch_size(gpu_80, 64, 899) == 1000                # the whole test set
    assert cuda_batch_size(8 * 2**30, 3 * 32 * 32, 10_000) == 500  # a small GPU: the floor


def test_the_test_set_is_put_on_the_device_once_per_worker():
    x, other = np.arange(12, dtype=np.float32).reshape(3, 4), np.ones((2, 4), np.float32)
    assert inputs_on(x, NUMBA_CPU) is x
    first = inputs_on(x, TORCH_CPU)
    assert isinstance(first, torch.Tensor) and torch.equal(first, torch.from_numpy(x))
    assert inputs_on(x, TORCH_CPU) is first             # kept for the same scattered array
    assert torch.equal(inputs_on(other, TORCH_CPU), torch.from_numpy(other))
    assert inputs_on(x, TORCH_CPU) is not first         # one array at a time is kept


def test_torch_rows_do_not_depend_on_workers_or_chip_batches(tmp_path, cache_dir, monkeypatch):
    """The torch backend on the CPU: rows bitwise equal across worker counts and chip batch
    sizes (only wall_s differs), recorded as torch on cpu."""
    from mc_engine.run import runner

    study = load_study(write_study(tmp_path))
    two = run_study(study, tmp_path / "two", workers=2, progress=False, cache_dir=cache_dir,
                    execution=TORCH_CPU)
    one = run_study(study, tmp_path / "one", workers=1, progress=False, cache_dir=cache_dir,
                    execution=TORCH_CPU)
    monkeypatch.setattr(runner, "chip_batch_size", lambda n_trials, window: 3)
    batched = run_study(study, tmp_path / "batched", workers=2, progress=False,
                        cache_dir=cache_dir, execution=TORCH_CPU)
    rows = load_results(two.results_dir)
    assert set(rows["backend"]) == {"torch"} and set(rows["compute_device"]) == {"cpu"}
    assert len(rows) == 8 and rows["accuracy"].between(0, 1).all()
    for other in (one, batched):
        pd.testing.assert_frame_equal(comparable(load_results(other.results_dir)),
                                      comparable(rows))
    # The Numba run of the same study: on the CPU the two executions draw the same normals and
    # sum the same GEMMs, so the accuracies are not only statistically but exactly equal.
    numba = load_results(run_study(study, tmp_path / "numba", workers=2, progress=False,
                                   cache_dir=cache_dir).results_dir)
    key = ["point_id", "repeat", "t_inference_s"]
    assert numba.sort_values(key)["accuracy"].tolist() == rows.sort_values(key)["accuracy"].tolist()
