"""Checks that every weight of a loaded model has a value and ends up on analog tiles or in a
known digital layer.

``convert`` maps Linear, Conv1d, Conv2d, HuggingFace's Conv1D, MultiheadAttention, LSTM, GRU
and RNN and keeps a short list of digital layers (BatchNorm, ...);
a weight anywhere else would stay digital without a word, which makes the accuracy of the
"analog" model a lie. So every parameter must be owned by one of those modules, and modules must
not hide layers or parameters in plain Python containers (a list is invisible to torch, and so to
``convert``). Lazy (uninitialised) and meta-device parameters have no values to program.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from torch import nn
from torch.nn.parameter import UninitializedParameter

from mc_engine.errors import UserInputError

# Modules with parameters that stay digital (exact torch ops). Anything else with parameters of
# its own that is not Linear/Conv2d is rejected, so that no weight silently escapes the analog
# model.
DIGITAL_WITH_PARAMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm,
                       nn.InstanceNorm1d, nn.InstanceNorm2d, nn.PReLU, nn.Embedding)

#: The layers ``convert`` puts on analog tiles (everything inside them goes with them), besides
#: HuggingFace's Conv1D (:func:`is_hf_conv1d`).
ANALOG_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.MultiheadAttention, nn.LSTM, nn.GRU,
                 nn.RNN)
_ANALOG_NAMES = "Linear, Conv1d, Conv2d, HuggingFace Conv1D, MultiheadAttention, LSTM, GRU, RNN"
#: Attributes every nn.Module has (torch's own bookkeeping), not the user's.
_TORCH_ATTRS = frozenset(vars(nn.Module()))
_FIX = ("register it (nn.ModuleList / nn.ModuleDict / nn.ParameterList) and use Linear or "
        "Conv2d for weights")


def is_hf_conv1d(module: nn.Module) -> bool:
    """Whether ``module`` is HuggingFace transformers' GPT-2 ``Conv1D`` (a transposed Linear:
    weight in × out, y = x·W + b), recognised by its class name and shapes so that
    transformers stays optional."""
    if type(module).__name__ != "Conv1D" or not isinstance(getattr(module, "nf", None), int):
        return False
    w, b = getattr(module, "weight", None), getattr(module, "bias", None)
    return isinstance(w, nn.Parameter) and w.dim() == 2 and w.shape[1] == module.nf and \
        (b is None or tuple(b.shape) == (module.nf,)) and \
        {n for n, _ in module.named_parameters()} <= {"weight", "bias"}


def is_mapped(module: nn.Module) -> bool:
    """Whether ``convert`` puts ``module`` (and all its weights) on analog tiles."""
    return isinstance(module, ANALOG_LAYERS) or is_hf_conv1d(module)


def check_weights(model: nn.Module, fail: Callable[[str], UserInputError]) -> None:
    """Raise ``fail(message)`` naming the first parameter or module that would escape the
    analog model or has no value."""
    for name, module in _modules_outside_analog_layers(model):
        where = f"module '{name}' ({type(module).__name__})" if name else \
            f"the model's root module ({type(module).__name__})"
        for pname, _ in module.named_parameters(recurse=False):
            full = f"{name}.{pname}" if name else pname
            if not (is_mapped(module) or isinstance(module, DIGITAL_WITH_PARAMS)):
                raise fail(f"parameter {full} is owned by {where}, which is neither an analog "
                           f"layer ({_ANALOG_NAMES}) nor a known digital one "
                           f"({', '.join(c.__name__ for c in DIGITAL_WITH_PARAMS)}), so it "
                           f"would stay digital; put the weight in a Linear or Conv2d")
        for attr, value in vars(module).items():
            if isinstance(module, nn.RNNBase) and attr == "_flat_weights":
                continue               # torch's own list of the registered weights
            if attr not in _TORCH_ATTRS and _hides_weights(value):
                raise fail(f"{where} keeps layers or parameters with weights in the plain "
                           f"Python attribute {attr!r}, where torch (and so the analog "
                           f"conversion) cannot see them; {_FIX}")


def check_materialised(model: nn.Module, fail: Callable[[str], UserInputError]) -> None:
    """Raise ``fail(message)`` naming the first lazy or meta-device parameter or buffer (such a
    model cannot even be checked against its data)."""
    for pname, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if isinstance(tensor, UninitializedParameter) or tensor.is_meta:
            module = pname.rpartition(".")[0]
            owner = f"module '{module}'" if module else "the model's root module"
            raise fail(f"{pname} of {owner} has no values (lazy or meta-device); the factory "
                       f"must return a model with materialised weights (run one forward pass "
                       f"or load a checkpoint in it)")


def _modules_outside_analog_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) of every module, except those inside a mapped layer (converted whole,
    e.g. with their parametrizations)."""
    inside: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix) for prefix in inside):
            continue
        yield name, module
        if is_mapped(module):
            inside.append(f"{name}." if name else "")


def _hides_weights(value: object, depth: int = 0) -> bool:
    """Whether a plain container holds a parameter or a module with parameters."""
    if isinstance(value, nn.Parameter):
        return True
    if isinstance(value, nn.Module):
        return depth > 0 and any(True for _ in value.parameters())
    if depth < 3 and isinstance(value, (list, tuple, set, dict)):
        items = value.values() if isinstance(value, dict) else value
        return any(_hides_weights(v, depth + 1) for v in items)
    return False
