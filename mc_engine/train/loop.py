"""Training a model from a train file: the loop, the checkpoint and its sidecar JSON.

The checkpoint ``<out>/<name>.pt`` is a plain state_dict (``torch.save(model.state_dict())``)
that a study's ``[model]`` table loads with ``checkpoint = ...`` (weights-only loading);
``<out>/<name>.json`` beside it records the recipe, the epochs done, the accuracies and the
sha256 of the weights beside it (``fingerprint``, as a study shows it, and ``file_sha256``, of
the file's bytes). Both are written under temporary names after every completed epoch and
renamed into place together, signals held back in between, so Ctrl-C (SIGTERM) keeps the last
completed epoch and the sidecar always describes the file next to it.

An existing ``<name>.pt`` (a finished or interrupted training) is never overwritten unless
``fresh`` is given (``--fresh``); with it, the old pair is replaced at the new training's first
completed epoch, so a fresh re-run stopped before that keeps it. A training holds the lock
``<out>/.<name>.lock`` while it runs: a second training of the same name into the same folder is
refused at once. Weights that stop being finite (a learning rate too large) end the training with
an error naming ``train.lr``; nothing non-finite is ever written.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import signal
import time
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import mc_engine
from mc_engine.analog import convert
from mc_engine.data import Dataset, load_dataset
from mc_engine.errors import UserInputError
from mc_engine.fileio import (
    WriteFailed,
    atomic_write,
    check_writable_folder,
    file_lock,
    temp_path,
)
from mc_engine.signals import Terminated, signals_deferred
from mc_engine.study.inputs import check_model_fits, fingerprint
from mc_engine.train.augment import crop_flip
from mc_engine.train.guards import batches, check_out_folder, check_single_batches
from mc_engine.train.noisy import NoiseSource, check_trainable, clip_weights, noisy_forward
from mc_engine.train.progress import TrainProgress
from mc_engine.train.ranges import add_ranges
from mc_engine.train.recipes import averaged, check_inputs, recipe_step
from mc_engine.train.spec import TrainSpec
from mc_engine.train.task import correct_predictions, task_loss
from mc_engine.zoo import load_model
from mc_engine.zoo.loader import load_checkpoint

DEFAULT_OUT = Path("results") / "checkpoints"
EVAL_BATCH = 500


@dataclass(frozen=True)
class TrainOutcome:
    """What a training run left: the checkpoint, its sidecar and the final numbers."""

    checkpoint: Path | None
    sidecar: Path | None
    epochs_done: int
    interrupted: bool
    held_out_accuracy: float
    wall_s: float
    #: Stopped by SIGTERM (``interrupted`` is then true too); the CLI exits with 143.
    terminated: bool = False


@dataclass(frozen=True)
class _Saved:
    """The pair on disk after an epoch: paths and the sha256 of the weights written."""

    checkpoint: Path
    sidecar: Path
    fingerprint: dict[str, str]
    file_sha256: str
    #: The epochs the weights on disk went through (one entry per epoch).
    history: list[dict[str, float]]


class _Diverged(Exception):
    """The loss or the weights stopped being finite."""


def prepare(spec: TrainSpec) -> tuple[nn.Module, Dataset, Dataset]:
    """The untrained (or ``init``-loaded) model, the training split and the held-out test split,
    checked against each other before any training (every problem a UserInputError)."""
    train_set = load_dataset(spec.data, spec.base_dir, spec.source, split="train")
    held_out = load_dataset(spec.data, spec.base_dir, spec.source, split="test")
    model = load_model(spec.model, spec.base_dir, spec.source, None, untrained_seed=spec.seed)
    check_model_fits(model, held_out, spec.model, spec.source)
    if int(train_set.y.max()) > int(held_out.y.max()):
        check_model_fits(model, train_set, spec.model, spec.source)
    if spec.init is not None:
        def fail(key: str, message: str) -> UserInputError:
            return UserInputError(message, source=spec.source, key="train.init")

        load_checkpoint(model, spec.init, fail)
        bad = next((k for k, v in model.state_dict().items()
                    if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
        if bad is not None:
            raise fail("init", f"{spec.init}: {bad} holds NaN or infinite values; fine-tune "
                               f"from a checkpoint with finite weights")
    try:   # a layer that cannot go on tiles is better known before hours of training
        convert(model)
        check_trainable(model, spec.noise)
    except UserInputError as exc:
        raise exc.with_source(spec.source) from None
    check_inputs(spec.recipe, torch.from_numpy(train_set.x[:1]), spec.source)
    if spec.augment and train_set.x.ndim != 4:
        raise UserInputError(f"augmentation crops and flips images (N x C x H x W); the "
                             f"training inputs have shape {train_set.x.shape}",
                             source=spec.source, key="train.augment")
    return model, train_set, held_out


def accuracy(model: nn.Module, data: Dataset, device: torch.device) -> float:
    """Digital accuracy of ``model`` (eval mode) on ``data`` (of every next token, for a
    language model)."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(data), EVAL_BATCH):
            xb = torch.from_numpy(data.x[start:start + EVAL_BATCH]).to(device)
            pred = model(xb).argmax(-1).cpu().numpy()
            correct += int((pred == data.y[start:start + EVAL_BATCH]).sum())
    return correct / data.y.size


def train(spec: TrainSpec, out_dir: str | Path = DEFAULT_OUT, *, fresh: bool = False,
          progress: bool = True, threads: int | None = 1,
          device: str | None = None) -> TrainOutcome:
    """Train the model of ``spec`` and write ``<out_dir>/<name>.pt`` and ``.json``.

    Deterministic for a seed on one CPU thread (``threads = 1``, the default; None keeps
    torch's setting). Runs on the GPU when torch sees one (``device`` overrides). A
    KeyboardInterrupt ends the run after the last completed epoch's checkpoint; the outcome
    says so. An existing checkpoint of this name is refused (UserInputError at ``train.name``)
    unless ``fresh``; so is a second training of this name into ``out_dir`` while one runs.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    check_writable_folder(out_dir, "--out")
    check_out_folder(spec, out_dir)
    _check_free(spec, out_dir, fresh)   # before minutes of loading
    model, train_set, held_out = prepare(spec)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":   # deterministic cuBLAS GEMMs: read when cuBLAS starts, later
        from mc_engine.analog.cuda import CUBLAS_WORKSPACE

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    saved_threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    with ExitStack() as stack:
        lock = out_dir / f".{spec.name}.lock"
        try:
            stack.enter_context(file_lock(lock))
        except BlockingIOError:
            raise UserInputError(f"another 'mc-engine train' of this name is writing "
                                 f"{out_dir / spec.name}.pt right now (it holds {lock}); wait "
                                 f"for it to finish, or give this one another train.name or "
                                 f"--out", source=spec.source, key="train.name") from None
        _check_free(spec, out_dir, fresh)   # one of this name may have finished meanwhile
        try:
            if threads is not None:
                torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(True, warn_only=True)
            return _train(spec, model.to(dev), train_set, held_out, out_dir, dev, progress,
                          started)
        finally:
            torch.set_num_threads(saved_threads)
            torch.use_deterministic_algorithms(deterministic)


def _check_free(spec: TrainSpec, out_dir: Path, fresh: bool) -> None:
    """Refuse to overwrite an earlier checkpoint of this name unless ``fresh``."""
    checkpoint, sidecar = out_dir / f"{spec.name}.pt", out_dir / f"{spec.name}.json"
    if fresh or not (checkpoint.exists() or sidecar.exists()):
        return
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
        what = f"{record['epochs_done']} of {record['epochs']} epochs" + \
            (", interrupted" if record.get("interrupted") else "") + \
            f", trained from {record['train_file']}"
    except (OSError, ValueError, KeyError, TypeError):
        what = "its sidecar is missing or unreadable"
    raise UserInputError(f"{checkpoint if checkpoint.exists() else sidecar} already exists "
                         f"({what}) and is never overwritten: give --fresh to replace it, or "
                         f"another train.name or --out", source=spec.source, key="train.name")


def _optimizer(spec: TrainSpec, model: nn.Module
               ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    base = spec.recipe.sam_base if spec.optimizer == "sam" else spec.optimizer
    if base == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=spec.lr,
                                                      weight_decay=spec.weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum,
                              weight_decay=spec.weight_decay)
    if spec.schedule == "cosine":
        return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=spec.epochs)
    if spec.schedule == "step":
        return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=spec.step_size,
                                                    gamma=spec.gamma)
    return opt, None


def _train(spec: TrainSpec, model: nn.Module, train_set: Dataset, held_out: Dataset,
           out_dir: Path, dev: torch.device, progress: bool, started: float) -> TrainOutcome:
    order_seq, augment_seq = np.random.SeedSequence(spec.seed).spawn(2)
    order_rng, augment_rng = np.random.default_rng(order_seq), np.random.default_rng(augment_seq)
    src = NoiseSource.from_seed(spec.seed, dev)
    if spec.noise.ranges is not None:   # parameters of the model: before the optimizer
        add_ranges(model, spec.noise.hardware, spec.noise.ranges,
                   lambda message: UserInputError(message, source=spec.source, key="train.init"))
    opt, scheduler = _optimizer(spec, model)
    x_all, y_all = torch.from_numpy(train_set.x), torch.from_numpy(train_set.y)
    step, averager = recipe_step(spec, model, opt, task_loss, src, x_all)
    batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if batch_norm and (spec.batch_size == 1 or len(y_all) == 1):
        check_single_batches(spec, model, x_all, dev)
    saved: _Saved | None = None
    stop: KeyboardInterrupt | None = None
    diverged: _Diverged | None = None
    # Batches within epochs: a bar on a terminal, plain lines in a log (a batch job's).
    n_batches = len(batches(np.arange(len(y_all)), spec.batch_size, batch_norm))
    bar = TrainProgress(spec.name, spec.epochs, n_batches, enabled=progress)
    try:
        for epoch in range(spec.epochs):
            model.train()
            history = saved.history if saved is not None else []   # the epochs on disk
            loss_sum, correct, seen, predicted = 0.0, 0, 0, 0
            with noisy_forward(model, spec.noise, src):
                for index, batch in enumerate(batches(order_rng.permutation(len(y_all)),
                                                      spec.batch_size, batch_norm)):
                    xb, yb = x_all[batch].to(dev), y_all[batch].to(dev)
                    if spec.augment:
                        xb = crop_flip(xb, augment_rng)
                    out, value = step(xb, yb, partial(_check_loss, epoch=epoch))
                    if spec.noise.clip_std > 0:
                        clip_weights(model, spec.noise.clip_std)
                    loss_sum += value * len(batch)
                    hits, n = correct_predictions(out, yb)
                    correct, seen, predicted = correct + hits, seen + len(batch), predicted + n
                    bar.batch(epoch, index, value)
            if scheduler is not None:
                scheduler.step()
            model.zero_grad(set_to_none=True)
            bad = next((k for k, v in model.state_dict().items()
                        if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
            if bad is not None:
                raise _Diverged(f"{bad} became non-finite in epoch {epoch + 1}")
            kept = averaged(spec, model, averager, epoch, x_all, dev)   # SWA: the average
            acc = accuracy(kept, held_out, dev)
            entry = {"epoch": epoch + 1, "loss": loss_sum / seen,
                     "train_accuracy": correct / predicted, "held_out_accuracy": acc}
            saved, received = _save(spec, kept, held_out, [*history, entry], out_dir, started)
            for signum in received:   # a signal held back while the pair was renamed
                signal.raise_signal(signum)
            bar.epoch(epoch, entry["loss"], acc)
    except KeyboardInterrupt as exc:
        stop = exc
    except _Diverged as exc:
        diverged = exc
    finally:
        bar.close()
    if (stop is not None or diverged is not None) and saved is not None:
        reason = "terminated" if isinstance(stop, Terminated) else \
            "interrupted" if stop is not None else f"diverged: {diverged}"
        with signals_deferred() as received:
            _write_sidecar(saved, _record(spec, saved, held_out, started, reason))
        for signum in received:
            signal.raise_signal(signum)
    history = saved.history if saved is not None else []
    if diverged is not None:
        kept = f"{saved.checkpoint} keeps epoch {len(history)}, the last with finite weights" \
            if saved is not None else "nothing written"
        raise UserInputError(f"{diverged} (the weights are no longer finite): lower the "
                             f"learning rate, got {spec.lr:g}; {kept}", source=spec.source,
                             key="train.lr")
    return TrainOutcome(checkpoint=saved.checkpoint if saved else None,
                        sidecar=saved.sidecar if saved else None, epochs_done=len(history),
                        interrupted=stop is not None,
                        held_out_accuracy=history[-1]["held_out_accuracy"] if history
                        else float("nan"), wall_s=time.perf_counter() - started,
                        terminated=isinstance(stop, Terminated))


def _check_loss(value: float, epoch: int) -> None:
    if not math.isfinite(value):
        raise _Diverged(f"the training loss became {value} in epoch {epoch + 1}")


class _StateOnly:
    """A state_dict standing in for its model where only ``state_dict()`` is read."""

    def __init__(self, state: dict[str, torch.Tensor]):
        self._state = state

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._state


def _save(spec: TrainSpec, model: nn.Module, held_out: Dataset, history: list[dict[str, float]],
          out_dir: Path, started: float) -> tuple[_Saved, list[int]]:
    """Write the state_dict (CPU tensors) and the sidecar JSON of the epochs so far: both under
    temporary names, then renamed into place one after the other with signals held back, so
    that the sidecar on disk always fingerprints the weights beside it. Returns the pair and
    the signals held back, for the caller to raise once it knows the pair."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    checkpoint, sidecar = out_dir / f"{spec.name}.pt", out_dir / f"{spec.name}.json"
    out_dir.mkdir(parents=True, exist_ok=True)
    temps = temp_path(checkpoint), temp_path(sidecar)
    try:
        torch.save(state, temps[0])
        saved = _Saved(checkpoint, sidecar,
                       fingerprint(_StateOnly(state), held_out),  # as a study shows it
                       hashlib.sha256(temps[0].read_bytes()).hexdigest(), history)
        text = _record(spec, saved, held_out, started, "")
        temps[1].write_text(text, encoding="utf-8")
        with signals_deferred() as received:
            os.replace(temps[0], checkpoint)
            os.replace(temps[1], sidecar)
    except OSError as err:   # a full disk: the pair of the epoch before stays as it was
        raise WriteFailed(checkpoint, err) from err
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)
    return saved, received


def _write_sidecar(saved: _Saved, text: str) -> None:
    atomic_write(saved.sidecar, lambda temp: temp.write_text(text, encoding="utf-8"))


def _record(spec: TrainSpec, saved: _Saved, held_out: Dataset, started: float,
            stopped: str) -> str:
    """The sidecar's JSON text; ``stopped``: why the training ended early ("" if it did not)."""
    history = saved.history
    record: dict[str, Any] = {
        "name": spec.name, "train_file": spec.source, "description": spec.description,
        "recipe": spec.tables, "seed": spec.seed, "epochs": spec.epochs,
        "epochs_done": len(history), "interrupted": bool(stopped),
        **({"stopped": stopped} if stopped else {}),
        "held_out_accuracy": history[-1]["held_out_accuracy"],
        "train_accuracy": history[-1]["train_accuracy"], "loss": history[-1]["loss"],
        "held_out": {"dataset": held_out.name, "n_samples": len(held_out)},
        "fingerprint": saved.fingerprint, "file_sha256": saved.file_sha256,
        "history": history, "wall_s": time.perf_counter() - started,
        "engine_version": mc_engine.__version__, "torch_version": torch.__version__,
        "python": platform.python_version(),
    }
    return json.dumps(record, indent=2, default=str) + "\n"
