"""The functions Dask runs on workers: one trial, and the ideal (digital) accuracy.

They take the scattered model and test set (shipped to each worker once) plus a few scalars, and
return plain dicts, so a task is cheap to send, retry and deduplicate.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mc_engine.hardware import HardwareConfig


def _one_thread() -> None:
    """Workers are single-threaded processes: parallelism comes from running many of them."""
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def run_trial(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, hardware: HardwareConfig,
              times_s: Sequence[float], seed: int) -> list[dict]:
    """``evaluate_trial`` for one (hardware point, repeat): one dict per inference time."""
    from mc_engine.analog import evaluate_trial

    _one_thread()
    return evaluate_trial(model, hardware, x, y, times_s, seed)


def run_ideal(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> dict:
    """The model's digital, noise-free accuracy on the same test set."""
    from mc_engine.analog import evaluate_ideal

    _one_thread()
    return evaluate_ideal(model, x, y)
