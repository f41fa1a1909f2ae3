"""Hardware-aware training of the layers made of several matrices: ``nn.MultiheadAttention``
and ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN``.

Torch computes these layers from their raw parameters (``in_proj_weight``, ``weight_hh_l0``),
not through Linear modules, so the noisy forward of :mod:`mc_engine.train.noisy` would not see
their matrices. Within :func:`compound_forward` each such layer runs through the same structure
as its analog conversion (:func:`mc_engine.analog.sequence.build`: the matrices of
``part_names``, the attention products and the gates digital), each matrix a
:class:`_Matrix` that reads the layer's own parameters at every call (so the gradients reach
them) and computes with the noisy Linear forward. A recurrent ``hh`` matrix runs once per step,
each call drawing its own weight noise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from mc_engine.analog.sequence import COMPOUND, build, part_names


class _Matrix(nn.Module):
    """One matrix of a compound layer, seen as a Linear (``weight``, ``bias``,
    ``in_features``, ``out_features``, ``training``) by the noisy forward: read from the
    owner's parameters ``weight`` and ``bias`` (rows ``rows`` of the bias) at every access."""

    def __init__(self, owner: nn.Module, weight: str, bias: str | None,
                 rows: slice | None = None):
        super().__init__()
        # Not a submodule: the owner holds this matrix's layer, not the other way round.
        object.__setattr__(self, "_source", (owner, weight, bias, rows))

    @property
    def weight(self) -> torch.Tensor:
        owner, weight, _, _ = self._source
        return getattr(owner, weight)

    @property
    def bias(self) -> torch.Tensor | None:
        owner, _, bias, rows = self._source
        value = getattr(owner, bias) if bias is not None else None
        return value if value is None or rows is None else value[rows]

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]


def _matrix(module: nn.Module, suffix: str) -> _Matrix:
    """The :class:`_Matrix` of ``module``'s part ``suffix`` (``part_names``)."""
    if isinstance(module, nn.MultiheadAttention):
        if suffix == "out_proj":
            return _Matrix(module.out_proj, "weight", "bias")
        if suffix == "in_proj":
            return _Matrix(module, "in_proj_weight", "in_proj_bias")
        i, e = "qkv".index(suffix[0]), module.embed_dim
        bias = "in_proj_bias" if module.in_proj_bias is not None else None
        return _Matrix(module, f"{suffix}_weight", bias, slice(i * e, (i + 1) * e))
    cell, kind = suffix.split(".")                       # "l0_reverse", "hh"
    bias = f"bias_{kind}_{cell}" if kind != "hr" and module.bias else None
    return _Matrix(module, f"weight_{kind}_{cell}", bias)


@contextmanager
def compound_forward(model: nn.Module,
                     linear: Callable[[nn.Module], Callable[[torch.Tensor], torch.Tensor]]
                     ) -> Iterator[None]:
    """Within the block every compound layer of ``model`` runs through its analog structure,
    each matrix ``m`` computing ``linear(m)(x)``; afterwards the layers are as before."""
    patched = []
    for name, module in model.named_modules():
        if not isinstance(module, COMPOUND):
            continue
        made: dict[str, nn.Module] = {}
        for suffix in part_names(module):
            matrix = _matrix(module, suffix)
            matrix.forward = linear(matrix)
            made[suffix] = matrix
        twin = build(module, made, name)
        twin.train(module.training)
        module.forward = twin.forward
        patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            del module.forward
