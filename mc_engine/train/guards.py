"""Checks of a training's inputs that the train file alone cannot show: the folder it writes
in (a zoo cache, names too long for the file system) and BatchNorm's batches of one sample.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mc_engine.errors import UserInputError
from mc_engine.fileio import TEMP_SUFFIX, check_path_fits
from mc_engine.train.spec import TrainSpec


def check_out_folder(spec: TrainSpec, out_dir: Path) -> None:
    """Refuse ``--out`` when it is a zoo cache, or when the files of ``train.name`` would not
    fit the file system there; before any loading."""
    # The longest name a training writes: the sidecar's temporary (process id up to 7 digits).
    longest = f".{spec.name}.json.{'9' * 7}{TEMP_SUFFIX}"
    try:
        check_path_fits(out_dir / longest, "train.name", spec.source)
    except UserInputError:
        extra = len(longest) - len(spec.name)
        raise UserInputError(f"a name of {len(spec.name.encode())} bytes is too long for the "
                             f"files of a training in {out_dir} (.<name>.json.<pid>.tmp, "
                             f"{extra} bytes more, must fit the file system's limit on names "
                             f"and paths): choose a shorter one", source=spec.source,
                             key="train.name") from None
    _check_not_zoo_cache(out_dir)


def _check_not_zoo_cache(out_dir: Path) -> None:
    """Refuse to train into a zoo cache (``<results>/.cache``, where studies keep the trained
    digits zoo models as ``<zoo name>.pt``): a checkpoint there could replace a cached zoo
    model, and every study of it would then no longer resume."""
    from mc_engine.zoo.models import DIGITS_MODELS, LM_MODELS

    cached = [z for z in (*DIGITS_MODELS, *LM_MODELS) if (out_dir / f"{z}.pt").is_file()
              and not (out_dir / f"{z}.json").exists()]   # a training writes a sidecar too
    if out_dir.resolve().name == ".cache" or cached:
        what = f"it holds the cached zoo model {cached[0]}.pt" if cached else \
            "a folder named .cache is where studies cache their trained zoo models"
        raise UserInputError(f"{out_dir} is a zoo model cache ({what}); train into another "
                             f"folder (default results/checkpoints)", source="--out")


def check_single_batches(spec: TrainSpec, model: nn.Module, x: torch.Tensor,
                          dev: torch.device) -> None:
    """Batches of one sample (batch_size = 1, or one training sample) through a model with
    BatchNorm: tried on a copy before the first epoch, so that BatchNorm's refusal of one value
    per channel is said by name rather than met inside the epoch."""
    probe = copy.deepcopy(model).train()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):   # dropout draws nothing
            probe(x[:1].to(dev))
    except ValueError as exc:
        if "more than 1 value per channel" not in str(exc):
            raise
        raise UserInputError(f"batches of one sample give BatchNorm one value per channel, "
                             f"from which it cannot take batch statistics; expected batch_size "
                             f">= 2 (got {spec.batch_size}) and at least 2 training samples (got "
                             f"{len(x)})", source=spec.source, key="train.batch_size") from None


def batches(order: np.ndarray, size: int, batch_norm: bool) -> list[torch.Tensor]:
    """The epoch's batches of sample indices, in ``order``; a model with BatchNorm skips a last
    batch of one sample (BatchNorm cannot take the batch statistics of one sample)."""
    chunks = list(torch.from_numpy(order).split(size))
    if batch_norm and len(chunks) > 1 and len(chunks[-1]) == 1:
        chunks.pop()
    return chunks
