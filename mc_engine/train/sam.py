"""Sharpness-aware minimisation (``optimizer = "sam"``): Foret et al. 2021, "Sharpness-Aware
Minimization for Efficiently Improving Generalization" (ICLR), and its adaptive form ASAM
(``sam_adaptive = true``): Kwon et al. 2021, "ASAM: Adaptive Sharpness-Aware Minimization for
Scale-Invariant Learning of Deep Neural Networks" (ICML).

One step, two forward/backward passes (docs/physics.md, "Training recipes"):

1. g = ∇L(w) on the batch (the reported loss and training accuracy are this pass's);
2. e = ρ·T²g / ‖T·g‖₂ (T = 1: SAM; T = |w| + η, η = 0.01, for every parameter whose name ends
   in ``weight``, T = 1 for the others: ASAM as Kwon et al.'s code defines it), the norm over
   every parameter of the model together (+1e-12);
3. the gradient ∇L(w + e) on the same batch (fresh noise of the training forward, BatchNorm's
   running statistics left as pass 1 set them), w restored bit for bit, and the base optimizer
   (``sam_base``, Adam or SGD with the train file's lr, momentum and weight decay) steps with
   that gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from mc_engine.train.adversarial import frozen_batch_norm

#: ASAM's η (Kwon et al. 2021): T_w = |w| + η keeps weights at 0 perturbable.
ASAM_ETA = 0.01
EPS = 1e-12


@torch.no_grad()
def perturbation(named: list[tuple[str, nn.Parameter]], rho: float,
                 adaptive: bool) -> list[torch.Tensor | None]:
    """SAM's (ASAM's) ascent e for every parameter from its ``grad`` (None: no gradient)."""
    scale = [(p.abs() + ASAM_ETA if adaptive and name.endswith("weight") else None)
             if p.grad is not None else None for name, p in named]
    scaled = [None if p.grad is None else p.grad if t is None else t * p.grad
              for (_, p), t in zip(named, scale)]
    norm = torch.norm(torch.stack([s.norm(2) for s in scaled if s is not None]), 2)
    factor = rho / (norm + EPS)
    return [None if s is None else (s if t is None else t * s) * factor
            for s, t in zip(scaled, scale)]


def sam_step(model: nn.Module, objective: Callable[[], tuple[torch.Tensor, torch.Tensor]],
             recipe, check: Callable[[float], None]) -> tuple[torch.Tensor, float]:
    """Passes 1 to 3 above; leaves ∇L(w + e) in the parameters' ``grad`` for the base step."""
    out, loss = objective()
    value = float(loss.detach())
    check(value)
    loss.backward()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    e = perturbation(named, recipe.sam_rho, recipe.sam_adaptive)
    saved = []
    with torch.no_grad():
        for (_, p), ep in zip(named, e):
            if ep is not None:
                saved.append((p, p.detach().clone()))
                p.add_(ep)
            p.grad = None
    with frozen_batch_norm(model):
        objective()[1].backward()
    with torch.no_grad():
        for p, old in saved:
            p.copy_(old)
    return out, value
