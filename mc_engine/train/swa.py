"""Stochastic weight averaging (``[train] average = "swa"``): Izmailov et al. 2018, "Averaging
Weights Leads to Wider Optima and Better Generalization" (UAI); docs/physics.md, "Training
recipes".

From epoch ``swa_start`` on, the weights at the end of every epoch enter a running mean
(w̄ ← w̄ + (w − w̄)/(n + 1), n the epochs averaged so far, every parameter, learned input ranges
included); training itself goes on from the raw weights, whose trajectory is the one without
averaging. Each epoch's checkpoint from then on holds the average so far, with BatchNorm's
running statistics recomputed on the training data (the split in batches of ``batch_size`` in
its order, the training forward with its [noise] injection from a stream of its own, only
BatchNorm in training mode, cumulative averages as torch.optim.swa_utils.update_bn takes them);
a model without BatchNorm needs no pass. The held-out accuracy of such an epoch is the
average's.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from mc_engine.train.noisy import NoiseSource, NoiseSpec, noisy_forward


class Averager:
    """The running mean of a model's parameters over the epochs averaged so far."""

    def __init__(self) -> None:
        self.n = 0
        self.mean: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for name, p in model.named_parameters():
            if self.n == 0:
                self.mean[name] = p.detach().clone()
            else:
                avg = self.mean[name]
                avg.add_((p.detach() - avg) / (self.n + 1))
        self.n += 1

    def averaged(self, model: nn.Module) -> nn.Module:
        """A copy of ``model`` holding the averaged parameters (BatchNorm not yet updated)."""
        out = copy.deepcopy(model)
        with torch.no_grad():
            for name, p in out.named_parameters():
                p.copy_(self.mean[name])
        return out


def _batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and m.track_running_stats]


def bn_source(seed: int, epoch: int, device: torch.device) -> NoiseSource:
    """The noise of the BatchNorm pass after ``epoch``: apart from the training's streams."""
    seq = np.random.SeedSequence([seed, 0x5357, epoch])        # 'SW'
    torch_seed, numpy_seq = seq.spawn(2)
    gen = torch.Generator(device=device)
    gen.manual_seed(int(torch_seed.generate_state(1, np.uint64)[0] >> 1))
    return NoiseSource(gen=gen, rng=np.random.default_rng(numpy_seq))


@torch.no_grad()
def update_batch_norm(model: nn.Module, x: torch.Tensor, batch_size: int, noise: NoiseSpec,
                      src: NoiseSource, device: torch.device) -> None:
    """BatchNorm's running statistics of ``model`` recomputed over ``x`` (see above)."""
    norms = _batch_norms(model)
    if not norms:
        return
    model.eval()
    momenta = []
    for m in norms:
        m.reset_running_stats()
        momenta.append(m.momentum)
        m.momentum = None
        m.train()
    with noisy_forward(model, noise, src):
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size]
            if len(xb) > 1 or start == 0:      # BatchNorm cannot take a last batch of one
                model(xb.to(device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()
