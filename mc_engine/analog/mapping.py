"""How a tile's weights become target conductances, and read conductances become the array
matrix that the MVM multiplies (DESIGN.md §2.2 and §2.3).

A mapping knows the device layout of one tile (pairs or single devices, bit slices, a dummy
column) and nothing of DACs, ADCs or device physics. It hands the read-out a :class:`Layout`:
which columns of the array matrix belong to which slice, which is the dummy column, and the
digital constants that turn the ADC's numbers back into weight units.

- :class:`WeightUnitPairs` is the default path (IBM toolkit convention): a differential pair per
  weight, the array matrix in the model's weight units.
- :class:`ConductanceMapping` is CrossSim's convention, used whenever ``weight_bits > 0`` or an
  offset scheme is chosen: quantized integer weights, optionally bit-sliced LSB first, the array
  matrix in conductance units g/g_max, rescaled digitally after the ADC.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mc_engine.hardware.config import HardwareConfig


@dataclass(frozen=True)
class Layout:
    """The columns of a tile's array matrix and the digital recombination of their outputs.

    The array matrix has ``len(coefs) * n_out`` weight columns (slice i in columns
    i*n_out .. (i+1)*n_out), then, if ``dummy``, one dummy column per slice. The read-out
    computes ``rescale * sum_i coefs[i]*(y_i - y_dummy_i - offset*sum_j x_j)`` from the
    digitised outputs.
    """

    n_out: int
    coefs: tuple[float, ...] = (1.0,)
    dummy: bool = False
    offset: float = 0.0
    rescale: float = 1.0

    @property
    def n_cols(self) -> int:
        return len(self.coefs) * (self.n_out + int(self.dummy))


class WeightUnitPairs:
    """A differential pair per weight, array matrix in weight units (DESIGN.md §2.2).

    g± = g_min + s·max(±W, 0) with s = (g_max - g_min)/max|W_tile|; the array holds
    (g+ - g-)/s. ``pair_drift = 'net'`` re-maps the programmed net weight to one device per
    weight with a fresh scale s' from its own maximum, as the toolkit does.
    """

    weight_units = True

    def __init__(self, w: np.ndarray, hw: HardwareConfig):
        self.w_ideal = w
        self.g_max, self.g_min = hw.g_max, hw.g_min
        self.layout = Layout(n_out=w.shape[0])
        self.scale = 1.0

    def _pair(self, w: np.ndarray) -> tuple[np.ndarray, float]:
        wmax = float(np.abs(w).max())
        s = (self.g_max - self.g_min) / (wmax if wmax > 0 else 1.0)
        sw = s * w.astype(np.float64).ravel()
        g = np.concatenate([np.maximum(sw, 0.0), np.maximum(-sw, 0.0)])
        return (g + self.g_min if self.g_min > 0 else g), s

    def targets(self) -> np.ndarray:
        g, self.scale = self._pair(self.w_ideal)
        return g

    def matrix(self, g: np.ndarray, scale: float | None = None) -> np.ndarray:
        """(out × in) weights held by conductances ``g`` ([g+, g-] flat)."""
        n = g.size // 2
        return ((g[:n] - g[n:]) / (self.scale if scale is None else scale)).reshape(
            self.w_ideal.shape)

    def ideal_matrix(self) -> np.ndarray:
        return self.w_ideal

    def remap_net(self, g_prog: np.ndarray) -> tuple[np.ndarray, float]:
        """The programmed pairs as one device per weight on a fresh scale: (g, s')."""
        return self._pair(self.matrix(g_prog))


class ConductanceMapping:
    """Quantized, optionally bit-sliced, pair- or offset-mapped weights in conductance units
    (DESIGN.md §2.3).

    ``w_max`` is max|W| of the whole layer (every tile of the layer shares it). Each slice i
    holds the signed value v_i = sign(W_int)·d_i/(2^c − 1) (without quantization, one slice
    v = W/w_max). Differential: g± = g_min + (g_max − g_min)·max(±v_i, 0); offset schemes: one
    device g = g_min + (g_max − g_min)·(v_i + 1)/2, and with ``dummy_column`` one reference
    column per slice at (g_max + g_min)/2. Flat target vector, slice by slice: [g+, g-] (each
    out × in) or [g (out × in)], then the dummy columns (in each).
    """

    weight_units = False

    def __init__(self, w: np.ndarray, hw: HardwareConfig, w_max: float):
        self.shape = w.shape
        self.g_max, self.g_min = hw.g_max, hw.g_min
        self.w_max = w_max if w_max > 0 else 1.0
        self.differential = hw.offset == "differential"
        span = self.g_max - self.g_min
        v = w.astype(np.float64) / self.w_max
        if hw.weight_bits > 0:
            levels = 2 ** (hw.weight_bits - 1) - 1
            w_int = np.rint(v * levels)
            c = hw.slice_bits
            cell_levels = 2 ** c - 1
            digits = slice_digits(np.abs(w_int).astype(np.int64), c, hw.n_slices)
            self.v = np.sign(w_int) * digits / cell_levels           # S × out × in
            coefs = tuple(float(2 ** (i * c)) for i in range(hw.n_slices))
            gain = self.w_max * cell_levels / levels
        else:
            self.v, coefs, gain = v[None], (1.0,), self.w_max
        self.sig = np.array(coefs)
        self.analog_sum = hw.slice_recombination == "analog" and len(coefs) > 1
        self.layout = Layout(
            n_out=w.shape[0], coefs=(1.0,) if self.analog_sum else coefs,
            dummy=hw.offset == "dummy_column",
            offset=(self.g_max + self.g_min) / (2 * self.g_max) * (
                self.sig.sum() if self.analog_sum else 1.0) if hw.offset == "digital" else 0.0,
            rescale=gain * self.g_max / span * (1.0 if self.differential else 2.0))

    def targets(self) -> np.ndarray:
        span = self.g_max - self.g_min
        if self.differential:
            g = np.stack([np.maximum(self.v, 0.0), np.maximum(-self.v, 0.0)], axis=1)
            return (self.g_min + span * g).ravel()
        g = (self.g_min + span * (self.v + 1.0) / 2.0).ravel()
        if self.layout.dummy:
            n_dummy = self.v.shape[0] * self.shape[1]
            g = np.concatenate([g, np.full(n_dummy, (self.g_max + self.g_min) / 2.0)])
        return g

    def matrix(self, g: np.ndarray) -> np.ndarray:
        """The array matrix (columns × in) in units of g/g_max for conductances ``g``."""
        n_slices = self.v.shape[0]
        n_out, n_in = self.shape
        size = n_slices * n_out * n_in
        if self.differential:
            pairs = g.reshape(n_slices, 2, n_out * n_in)
            slices = (pairs[:, 0] - pairs[:, 1]) / self.g_max      # S × (out·in)
            dummy = None
        else:
            slices = (g[:size] / self.g_max).reshape(n_slices, n_out * n_in)
            dummy = (g[size:] / self.g_max).reshape(n_slices, n_in) if self.layout.dummy \
                else None
        if self.analog_sum:          # significance-weighted currents summed on one column
            slices = np.tensordot(self.sig, slices, axes=1)[None]
            dummy = None if dummy is None else np.tensordot(self.sig, dummy, axes=1)[None]
        cols = slices.reshape(-1, n_in)
        return cols if dummy is None else np.concatenate([cols, dummy])

    def ideal_matrix(self) -> np.ndarray:
        return self.matrix(self.targets())

    def remap_net(self, g_prog: np.ndarray) -> tuple[np.ndarray, None]:
        """pair_drift = 'net': each programmed pair re-expressed as one device holding the net
        conductance above g_min (the other at g_min), on the programmed scale. Offset schemes
        have one device per weight already."""
        if not self.differential:
            return g_prog, None
        pairs = g_prog.reshape(self.v.shape[0], 2, -1)
        net = pairs[:, 0] - pairs[:, 1]
        out = np.stack([np.maximum(net, 0.0), np.maximum(-net, 0.0)], axis=1) + self.g_min
        return out.reshape(-1), None


def slice_digits(magnitude: np.ndarray, cell_bits: int, n_slices: int) -> np.ndarray:
    """Bit slices of non-negative integers, LSB first (S × shape): d_i = floor(|W|/2^(i·c))
    mod 2^c for i < S-1, and the top slice takes the rest."""
    digits = []
    rest = magnitude
    for i in range(n_slices):
        if i < n_slices - 1:
            digits.append(rest % (2 ** cell_bits))
            rest = rest // (2 ** cell_bits)
        else:
            digits.append(rest)
    return np.stack(digits).astype(np.float64)


def make_mapping(w: np.ndarray, hw: HardwareConfig, w_max: float
                 ) -> WeightUnitPairs | ConductanceMapping:
    """The mapping of a tile's block ``w`` for ``hw``; ``w_max`` is the layer's max|W|."""
    if hw.conductance_units:
        return ConductanceMapping(w, hw, w_max)
    if hw.g_converter != "single_pair":      # aihwkit's other converters (analog/converters.py)
        from mc_engine.analog.converters import make_converter
        return make_converter(w, hw)
    return WeightUnitPairs(w, hw)
