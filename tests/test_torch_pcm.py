"""The torch port of the PCM device statistics (mc_engine/analog/torch_pcm.py, docs/physics.md)
against the Numba kernels: on the CPU, bit for bit.

Bitwise is the only tolerance that fits: both sides are the same sequence of IEEE-754 float64
and float32 operations on the same counter-based draws, so any difference (a float32 step done
in float64, a reordered product, a wrong counter, torch's reciprocal-based scalar division) is a
defect, and 10^5 devices over several g_max, scales, keys and read times catch one in a few
thousand devices with certainty.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numba import njit

from mc_engine import HardwareConfig
from mc_engine.analog import convert, torch_pcm
from mc_engine.analog.execution import NUMBA_CPU, Execution
from mc_engine.analog.torch_fastmath import exp as torch_exp
from mc_engine.analog.torch_rng import key_bits
from mc_engine.hardware import from_dict
from mc_engine.hardware.devices import DEVICES
from mc_engine.hardware.tables import parse_table, register_table
from mc_engine.kernels.fastmath import exp as numba_exp
from mc_engine.kernels.pcm import pcm_drift_read, pcm_program
from mc_engine.zoo import build

TORCH_CPU = Execution("torch", "cpu")
KEYS = (np.uint64(0), np.uint64(2**64 - 1), np.uint64(0x9E3779B97F4A7C15))
TIMES = (0.0, 1.0, 3600.0, 86400.0 * 365)


def _targets(g_max: float, n: int = 100_000) -> np.ndarray:
    """Targets over [0, g_max] with the edges: 0, g_max, and tiny x where the log clips."""
    g = np.random.default_rng(int(g_max * 10)).uniform(0.0, g_max, n)
    g[:50] = 0.0
    g[50:100] = g_max
    g[100:150] = g_max * np.logspace(-9, -5, 50)
    return g


def _numba(g_target, key, g_max, prog, drift, read, t):
    g, nu, out = np.empty_like(g_target), np.empty_like(g_target), np.empty_like(g_target)
    pcm_program(g_target, key, g_max, prog, drift, g, nu)
    pcm_drift_read(g, nu, key, t, g_max, read, out)
    return g, nu, out


@pytest.mark.parametrize("g_max,prog,drift,read", [(25.0, 1.0, 1.0, 1.0), (10.0, 0.5, 2.0, 1.3),
                                                   (37.5, 2.0, 0.0, 0.0)])
def test_program_and_drift_read_are_the_numba_kernels_bit_for_bit(g_max, prog, drift, read):
    g_target = _targets(g_max)
    for key in KEYS:
        g, nu, _ = _numba(g_target, key, g_max, prog, drift, read, 0.0)
        tg, tnu = torch_pcm.program(torch.from_numpy(g_target), key, g_max, prog, drift)
        assert tg.dtype == tnu.dtype == torch.float64
        np.testing.assert_array_equal(tg.numpy(), g)
        np.testing.assert_array_equal(tnu.numpy(), nu)
        assert np.any(g == 0.0) and np.any(nu > 0.0) == (drift > 0)    # the clips are exercised
        for t in TIMES:
            out = np.empty_like(g)
            pcm_drift_read(g, nu, key, t, g_max, read, out)
            got = torch_pcm.drift_read(tg, tnu, key, t, g_max, read)
            np.testing.assert_array_equal(got.numpy(), out, err_msg=f"t = {t}")


def test_many_streams_in_one_call_are_each_stream_on_its_own():
    """Per-device keys and stream indices (tiles programmed together) give each tile's rows."""
    g_max, sizes = 25.0, (7, 1000, 333)
    parts = [_targets(g_max)[:n] for n in sizes]
    keys = [np.uint64(11), np.uint64(2**63 + 5), np.uint64(3)]
    key_t = torch.cat([torch.full((n,), key_bits(k), dtype=torch.int64)
                       for n, k in zip(sizes, keys)])
    index = torch.cat([torch.arange(n) for n in sizes])
    g, nu = torch_pcm.program(torch.from_numpy(np.concatenate(parts)), key_t, g_max, 1.0, 1.0,
                              index=index)
    out = torch_pcm.drift_read(g, nu, key_t, 3600.0, g_max, 1.0, index=index)
    start = 0
    for n, key, part in zip(sizes, keys, parts):
        want = _numba(part, key, g_max, 1.0, 1.0, 1.0, 3600.0)
        for got, ref in zip((g, nu, out), want):
            np.testing.assert_array_equal(got[start:start + n].numpy(), ref)
        start += n


def test_exp_is_the_numba_exp_bit_for_bit():
    """Over the whole clamped range and beyond it (the clamp), float32 in, float32 out."""
    @njit
    def many(x):
        out = np.empty_like(x)
        for i in range(x.size):
            out[i] = numba_exp(x[i])
        return out

    x = np.concatenate([np.linspace(-100.0, 100.0, 200_001, dtype=np.float32),
                        np.random.default_rng(0).standard_normal(100_000).astype(np.float32),
                        np.float32([0.0, -0.0, 88.0, -87.0, 1e-30])])
    np.testing.assert_array_equal(torch_exp(torch.from_numpy(x)).numpy(), many(x))


register_table(parse_table("g_us,nu_mean,nu_std\n0,0.1,0.04\n10,0.06,0.02\n25,0.02,0.01",
                           "torch_pcm_drift.csv"))


@pytest.mark.parametrize("values", [{"device": "pcm"},
                                    {"device": "pcm", "g_max": 10.0, "read_noise_scale": 2.0},
                                    {"device": "pcm_custom_drift",
                                     "device_table": "torch_pcm_drift.csv"}])
def test_device_model_on_a_torch_execution_programs_and_reads_the_same_conductances(values):
    """PCMDevice.use(torch on cpu) (and its subclass): the same key from the same generator,
    the same numpy arrays; use(numba) goes back to the kernels."""
    hw = from_dict(values)
    g_target = _targets(hw.g_max, 5000)
    results = []
    for execution in (NUMBA_CPU, TORCH_CPU, NUMBA_CPU):
        model = DEVICES[hw.device](hw)
        model.use(execution)
        rng = np.random.default_rng(7)
        g, nu = model.program(g_target, rng)
        reads = [model.read(g, nu, t, rng) for t in TIMES]
        assert all(isinstance(a, np.ndarray) and a.dtype == np.float64 for a in (g, nu, *reads))
        results.append((g, nu, *reads))
    for a, b, c in zip(*results):
        np.testing.assert_array_equal(b, a)
        np.testing.assert_array_equal(c, a)
    empty = DEVICES[hw.device](hw)
    empty.use(TORCH_CPU)
    g, nu = empty.program(np.empty(0), np.random.default_rng(0))
    assert g.shape == nu.shape == (0,)
    assert empty.read(g, nu, 1.0, np.random.default_rng(0)).shape == (0,)


def test_a_converted_model_on_the_torch_execution_holds_the_numba_conductances():
    """AnalogModel.use reaches the PCM model of every tile: programmed and drifted arrays of a
    whole network (several tiles, several layers) equal the Numba execution's."""
    model = build("digits_cnn").eval()
    hw = HardwareConfig(max_input_size=32, max_output_size=16)
    arrays = []
    for execution in (NUMBA_CPU, TORCH_CPU):
        analog = convert(model, hw).use(execution).program(3)
        tiles = [t for layer in analog.analog_layers() for m in layer.matrices
                 for row in m.tiles for t in row]
        programmed = [t.g_prog.copy() for t in tiles]
        analog.drift(3600.0)
        arrays.append((programmed, [t.w.copy() for t in tiles]))
    assert len(arrays[0][0]) > 3
    for a, b in zip(arrays[0][0] + arrays[0][1], arrays[1][0] + arrays[1][1]):
        np.testing.assert_array_equal(b, a)
