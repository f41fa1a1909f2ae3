"""Shared fixtures: reference data from independent simulators, small torch models."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mc_engine.run.processes import dask_processes, free_port  # noqa: F401 (for the tests)

DATA = Path(__file__).parent / "data"
AIHWKIT = DATA / "aihwkit"


@pytest.fixture(scope="session")
def tile_exact() -> dict[str, np.ndarray]:
    with np.load(AIHWKIT / "tile_exact.npz") as d:
        return dict(d)


@pytest.fixture(scope="session")
def tile_noise() -> dict[str, np.ndarray]:
    with np.load(AIHWKIT / "tile_noise_stats.npz") as d:
        return dict(d)


def linear_with(weight: np.ndarray, bias: np.ndarray | None = None) -> torch.nn.Linear:
    """An nn.Linear holding exactly ``weight`` (out × in) and ``bias``."""
    layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(np.asarray(weight, np.float32)))
        if bias is not None:
            layer.bias.copy_(torch.from_numpy(np.asarray(bias, np.float32)))
    return layer


def std_standard_error(samples: np.ndarray, axis: int = 0) -> np.ndarray:
    """Standard error of the sample std, sigma*sqrt((kurtosis - 1)/(4n)) (delta method).

    Quantised outputs are far from normal (a few ADC levels), so the normal-theory sigma/sqrt(2n)
    can understate the error badly (heavy-tailed lattices); the kurtosis term covers that. The
    kurtosis is floored at the normal value 3: a two-level lattice at p = 1/2 has kurtosis 1 and a
    deceptively tiny delta-method error that ignores rare third levels.
    """
    n = samples.shape[axis]
    mu = samples.mean(axis=axis, keepdims=True)
    m2 = ((samples - mu) ** 2).mean(axis=axis)
    m4 = ((samples - mu) ** 4).mean(axis=axis)
    safe = np.where(m2 > 0, m2, 1.0)
    kurt = np.where(m2 > 0, m4 / safe**2, 3.0)
    return np.sqrt(m2) * np.sqrt(np.maximum(kurt, 3.0) - 1.0) / np.sqrt(4 * n)


BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One zoo cache for every run of the session (the digits model is trained once)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def warm_cluster():
    """A LocalCluster kept for the session, used through its address like any remote scheduler
    (the --scheduler path), so that the resume tests do not each pay a cluster start."""
    from distributed import LocalCluster

    from mc_engine.run import WORKER_ENV

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0", env=WORKER_ENV) as cluster:
        yield cluster.scheduler_address
