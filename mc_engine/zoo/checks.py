"""Checks that every weight of a loaded model has a value and ends up on analog tiles or in a
known digital layer.

``convert`` maps Linear and Conv2d and keeps a short list of digital layers (BatchNorm, ...);
a weight anywhere else would stay digital without a word, which makes the accuracy of the
"analog" model a lie. So every parameter must be owned by one of those modules, and modules must
not hide layers or parameters in plain Python containers (a list is invisible to torch, and so to
``convert``). Lazy (uninitialised) and meta-device parameters have no values to program.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from torch import nn
from torch.nn.parameter import UninitializedParameter

from mc_engine.analog.convert import DIGITAL_WITH_PARAMS
from mc_engine.errors import UserInputError

#: The layers ``convert`` puts on analog tiles (everything inside them goes with them).
ANALOG_LAYERS = (nn.Linear, nn.Conv2d)
#: Attributes every nn.Module has (torch's own bookkeeping), not the user's.
_TORCH_ATTRS = frozenset(vars(nn.Module()))
_FIX = ("register it (nn.ModuleList / nn.ModuleDict / nn.ParameterList) and use Linear or "
        "Conv2d for weights")


def check_weights(model: nn.Module, fail: Callable[[str], UserInputError]) -> None:
    """Raise ``fail(message)`` naming the first parameter or module that would escape the
    analog model or has no value."""
    for name, module in _modules_outside_analog_layers(model):
        where = f"module '{name}' ({type(module).__name__})" if name else \
            f"the model's root module ({type(module).__name__})"
        for pname, _ in module.named_parameters(recurse=False):
            full = f"{name}.{pname}" if name else pname
            if not isinstance(module, (*ANALOG_LAYERS, *DIGITAL_WITH_PARAMS)):
                raise fail(f"parameter {full} is owned by {where}, which is neither an analog "
                           f"layer (Linear, Conv2d) nor a known digital one "
                           f"({', '.join(c.__name__ for c in DIGITAL_WITH_PARAMS)}), so it "
                           f"would stay digital; put the weight in a Linear or Conv2d")
        for attr, value in vars(module).items():
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
    """(name, module) of every module, except those inside a Linear or Conv2d (converted whole,
    e.g. with their parametrizations)."""
    inside: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix) for prefix in inside):
            continue
        yield name, module
        if isinstance(module, ANALOG_LAYERS):
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
