"""A layer's weight matrix on analog tiles (docs/physics.md, "Tile forward"): split at
``max_input_size`` × ``max_output_size`` into :class:`~mc_engine.analog.tile.Tile` objects,
programmed, read at a time t with drift compensation, and run forward (the Numba execution;
:mod:`mc_engine.analog.torch_pass` is the torch one). Tile outputs along the input dimension
are summed digitally. Every random stream is keyed by (layer, group, stage, tile, time).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mc_engine.analog.execution import NUMBA_CPU, Execution
from mc_engine.analog.noise import NoiseKeys
from mc_engine.analog.periphery import Periphery
from mc_engine.analog.rows import DenseRows, InputRows
from mc_engine.analog.tile import (
    STAGE_FAULTS,
    STAGE_MVM,
    STAGE_PROGRAM,
    STAGE_READ,
    Tile,
    split_sizes,
    time_key,
)
from mc_engine.hardware.config import HardwareConfig
from mc_engine.hardware.devices import DEVICES
from mc_engine.hardware.variation import has_variation
from mc_engine.kernels.rng import stream_key


class AnalogMatrix:
    """A layer's weight matrix on analog tiles: program, read at a time t, forward."""

    def __init__(self, weight: np.ndarray, hw: HardwareConfig, layer_index: int, group: int = 0,
                 w_max: float | None = None):
        """``w_max``: max|W| of the whole layer when this matrix is one group of it (the
        weight quantization and conductance scale of docs/physics.md are layer-wide)."""
        weight = np.asarray(weight, dtype=np.float32)
        w_max = float(np.abs(weight).max()) if w_max is None else w_max
        self.hw = hw
        self.key = (layer_index, group)
        self.out_features, self.in_features = weight.shape
        self.periphery = Periphery(hw)
        device = DEVICES[hw.device](hw)
        self.in_chunks = split_sizes(self.in_features, hw.max_input_size)
        self.out_chunks = split_sizes(self.out_features, hw.max_output_size)
        self.tiles = [[Tile(weight[o0:o1, i0:i1], self.periphery, device, w_max)
                       for (o0, o1) in self.out_chunks] for (i0, i1) in self.in_chunks]
        for i, tile in enumerate(self._all_tiles()):
            tile.noise_id = (group << 20) + i          # unique within the layer
        self.seed: int | Sequence[int] = 0
        self.execution = NUMBA_CPU
        self._calibrating = False
        #: Static input range of each input chunk (noise_management 'calibrated', 'learned').
        self.input_ranges: np.ndarray | None = None
        self.noise = NoiseKeys(stream_key(self._seed_seq(STAGE_MVM, 0, 0)))

    def use(self, execution: Execution) -> None:
        """Where the forward pass runs; the tiles keep their arrays on its device."""
        self.execution = execution
        for tile in self._all_tiles():
            tile.device_arrays = None
            if hasattr(tile.device, "use"):   # a device model that can run on the execution
                tile.device.use(execution)

    def set_input_ranges(self, ranges: np.ndarray) -> None:
        """The static input range of every input chunk (float32, one per chunk); the tiles of a
        chunk see the same inputs and share it."""
        ranges = np.ascontiguousarray(ranges, np.float32).reshape(len(self.in_chunks))
        self.input_ranges = ranges
        for r, row in zip(ranges, self.tiles):
            for tile in row:
                tile.in_range = r

    def chunk_range(self, chunk: int) -> np.float32 | None:
        """The static input range of input chunk ``chunk``, None when none was set."""
        return None if self.input_ranges is None else self.input_ranges[chunk]

    def _seed_seq(self, stage: int, tile: int, t_key: int) -> np.random.SeedSequence:
        return np.random.SeedSequence(self.seed, spawn_key=(*self.key, stage, tile, t_key))

    def _rng(self, stage: int, tile: int, t_key: int) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(self._seed_seq(stage, tile, t_key)))

    def _all_tiles(self):
        return [t for row in self.tiles for t in row]

    @property
    def n_tiles(self) -> int:
        return len(self.in_chunks) * len(self.out_chunks)

    def program(self, seed: int | Sequence[int], reference: bool = True) -> None:
        """Program every device and, unless ``reference`` is False (the ADC ranges are
        calibrated first), take the drift-compensation reference m_0."""
        self.seed = seed
        self.noise.reset(stream_key(self._seed_seq(STAGE_MVM, 0, time_key(-1.0))))
        for i, tile in enumerate(self._all_tiles()):
            tile.program(self._rng(STAGE_PROGRAM, i, 0),
                         self._rng(STAGE_FAULTS, i, 0) if has_variation(self.hw) else None)
        if reference:
            self.take_reference()

    def take_reference(self) -> None:
        """The drift-compensation reference m_0 of every tile, right after programming."""
        mode = self.hw.drift_compensation
        for tile in self._all_tiles():
            if mode == "exact":
                w_p, noise_w = tile.w, tile.noise_w
                tile.load_ideal()
                tile.m0 = tile.reference_level(None)
                tile.set_weights(w_p, noise_w)
            elif mode != "none":
                tile.m0 = tile.reference_level(self.noise.call())

    def calibrating(self, on: bool) -> None:
        """Start (True) or end (False) recording the calibrated ADC ranges: meanwhile forward
        calls are noise-free and record every conversion's pre-ADC values instead of
        digitising them."""
        self._calibrating = on
        for tile in self._all_tiles():
            if tile.adc is not None:
                tile.adc.start() if on else tile.adc.stop()

    def drift(self, t_s: float) -> None:
        """Read every device at t_s seconds after programming and update the compensation."""
        key = time_key(t_s)
        self.noise.reset(stream_key(self._seed_seq(STAGE_MVM, 0, key)))
        for i, tile in enumerate(self._all_tiles()):
            tile.read(t_s, self._rng(STAGE_READ, i, key))
            if tile.m0 is not None:
                level = tile.reference_level(self.noise.call())
                tile.comp = (tile.m0 / level).astype(np.float32)

    def forward(self, source: InputRows | np.ndarray, col_offset: int = 0) -> np.ndarray:
        """Analog W·x for every input row -> (rows × out) float32.

        ``source`` is a (rows × in) array or an InputRows view; this matrix reads its columns
        col_offset .. col_offset + in (a group of a grouped convolution reads a slice). With
        abs_max noise management the alpha and DAC output of an input range are computed in one
        pass and shared by the tiles of that range.
        """
        if isinstance(source, np.ndarray):
            source = DenseRows(source)
        per = self.periphery
        noise = None if self._calibrating else self.noise.call()
        fused = self.hw.noise_management == "abs_max"
        y = np.zeros((source.n_rows, self.out_features), np.float32)
        single = len(self.in_chunks) == 1 and len(self.out_chunks) == 1
        for r0, block in source.blocks(self.in_features):
            m = block.n_rows
            for ci, ((i0, i1), row) in enumerate(zip(self.in_chunks, self.tiles)):
                c0, c1 = col_offset + i0, col_offset + i1
                first = None
                if fused:
                    alpha, scale, xq = block.dac_abs_max(c0, c1, per.step_in, per.inp_noise > 0)
                    first = (scale, xq)
                else:
                    alpha = per.alpha(block, c0, c1, self.chunk_range(ci))
                for (o0, o1), tile in zip(self.out_chunks, row):
                    post = tile.comp / tile.k
                    if single:
                        tile.forward(block, c0, alpha, noise, y[r0:r0 + m], post, row0=r0,
                                     first=first)
                    else:
                        part = np.empty((m, o1 - o0), np.float32)
                        tile.forward(block, c0, alpha, noise, part, post, row0=r0, first=first)
                        y[r0:r0 + m, o0:o1] += part
        return y

