"""aihwkit's conductance converters (``aihwkit/inference/converter/conductance.py``) as tile
mappings on the weight-unit path (docs/devices.md).

``g_converter = "single_pair"`` is :class:`mc_engine.analog.mapping.WeightUnitPairs`, unchanged;
the others are here, with the same interface: ``targets()`` are the flat target conductances of
a tile, ``matrix(g, params)`` converts read conductances back to the weights the MVM multiplies
(weight units at the ADC, as aihwkit converts back before its MVM), and ``remap_net`` re-converts
the programmed weights with fresh parameters, as aihwkit converts its programmed weights again
before it applies drift (``pair_drift = "net"``). With exact devices every converter gives back
the tile's weights to float64 rounding.

- :class:`SingleDevice`: one device per weight, the affine map of the tile's [w_min, w_max] onto
  [g_min, g_max] (``SingleDeviceConductanceConverter``).
- :class:`PairsOfSignificance`: pairs of significances f_0, f_1, ...: the weight in µS,
  s·W with s = Σ_i f_i (g_max − g_min)/max|W|, fills the pairs in order, pair i holding
  (|s·W| − Σ_{j<i} f_j (g_max − g_min))/f_i above g_min, clipped to [g_min, g_max]; a pair is
  used only once the lower ones are full (``NPairConductanceConverter``; ``dual_pair`` is
  ``DualPairConductanceConverter``, f = [1, dual_pair_f]).
"""

from __future__ import annotations

import numpy as np

from mc_engine.analog.mapping import Layout
from mc_engine.hardware.config import HardwareConfig
from mc_engine.hardware.device_fields import factors


class SingleDevice:
    """One device per weight: g = g_min + (W − w_min)·s, s = (g_max − g_min)/(w_max − w_min)
    over the tile (s from a span of 1 for a tile of equal weights); W = w_min + (g − g_min)/s."""

    weight_units = True

    def __init__(self, w: np.ndarray, hw: HardwareConfig):
        self.w_ideal = w
        self.g_max, self.g_min = hw.g_max, hw.g_min
        self.layout = Layout(n_out=w.shape[0])
        self.params = (1.0, 0.0)

    def _convert(self, w: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
        flat = w.astype(np.float64).ravel()
        lo, hi = float(flat.min()), float(flat.max())
        scale = (self.g_max - self.g_min) / ((hi - lo) if hi > lo else 1.0)
        return self.g_min + (flat - lo) * scale, (scale, lo)

    def targets(self) -> np.ndarray:
        g, self.params = self._convert(self.w_ideal)
        return g

    def matrix(self, g: np.ndarray, params: tuple[float, float] | None = None) -> np.ndarray:
        scale, lo = self.params if params is None else params
        return (lo + (g - self.g_min) / scale).reshape(self.w_ideal.shape)

    def ideal_matrix(self) -> np.ndarray:
        return self.w_ideal

    def remap_net(self, g_prog: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
        """The programmed weights converted again, with their own w_min and w_max."""
        return self._convert(self.matrix(g_prog))

    def noise_matrix(self, g: np.ndarray) -> None:
        """|matrix| serves the 'pcm_read' weight noise."""
        return None

    def pairs(self) -> None:
        """Stuck devices are pinned on the re-converted devices (pair_drift = 'net')."""
        return None


class PairsOfSignificance:
    """Pairs of significances ``f`` (lowest first): flat targets [g+_0, g-_0, g+_1, g-_1, ...],
    each out × in; W = Σ_i f_i (g+_i − g-_i)/s."""

    weight_units = True

    def __init__(self, w: np.ndarray, hw: HardwareConfig, f: tuple[float, ...]):
        self.w_ideal = w
        self.g_max, self.g_min = hw.g_max, hw.g_min
        self.f = f
        self.layout = Layout(n_out=w.shape[0])
        self.scale = 1.0

    def _convert(self, w: np.ndarray) -> tuple[np.ndarray, float]:
        span = self.g_max - self.g_min
        flat = w.astype(np.float64).ravel()
        w_max = float(np.abs(flat).max())
        scale = sum(self.f) * span / (w_max if w_max > 0 else 1.0)
        sides = (np.maximum(scale * flat, 0.0), np.maximum(-scale * flat, 0.0))
        out, lower = [], 0.0
        for f in self.f:
            out += [np.clip((side - lower) / f + self.g_min, self.g_min, self.g_max)
                    for side in sides]
            lower += f * span
        return np.concatenate(out), scale

    def targets(self) -> np.ndarray:
        g, self.scale = self._convert(self.w_ideal)
        return g

    def matrix(self, g: np.ndarray, scale: float | None = None) -> np.ndarray:
        pairs = g.reshape(len(self.f), 2, -1)
        w = np.zeros(pairs.shape[2])
        for f, (plus, minus) in zip(self.f, pairs):
            w += f * (plus - minus)
        return (w / (self.scale if scale is None else scale)).reshape(self.w_ideal.shape)

    def ideal_matrix(self) -> np.ndarray:
        return self.w_ideal

    def remap_net(self, g_prog: np.ndarray) -> tuple[np.ndarray, float]:
        """The programmed weights converted again, on the scale of their own maximum."""
        return self._convert(self.matrix(g_prog))

    def noise_matrix(self, g: np.ndarray) -> None:
        """|matrix| serves the 'pcm_read' weight noise."""
        return None

    def pairs(self) -> None:
        """Stuck devices are pinned on the re-converted devices (pair_drift = 'net')."""
        return None


def make_converter(w: np.ndarray, hw: HardwareConfig) -> SingleDevice | PairsOfSignificance:
    """The converter ``hw.g_converter`` (not 'single_pair') of a tile's block ``w``."""
    if hw.g_converter == "single_device":
        return SingleDevice(w, hw)
    f = (1.0, hw.dual_pair_f) if hw.g_converter == "dual_pair" else factors(hw.n_pair_f)
    return PairsOfSignificance(w, hw, f)
