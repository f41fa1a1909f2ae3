"""One Monte Carlo trial: program a converted model once, then read it at each inference time."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence

import numpy as np
import torch
from torch import nn

from mc_engine.analog.convert import convert
from mc_engine.analog.execution import NUMBA_CPU, Execution
from mc_engine.hardware.config import HardwareConfig

BATCH_SIZE = 500
#: The last (model, hardware, converted model, analog layers, execution) of this process: a
#: worker evaluating many chips of one hardware point (and layer set) converts the model once
#: and re-programs it per chip.
_CONVERTED: list[tuple[nn.Module, HardwareConfig, object, frozenset[str] | None, Execution]] = []


def _correct_counts(model: nn.Module, x: np.ndarray | torch.Tensor, y: np.ndarray,
                    batch_size: int, device: torch.device | None = None,
                    class_dim: int = 1, done: Callable[[int], None] | None = None) -> np.ndarray:
    """Correct predictions of ``model`` on (x, y), in batches: one count, or one per leading
    output dimension (a chip batch's C × images × classes: ``class_dim`` 2); ``device``: where
    the model runs (the images are moved there batch by batch unless ``x`` already is a tensor
    there). ``done(n)`` is called after each batch with the images it held (progress)."""
    correct = np.int64(0)
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size]
            xb = xb if isinstance(xb, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(xb))
            if device is not None:
                xb = xb.to(device, non_blocking=True)
            pred = model(xb).argmax(dim=class_dim).cpu().numpy()
            hits = pred == np.asarray(y[start:start + batch_size])
            correct = correct + (hits.sum() if class_dim == 1 else hits.sum(axis=-1))
            if done is not None:
                done(len(hits) if class_dim == 1 else hits.shape[-1])
    return correct


def _count_correct(model: nn.Module, x: np.ndarray | torch.Tensor, y: np.ndarray,
                   batch_size: int, device: torch.device | None = None,
                   done: Callable[[int], None] | None = None) -> int:
    """Correct predictions of ``model`` on (x, y) (:func:`_correct_counts` of one model)."""
    return int(_correct_counts(model, x, y, batch_size, device, done=done))


def _row(t: float, n_correct: int, n_samples: int, wall_s: float) -> dict:
    """One result row of a trial at read time ``t``."""
    return {"t_inference_s": t, "n_correct": n_correct, "n_samples": n_samples,
            "accuracy": n_correct / n_samples, "wall_s": wall_s}


def evaluate_ideal(model: nn.Module, x: np.ndarray, y: np.ndarray,
                   batch_size: int = BATCH_SIZE) -> dict:
    """Digital fp32 accuracy of ``model`` on (x, y): the noise-free reference of a study."""
    n_correct = _count_correct(model.eval(), x, y, batch_size)
    return {"n_correct": n_correct, "n_samples": len(y), "accuracy": n_correct / len(y)}


def evaluate_trial(model: nn.Module, hw: HardwareConfig, x: np.ndarray, y: np.ndarray,
                   times_s: Sequence[float], seed: int | Sequence[int],
                   batch_size: int = BATCH_SIZE,
                   layers: Collection[str] | None = None,
                   calibration: np.ndarray | None = None,
                   execution: Execution = NUMBA_CPU,
                   done: Callable[[int], None] | None = None) -> list[dict]:
    """Accuracy of one chip (one programming of ``model`` on ``hw``) at every inference time.

    Devices are programmed once from ``seed``; times are visited in ascending order, each with
    drift, fresh read noise and drift compensation. ``layers``: the layers on tiles (the others
    digital), None = all (see :func:`convert`). ``calibration``: the inputs that calibrate the
    ADC ranges (adc_range = 'calibrated'). ``execution``: where the analog pass runs (Numba on
    the CPU, or torch on a device: the same physics, the same random draws). The result
    depends only on the arguments (and, to float rounding, on the execution). ``done(n)``:
    called after each image batch with its number of images (a task's heartbeat).
    """
    start = time.perf_counter()
    analog = _converted(model, hw, layers, execution).program(seed, calibration)
    device = execution.torch_device if execution.torch else None
    rows = []
    for t in sorted(float(t) for t in times_s):
        analog.drift(t)
        n_correct = _count_correct(analog, x, y, batch_size, device, done)
        now = time.perf_counter()
        rows.append(_row(t, n_correct, len(y), now - start))
        start = now
    return rows


def evaluate_chips(model: nn.Module, hw: HardwareConfig, x: np.ndarray, y: np.ndarray,
                   times_s: Sequence[float], seeds: Sequence[int | Sequence[int]],
                   batch_size: int = BATCH_SIZE, layers: Collection[str] | None = None,
                   calibration: np.ndarray | None = None,
                   execution: Execution = NUMBA_CPU,
                   done: Callable[[int], None] | None = None) -> list[list[dict]]:
    """:func:`evaluate_trial` of several chips (one per seed) of one hardware point.

    On the torch execution the chips are evaluated together, in one call per image batch
    (:class:`mc_engine.analog.torch_chips.ChipBatch`: stacked weights, batched GEMMs, one
    epilogue); on the Numba execution one after the other. Either way a chip's rows are those
    of ``evaluate_trial`` with its seed, whatever the other chips of the batch (``wall_s`` is
    the batch's time shared equally)."""
    if not execution.torch or len(seeds) < 2:
        return [evaluate_trial(model, hw, x, y, times_s, seed, batch_size, layers, calibration,
                               execution, done) for seed in seeds]
    from mc_engine.analog.torch_chips import ChipBatch

    start = time.perf_counter()
    chips = _converted_chips(model, hw, layers, execution, len(seeds))
    for chip, seed in zip(chips, seeds):
        if hw.noise_management == "calibrated" and chip is not chips[0]:
            chip.adopt_input_ranges(chips[0])         # once for the batch: not chip-dependent
        chip.program(seed, calibration)
    batch = ChipBatch(chips)
    device = execution.torch_device
    rows: list[list[dict]] = [[] for _ in seeds]
    for t in sorted(float(t) for t in times_s):
        for chip in chips:
            chip.drift(t)
        counted = None if done is None else (lambda n: done(n * len(chips)))
        correct = _correct_counts(batch, x, y, batch_size, device, class_dim=2, done=counted)
        now = time.perf_counter()
        for k, n_correct in enumerate(correct.tolist()):
            rows[k].append(_row(t, n_correct, len(y), (now - start) / len(chips)))
        start = now
    return rows


#: The conversions of the last chip batch of this process (model, hardware, layers,
#: execution, [converted models]).
_CHIPS: list = []


def _converted_chips(model: nn.Module, hw: HardwareConfig, layers: Collection[str] | None,
                     execution: Execution, n: int) -> list:
    """``n`` conversions of ``model`` (reused, and grown, while the arguments stay the same)."""
    key = (None if layers is None else frozenset(layers), execution)
    if not (_CHIPS and _CHIPS[0] is model and _CHIPS[1] == hw and _CHIPS[2] == key):
        _CHIPS[:] = [model, hw, key, []]
    chips = _CHIPS[3]
    while len(chips) < n:
        chips.append(convert(model, hw, layers).use(execution))
    return chips[:n]


def _converted(model: nn.Module, hw: HardwareConfig, layers: Collection[str] | None = None,
               execution: Execution = NUMBA_CPU):
    """``convert(model, hw, layers).use(execution)``, reused while the model object, the
    hardware point, the analog layers and the execution stay the same (programming resets
    every device, compensation and noise key, so a re-programmed conversion is the same chip
    as a fresh one: tested)."""
    key = None if layers is None else frozenset(layers)
    if (_CONVERTED and _CONVERTED[0][0] is model and _CONVERTED[0][1] == hw
            and _CONVERTED[0][3] == key and _CONVERTED[0][4] == execution):
        return _CONVERTED[0][2]
    _CONVERTED.clear()                   # free the old conversion (device memory) first
    analog = convert(model, hw, layers).use(execution)
    _CONVERTED[:] = [(model, hw, analog, key, execution)]
    return analog
