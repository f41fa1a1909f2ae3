"""The counter-based normal generator in torch ops (mc_engine/analog/torch_rng.py) against the
Numba kernels' (mc_engine/kernels/rng.py): the same keys and counters must give the same float32
draws, bit for bit on the CPU. 2·10^6 draws over keys at the edges of 64 bits (0, 2^63, 2^64−1)
and counters beyond 2^40 (the bit-serial cycles' counters) exercise every branch of the port
(the wrapping multiplications, the masked logical shifts, both halves of the log's mantissa
reduction, all four quadrants of the cos)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mc_engine.analog import torch_rng
from mc_engine.kernels.rng import derive, fill_normal


@pytest.mark.parametrize("key", [0, 1, 2**63, 2**64 - 1, int(derive(12345, 7, 3))])
@pytest.mark.parametrize("start", [0, 2**40 + 17])
def test_draws_equal_numba_bitwise(key, start):
    n = 200_000
    ref = np.empty(n, np.float32)
    fill_normal(np.uint64(key), np.uint64(start), ref)
    got = torch_rng.normal(key, torch.arange(start, start + n, dtype=torch.int64)).numpy()
    assert np.array_equal(ref, got), f"{np.count_nonzero(ref != got)} of {n} draws differ"


def test_row_counters_are_the_mvm_layout():
    ids = torch.tensor([5, 9, 2])
    z = torch_rng.normal_rows(99, ids, 4)
    ref = np.empty(40, np.float32)
    fill_normal(np.uint64(99), np.uint64(0), ref)
    assert np.array_equal(z.numpy(), ref.reshape(10, 4)[[5, 9, 2]])


def test_correct_sqrt_is_ieee():
    r = np.random.default_rng(0).uniform(0, 50, 10**5).astype(np.float32)
    assert np.array_equal(torch_rng.correct_sqrt(torch.from_numpy(r)).numpy(), np.sqrt(r))


def test_compiled_generator_is_the_eager_one(monkeypatch):
    """The fused kernel (torch.compile, the default on CUDA) draws the same bits as the eager
    ops on the CPU, for one key and for a chip batch's keys (C × 1 × 1)."""
    monkeypatch.setenv(torch_rng.COMPILE_ENV, "1")
    monkeypatch.setattr(torch_rng.GENERATOR, "compiled", {})
    ids = torch.arange(3, 300)
    chip_keys = torch_rng.keys([1, 2**63, int(derive(5, 1))], "cpu")[:, None, None]
    for key in (torch_rng.keys([2**64 - 5], "cpu")[0], chip_keys):
        got = torch_rng.normal_rows(key, ids, 17)
        assert torch_rng.GENERATOR.compiled["cpu"] is not None, \
            "compilation failed and fell back"
        assert torch.equal(got, torch_rng._normal_rows(key, ids, 17))
