"""The noise-robust training recipes of the literature as ``[train]`` keys (README, "Training
recipes"; docs/physics.md, "Hardware-aware training"): what each key means, its checks, and the
optimisation step that combines them.

- ``optimizer = "sam"`` (Foret et al. 2021, sharpness-aware minimisation) and ``sam_adaptive``
  (ASAM, Kwon et al. 2021), wrapping ``sam_base`` (Adam or SGD): :mod:`mc_engine.train.sam`.
- ``adversarial = "fgsm" | "pgd"`` (Goodfellow et al. 2015; Madry et al. 2018) on the inputs,
  and ``awp_gamma`` (adversarial weight perturbation, Wu et al. 2020):
  :mod:`mc_engine.train.adversarial`.
- ``average = "swa"`` from epoch ``swa_start`` (Izmailov et al. 2018): :mod:`mc_engine.train.swa`.
- Activation noise (``[noise] act_noise``) acts in the forward: :mod:`mc_engine.train.act_noise`.

The step is the plain one (zero_grad, forward, loss, backward, optimizer step) unless a recipe is
on; its extra forward passes (the attack, SAM's second pass, AWP's direction) run in training
mode with BatchNorm's running statistics left as the step's training pass set them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mc_engine.errors import Fail, UserInputError, check_int

#: [train] keys of the recipes (their defaults in :class:`Recipe`).
RECIPE_KEYS = ("sam_rho", "sam_adaptive", "sam_base", "adversarial", "adv_eps", "adv_steps",
               "adv_alpha", "adv_weight", "awp_gamma", "average", "swa_start")
ADVERSARIAL = ("none", "fgsm", "pgd")
AVERAGES = ("none", "swa")
SAM_BASES = ("adam", "sgd")
#: SAM's neighbourhood size (Foret et al. 2021) and ASAM's (Kwon et al. 2021, CIFAR-10).
SAM_RHO, ASAM_RHO = 0.05, 0.5

#: ``inert(key, message)``: a key that does nothing with the other settings (raises by default;
#: a recipe sweep collects them instead, mc_engine/train/sweep.py).
Inert = Callable[[str, str], None]


@dataclass(frozen=True)
class Recipe:
    """The recipe keys of a train file (defaults: all off)."""

    sam: bool = False
    sam_rho: float = SAM_RHO
    sam_adaptive: bool = False
    sam_base: str = "adam"
    adversarial: str = "none"
    adv_eps: float = 0.03
    adv_steps: int = 10
    adv_alpha: float = 0.01
    adv_weight: float = 0.5
    awp_gamma: float = 0.0
    average: str = "none"
    swa_start: int = 1

    @property
    def plain(self) -> bool:
        """Whether the step is the plain one (one forward and backward pass)."""
        return not self.sam and self.adversarial == "none" and self.awp_gamma == 0


def parse_recipe(table: dict[str, Any], optimizer: str, epochs: int, fail: Fail,
                 inert: Inert, number) -> Recipe:
    """The recipe keys of ``[train]`` (``table``), checked; ``number(value, key)`` checks a
    finite number >= 0 (``positive``: > 0)."""
    out: dict[str, Any] = {"sam": optimizer == "sam"}
    for key in ("sam_adaptive",):
        if key in table:
            if not isinstance(table[key], bool):
                raise fail(f"train.{key}", f"expected true (ASAM: the neighbourhood scaled by "
                                           f"|w|) or false (SAM), got {table[key]!r}")
            out[key] = table[key]
    for key, choices in (("sam_base", SAM_BASES), ("adversarial", ADVERSARIAL),
                         ("average", AVERAGES)):
        if key in table:
            if table[key] not in choices:
                raise fail(f"train.{key}", f"expected one of {', '.join(map(repr, choices))}, "
                                           f"got {table[key]!r}")
            out[key] = table[key]
    for key in ("sam_rho", "adv_eps", "adv_alpha", "adv_weight"):
        if key in table:
            out[key] = number(table[key], f"train.{key}", positive=True)
    if "awp_gamma" in table:
        out["awp_gamma"] = number(table["awp_gamma"], "train.awp_gamma")
    if out.get("adv_weight", 0.0) > 1:
        raise fail("train.adv_weight", f"the adversarial share of the loss, in (0, 1] (1: the "
                                       f"adversarial loss alone), got {out['adv_weight']!r}")
    if "adv_steps" in table:
        out["adv_steps"] = check_int(table["adv_steps"], "train.adv_steps", fail, hi=10_000)
    if "swa_start" in table:
        out["swa_start"] = check_int(table["swa_start"], "train.swa_start", fail, hi=epochs,
                                     hint=f"(the first epoch averaged, at most train.epochs = "
                                          f"{epochs})")
    if out["sam"] and "sam_rho" not in out and out.get("sam_adaptive"):
        out["sam_rho"] = ASAM_RHO
    # Keys that act only with another setting (refused as doing nothing, or collected).
    for key in ("sam_rho", "sam_adaptive", "sam_base"):
        if key in table and not out["sam"]:
            inert(f"train.{key}", f"used only by optimizer = 'sam', and the optimizer is "
                                  f"{optimizer!r}: remove it, or set optimizer = 'sam'")
    adversarial = out.get("adversarial", "none")
    for key in ("adv_eps", "adv_weight", "adv_steps", "adv_alpha"):
        if key in table and (adversarial == "none" or
                             (adversarial == "fgsm" and key in ("adv_steps", "adv_alpha"))):
            used = "adversarial = 'pgd'" if key in ("adv_steps", "adv_alpha") else \
                "adversarial = 'fgsm' or 'pgd'"
            inert(f"train.{key}", f"used only by {used}, and adversarial is {adversarial!r}: "
                                  f"remove it, or set that")
    if "swa_start" in table and out.get("average", "none") != "swa":
        inert("train.swa_start", "used only by average = 'swa': remove it, or set that")
    if out["sam"] and out.get("awp_gamma", 0.0) > 0:
        raise fail("train.awp_gamma", "SAM and adversarial weight perturbation both perturb the "
                                      "weights before the step's second pass: choose one "
                                      "(optimizer = 'sam' or awp_gamma > 0)")
    return Recipe(**out)


def check_recipe(recipe: Recipe, ranges: bool, source: str) -> None:
    """Refuse by name the recipes the training forward cannot take. Every rounding of the
    forward passes its gradient straight through, so no [noise] option stops a gradient; learned
    input ranges do: their gradient is aihwkit's update rule rather than the loss's, and every
    extra forward pass of a step would count as one of their init-from-data batches."""
    if not ranges:
        return
    for key, on in (("optimizer", recipe.sam), ("adversarial", recipe.adversarial != "none"),
                    ("awp_gamma", recipe.awp_gamma > 0)):
        if on:
            raise UserInputError("takes extra forward passes per step, which learned input "
                                 "ranges (noise.input_range = 'learn') would count as init-from-"
                                 "data batches, along a range gradient that is aihwkit's rule, "
                                 "not the loss's: train the ranges without it, or use "
                                 "noise_management instead", source=source, key=f"train.{key}")


def check_inputs(recipe: Recipe, x: torch.Tensor, source: str) -> None:
    """Adversarial inputs need real-valued inputs (not token ids)."""
    if recipe.adversarial != "none" and not x.is_floating_point():
        raise UserInputError(f"perturbs the inputs along their gradient, and the training inputs "
                             f"are {x.dtype} (ids, not values): use adversarial = 'none' (or "
                             f"awp_gamma, which perturbs the weights)", source=source,
                             key="train.adversarial")


class Step:
    """One optimisation step of the recipe on a batch: returns the outputs that count for the
    training accuracy and the loss value (``check(value)`` is called on it before any
    backward pass of the weights' step)."""

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer, loss_fn, recipe: Recipe,
                 gen: torch.Generator, x_range: tuple[float, float]):
        self.model, self.opt, self.loss_fn, self.recipe = model, opt, loss_fn, recipe
        self.gen, self.x_range = gen, x_range

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor,
                 check: Callable[[float], None]) -> tuple[torch.Tensor, float]:
        from mc_engine.train import adversarial, sam

        model, opt, recipe = self.model, self.opt, self.recipe
        opt.zero_grad()
        if recipe.plain:                                  # the plain step, as ever
            out = model(xb)
            loss = self.loss_fn(out, yb)
            value = float(loss.detach())
            check(value)
            loss.backward()
            opt.step()
            return out, value
        x_adv = adversarial.attack(model, self.loss_fn, xb, yb, recipe, self.x_range, self.gen) \
            if recipe.adversarial != "none" else None

        def objective() -> tuple[torch.Tensor, torch.Tensor]:
            if x_adv is None:
                out = model(xb)
                return out, self.loss_fn(out, yb)
            if recipe.adv_weight == 1:
                out = model(x_adv)
                return out, self.loss_fn(out, yb)
            out = model(xb)
            clean = self.loss_fn(out, yb)
            adv = self.loss_fn(model(x_adv), yb)
            return out, (1 - recipe.adv_weight) * clean + recipe.adv_weight * adv

        if recipe.sam:
            out, value = sam.sam_step(model, objective, recipe, check)
        elif recipe.awp_gamma > 0:
            out, value = adversarial.awp_step(model, objective, recipe.awp_gamma, check)
        else:
            out, loss = objective()
            value = float(loss.detach())
            check(value)
            loss.backward()
        opt.step()
        return out, value


def recipe_step(spec, model: nn.Module, opt: torch.optim.Optimizer, loss_fn, src,
                x_all: torch.Tensor):
    """The step of ``spec``'s recipe and, with ``average = "swa"``, the running mean."""
    from mc_engine.train.swa import Averager

    recipe = spec.recipe
    x_range = (float(x_all.min()), float(x_all.max())) \
        if recipe.adversarial != "none" and len(x_all) else (0.0, 0.0)
    return (Step(model, opt, loss_fn, recipe, src.gen, x_range),
            Averager() if recipe.average == "swa" else None)


def averaged(spec, model: nn.Module, averager, epoch: int, x_all: torch.Tensor,
             device: torch.device) -> nn.Module:
    """The model that epoch ``epoch`` (0-based) keeps: ``model`` itself, or from ``swa_start``
    on the running mean with BatchNorm recomputed (mc_engine/train/swa.py)."""
    from mc_engine.train.swa import bn_source, update_batch_norm

    if averager is None or epoch + 1 < spec.recipe.swa_start:
        return model
    averager.update(model)
    kept = averager.averaged(model)
    update_batch_norm(kept, x_all, spec.batch_size, spec.noise,
                      bn_source(spec.seed, epoch, device), device)
    return kept
