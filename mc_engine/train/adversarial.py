"""Adversarial training (``[train] adversarial``, ``awp_gamma``; docs/physics.md, "Training
recipes").

Inputs (the attack of every batch, on the training forward with its noise, in training mode,
BatchNorm's running statistics untouched, the weights' gradients untouched):

- ``"fgsm"`` (Goodfellow et al. 2015, "Explaining and Harnessing Adversarial Examples"):
  x_adv = clip(x + ε·sign(∇ₓL(x)));
- ``"pgd"`` (Madry et al. 2018, "Towards Deep Learning Models Resistant to Adversarial
  Attacks"): x₀ = clip(x + U(−ε, ε)), then ``adv_steps`` times
  x_{k+1} = clip(Π_ε(x_k + α·sign(∇ₓL(x_k)))), Π_ε the projection onto |x_adv − x| ≤ ε
  elementwise (L∞ ball);

clip() keeps the inputs in the training data's range [min x, max x] (AnalogAI clips images to
[0, 1], the digits' range). The step then trains on (1 − λ)·L(x) + λ·L(x_adv), λ = ``adv_weight``
(Goodfellow et al.'s mixture, 0.5 by default; 1: Madry's adversarial loss alone).

Weights (``awp_gamma`` = γ, Wu et al. 2020, "Adversarial Weight Perturbation Helps Robust
Generalization", NeurIPS): the step's loss (on x_adv with ``adversarial``) is taken at w + v with
v_l = γ·‖w_l‖·g_l/‖g_l‖ for every weight tensor of more than one dimension (biases and
BatchNorm's scales are not perturbed), g = ∇_w of that loss at w (one ascent step, normalised
per layer relative to the layer's weight norm); w is restored bit for bit and the optimizer
steps with ∇L(w + v).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

EPS = 1e-12


@contextmanager
def frozen_batch_norm(model: nn.Module) -> Iterator[None]:
    """Within the block, BatchNorm normalises with the batch's statistics as in training, but
    its running statistics (and batch count) end as they were."""
    saved = [(m, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
             for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.running_mean is not None]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, mean, var, count in saved:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)


def _input_grad(model: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_fn(model(x), y), [x])
    return grad


def attack(model: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor, recipe,
           x_range: tuple[float, float], gen: torch.Generator) -> torch.Tensor:
    """The adversarial inputs of the batch (detached)."""
    lo, hi = x_range
    eps = recipe.adv_eps
    with frozen_batch_norm(model):
        if recipe.adversarial == "fgsm":
            return (x + eps * _input_grad(model, loss_fn, x, y).sign()).clamp(lo, hi).detach()
        start = torch.rand(x.shape, generator=gen, dtype=x.dtype, device=x.device)
        x_adv = (x + (2 * start - 1) * eps).clamp(lo, hi)
        for _ in range(recipe.adv_steps):
            x_adv = x_adv + recipe.adv_alpha * _input_grad(model, loss_fn, x_adv, y).sign()
            x_adv = torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp(lo, hi)
        return x_adv.detach()


@torch.no_grad()
def awp_perturbation(weights: list[torch.Tensor], grads: list[torch.Tensor | None],
                     gamma: float) -> list[torch.Tensor | None]:
    """Wu et al.'s v_l = γ·‖w_l‖·g_l/‖g_l‖ per weight tensor (None without a gradient)."""
    return [None if g is None else gamma * w.norm() * g / (g.norm() + EPS)
            for w, g in zip(weights, grads)]


def awp_step(model: nn.Module, objective: Callable[[], tuple[torch.Tensor, torch.Tensor]],
             gamma: float, check: Callable[[float], None]) -> tuple[torch.Tensor, float]:
    """The step's gradient at w + v (left in ``grad`` for the optimizer), w restored."""
    weights = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    with frozen_batch_norm(model):
        loss = objective()[1]
        grads = torch.autograd.grad(loss, weights, allow_unused=True)
    v = awp_perturbation(weights, list(grads), gamma)
    saved = []
    with torch.no_grad():
        for p, vp in zip(weights, v):
            if vp is not None:
                saved.append((p, p.detach().clone()))
                p.add_(vp)
    out, loss = objective()
    value = float(loss.detach())
    check(value)
    loss.backward()
    with torch.no_grad():
        for p, old in saved:
            p.copy_(old)
    return out, value
