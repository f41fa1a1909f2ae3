"""Keys of the short-term MVM noise (input, weight and output noise of docs/physics.md).

Every standard normal of the forward pass is drawn counter-based (:mod:`mc_engine.kernels.rng`)
inside the kernel that uses it. Its stream key is derived from the layer's read-time key and

    (forward call, tile, bound-management attempt, kind[, row group])

and its counter from the input row's index in the call and the output column, so the noise of a
matrix element does not depend on how rows are blocked, which other rows share a pass, or which
other chips, tasks or threads run beside it.
"""

from __future__ import annotations

import numpy as np

from mc_engine.kernels.rng import derive

# What a stream draws: the noise on the input lines, the short-term weight noise, the noise
# added to the output before the ADC.
KIND_INP, KIND_W, KIND_OUT = 0, 1, 2
#: The tile id of the batched first pass of a grouped convolution (all groups at once).
GROUPED = 0xFFFFFFFF


class MVMNoise:
    """The noise keys of one forward call of one layer, or of one pass under it (``sub``)."""

    def __init__(self, key: np.uint64 | int):
        self.key = np.uint64(key)

    def sub(self, *words: int) -> MVMNoise:
        """The keys of a part of this call (a tile, an attempt)."""
        return MVMNoise(derive(self.key, *words))

    def stream(self, *words: int) -> np.uint64:
        """The key of one stream (kind, row group) of this pass."""
        return derive(self.key, *words)



def stream(noise: MVMNoise | None, *words: int) -> np.uint64:
    """The key of a stream of ``noise``; 0 when the noise is off (the kernels then draw none)."""
    return np.uint64(0) if noise is None else noise.stream(*words)


class NoiseKeys:
    """The forward calls of one layer between two reads: call c gets the keys ``call()``
    returns the c-th time since the last ``reset``."""

    def __init__(self, key: np.uint64 | int = 0):
        self.reset(key)

    def reset(self, key: np.uint64 | int) -> None:
        self.key, self.calls = np.uint64(key), 0

    def call(self) -> MVMNoise:
        self.calls += 1
        return MVMNoise(derive(self.key, self.calls))
