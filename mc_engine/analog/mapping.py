"""How a tile's weights become target conductances, and read conductances become the array
matrix that the MVM multiplies (docs/physics.md).

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
    computes ``rescale * (sum_i coefs[i]*(y_i - y_dummy_i) - offset*sum_j x_j)`` from the
    digitised outputs; ``correction`` (NeuroSim's offset slices) is an exact digital term
    ``rescale * correction * sum_j x_j`` added after drift compensation, which scales only what
    the array reads. ``w_noise_gain`` multiplies the per-row sigma of 'additive_constant'
    short-term weight noise (analog recombination: one column carries several devices).
    """

    n_out: int
    coefs: tuple[float, ...] = (1.0,)
    dummy: bool = False
    offset: float = 0.0
    rescale: float = 1.0
    w_noise_gain: float = 1.0
    correction: float = 0.0

    @property
    def n_cols(self) -> int:
        return len(self.coefs) * (self.n_out + int(self.dummy))

    @property
    def n_groups(self) -> int:
        """Column groups that share an ADC range (adc_range = 'calibrated'): one per slice,
        each with its dummy column."""
        return len(self.coefs)

    def column_group(self) -> np.ndarray:
        """The group (slice) of every column of the array matrix."""
        n = len(self.coefs)
        weights = np.repeat(np.arange(n), self.n_out)
        return np.concatenate([weights, np.arange(n)]) if self.dummy else weights


class WeightUnitPairs:
    """A differential pair per weight, array matrix in weight units (docs/physics.md).

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

    def noise_matrix(self, g: np.ndarray) -> None:
        """|matrix| serves the 'pcm_read' weight noise (None: use the array matrix)."""
        return None

    def ideal_matrix(self) -> np.ndarray:
        return self.w_ideal

    def remap_net(self, g_prog: np.ndarray) -> tuple[np.ndarray, float]:
        """The programmed pairs as one device per weight on a fresh scale: (g, s')."""
        return self._pair(self.matrix(g_prog))

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Flat indices of the + and the - device of every weight."""
        n = self.w_ideal.size
        return np.arange(n), np.arange(n, 2 * n)

    def scale_ratio(self, s_new: float | None) -> float:
        """s'/s: how a programmed net conductance is expressed on the re-mapped scale."""
        return 1.0 if s_new is None else s_new / self.scale


class ConductanceMapping:
    """Quantized, optionally bit-sliced, pair- or offset-mapped weights in conductance units
    (docs/physics.md).

    ``w_max`` is max|W| of the whole layer (every tile of the layer shares it).
    Differential pairs: slice i holds the signed level v_i = sign(W_int)·d_i/(2^c − 1), d_i the
    magnitude's c-bit digits (without quantization, one slice v = W/w_max), on
    g± = g_min + (g_max − g_min)·max(±v_i, 0). Offset schemes: one device per weight at the
    unsigned level u ∈ [0, 1], g = g_min + (g_max − g_min)·u: u = (W/w_max + 1)/2 unsliced, and
    with ``cell_bits`` the c-bit digits d_i/(2^c − 1) of the offset-binary integer
    W_int + 2^(B−1) − 1 (NeuroSim's scheme: a cell holds exactly 2^c levels); with
    ``dummy_column`` one reference column per slice at (g_max + g_min)/2. Flat target vector,
    slice by slice: [g+, g-] (each out × in) or [g (out × in)], then the dummy columns (in each).
    """

    weight_units = False

    def __init__(self, w: np.ndarray, hw: HardwareConfig, w_max: float):
        self.shape = w.shape
        self.g_max, self.g_min = hw.g_max, hw.g_min
        self.w_max = w_max if w_max > 0 else 1.0
        self.differential = hw.offset == "differential"
        span = self.g_max - self.g_min
        v = w.astype(np.float64) / self.w_max
        n_slices = hw.n_slices
        correction = 0.0       # exact digital term (+ correction·Σx, conductance units)
        if hw.weight_bits > 0:
            levels = 2 ** (hw.weight_bits - 1) - 1
            w_int = np.rint(v * levels)
            if self.differential:
                c = hw.cell_bits or hw.weight_bits - 1
                top = 2 ** c - 1
                digits = slice_digits(np.abs(w_int).astype(np.int64), c, n_slices)
                self.level = np.sign(w_int) * digits / top           # S × out × in
            elif hw.cell_bits:
                c = hw.cell_bits
                top = 2 ** c - 1
                w_ob = (w_int + levels).astype(np.int64)              # offset binary, >= 0
                self.level = slice_digits(w_ob, c, n_slices) / top
                # in digit units slice i reads Σx(d_i − top/2); shift-and-add leaves
                # Σx(W_ob − (2^(S·c) − 1)/2), so ((2^(S·c) − 1)/2 − levels)·Σx restores W_int
                correction = ((2 ** (n_slices * c) - 1) / 2 - levels) * span / (
                    self.g_max * top)
            else:
                c, top = 0, 2 * levels          # one device holds W_ob/(2^B − 2)
                self.level = ((w_int + levels) / top)[None]
            coefs = tuple(float(2 ** (i * c)) for i in range(n_slices))
            gain = self.w_max * top / levels
        else:
            self.level = v[None] if self.differential else ((v + 1.0) / 2.0)[None]
            coefs, gain = (1.0,), self.w_max * (1.0 if self.differential else 2.0)
        self.sig = np.array(coefs)
        self.analog_sum = hw.slice_recombination == "analog" and len(coefs) > 1
        mid = (self.g_max + self.g_min) / (2 * self.g_max) if hw.offset == "digital" else 0.0
        self.layout = Layout(
            n_out=w.shape[0], coefs=(1.0,) if self.analog_sum else coefs,
            dummy=hw.offset == "dummy_column",
            offset=mid * float(self.sig.sum()), correction=correction,
            rescale=gain * self.g_max / span,
            w_noise_gain=float(np.sqrt((self.sig ** 2).sum())) if self.analog_sum else 1.0)

    def targets(self) -> np.ndarray:
        span = self.g_max - self.g_min
        if self.differential:
            g = np.stack([np.maximum(self.level, 0.0), np.maximum(-self.level, 0.0)], axis=1)
            return (self.g_min + span * g).ravel()
        g = (self.g_min + span * self.level).ravel()
        if self.layout.dummy:
            n_dummy = self.level.shape[0] * self.shape[1]
            g = np.concatenate([g, np.full(n_dummy, (self.g_max + self.g_min) / 2.0)])
        return g

    def _slices(self, g: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Per-slice weight columns (S × (out·in)) and dummy columns (S × in) in g/g_max."""
        n_slices = self.level.shape[0]
        n_out, n_in = self.shape
        size = n_slices * n_out * n_in
        if self.differential:
            pairs = g.reshape(n_slices, 2, n_out * n_in)
            return (pairs[:, 0] - pairs[:, 1]) / self.g_max, None
        slices = (g[:size] / self.g_max).reshape(n_slices, n_out * n_in)
        dummy = (g[size:] / self.g_max).reshape(n_slices, n_in) if self.layout.dummy else None
        return slices, dummy

    def _columns(self, slices: np.ndarray, dummy: np.ndarray | None,
                 weights: np.ndarray) -> np.ndarray:
        if self.analog_sum:          # significance-weighted currents summed on one column
            slices = np.tensordot(weights, slices, axes=1)[None]
            dummy = None if dummy is None else np.tensordot(weights, dummy, axes=1)[None]
        cols = slices.reshape(-1, self.shape[1])
        return cols if dummy is None else np.concatenate([cols, dummy])

    def matrix(self, g: np.ndarray) -> np.ndarray:
        """The array matrix (columns × in) in units of g/g_max for conductances ``g``."""
        return self._columns(*self._slices(g), self.sig)

    def noise_matrix(self, g: np.ndarray) -> np.ndarray | None:
        """The matrix whose entries weight 'pcm_read' short-term noise, or None for |matrix|.

        With analog recombination every device keeps its own noise: a summed column's variance
        is Σ_i sig_i²·|slice_i|·x̃², not |Σ_i sig_i·slice_i|·x̃²."""
        if not self.analog_sum:
            return None
        slices, dummy = self._slices(g)
        return self._columns(np.abs(slices), None if dummy is None else np.abs(dummy),
                             self.sig ** 2)

    def ideal_matrix(self) -> np.ndarray:
        return self.matrix(self.targets())

    def remap_net(self, g_prog: np.ndarray) -> tuple[np.ndarray, None]:
        """pair_drift = 'net': each programmed pair re-expressed as one device holding the net
        conductance above g_min (the other at g_min), on the programmed scale. Offset schemes
        have one device per weight already."""
        if not self.differential:
            return g_prog, None
        pairs = g_prog.reshape(self.level.shape[0], 2, -1)
        net = pairs[:, 0] - pairs[:, 1]
        out = np.stack([np.maximum(net, 0.0), np.maximum(-net, 0.0)], axis=1) + self.g_min
        return out.reshape(-1), None

    def pairs(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Flat indices of the + and the - device of every pair (None: single devices)."""
        if not self.differential:
            return None
        idx = np.arange(self.level.size * 2).reshape(self.level.shape[0], 2, -1)
        return idx[:, 0].ravel(), idx[:, 1].ravel()

    def scale_ratio(self, s_new: float | None) -> float:
        return 1.0


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
