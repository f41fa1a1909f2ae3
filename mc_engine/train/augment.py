"""Standard CIFAR augmentation in torch: random crop with zero padding 4, horizontal flip."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

PAD = 4


def crop_flip(x: torch.Tensor, rng: np.random.Generator, pad: int = PAD) -> torch.Tensor:
    """Each image of the batch (N×C×H×W) shifted by a random crop of its zero-padded copy
    (offsets 0..2·pad in each direction) and mirrored left-right with probability 1/2; the
    draws come from ``rng``, so a seed fixes them."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    oy = torch.from_numpy(rng.integers(0, 2 * pad + 1, n)).to(x.device)
    ox = torch.from_numpy(rng.integers(0, 2 * pad + 1, n)).to(x.device)
    flip = torch.from_numpy(rng.random(n) < 0.5).to(x.device)
    rows = oy[:, None] + torch.arange(h, device=x.device)                   # N × H
    cols = ox[:, None] + torch.arange(w, device=x.device)                   # N × W
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    idx = torch.arange(n, device=x.device)[:, None, None]
    out = padded[idx, :, rows[:, :, None], cols[:, None, :]]               # N × H × W × C
    return out.permute(0, 3, 1, 2).contiguous()
