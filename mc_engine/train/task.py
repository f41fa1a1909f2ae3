"""The training objective of each ``[data] task``: one loss and one count of correct
predictions for classification (scores N × classes) and language models (next-token scores
N × T × vocabulary against the next tokens N × T, every position a prediction)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def task_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over every prediction (the scores on the last axis)."""
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


def correct_predictions(out: torch.Tensor, y: torch.Tensor) -> tuple[int, int]:
    """(correct predictions, predictions) of a batch."""
    return int((out.argmax(-1) == y).sum()), y.numel()
