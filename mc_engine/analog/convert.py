"""Convert a trained torch model: Linear, Conv1d, Conv2d, HuggingFace's Conv1D and the matrices
of attention and recurrent layers (:mod:`mc_engine.analog.sequence`) become analog layers, the
rest stays digital."""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from mc_engine.analog import sequence
from mc_engine.analog.checks import (
    DIGITAL_WITH_PARAMS,
    check_materialised,
    check_weights,
    is_hf_conv1d,
)
from mc_engine.analog.execution import NUMBA_CPU, Execution
from mc_engine.analog.input_ranges import calibrate as calibrate_ranges
from mc_engine.analog.input_ranges import model_inputs, same_inputs
from mc_engine.analog.layers import (  # noqa: F401  (re-exported)
    AnalogConv1d,
    AnalogConv2d,
    AnalogLayer,
    AnalogLinear,
    _analog,
    _as_numpy,
    _conv_padding,
    _hf_linear,
)
from mc_engine.errors import UserInputError
from mc_engine.hardware.config import HardwareConfig

#: The layers of one matrix (or one per group).
SINGLE = (nn.Linear, nn.Conv1d, nn.Conv2d)
#: What the error messages call the mapped layers.
MAPPED_NAMES = ("Linear, Conv1d, Conv2d, HuggingFace Conv1D, MultiheadAttention, LSTM, GRU, "
                "RNN")


def _single(m: nn.Module) -> bool:
    return isinstance(m, SINGLE) or is_hf_conv1d(m)


def _mapped(m: nn.Module) -> bool:
    return _single(m) or isinstance(m, sequence.COMPOUND)


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
            x = model_inputs(calibration[:self.hw.calibration_samples])
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
    """A copy of ``model`` whose weight matrices run on analog tiles described by ``hw``: every
    Linear, Conv1d, Conv2d and HuggingFace Conv1D, and the matrices of MultiheadAttention,
    LSTM, GRU and RNN layers (:mod:`mc_engine.analog.sequence`).

    BatchNorm, LayerNorm, Embedding, activations, pooling, residual adds and other
    parameter-free modules stay digital. ``layers``: the qualified names
    (:func:`analog_layer_names`) of the matrices to put on tiles, the others staying digital;
    None = all. A layer's random streams do not depend on which others are analog. Raises
    UserInputError naming the module for layers it cannot map, non-finite weights or an
    unknown name in ``layers``.
    """
    hw = hw or HardwareConfig()

    def fail(message: str) -> UserInputError:
        return UserInputError(message, key="model")

    check_materialised(model, fail)
    check_weights(model, fail)
    if layers is not None:
        known = analog_layer_names(model)
        unknown = sorted(set(layers) - set(known))
        if unknown:
            raise UserInputError(f"no analog layer named {', '.join(unknown)}; "
                                 f"layers: {', '.join(known)}", key="model")
    module, index = _build(model, hw, layers, analog=True)
    if index == 0:
        raise UserInputError(f"the model has no layer to put on analog tiles ({MAPPED_NAMES})",
                             key="model")
    digital = _build(model, hw, (), analog=False)[0] \
        if hw.noise_management == "calibrated" else None
    return AnalogModel(module, hw, digital)


def _build(model: nn.Module, hw: HardwareConfig, layers: Collection[str] | None,
           analog: bool) -> tuple[nn.Module, int]:
    """A copy of ``model`` with the ``layers`` (None = all) on tiles when ``analog``, and the
    number of matrices. ``analog`` False: the digital twin with the same module names (every
    compound layer and Conv1D rebuilt from digital Linears), whose modules the calibrated input
    ranges hook."""
    module = copy.deepcopy(model).eval()
    index = 0
    # A module under two names (Sequential(fc, act, fc), an attribute set twice: tied weights)
    # is one layer: converted once, at its first name, and that one analog layer (one matrix,
    # read afresh at each call) put under every name it has.
    done: dict[int, nn.Module] = {}
    bare: nn.Module | None = None

    def chosen(name: str) -> bool:
        return analog and (layers is None or name in layers)

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
            new = None
            if _single(child):
                _check_finite(child, name)
                layer = _hf_linear(child) if is_hf_conv1d(child) else child
                if chosen(name):              # the index counts digital ones too
                    own = "" if parent is bare else name    # a bare layer's state_dict keys
                    new = _analog(layer, hw, index, own)
                elif not analog and layer is not child:
                    new = layer
                index += 1
            elif isinstance(child, sequence.COMPOUND):
                _check_finite(child, name)
                made = {}
                for suffix, lin in sequence.parts(child, name):
                    full = f"{name}.{suffix}"
                    made[suffix] = _analog(lin, hw, index, full) if chosen(full) else lin
                    index += 1
                if not analog or any(isinstance(m, AnalogLayer) for m in made.values()):
                    new = sequence.build(child, made, name)
            else:
                own = list(child.parameters(recurse=False))
                if own and not isinstance(child, DIGITAL_WITH_PARAMS):
                    raise UserInputError(
                        f"module '{name}' ({type(child).__name__}) has weights but is not "
                        f"supported; analog layers: {MAPPED_NAMES}; digital: "
                        + ", ".join(c.__name__ for c in DIGITAL_WITH_PARAMS), key="model")
                replace(child, name + ".")
                continue
            if new is not None:
                setattr(parent, child_name, new)
                done[id(child)] = new

    if _mapped(module):
        holder = bare = nn.Sequential(module)
        replace(holder, "")
        module = holder if isinstance(module, sequence.COMPOUND) or analog else holder[0]
    else:
        replace(module, "")
    for m in module.modules():           # its nested fast path reads the layers' weights
        if isinstance(m, nn.TransformerEncoder):
            m.use_nested_tensor = False
    return module, index


def analog_layer_names(model: nn.Module) -> list[str]:
    """Qualified names of the matrices :func:`convert` puts on tiles, in the order it numbers
    them; a bare Linear or Conv2d is layer ``"0"``, the matrices of a bare LSTM ``"0.l0.ih"``,
    and so on; an attention layer's are ``<name>.in_proj`` (or ``q_proj``, ``k_proj``,
    ``v_proj``) and ``<name>.out_proj``, a recurrent layer's ``<name>.l<k>[_reverse].ih``,
    ``.hh`` (and ``.hr`` with proj_size)."""
    root = nn.Sequential(model) if _mapped(model) else model
    names: list[str] = []
    seen: set[int] = set()

    def walk(parent: nn.Module, prefix: str) -> None:
        for child_name, child in parent._modules.items():
            if child is None or id(child) in seen:
                continue
            seen.add(id(child))
            name = f"{prefix}{child_name}"
            if _single(child):
                names.append(name)
            elif isinstance(child, sequence.COMPOUND):
                names.extend(f"{name}.{s}" for s in sequence.part_names(child))
            else:
                walk(child, name + ".")

    walk(root, "")
    return names


def _check_finite(layer: nn.Module, name: str) -> None:
    for pname, p in layer.named_parameters():
        if not torch.isfinite(p).all():
            raise UserInputError(f"layer '{name}' has NaN or infinite values in '{pname}'",
                                 key="model")
