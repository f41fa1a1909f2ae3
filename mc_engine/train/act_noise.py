"""Activation noise of the training forward (``[noise] act_noise``; docs/physics.md, "Training
recipes"): AnalogAI's fusion injection (Liu et al. 2024, AnalogAI's ``act_inject`` with type
"Gaussian", mean 1, sigma σ, a forward hook on every layer).

Every analog layer's output y (Linear or Conv2d, bias included, after its tiles, periphery and
weight noise) becomes y·(1 + σ·ξ), ξ ~ N(0, 1) fresh for every element and batch: Gaussian noise
whose standard deviation is σ times each output value itself (relative to |y| elementwise, as
AnalogAI multiplies; not to a layer-wide std or max). The gradient flows through y times the
same factor. Several levels [σ₁, σ₂, …] split the batch in as many consecutive chunks
(``torch.tensor_split``, as ``weight_noise`` levels are mapped), chunk k at σ_k: with as many
weight-noise levels, chunk k sees weight level k and activation level k together.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def inject(y: torch.Tensor, levels: tuple[float, ...], src) -> torch.Tensor:
    """``y`` with the activation noise of ``levels`` (one per batch chunk)."""
    parts = torch.tensor_split(y, len(levels)) if len(levels) > 1 else (y,)
    out = [p if s <= 0 else p * (1 + s * src.normal(tuple(p.shape), p))
           for p, s in zip(parts, levels)]
    return out[0] if len(out) == 1 else torch.cat(out)


def with_act_noise(forward: Callable[..., torch.Tensor], levels: tuple[float, ...],
                   src) -> Callable[..., torch.Tensor]:
    """``forward`` followed by :func:`inject`."""
    def run(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return inject(forward(x, *args, **kwargs), levels, src)
    return run
