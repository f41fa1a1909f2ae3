"""Convert a trained torch model: Linear and Conv2d become analog layers, the rest stays digital."""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mc_engine.analog import direct_conv, torch_chips, torch_pass
from mc_engine.analog.checks import DIGITAL_WITH_PARAMS, check_materialised, check_weights
from mc_engine.analog.execution import NUMBA_CPU, Execution
from mc_engine.analog.grouped import grouped_forward
from mc_engine.analog.input_ranges import calibrate as calibrate_ranges
from mc_engine.analog.input_ranges import learned_ranges, same_inputs
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
    """nn.Conv2d on analog tiles via im2col (fused with the DAC); each group is its own matrix."""

    def __init__(self, layer: nn.Conv2d, hw: HardwareConfig, index: int, name: str):
        super().__init__()
        if layer.padding_mode != "zeros":
            raise UserInputError(f"Conv2d padding_mode {layer.padding_mode!r} is not supported "
                                 "(only 'zeros')", key=f"model.{name}")
        self.kernel_size, self.stride = layer.kernel_size, layer.stride
        self.dilation, self.groups = layer.dilation, layer.groups
        self.out_channels = layer.out_channels
        self.padding = _conv_padding(layer, name)
        w = _as_numpy(layer.weight)                          # (out, in/groups, kh, kw)
        per_group = layer.out_channels // layer.groups
        w_max = float(np.abs(w).max())
        self.matrices = [AnalogMatrix(w[g * per_group:(g + 1) * per_group].reshape(per_group, -1),
                                      hw, index, g, w_max) for g in range(layer.groups)]
        self.bias = None if layer.bias is None else layer.bias.detach().clone()
        self.name = name
        if hw.noise_management == "learned":
            self.set_input_ranges(learned_ranges(layer, name, hw))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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


def _conv_padding(layer: nn.Conv2d, name: str) -> tuple[int, int]:
    if isinstance(layer.padding, str):
        if layer.padding == "valid":
            return (0, 0)
        total = [d * (k - 1) for d, k in zip(layer.dilation, layer.kernel_size)]
        if any(t % 2 for t in total):
            raise UserInputError("Conv2d padding='same' with an even receptive field is not "
                                 "supported; give explicit padding", key=f"model.{name}")
        return (total[0] // 2, total[1] // 2)
    return tuple(layer.padding)


#: Calibration inputs per forward call.
CALIBRATION_BATCH = 256


class AnalogModel(nn.Module):
    """A converted model: call it like the original; program() once, drift(t) before reading."""

    def __init__(self, module: nn.Module, hw: HardwareConfig, digital: nn.Module | None = None):
        super().__init__()
        self.module = module
        self.hw = hw
        # noise_management = 'calibrated': the digital model the ranges are calibrated on (a
        # plain list: not a submodule, stays on the CPU) and the inputs they were taken from.
        self._digital = [digital]
        self._ranges_of: list = [None]

    execution: Execution = NUMBA_CPU

    def analog_layers(self) -> Iterator[AnalogLayer]:
        return (m for m in self.module.modules() if isinstance(m, AnalogLayer))

    def use(self, execution: Execution) -> AnalogModel:
        """Run on ``execution`` from now on: Numba on the CPU, or torch on a device (the
        digital layers, the biases and the tiles' arrays move there; programming, reading and
        the random draws are the same). Returns self."""
        execution.check_available()
        execution.configure()
        self.execution = execution
        self.module.to(execution.torch_device if execution.torch else "cpu")
        for layer in self.analog_layers():
            layer.use(execution)
        return self

    def program(self, seed: int | Sequence[int],
                calibration: np.ndarray | torch.Tensor | None = None) -> AnalogModel:
        """Program every device (programming noise, drift exponents) from ``seed``.

        With ``noise_management = 'calibrated'`` the tiles' input ranges are first calibrated
        on the inputs ``calibration`` (the first ``calibration_samples``) through the digital
        model (once: :meth:`calibrate_input_ranges`). With ``adc_range = 'calibrated'`` the ADC
        ranges are then calibrated on the same inputs through the programmed, noise-free
        arrays, before the drift-compensation reference is taken.
        """
        calibrated = self.hw.adc_range == "calibrated"
        layers = list(self.analog_layers())
        if self.hw.noise_management == "calibrated":
            self.calibrate_input_ranges(calibration)
        for layer in layers:
            layer.program(seed, reference=not calibrated)
        if calibrated:
            if calibration is None or len(calibration) == 0:
                raise UserInputError("adc_range = 'calibrated' calibrates the ADC ranges on "
                                     "inputs from the training split: none were given "
                                     "(program(seed, calibration=x_train))", key="adc_range")
            x = torch.as_tensor(np.asarray(calibration[:self.hw.calibration_samples],
                                           np.float32))
            if self.execution.torch:
                x = x.to(self.execution.torch_device)
            for layer in layers:
                layer.calibrating(True)
            try:
                with torch.no_grad():
                    for start in range(0, len(x), CALIBRATION_BATCH):
                        self.module(x[start:start + CALIBRATION_BATCH])
            finally:
                for layer in layers:
                    layer.calibrating(False)
            for layer in layers:
                layer.take_reference()
        return self

    def calibrate_input_ranges(self, calibration: np.ndarray | torch.Tensor | None) -> None:
        """noise_management = 'calibrated': every tile's input range from the inputs
        ``calibration`` through the digital model (mc_engine.analog.input_ranges.calibrate);
        kept while the same inputs come again (the ranges do not depend on the chip)."""
        if calibration is None or len(calibration) == 0:
            raise UserInputError("noise_management = 'calibrated' calibrates the input ranges "
                                 "on inputs from the training split: none were given "
                                 "(program(seed, calibration=x_train))",
                                 key="noise_management")
        if same_inputs(self._ranges_of[0], calibration):
            return
        layers = list(self.analog_layers())
        for layer, r in zip(layers, calibrate_ranges(self._digital[0], layers, calibration,
                                                     self.hw)):
            layer.set_input_ranges(r)
        self._ranges_of[0] = calibration

    def adopt_input_ranges(self, other: AnalogModel) -> None:
        """Take the input ranges of ``other``, a conversion of the same model and hardware
        (chips of one batch share them: they depend on the model and data only)."""
        for mine, theirs in zip(self.analog_layers(), other.analog_layers()):
            ranges = theirs.input_ranges()
            if ranges is not None:
                mine.set_input_ranges(ranges)
        self._ranges_of[0] = other._ranges_of[0]

    def drift(self, t_s: float) -> AnalogModel:
        """Drift every device to ``t_s`` seconds after programming, with fresh read noise."""
        t = float(t_s)
        if not np.isfinite(t) or t < 0:
            raise UserInputError(f"inference time must be a finite number >= 0 s, got {t_s!r}",
                                 key="t_inference_s")
        for layer in self.analog_layers():
            layer.drift(t)
        return self

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def convert(model: nn.Module, hw: HardwareConfig | None = None,
            layers: Collection[str] | None = None) -> AnalogModel:
    """A copy of ``model`` whose Linear and Conv2d layers run on analog tiles described by ``hw``.

    BatchNorm, activations, pooling, residual adds and other parameter-free modules stay digital.
    ``layers``: the qualified names (:func:`analog_layer_names`) of the layers to put on tiles,
    the others staying digital; None = all. A layer's random streams do not depend on which
    others are analog. Raises UserInputError naming the module for layers it cannot map,
    non-finite weights or an unknown name in ``layers``.
    """
    hw = hw or HardwareConfig()

    def fail(message: str) -> UserInputError:
        return UserInputError(message, key="model")

    check_materialised(model, fail)
    check_weights(model, fail)
    module = copy.deepcopy(model).eval()
    if layers is not None:
        unknown = sorted(set(layers) - set(analog_layer_names(model)))
        if unknown:
            raise UserInputError(f"no Linear or Conv2d layer named {', '.join(unknown)}; "
                                 f"layers: {', '.join(analog_layer_names(model))}", key="model")
    index = 0
    # A module under two names (Sequential(fc, act, fc), an attribute set twice: tied weights)
    # is one layer: converted once, at its first name, and that one analog layer (one matrix,
    # read afresh at each call) put under every name it has.
    done: dict[int, nn.Module] = {}
    bare: nn.Module | None = None

    def replace(parent: nn.Module, prefix: str) -> None:
        nonlocal index
        for child_name, child in list(parent._modules.items()):  # every name, shared or not
            name = f"{prefix}{child_name}"
            if child is None:
                continue
            if id(child) in done:
                setattr(parent, child_name, done[id(child)])
                continue
            done[id(child)] = child
            if isinstance(child, (nn.Linear, nn.Conv2d)):
                _check_finite(child, name)
                if layers is None or name in layers:  # the index counts digital ones too
                    own = "" if parent is bare else name    # a bare layer's state_dict keys
                    new = AnalogLinear(child, hw, index, own) \
                        if isinstance(child, nn.Linear) else AnalogConv2d(child, hw, index, own)
                    setattr(parent, child_name, new)
                    done[id(child)] = new
                index += 1
                continue
            own = list(child.parameters(recurse=False))
            if own and not isinstance(child, DIGITAL_WITH_PARAMS):
                raise UserInputError(
                    f"module '{name}' ({type(child).__name__}) has weights but is not supported; "
                    "analog layers: Linear, Conv2d; digital: "
                    + ", ".join(c.__name__ for c in DIGITAL_WITH_PARAMS), key="model")
            replace(child, name + ".")

    if isinstance(module, (nn.Linear, nn.Conv2d)):
        holder = bare = nn.Sequential(module)
        replace(holder, "")
        module = holder
    else:
        replace(module, "")
    if index == 0:
        raise UserInputError("the model has no Linear or Conv2d layer to put on analog tiles",
                             key="model")
    digital = copy.deepcopy(model).eval() if hw.noise_management == "calibrated" else None
    return AnalogModel(module, hw, digital)


def analog_layer_names(model: nn.Module) -> list[str]:
    """Qualified names of the layers :func:`convert` puts on tiles (Linear, Conv2d), in the
    order it numbers them; a bare Linear or Conv2d is layer ``"0"``."""
    if isinstance(model, (nn.Linear, nn.Conv2d)):
        return ["0"]
    return [name for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def _check_finite(layer: nn.Module, name: str) -> None:
    for pname, p in layer.named_parameters(recurse=False):
        if not torch.isfinite(p).all():
            raise UserInputError(f"layer '{name}' has NaN or infinite values in '{pname}'",
                                 key="model")
