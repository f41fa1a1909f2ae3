"""Deterministic training of the small zoo models that studies use without a checkpoint.

The default study runs without any checkpoint file: the digits models (and the character model
of the pydocs corpus) are trained here in seconds, on one thread with deterministic kernels and
a fixed minibatch order, so the same seed gives the same weights on the same machine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mc_engine.data.digits import digits_split
from mc_engine.data.pydocs import DEFAULT_SEQ_LEN, pydocs_tokens
from mc_engine.errors import UserInputError
from mc_engine.zoo.models import DIGITS_MODELS, LM_MODELS, build

EPOCHS = 40
BATCH_SIZE = 64
LEARNING_RATE = 0.02
#: (epochs, Adam learning rate) of the digits models that differ from EPOCHS, LEARNING_RATE.
RECIPES: dict[str, tuple[int, float]] = {"vit_digits": (60, 0.004), "lstm_digits": (40, 0.01)}
#: The character model: Adam steps of CHARLM_BATCH windows, one-cycle learning rate.
CHARLM_STEPS, CHARLM_BATCH, CHARLM_LR = 500, 32, 0.006


def train_digits(name: str, seed: int = 0) -> nn.Module:
    """A digits zoo model trained with Adam on the train half of ``digits_split()``, in eval
    mode: the MLPs and the CNN in 40 epochs (about 97 % test accuracy in a second or two on
    one thread), the ViT and the LSTM with their ``RECIPES`` (about 95 % and 96 %)."""
    if name not in DIGITS_MODELS:
        raise UserInputError(f"expected one of {', '.join(DIGITS_MODELS)}, got {name!r}",
                             key="name")
    epochs, lr = RECIPES.get(name, (EPOCHS, LEARNING_RATE))
    split = digits_split()
    x = torch.from_numpy(split["x_train"])
    y = torch.from_numpy(split["y_train"])
    order_rng = np.random.default_rng(seed)
    with _deterministic():
        model = build(name, seed=seed)
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        loss_fn = nn.CrossEntropyLoss()
        for _ in range(epochs):
            perm = torch.from_numpy(order_rng.permutation(len(y)))
            for batch in perm.split(BATCH_SIZE):
                opt.zero_grad()
                loss_fn(model(x[batch]), y[batch]).backward()
                opt.step()
        model.zero_grad(set_to_none=True)  # no stale gradients shipped with the model
    return model.eval()


def train_charlm(seed: int = 0, cache_dir: Path | None = None,
                 steps: int | None = None) -> nn.Module:
    """The ``charlm`` zoo model trained on the pydocs train split (windows of 64 characters,
    ``cache_dir``: where the corpus is cached) with Adam and a one-cycle learning rate, in eval
    mode: 500 steps reach a test perplexity near 10 (uniform over the 128 characters: 128) in
    under a minute on one thread. ``steps``: default CHARLM_STEPS."""
    steps = CHARLM_STEPS if steps is None else steps
    tokens = torch.from_numpy(pydocs_tokens("train", DEFAULT_SEQ_LEN, cache_dir))
    order_rng = np.random.default_rng(seed)
    with _deterministic():
        model = build("charlm", seed=seed)
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=CHARLM_LR)
        schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=CHARLM_LR, total_steps=steps)
        done = 0
        while done < steps:
            for batch in torch.from_numpy(order_rng.permutation(len(tokens))).split(CHARLM_BATCH):
                if done == steps:
                    break
                window = tokens[batch]
                opt.zero_grad()
                scores = model(window[:, :-1])
                nn.functional.cross_entropy(scores.reshape(-1, scores.shape[-1]),
                                            window[:, 1:].reshape(-1)).backward()
                opt.step()
                schedule.step()
                done += 1
        model.zero_grad(set_to_none=True)
    return model.eval()


def trainer(name: str) -> Callable[[Path | None], nn.Module] | None:
    """How the zoo model ``name`` is trained when a study names it without a checkpoint (the
    argument: the cache folder), or None for models that need a checkpoint (CIFAR)."""
    if name in DIGITS_MODELS:
        return lambda cache_dir: train_digits(name)
    if name in LM_MODELS:
        return lambda cache_dir: train_charlm(cache_dir=cache_dir)
    return None


@contextmanager
def _deterministic() -> Iterator[None]:
    """One thread and deterministic kernels while training; the settings are restored."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
