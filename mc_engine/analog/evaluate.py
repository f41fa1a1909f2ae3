"""One Monte Carlo trial: program a converted model once, then read it at each inference time.

Every row holds the accuracy and the loss (mean cross-entropy, natural log) over the test set;
for a language model (targets N × T: the next token at every position) they are over all
predicted tokens, and the row adds the perplexity exp(loss) (the README's "Metrics")."""

from __future__ import annotations

import math
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


def _scores(model: nn.Module, x: np.ndarray | torch.Tensor, y: np.ndarray, batch_size: int,
            device: torch.device | None = None, done: Callable[[int], None] | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """Correct predictions and summed cross-entropy of ``model`` on (x, y), in batches.

    The class scores are the output's last axis; ``y`` holds one class per prediction (N, or
    N × T for a language model's next tokens). An output with one more leading axis than that
    (a chip batch: C × N × ... × classes) gives one count and one loss per chip. ``device``:
    where the model runs (the inputs are moved there batch by batch unless ``x`` already is a
    tensor there). The losses (natural log, float64) are summed exactly (``math.fsum``), so they
    depend neither on the batch size nor on how chips are batched. ``done(n)`` is called after
    each batch with the images it held (progress).
    """
    correct = np.int64(0)
    losses: list[np.ndarray] = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size]
            xb = xb if isinstance(xb, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(xb))
            if device is not None:
                xb = xb.to(device, non_blocking=True)
            out = model(xb)
            yb = np.asarray(y[start:start + batch_size])
            axes = tuple(range(out.ndim - 1 - yb.ndim, out.ndim - 1))   # one sum per chip
            hits = out.argmax(dim=-1).cpu().numpy() == yb
            correct = correct + hits.sum(axis=axes)
            target = torch.from_numpy(yb).to(out.device).expand(out.shape[:-1])
            logp = torch.log_softmax(out.double(), dim=-1)
            nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
            losses.append(nll.cpu().numpy().reshape(*nll.shape[:len(nll.shape) - len(axes)], -1))
            if done is not None:
                done(len(xb))
    per_chip = np.concatenate(losses, axis=-1)
    loss = np.array([math.fsum(row) for row in per_chip.reshape(-1, per_chip.shape[-1])])
    return correct, loss.reshape(per_chip.shape[:-1])


def _score(model: nn.Module, x: np.ndarray | torch.Tensor, y: np.ndarray, batch_size: int,
           device: torch.device | None = None, done: Callable[[int], None] | None = None
           ) -> tuple[int, float]:
    """Correct predictions and summed loss of one model (:func:`_scores`)."""
    correct, loss = _scores(model, x, y, batch_size, device, done)
    return int(correct), float(loss)


def _metrics(n_correct: int, loss_sum: float, y: np.ndarray) -> dict:
    """accuracy, loss (mean cross-entropy per prediction) and, for targets with a time axis
    (the language-model task: one prediction per token), perplexity = exp(loss)."""
    n = int(y.size)
    row = {"n_correct": n_correct, "n_samples": n, "accuracy": n_correct / n,
           "loss": loss_sum / n}
    if y.ndim > 1:
        try:
            row["perplexity"] = math.exp(row["loss"])
        except OverflowError:     # a loss beyond 709 nats: no float perplexity
            row["perplexity"] = math.inf
    return row


def _row(t: float, n_correct: int, loss_sum: float, y: np.ndarray, wall_s: float) -> dict:
    """One result row of a trial at read time ``t``."""
    return {"t_inference_s": t, **_metrics(n_correct, loss_sum, y), "wall_s": wall_s}


def evaluate_ideal(model: nn.Module, x: np.ndarray, y: np.ndarray,
                   batch_size: int = BATCH_SIZE) -> dict:
    """Digital fp32 accuracy and loss (and perplexity, for a language model) of ``model`` on
    (x, y): the noise-free reference of a study."""
    return _metrics(*_score(model.eval(), x, y, batch_size), y)


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
        n_correct, loss = _score(analog, x, y, batch_size, device, done)
        now = time.perf_counter()
        rows.append(_row(t, n_correct, loss, y, now - start))
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
        correct, loss = _scores(batch, x, y, batch_size, device, done=counted)
        now = time.perf_counter()
        for k, (n_correct, loss_sum) in enumerate(zip(correct.tolist(), loss.tolist())):
            rows[k].append(_row(t, n_correct, loss_sum, y, (now - start) / len(chips)))
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
