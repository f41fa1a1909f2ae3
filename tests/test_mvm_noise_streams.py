"""MVM noise is fresh for every forward call, and the probe of drift compensation draws its own
(docs/physics.md: MVM noise keys are derived per forward call, counted since the last read; the
compensation probe goes through the full noisy forward pass).

Every test compares noise realisations: the deviation of a noisy output from the same matrix
with every noise source off. Independent realisations have a correlation estimate with standard
error ~1/sqrt(n); a shared or reused stream gives a correlation of 1.

Planted bugs these tests catch (each tried): a forward call that reuses the keys of the previous
call (``MVMNoise(self.noise.key)`` in place of ``self.noise.call()``, in AnalogMatrix.forward or
in the batched grouped-convolution pass); drift() resetting its noise keys after the probes
instead of before them (the first evaluation call then gets the probe's keys); program() using
the keys of drift(0) for its probe.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import mc_engine
from mc_engine import HardwareConfig
from mc_engine.analog.matrix import AnalogMatrix
from mc_engine.analog.tile import Tile

#: No quantizers, no clipping, an exact device: the only randomness is the MVM noise, and the
#: noise-free output of the same matrix is its exact reference.
CLEAN = dict(device="ideal", out_noise=0.0, drift_compensation="none", dac_bits=0, adc_bits=0,
             out_bound=1e6)
#: |correlation| bound for independent realisations. With n >= 16 384 (nearly independent)
#: pairs the estimate has standard error ~1/sqrt(n) <= 0.0078, so 0.05 is > 6 standard errors
#: (a false alarm has probability < 1e-9); a shared stream gives 1.
INDEPENDENT = 0.05

NOISES = {
    "out_noise": dict(out_noise=0.1),
    "w_noise_additive": dict(w_noise=0.05),
    "w_noise_pcm_read": dict(w_noise=0.05, w_noise_type="pcm_read"),
    "inp_noise": dict(inp_noise=0.05),
}
#: Forward paths that draw noise in different code: the default fused pass; alpha outside the
#: DAC; a layer split into tiles along both axes; a read-out scheme (weight_bits: bit slices,
#: conductance units); row-by-row read-out; bit-serial inputs.
PATHS = {
    "default": dict(),
    "nm_none": dict(noise_management="none"),
    "split": dict(max_input_size=40, max_output_size=24),
    "sliced": dict(weight_bits=6, cell_bits=2),
    "row_by_row": dict(readout="row_by_row", rows_per_adc=16),
    "bit_serial": dict(dac_bits=5, input_bits_per_cycle=2, bound_management="none"),
}


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(4)
    w = rng.uniform(-1, 1, (64, 96)).astype(np.float32)
    x = rng.uniform(-1, 1, (256, 96)).astype(np.float32)   # 256 x 64 = 16 384 outputs
    return w, x


def programmed(w: np.ndarray, **hw) -> AnalogMatrix:
    m = AnalogMatrix(w, HardwareConfig(**{**CLEAN, **hw}), 0)
    m.program(3)
    m.drift(0.0)
    return m


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("noise", sorted(NOISES))
def test_two_forward_calls_on_the_same_inputs_draw_independent_noise(data, noise, path):
    w, x = data
    quiet = programmed(w, **PATHS[path]).forward(x)
    m = programmed(w, **PATHS[path], **NOISES[noise])
    errors = [m.forward(x) - quiet for _ in range(3)]
    # there is noise to correlate: its std is a good fraction of the configured sigma
    assert all(e.std() > 1e-2 for e in errors)
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert abs(correlation(errors[a], errors[b])) < INDEPENDENT, (a, b)


def test_the_same_read_of_the_same_chip_repeats_its_noise(data):
    """Positive control: the noise is a function of (chip, read time, call number), so the
    correlation estimate above does see a reused stream (drift(t) again restarts the calls)."""
    w, x = data
    m = programmed(w, out_noise=0.1)
    first = m.forward(x)
    m.drift(0.0)
    assert np.array_equal(m.forward(x), first)


MODELS = {
    "mlp": (lambda: nn.Sequential(nn.Linear(48, 64), nn.ReLU(), nn.Linear(64, 32)), (512, 48)),
    "conv": (lambda: nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                                   nn.Conv2d(16, 8, 3)), (32, 3, 10, 10)),
    # depthwise: all groups through the batched grouped pass
    "grouped": (lambda: nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, groups=8)), (16, 8, 8, 8)),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_analog_model_calls_draw_fresh_noise(name):
    build, shape = MODELS[name]
    torch.manual_seed(1)
    model = build().eval()
    x = torch.rand(shape) * 2 - 1
    quiet = mc_engine.convert(model, HardwareConfig(**CLEAN)).program(2).drift(3600.0)(x)
    analog = mc_engine.convert(model, HardwareConfig(**{**CLEAN, "out_noise": 0.1}))
    analog.program(2).drift(3600.0)
    errors = [(analog(x) - quiet).numpy() for _ in range(2)]
    assert errors[0].size >= 16_384 and all(e.std() > 1e-2 for e in errors)
    assert abs(correlation(*errors)) < INDEPENDENT


# --- the probe of drift compensation ----------------------------------------------------------

@pytest.fixture()
def probes(monkeypatch) -> list[np.ndarray]:
    """The output of every drift-compensation probe taken from now on, in order."""
    seen: list[np.ndarray] = []
    original = Tile.probe

    def spy(self, noise):
        out = original(self, noise)
        seen.append(out.copy())
        return out

    monkeypatch.setattr(Tile, "probe", spy)
    return seen


@pytest.mark.parametrize("noise", ["out_noise", "w_noise_additive", "inp_noise"])
def test_probe_noise_is_not_the_noise_of_the_first_evaluation_call(probes, noise):
    """The probe is the identity matrix (one-hot rows 0 .. in-1); the first evaluation call
    below is given the same rows, so a probe and an evaluation call that shared keys would draw
    the very same numbers at the same counters (row, column). Device 'ideal': the probe reads
    the exact weights, its noise is probe - W^T; the evaluation's is y / comp - W^T."""
    w = np.random.default_rng(8).uniform(-1, 1, (128, 128)).astype(np.float32)
    m = AnalogMatrix(w, HardwareConfig(**{**CLEAN, **NOISES[noise],
                                          "drift_compensation": "global"}), 0)
    eye = np.eye(w.shape[1], dtype=np.float32)
    m.program(5)
    m.drift(0.0)
    first_call = m.forward(eye)
    second_call = m.forward(eye)
    assert m.n_tiles == 1 and len(probes) == 2           # at programming, at t = 0
    comp = m.tiles[0][0].comp
    assert np.all(comp == comp[0]) and comp[0] != 1.0     # a noisy reference, one global factor
    realisations = {"probe at programming": probes[0] - w.T, "probe at t = 0": probes[1] - w.T,
                    "first call": first_call / comp - w.T, "second call": second_call / comp - w.T}
    assert all(e.std() > 1e-2 for e in realisations.values())
    names = list(realisations)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert abs(correlation(realisations[a], realisations[b])) < INDEPENDENT, (a, b)
    # positive control: reading the chip at t = 0 again repeats the probe's numbers exactly
    m.drift(0.0)
    assert np.array_equal(probes[2], probes[1])
