"""The counter-based normal generator (mc_engine/kernels/rng.py) and the noise-key layout.

The distribution is checked at 10^8 draws, so the tolerances below are a few standard errors of
each statistic at that n: a generator off by more than ~1e-3 in its moments or ~3e-4 in its CDF
fails, a correct one passes with probability > 1 - 1e-5 per check.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from numba import njit

from mc_engine.analog import mapping as _mapping  # noqa: F401  (import order of the package)
from mc_engine.analog import rows as rows_module
from mc_engine.analog.matrix import AnalogMatrix
from mc_engine.hardware import HardwareConfig
from mc_engine.kernels.fastmath import cos2pi, exp, log
from mc_engine.kernels.rng import derive, fill_normal, normal

N_DRAWS = 10**8
CHUNK = 10**7
EDGES = np.linspace(-6.0, 6.0, 2401)


@njit(cache=True)
def _accumulate(key, start, n, edges_lo, width, counts, sums):
    """Moments (sum z^1..z^4) and a histogram of n draws, without storing them."""
    for i in range(n):
        z = np.float64(normal(key, np.uint64(start + i)))
        sums[0] += z
        sums[1] += z * z
        sums[2] += z * z * z
        sums[3] += z * z * z * z
        b = int(math.floor((z - edges_lo) / width)) + 1      # bin 0: below the first edge
        counts[min(max(b, 0), counts.size - 1)] += 1


@pytest.fixture(scope="module")
def draws():
    counts = np.zeros(EDGES.size + 1, np.int64)
    sums = np.zeros(4)
    key = derive(12345, 6, 7)
    for start in range(0, N_DRAWS, CHUNK):
        _accumulate(key, start, CHUNK, EDGES[0], EDGES[1] - EDGES[0], counts, sums)
    return counts, sums / N_DRAWS


def test_moments_at_1e8_draws(draws):
    _, (m1, m2, m3, m4) = draws
    # standard errors at n = 1e8: mean 1e-4, E z^2 1.4e-4, E z^3 3.9e-4, E z^4 1e-3
    # (var z^4 = 96); each bound is about 6 standard errors
    assert abs(m1) < 6e-4
    assert abs(m2 - 1.0) < 8e-4
    assert abs(m3) < 2.4e-3
    assert abs(m4 - 3.0) < 6e-3


def test_cdf_is_normal_at_1e8_draws(draws):
    """Kolmogorov-Smirnov distance on a 0.005-wide grid over [-6, 6]: at n = 1e8 the KS
    statistic exceeds 2.6e-4 with probability ~3e-6 for a correct generator."""
    counts, _ = draws
    ecdf = np.cumsum(counts)[:-1] / N_DRAWS                 # P(z < edge) for each edge
    cdf = np.array([0.5 * math.erfc(-e / math.sqrt(2.0)) for e in EDGES])
    assert np.abs(ecdf - cdf).max() < 2.6e-4


@pytest.mark.parametrize("k", [3.0, 4.0, 5.0])
def test_tails_at_1e8_draws(draws, k):
    """Counts beyond ±k sigma are Poisson around n P(|z| > k): within 5 sqrt(expected) + 3."""
    counts, _ = draws
    lo = np.searchsorted(EDGES, -k)
    hi = np.searchsorted(EDGES, k)
    observed = counts[:lo + 1].sum() + counts[hi + 1:].sum()
    expected = N_DRAWS * math.erfc(k / math.sqrt(2.0))
    assert abs(observed - expected) < 5 * math.sqrt(expected) + 3


def test_extreme_draws_exist_and_are_finite():
    z = np.empty(10**7, np.float32)
    fill_normal(derive(1), np.uint64(0), z)
    assert np.isfinite(z).all()
    assert 4.5 < np.abs(z).max() < 6.7          # u1 >= 2^-32 caps |z| at 6.66


def test_polynomial_log_exp_and_cos_are_accurate():
    @njit
    def run(v, u, lo, co, ex):
        for i in range(v.size):
            lo[i] = log(v[i])
            co[i] = cos2pi(u[i])
            ex[i] = exp(u[i] * np.float32(-30.0))

    rng = np.random.default_rng(0)
    v = np.exp(rng.uniform(0.0, 32 * math.log(2.0), 10**6)).astype(np.float32)
    u = rng.uniform(0.0, 1.0, 10**6).astype(np.float32)
    lo, co, ex = np.empty_like(v), np.empty_like(u), np.empty_like(u)
    run(v, u, lo, co, ex)
    assert np.abs(lo - np.log(v.astype(np.float64))).max() < 3e-6
    reference = np.exp((u * np.float32(-30.0)).astype(np.float64))   # the same float32 input
    assert (np.abs(ex - reference) / reference).max() < 5e-7
    assert np.abs(co - np.cos(2 * np.pi * u.astype(np.float64))).max() < 1e-6


def test_streams_and_neighbouring_counters_are_uncorrelated():
    """Correlations at 10^6 draws have standard error 1e-3: |r| < 5e-3 for independent streams.
    Streams differ in one word (call, tile, attempt, kind), as the forward pass derives them."""
    n = 10**6
    base = derive(2024, 0, 1, 2)
    keys = [derive(base, 0, 0, 0), derive(base, 1, 0, 0), derive(base, 0, 1, 0),
            derive(base, 0, 0, 1), derive(base, 0, 0, 2), derive(derive(2024, 0, 1, 3), 0, 0, 0)]
    z = np.empty((len(keys), n + 1), np.float32)
    for row, key in zip(z, keys):
        fill_normal(key, np.uint64(0), row)
    r = np.corrcoef(z[:, :n])
    assert np.abs(r - np.eye(len(keys))).max() < 5e-3
    for row in z:                                      # lag-1 and lag-n_out correlations
        assert abs(np.corrcoef(row[:-1], row[1:])[0, 1]) < 5e-3
        assert abs(np.corrcoef(row[:-64], row[64:])[0, 1]) < 5e-3


def test_fill_normal_is_position_based():
    """Draw i is the same whether filled from 0 or from an offset: blocking cannot matter."""
    a = np.empty(1000, np.float32)
    b = np.empty(400, np.float32)
    fill_normal(np.uint64(99), np.uint64(0), a)
    fill_normal(np.uint64(99), np.uint64(600), b)
    np.testing.assert_array_equal(a[600:], b)


@pytest.mark.parametrize("hw", [HardwareConfig(), HardwareConfig(inp_noise=0.05, w_noise=0.02,
                                                                  w_noise_type="pcm_read")],
                         ids=["default", "input+weight noise"])
def test_noisy_forward_does_not_depend_on_row_blocking(monkeypatch, hw):
    """The noise of an output is keyed by its row's index in the call, so cutting the rows into
    cache-sized blocks of another size gives bitwise the same outputs (the property that lets
    rows, chips and tasks be batched freely)."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((40, 700)).astype(np.float32)     # two tiles along the inputs
    x = rng.uniform(-1, 1, (300, 700)).astype(np.float32)

    def outputs(block_bytes):
        monkeypatch.setattr(rows_module, "BLOCK_BYTES", block_bytes)
        m = AnalogMatrix(w, hw, 0)
        m.program(7)
        m.drift(3600.0)
        return m.forward(x)

    big, small = outputs(1 << 22), outputs(64 * 4 * 700)      # one block vs 64-row blocks
    assert small.shape == (300, 40)
    np.testing.assert_array_equal(big, small)
    assert np.abs(big).max() > 0
