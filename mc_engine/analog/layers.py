"""The analog layers of one weight matrix (or one per group): Linear, Conv2d, Conv1d (a Conv2d
of kernel height 1) and HuggingFace's Conv1D (as the Linear it is); see
:mod:`mc_engine.analog.convert` for the conversion and :mod:`mc_engine.analog.sequence` for the
attention and recurrent layers built from them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mc_engine.analog import direct_conv, torch_chips, torch_pass
from mc_engine.analog.execution import NUMBA_CPU, Execution
from mc_engine.analog.grouped import grouped_forward
from mc_engine.analog.input_ranges import learned_ranges
from mc_engine.analog.matrix import AnalogMatrix
from mc_engine.analog.rows import PatchRows
from mc_engine.errors import UserInputError
from mc_engine.hardware.config import HardwareConfig


def _as_numpy(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().to(torch.float32).cpu().numpy())


class AnalogLayer(nn.Module):
    """Common part of analog layers: one or more AnalogMatrix objects plus a digital bias."""

    matrices: list[AnalogMatrix]
    bias: torch.Tensor | None
    execution: Execution = NUMBA_CPU
    #: The layer's qualified name in the model (its first, for a module under several).
    name: str = ""
    #: While a chip batch runs (:class:`mc_engine.analog.torch_chips.ChipBatch`): this layer of
    #: every chip of the batch, this one first.
    batch: list[AnalogLayer] | None = None

    def use(self, execution: Execution) -> None:
        """Run the forward pass on ``execution`` (the bias and the tiles' arrays go there)."""
        self.execution = execution
        for m in self.matrices:
            m.use(execution)
        if self.bias is not None:
            self.bias = self.bias.to(execution.torch_device if execution.torch else "cpu")

    def program(self, seed: int | Sequence[int], reference: bool = True) -> None:
        for m in self.matrices:
            m.program(seed, reference)

    def take_reference(self) -> None:
        for m in self.matrices:
            m.take_reference()

    def set_input_ranges(self, ranges: np.ndarray) -> None:
        """Static input ranges, groups × input chunks (noise_management 'calibrated',
        'learned')."""
        for m, r in zip(self.matrices, ranges):
            m.set_input_ranges(r)

    def input_ranges(self) -> np.ndarray | None:
        """The static input ranges (groups × input chunks), None when not set."""
        if self.matrices[0].input_ranges is None:
            return None
        return np.stack([m.input_ranges for m in self.matrices])

    def calibrating(self, on: bool) -> None:
        for m in self.matrices:
            m.calibrating(on)

    def drift(self, t_s: float) -> None:
        for m in self.matrices:
            m.drift(t_s)


class AnalogLinear(AnalogLayer):
    """nn.Linear on analog tiles."""

    def __init__(self, layer: nn.Linear, hw: HardwareConfig, index: int, name: str = ""):
        super().__init__()
        self.name = name
        self.in_features, self.out_features = layer.in_features, layer.out_features
        self.matrices = [AnalogMatrix(_as_numpy(layer.weight), hw, index)]
        self.bias = None if layer.bias is None else layer.bias.detach().clone()
        if hw.noise_management == "learned":
            self.set_input_ranges(learned_ranges(layer, name, hw))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        if self.batch:
            y = torch_chips.linear_forward(self.batch, x)
        elif self.execution.torch:
            y = torch_pass.matrix_forward(self.matrices[0], x.reshape(-1, shape[-1]))
        else:
            y = torch.from_numpy(self.matrices[0].forward(_as_numpy(x.reshape(-1, shape[-1]))))
        if self.bias is not None:
            y += self.bias
        return y.reshape(*shape[:-1], self.out_features)


class AnalogConv2d(AnalogLayer):
    """nn.Conv2d on analog tiles via im2col (fused with the DAC); each group is its own matrix.
    A padding_mode other than 'zeros' pads the input digitally first, as torch does."""

    def __init__(self, layer: nn.Conv2d | nn.Conv1d, hw: HardwareConfig, index: int, name: str):
        super().__init__()
        two = (lambda v: (1, *v)) if isinstance(layer, nn.Conv1d) else tuple
        self.kernel_size, self.stride = two(layer.kernel_size), two(layer.stride)
        self.dilation, self.groups = two(layer.dilation), layer.groups
        self.out_channels = layer.out_channels
        self.pre_pad: tuple[tuple[int, ...], str] | None = None
        if layer.padding_mode != "zeros":
            self.pre_pad = (tuple(layer._reversed_padding_repeated_twice), layer.padding_mode)
            self.padding = (0, 0)
        else:
            pad = _conv_padding(layer, name)
            self.padding = (0, *pad) if isinstance(layer, nn.Conv1d) else pad
        w = _as_numpy(layer.weight)                 # (out, in/groups, [kh,] kw)
        per_group = layer.out_channels // layer.groups
        w_max = float(np.abs(w).max())
        self.matrices = [AnalogMatrix(w[g * per_group:(g + 1) * per_group].reshape(per_group, -1),
                                      hw, index, g, w_max) for g in range(layer.groups)]
        self.bias = None if layer.bias is None else layer.bias.detach().clone()
        self.name = name
        if hw.noise_management == "learned":
            self.set_input_ranges(learned_ranges(layer, name, hw))

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The input as the tiles' im2col reads it (padded digitally by a padding_mode)."""
        return x if self.pre_pad is None else F.pad(x, self.pre_pad[0], mode=self.pre_pad[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prepare(x)
        n, _, h, w = x.shape
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        ho = (h + 2 * ph - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        wo = (w + 2 * pw - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        if direct_conv.eligible(self) and not self.batch:    # static alpha: no im2col
            y = direct_conv.forward(self, x, (ho, wo), numba=not self.execution.torch)
            if self.bias is not None:
                y = y + self.bias.view(1, -1, 1, 1)
            return y
        if self.execution.torch:
            y = torch_chips.conv_forward(self.batch, x, (ho, wo)) if self.batch else \
                torch_pass.conv_forward(self, x, (ho, wo))
            if self.bias is not None:
                y = y + self.bias.view(1, -1, 1, 1)
            return y
        padded = F.pad(x.to(torch.float32), (pw, pw, ph, ph)) if ph or pw else x
        rows = PatchRows(_as_numpy(padded), self.kernel_size, self.stride, self.dilation,
                         (ho, wo))
        if len(self.matrices) > 1 and self.matrices[0].hw.ir_drop == 0 and all(
                m.n_tiles == 1 and m.tiles[0][0].readout is None for m in self.matrices):
            y = torch.from_numpy(grouped_forward(self.matrices, rows))
        else:
            width = self.matrices[0].in_features
            parts = [m.forward(rows, g * width) for g, m in enumerate(self.matrices)]
            y = torch.from_numpy(parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1))
        y = y.view(n, ho * wo, self.out_channels).transpose(1, 2)
        y = y.reshape(n, self.out_channels, ho, wo)
        if self.bias is not None:
            y += self.bias.view(1, -1, 1, 1)
        return y


class AnalogConv1d(AnalogConv2d):
    """nn.Conv1d on analog tiles: a Conv2d of kernel height 1 on the input as one row."""

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return super().prepare(x).unsqueeze(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:                               # unbatched (C, L)
            return self.forward(x.unsqueeze(0)).squeeze(0)
        return super().forward(x).squeeze(2)


def _conv_padding(layer: nn.Conv2d | nn.Conv1d, name: str) -> tuple[int, ...]:
    if isinstance(layer.padding, str):
        if layer.padding == "valid":
            return (0,) * len(layer.kernel_size)
        total = [d * (k - 1) for d, k in zip(layer.dilation, layer.kernel_size)]
        if any(t % 2 for t in total):
            raise UserInputError(f"{type(layer).__name__} padding='same' with an even "
                                 "receptive field is not supported; give explicit padding",
                                 key=f"model.{name}")
        return tuple(t // 2 for t in total)
    return tuple(layer.padding)


def _hf_linear(conv1d: nn.Module) -> nn.Linear:
    """HuggingFace's Conv1D (weight in × out, y = x·W + b) as the nn.Linear it is."""
    w = conv1d.weight.detach()
    lin = nn.Linear(w.shape[0], w.shape[1], bias=conv1d.bias is not None, device=w.device,
                    dtype=w.dtype)
    with torch.no_grad():
        lin.weight.copy_(w.T)
        if conv1d.bias is not None:
            lin.bias.copy_(conv1d.bias.detach())
    return lin.eval()


def _analog(layer: nn.Module, hw: HardwareConfig, index: int, name: str) -> AnalogLayer:
    """The analog layer of one matrix layer (Linear, Conv1d, Conv2d)."""
    if isinstance(layer, nn.Linear):
        return AnalogLinear(layer, hw, index, name)
    if isinstance(layer, nn.Conv1d):
        return AnalogConv1d(layer, hw, index, name)
    return AnalogConv2d(layer, hw, index, name)
