"""The torch execution of the analog pass (placeholder while it is being written)."""

from __future__ import annotations


def matrix_forward(matrix, x):
    raise NotImplementedError


def conv_forward(layer, x, out_hw):
    raise NotImplementedError
