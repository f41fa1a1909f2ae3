"""Learned input ranges of hardware-aware training (``[noise] input_range = "learn"``,
docs/physics.md, "Hardware-aware training"), as aihwkit 1.2.0's ``InputRangeParameter`` and
``InputRangeForward`` define them.

Every Linear/Conv2d gets a parameter ``input_range`` (one range per input chunk of
``max_input_size`` rows, groups × chunks for a grouped convolution: the shape
:func:`mc_engine.analog.input_ranges.layer_shape` gives), trained by the optimizer with the
weights and saved in the state_dict as ``<layer>.input_range``, the entry a study with
``noise_management = "learned"`` reads. In the training forward, per chunk of each input row
(im2col rows for a convolution):

- init from data: during the first ``init_from_data`` batches in which a chunk's inputs are not
  all equal, r ← (r·i + init_std_alpha·std)/(i + 1), i the number of such batches so far, std the
  (unbiased) standard deviation over every element of the chunk's inputs in the batch; then
  r ← |r|. It happens before the clip of that batch.
- forward: x_c = clip(x, −|r|, |r|); the pass then runs with alpha = r (x̃ = DAC(x_c/r), output
  × r), alpha a constant of the batch as every noise-management scale is.
- backward: ∂x = ∂x_c where −|r| ≤ x ≤ |r| (torch's clamp), 0 elsewhere; the range gets
  g = r·(Σ_{x_c ≥ r} min(∂x_c, 0) − Σ_{x_c ≤ −r} max(∂x_c, 0)) (aihwkit's gradient_relative
  with gradient_scale 1), plus decay·r when more than ``input_min_percentage`` of the chunk's
  inputs lie strictly inside (|x_c| < r): a range that clips too little shrinks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mc_engine.analog.input_ranges import RANGE_KEY, layer_shape
from mc_engine.analog.tile import split_sizes
from mc_engine.errors import UserInputError
from mc_engine.hardware import HardwareConfig

#: Batches counted by init_from_data, per range: not saved with the model.
COUNT_KEY = "input_range_inits"


@dataclass(frozen=True)
class RangeLearning:
    """aihwkit's InputRangeParameter (learn_input_range, gradient_relative, gradient_scale 1,
    no manage_output_clipping); ``init_value`` is where a range starts before (or without)
    its init from data."""

    init_from_data: int = 100
    init_std_alpha: float = 3.0
    decay: float = 0.001
    input_min_percentage: float = 0.95
    init_value: float = 3.0


def column_ranges(layer: nn.Module, hw: HardwareConfig) -> torch.Tensor:
    """Index of the range (flattened groups × chunks) of every input column of the layer's
    rows (groups × width columns, as the torch pass reads them)."""
    groups, _ = layer_shape(layer, hw)
    width = layer.weight[0].numel() if isinstance(layer, nn.Conv2d) else layer.in_features
    chunks = split_sizes(width, hw.max_input_size)
    ids: list[int] = []
    for g in range(groups):
        for c, (i0, i1) in enumerate(chunks):
            ids.extend([g * len(chunks) + c] * (i1 - i0))
    return torch.tensor(ids, dtype=torch.long)


def add_ranges(model: nn.Module, hw: HardwareConfig, learn: RangeLearning,
               fail=None) -> None:
    """Give every Linear/Conv2d of ``model`` its learnable ranges (``input_range``,
    init_value) and its count of data inits (a buffer left out of the state_dict). Ranges the
    model already holds (a checkpoint fine-tuned from) are kept as they are and count as
    initialised; ``fail(message)`` builds the error for ones that do not fit the tiles."""
    for name, m in _layers(model):
        groups, chunks = layer_shape(m, hw)
        shape = (chunks,) if groups == 1 else (groups, chunks)
        old = getattr(m, RANGE_KEY, None)
        count = torch.zeros(shape, dtype=torch.long)
        if isinstance(old, torch.Tensor):
            if tuple(old.shape) not in (shape, (groups, chunks)):
                message = (f"{name}.{RANGE_KEY} has shape {tuple(old.shape)}, but the tiles of "
                           f"noise.max_input_size = {hw.max_input_size} need {shape}")
                raise (fail(message) if fail else UserInputError(message, key="train.init"))
            value = old.detach().to(torch.float32).reshape(shape).clone()
            count.fill_(learn.init_from_data)
            if RANGE_KEY in m._buffers:
                del m._buffers[RANGE_KEY]
            elif RANGE_KEY in m._parameters:
                del m._parameters[RANGE_KEY]
        else:
            value = torch.full(shape, float(learn.init_value), dtype=torch.float32)
        device = m.weight.device
        m.register_parameter(RANGE_KEY, nn.Parameter(value.to(device)))
        m.register_buffer(COUNT_KEY, count.to(device), persistent=False)


def _layers(model: nn.Module):
    if isinstance(model, (nn.Linear, nn.Conv2d)):
        return [("", model)]
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


@torch.no_grad()
def init_from_data(layer: nn.Module, rows: torch.Tensor, cols: torch.Tensor,
                   learn: RangeLearning) -> None:
    """One batch of aihwkit's init from data on the layer's ranges (rows: the batch's input
    rows, groups × width columns; cols: column_ranges)."""
    r = getattr(layer, RANGE_KEY)
    count = getattr(layer, COUNT_KEY)
    flat_r, flat_n = r.data.view(-1), count.view(-1)
    todo = (flat_n < learn.init_from_data).nonzero().flatten().tolist()
    for k in todo:
        std = rows[:, cols == k].std()
        if std > 0.0:
            i = float(flat_n[k])
            flat_r[k] = (flat_r[k] * i + learn.init_std_alpha * std) / (i + 1)
            flat_n[k] += 1
        flat_r[k] = flat_r[k].abs()


class ClipRange(torch.autograd.Function):
    """clip(x, −|r|, |r|) per column's range, with aihwkit's InputRangeForward gradient to the
    ranges (module docstring)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, r: torch.Tensor, cols: torch.Tensor, decay: float,
                min_pct: float) -> torch.Tensor:
        rc = r.reshape(-1)[cols]
        bound = rc.abs()
        xc = torch.minimum(torch.maximum(x, -bound), bound)
        ctx.save_for_backward(x, xc, r, cols)
        ctx.decay, ctx.min_pct = decay, min_pct
        return xc

    @staticmethod
    def backward(ctx, d: torch.Tensor):
        x, xc, r, cols = ctx.saved_tensors
        flat = r.reshape(-1)
        rc = flat[cols]
        bound = rc.abs()
        d_x = d * ((x >= -bound) & (x <= bound))
        upper, lower = xc >= rc, xc <= -rc
        per_col = (d * upper).clamp(max=0.0).sum(0) - (d * lower).clamp(min=0.0).sum(0)
        grad = torch.zeros_like(flat).index_add_(0, cols, per_col)
        grad = grad * flat
        if ctx.decay > 0:
            inside = torch.zeros_like(flat).index_add_(
                0, cols, (xc.abs() < rc).to(flat.dtype).sum(0))
            total = torch.zeros_like(flat).index_add_(
                0, cols, torch.full_like(per_col, float(x.shape[0])))
            grad = grad + ctx.decay * flat * (inside / total > ctx.min_pct).to(flat.dtype)
        return d_x, grad.view_as(r), None, None, None


def clip_rows(layer: nn.Module, rows: torch.Tensor, cols: torch.Tensor,
              learn: RangeLearning) -> torch.Tensor:
    """The layer's rows clipped to its ranges (differentiable in the rows and the ranges)."""
    r = getattr(layer, RANGE_KEY)
    return ClipRange.apply(rows, r, cols.to(rows.device), float(learn.decay),
                           float(learn.input_min_percentage))


def matrix_ranges(layer: nn.Module) -> np.ndarray:
    """The ranges as groups × chunks float32 numpy (the pass's alpha of each chunk)."""
    r = getattr(layer, RANGE_KEY).detach().to(torch.float32).cpu().numpy()
    return r.reshape(1, -1) if r.ndim == 1 else r
