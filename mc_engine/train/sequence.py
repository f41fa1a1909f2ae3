"""The noisy forward of hardware-aware training for the layers beyond Linear and Conv2d that
the Monte Carlo engine maps (mc_engine/analog/sequence.py, docs/physics.md): HuggingFace's
Conv1D (a transposed Linear), Conv1d (a Conv2d of kernel height 1), MultiheadAttention and
LSTM/GRU/RNN.

Their matrices run through the same noisy Linear forward as every nn.Linear
(:func:`mc_engine.train.noisy._linear`) on views of the layer's own parameters, so gradients
reach them and the state_dict is untouched. A matrix called several times in one forward (the
packed in-projection on the query and on the memory; the hidden-hidden matrix at every time
step) holds one draw of its programming and weight noise for the whole call, as the programmed
array of the engine does, with fresh MVM noise per call; the attention products and gates are
the engine's digital code (:func:`mc_engine.analog.sequence.attention_forward`,
:func:`~mc_engine.analog.sequence.recurrent_forward`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from mc_engine.analog import sequence
from mc_engine.analog.checks import is_hf_conv1d


def sequence_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) of every layer this module gives a noisy forward."""
    for name, m in model.named_modules():
        if isinstance(m, (*sequence.COMPOUND, nn.Conv1d)) or is_hf_conv1d(m):
            yield name, m


def _view(weight: torch.Tensor, bias: torch.Tensor | None, owner: nn.Module):
    """A Linear as the noisy forward reads one: weight (out × in), bias, sizes, mode."""
    return SimpleNamespace(weight=weight, bias=bias, out_features=weight.shape[0],
                           in_features=weight.shape[1], training=owner.training)


class _Matrix:
    """One matrix for one forward call of its layer: noise drawn at the first call, reused."""

    def __init__(self, view, linear: Callable, draws: Callable):
        self.view, self.linear, self.draws_of, self.draws = view, linear, draws, None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.draws is None:
            self.draws = self.draws_of(self.view)
        return self.linear(self.view, x=x, draws=self.draws)


def _views(m: nn.Module) -> dict[str, SimpleNamespace]:
    """The matrices of a compound layer as views of its parameters (suffix -> view)."""
    if isinstance(m, nn.MultiheadAttention):
        b = m.in_proj_bias
        if m._qkv_same_embed_dim:
            return {"in_proj": _view(m.in_proj_weight, b, m)}
        e = m.embed_dim
        return {f"{s}_proj": _view(getattr(m, f"{s}_proj_weight"),
                                   None if b is None else b[i * e:(i + 1) * e], m)
                for i, s in enumerate("qkv")}
    views = {}
    for cell in sequence._cells(m):
        sfx = cell[1:]
        for k in ("ih", "hh", "hr"):
            w = getattr(m, f"weight_{k}_l{sfx}", None)
            if w is not None:
                bias = getattr(m, f"bias_{k}_l{sfx}", None) if m.bias else None
                views[f"{cell}.{k}"] = _view(w, bias, m)
    return views


def patch_sequence_layers(model: nn.Module, linear: Callable, draws: Callable,
                          conv: Callable) -> list[nn.Module]:
    """Give every layer of :func:`sequence_layers` its noisy forward (``linear``: the noisy
    Linear forward (view, x, draws); ``draws``: a view's draws of this batch; ``conv``: the
    noisy convolution); returns the patched modules (their ``forward`` to delete after)."""
    patched = []
    for _, m in sequence_layers(model):
        if isinstance(m, nn.Conv1d):
            m.forward = lambda x, m=m: conv(m, x=x)
        elif is_hf_conv1d(m):
            m.forward = lambda x, m=m: linear(_view(m.weight.T, m.bias, m), x=x)
        elif isinstance(m, nn.MultiheadAttention):
            def attention(*args, m=m, **kw):
                project = {s: _Matrix(v, linear, draws) for s, v in _views(m).items()}
                project["out_proj"] = m.out_proj            # an nn.Linear: patched already
                return sequence.attention_forward(m, project, *args, **kw)
            m.forward = attention
        else:
            def recurrent(x, hx=None, m=m):
                cells: dict[str, dict] = {}
                for key, v in _views(m).items():
                    cell, k = key.split(".")
                    cells.setdefault(cell, {})[k] = _Matrix(v, linear, draws)
                return sequence.recurrent_forward(m, type(m).__name__,
                                                  sequence.step_function(m), cells, x, hx)
            m.forward = recurrent
        patched.append(m)
    return patched


def conv_as_2d(layer: nn.Conv1d | nn.Conv2d, x: torch.Tensor
               ) -> tuple[SimpleNamespace, torch.Tensor]:
    """A convolution and its input as the engine's Conv2d runs them (a Conv1d of kernel
    height 1; a padding mode other than zeros padded digitally first): (geometry, 4-D input)."""
    from mc_engine.analog.convert import _conv_padding

    one_d = isinstance(layer, nn.Conv1d)
    if layer.padding_mode != "zeros":
        x = F.pad(x, tuple(layer._reversed_padding_repeated_twice), mode=layer.padding_mode)
        pad = (0,) * len(layer.kernel_size)
    else:
        pad = _conv_padding(layer, "")
    two = (lambda v, fill=1: (fill, *v)) if one_d else (lambda v, fill=1: tuple(v))
    geometry = SimpleNamespace(kernel_size=two(layer.kernel_size), stride=two(layer.stride),
                               dilation=two(layer.dilation), padding=two(pad, 0),
                               groups=layer.groups, out_channels=layer.out_channels,
                               weight=layer.weight, padding_mode="zeros")
    return geometry, (x.unsqueeze(2) if one_d else x)


def weight_matrices(model: nn.Module) -> Iterator[torch.Tensor]:
    """Every weight matrix the engine puts on tiles (for clipping)."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)) or is_hf_conv1d(m):
            yield m.weight
        elif isinstance(m, sequence.COMPOUND):
            yield from (v.weight for v in _views(m).values())
