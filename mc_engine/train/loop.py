"""Training a model from a train file: the loop, the checkpoint and its sidecar JSON.

The checkpoint ``<out>/<name>.pt`` is a plain state_dict (``torch.save(model.state_dict())``)
that a study's ``[model]`` table loads with ``checkpoint = ...`` (weights-only loading);
``<out>/<name>.json`` beside it records the recipe, the epochs done and the accuracies. Both are
rewritten atomically after every completed epoch, so Ctrl-C keeps the last completed epoch.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

import mc_engine
from mc_engine.analog import convert
from mc_engine.data import Dataset, load_dataset
from mc_engine.errors import UserInputError
from mc_engine.fileio import atomic_write
from mc_engine.study.inputs import check_model_fits, fingerprint
from mc_engine.train.augment import crop_flip
from mc_engine.train.noisy import NoiseSource, clip_weights, noisy_forward
from mc_engine.train.spec import TrainSpec
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
    try:   # a layer that cannot go on tiles is better known before hours of training
        convert(model)
    except UserInputError as exc:
        raise exc.with_source(spec.source) from None
    if spec.augment and train_set.x.ndim != 4:
        raise UserInputError(f"augmentation crops and flips images (N x C x H x W); the "
                             f"training inputs have shape {train_set.x.shape}",
                             source=spec.source, key="train.augment")
    return model, train_set, held_out


def accuracy(model: nn.Module, data: Dataset, device: torch.device) -> float:
    """Digital accuracy of ``model`` (eval mode) on ``data``."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(data), EVAL_BATCH):
            xb = torch.from_numpy(data.x[start:start + EVAL_BATCH]).to(device)
            pred = model(xb).argmax(1).cpu().numpy()
            correct += int((pred == data.y[start:start + EVAL_BATCH]).sum())
    return correct / len(data)


def train(spec: TrainSpec, out_dir: str | Path = DEFAULT_OUT, *, progress: bool = True,
          threads: int | None = 1, device: str | None = None) -> TrainOutcome:
    """Train the model of ``spec`` and write ``<out_dir>/<name>.pt`` and ``.json``.

    Deterministic for a seed on one CPU thread (``threads = 1``, the default; None keeps
    torch's setting). Runs on the GPU when torch sees one (``device`` overrides). A
    KeyboardInterrupt ends the run after the last completed epoch's checkpoint; the outcome
    says so.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    model, train_set, held_out = prepare(spec)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    saved_threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(True, warn_only=True)
        return _train(spec, model.to(dev), train_set, held_out, out_dir, dev, progress, started)
    finally:
        torch.set_num_threads(saved_threads)
        torch.use_deterministic_algorithms(deterministic)


def _optimizer(spec: TrainSpec, model: nn.Module
               ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    if spec.optimizer == "adam":
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
    opt, scheduler = _optimizer(spec, model)
    loss_fn = nn.CrossEntropyLoss()
    x_all, y_all = torch.from_numpy(train_set.x), torch.from_numpy(train_set.y)
    history: list[dict[str, float]] = []
    paths: tuple[Path, Path] | None = None
    interrupted = False
    bar = tqdm(range(spec.epochs), desc=spec.name, unit="epoch", disable=not progress,
               dynamic_ncols=True)
    try:
        for epoch in bar:
            model.train()
            loss_sum, correct = 0.0, 0
            with noisy_forward(model, spec.noise, src):
                for batch in torch.from_numpy(order_rng.permutation(len(y_all))).split(
                        spec.batch_size):
                    xb, yb = x_all[batch].to(dev), y_all[batch].to(dev)
                    if spec.augment:
                        xb = crop_flip(xb, augment_rng)
                    opt.zero_grad()
                    out = model(xb)
                    loss = loss_fn(out, yb)
                    loss.backward()
                    opt.step()
                    if spec.noise.clip_std > 0:
                        clip_weights(model, spec.noise.clip_std)
                    loss_sum += float(loss.detach()) * len(batch)
                    correct += int((out.argmax(1) == yb).sum())
            if scheduler is not None:
                scheduler.step()
            model.zero_grad(set_to_none=True)
            acc = accuracy(model, held_out, dev)
            entry = {"epoch": epoch + 1, "loss": loss_sum / len(y_all),
                     "train_accuracy": correct / len(y_all), "held_out_accuracy": acc}
            paths = _save(spec, model, held_out, [*history, entry], out_dir, started)
            history.append(entry)   # only once its weights are on disk
            bar.set_postfix(loss=f"{history[-1]['loss']:.4f}", held_out=f"{acc:.4f}")
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    if interrupted and paths is not None:
        paths = _save(spec, model, held_out, history, out_dir, started, interrupted=True,
                      write_weights=False)
    return TrainOutcome(checkpoint=paths[0] if paths else None,
                        sidecar=paths[1] if paths else None, epochs_done=len(history),
                        interrupted=interrupted,
                        held_out_accuracy=history[-1]["held_out_accuracy"] if history
                        else float("nan"), wall_s=time.perf_counter() - started)


def _save(spec: TrainSpec, model: nn.Module, held_out: Dataset, history: list[dict[str, float]],
          out_dir: Path, started: float, *, interrupted: bool = False,
          write_weights: bool = True) -> tuple[Path, Path]:
    """Write the state_dict (CPU tensors) and the sidecar JSON of the epochs so far."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    checkpoint = out_dir / f"{spec.name}.pt"
    if write_weights:
        atomic_write(checkpoint, lambda temp: torch.save(state, temp))
    prints = fingerprint(model, held_out)   # the sha256 a study shows for this checkpoint
    sidecar = out_dir / f"{spec.name}.json"
    record: dict[str, Any] = {
        "name": spec.name, "train_file": spec.source, "description": spec.description,
        "recipe": spec.tables, "seed": spec.seed, "epochs": spec.epochs,
        "epochs_done": len(history), "interrupted": interrupted,
        "held_out_accuracy": history[-1]["held_out_accuracy"],
        "train_accuracy": history[-1]["train_accuracy"], "loss": history[-1]["loss"],
        "held_out": {"dataset": held_out.name, "n_samples": len(held_out)},
        "fingerprint": prints, "history": history, "wall_s": time.perf_counter() - started,
        "engine_version": mc_engine.__version__, "torch_version": torch.__version__,
        "python": platform.python_version(),
    }
    text = json.dumps(record, indent=2, default=str) + "\n"
    atomic_write(sidecar, lambda temp: temp.write_text(text, encoding="utf-8"))
    return checkpoint, sidecar
