"""The training tiles as the torch execution of the analog pass reads them.

Hardware-aware training does not have a forward pass of its own: a layer's tiles of this batch
(:mod:`mc_engine.train.arrays`: weights, quantization, slices, programming and weight noise, with
gradients) are handed to :mod:`mc_engine.analog.torch_pass`, the same code that runs the Monte
Carlo engine's torch execution (noise management, DAC, input/weight/output noise, ADC, bound
management, slices and their digital recombination, grouped convolutions, split tiles), here in
grad mode: rounding passes the gradient straight through, noise-management scales and noise
sigmas are constants of the batch. The noise is drawn from the training run's torch generator
(:class:`mc_engine.train.noisy.NoiseSource`) instead of the engine's counter-based streams.
With the noise off the outputs are the engine's bit for bit (tests/test_train.py,
tests/test_train_tiles.py).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING

import torch

from mc_engine.analog.mapping import Layout
from mc_engine.analog.periphery import Periphery
from mc_engine.analog.readout import Readout
from mc_engine.analog.tile import split_sizes
from mc_engine.analog.torch_periphery import DeviceArrays, quantize  # noqa: F401  (re-export)
from mc_engine.train.arrays import TileArrays

if TYPE_CHECKING:
    from mc_engine.train.noisy import NoiseSource


class TrainNoise:
    """The noise of one training forward call, from the run's torch generator: every stream
    and every pass draws fresh normals (the keys of the engine's streams do not matter here)."""

    def __init__(self, src: NoiseSource):
        self.src = src

    def call(self) -> TrainNoise:
        return self

    def sub(self, *words: int) -> TrainNoise:
        return self

    def normal_rows(self, words: tuple[int, ...], ids: torch.Tensor, n: int) -> torch.Tensor:
        return torch.randn((ids.shape[0], n), generator=self.src.gen, dtype=torch.float32,
                           device=ids.device)


def _tile(t: TileArrays, g: int, per: Periphery) -> SimpleNamespace:
    """Group ``g`` of the tile position ``t`` as a tile of the torch pass (conductance units:
    the slices' significances and the rescale to weight units as the read-out's layout)."""
    hw = per.hw
    wt = t.wt[g]                                            # in × columns
    n_out = t.o1 - t.o0
    post = t.post[g] if t.post is not None else wt.new_ones(n_out)
    arrays = DeviceArrays(wt=wt, post=post)
    if hw.w_noise > 0 and hw.w_noise_type == "pcm_read":
        arrays.abs_noise = wt.detach().abs()
    layout = Layout(n_out=n_out, coefs=t.coefs, rescale=t.gain)
    general = hw.conductance_units or hw.readout != "parallel" or hw.input_bits_per_cycle > 0
    return SimpleNamespace(per=per, readout=Readout(hw) if general else None,
                           mapping=SimpleNamespace(layout=layout), adc=None, noise_id=0,
                           comp=None, device_arrays=arrays)


def matrices(tiles: list[TileArrays], n_groups: int, n_out: int, n_in: int, per: Periphery,
             src: NoiseSource) -> list[SimpleNamespace]:
    """The layer's tiles of this batch as one matrix per group (the engine's AnalogMatrix
    shape: input chunks × output chunks of tiles), for :mod:`mc_engine.analog.torch_pass`."""
    hw = per.hw
    in_chunks, out_chunks = split_sizes(n_in, hw.max_input_size), \
        split_sizes(n_out, hw.max_output_size)
    noise = TrainNoise(src)
    out = []
    for g in range(n_groups):
        grid = iter(tiles)
        rows = []
        for _ in in_chunks:
            row = []
            for _ in out_chunks:
                row.append(_tile(next(grid), g, per))
            rows.append(row)
        out.append(SimpleNamespace(periphery=per, hw=hw, noise=noise, tiles=rows,
                                   in_chunks=in_chunks, out_chunks=out_chunks,
                                   in_features=n_in, out_features=n_out,
                                   n_tiles=len(in_chunks) * len(out_chunks), _calibrating=False))
    return out
