"""Static input ranges per tile (docs/physics.md, "Tile forward", step 1): noise_management
'calibrated' (input_range_std × the std of each tile's inputs through the digital model) and
'learned' (ranges stored with the weights, the state_dict entry ``<layer>.input_range``).

Tiles of one input chunk of a matrix see the same inputs, so a matrix has one range per input
chunk (a grouped convolution: one per group and chunk). Ranges depend on the model, the data and
the tiling only, never on a chip: they are computed once per conversion, on the CPU, and draw
no random numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from mc_engine.analog.tile import split_sizes
from mc_engine.errors import UserInputError
from mc_engine.hardware.config import HardwareConfig

#: The state_dict entry of an analog layer's learned ranges: ``<layer>.input_range``.
RANGE_KEY = "input_range"
#: Calibration samples per digital forward call (bounds the im2col memory of a convolution).
RANGE_BATCH = 32
STATIC_MODES = ("calibrated", "learned")


def layer_shape(layer: nn.Module, hw: HardwareConfig) -> tuple[int, int]:
    """(groups, input chunks) of a Linear, Conv1d or Conv2d on tiles of ``hw``: the shape of
    its ranges."""
    if isinstance(layer, nn.Linear):
        groups, width = 1, layer.in_features
    else:
        groups = layer.groups
        width = layer.in_channels // groups * math.prod(layer.kernel_size)
    return groups, len(split_sizes(width, hw.max_input_size))


def learned_ranges(layer: nn.Module, name: str, hw: HardwareConfig) -> np.ndarray:
    """The learned ranges of ``layer`` (qualified name ``name``) as groups × chunks float32;
    UserInputError when it has none, or they do not fit the tiles of ``hw`` or are not finite
    and > 0."""
    key = f"{name}.{RANGE_KEY}" if name else RANGE_KEY
    value = getattr(layer, RANGE_KEY, None)
    if not isinstance(value, torch.Tensor):
        raise UserInputError(
            f"noise_management = 'learned' reads each analog layer's input ranges from the "
            f"checkpoint (state_dict entry {key!r}, written by hardware-aware training), and "
            f"layer {name or '0'!r} has none; use noise_management = 'calibrated' or "
            f"'constant' for this model", key="noise_management")
    groups, chunks = layer_shape(layer, hw)
    shape = tuple(value.shape)
    if shape not in ((groups, chunks),) + (((chunks,),) if groups == 1 else ()):
        expected = f"({chunks},)" if groups == 1 else f"({groups}, {chunks})"
        raise UserInputError(
            f"has shape {shape}, expected {expected}: one range per input chunk of "
            f"max_input_size = {hw.max_input_size} rows"
            f"{' and group' if groups > 1 else ''}", key=key)
    r = value.detach().to(torch.float32).cpu().numpy().reshape(groups, chunks)
    if not (np.isfinite(r).all() and (r > 0).all()):
        raise UserInputError(f"input ranges must be finite and > 0, got {r.ravel().tolist()}",
                             key=key)
    return np.ascontiguousarray(r)


def check_learned(model: nn.Module, hw: HardwareConfig) -> None:
    """UserInputError unless every Linear/Conv1d/Conv2d of ``model`` carries ranges that fit
    ``hw`` (attention and recurrent layers have no learned ranges)."""
    if isinstance(model, (nn.Linear, nn.Conv1d, nn.Conv2d)):
        learned_ranges(model, "", hw)
        return
    for name, module in model.named_modules():
        if isinstance(module, (nn.MultiheadAttention, nn.RNNBase)) or (
                type(module).__name__ == "Conv1D" and hasattr(module, "nf")):
            raise UserInputError(
                f"noise_management = 'learned' reads input ranges written by hardware-aware "
                f"training for Linear and convolution layers; layer {name!r} "
                f"({type(module).__name__}) has none: use noise_management = 'calibrated' or "
                f"'constant' for this model", key="noise_management")
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            learned_ranges(module, name, hw)


class _Moments:
    """Count, mean and sum of squared deviations in float64, merged batch by batch (Chan et
    al.), of one chunk's inputs."""

    def __init__(self):
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, x: torch.Tensor) -> None:
        x = x.to(torch.float64)
        n_b = x.numel()
        if n_b == 0:
            return
        mean_b = float(x.mean())
        m2_b = float(((x - mean_b) ** 2).sum())
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * self.n * n_b / n
        self.n = n

    def std(self) -> float:
        return (self.m2 / self.n) ** 0.5 if self.n else 0.0


def calibrate(digital: nn.Module, layers: Sequence, x: np.ndarray | torch.Tensor,
              hw: HardwareConfig) -> list[np.ndarray]:
    """The calibrated ranges (groups × chunks float32) of each analog layer of ``layers``
    (each with ``name``, ``matrices``, and for a convolution its geometry), from the inputs the
    digital model ``digital`` feeds its modules of those names on the first
    ``calibration_samples`` of ``x``: r = input_range_std · std (population std over every
    element of the chunk's columns: im2col columns for a convolution, padding zeros
    included). A chunk whose calibration inputs are all equal (std 0) gets r = 1."""
    from mc_engine.analog.torch_pass import patch_rows

    x = model_inputs(x[:hw.calibration_samples])
    moments = [[[_Moments() for _ in m.in_chunks] for m in lay.matrices] for lay in layers]
    handles = []

    def hook(index: int):
        lay = layers[index]

        def record(module, args):
            inp = args[0].detach().to(torch.float32)
            rows = inp.reshape(-1, inp.shape[-1]) if isinstance(module, nn.Linear) else \
                patch_rows(lay, lay.prepare(inp))
            width = lay.matrices[0].in_features
            for g, m in enumerate(lay.matrices):
                for (i0, i1), mom in zip(m.in_chunks, moments[index][g]):
                    mom.add(rows[:, g * width + i0:g * width + i1])
        return record

    for i, lay in enumerate(layers):
        module = digital if isinstance(digital, (nn.Linear, nn.Conv1d, nn.Conv2d)) else \
            digital.get_submodule(lay.name)
        handles.append(module.register_forward_pre_hook(hook(i)))
    try:
        with torch.no_grad():
            for start in range(0, len(x), RANGE_BATCH):
                digital(x[start:start + RANGE_BATCH])
    finally:
        for h in handles:
            h.remove()
    k = float(hw.input_range_std)
    out = []
    for per_layer in moments:
        r = np.array([[k * mom.std() for mom in per_matrix] for per_matrix in per_layer])
        r = np.where(np.isfinite(r) & (r > 0), r, 1.0).astype(np.float32)
        out.append(r)
    return out


def model_inputs(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Inputs as the model takes them: float32, or int64 for integer inputs (token ids)."""
    x = np.asarray(x.cpu() if isinstance(x, torch.Tensor) else x)
    return torch.as_tensor(np.ascontiguousarray(x, np.int64 if x.dtype.kind in "iu"
                                                else np.float32))


def same_inputs(a: np.ndarray | None, b: Iterable | None) -> bool:
    """Whether two calibration arrays are the same inputs (the same object or equal)."""
    if a is None or b is None:
        return a is b
    return a is b or (np.shape(a) == np.shape(b) and np.array_equal(a, b))
