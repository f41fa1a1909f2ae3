"""Global drift compensation reads its reference through the noisy forward pass
(docs/physics.md, drift compensation): m_0 and m_t are mean |probe output| of the one-hot probe
through the DAC, the MVM noise and the ADC, not mean |W| of the weights the tile holds.

The factor m_0/m_t is observed through the public forward: the compensated outputs are the
uncompensated ones times the factor. The uncompensated matrix is the same chip (same seed, same
device draws) with drift compensation off and every MVM noise source off, so it also gives the
exact weights W_0 (after programming) and W_t (after drift) that the noisy probe reads.

Planted bugs these tests catch (each tried): the probe taken with its noise off
(``reference_level(None)``), and the level taken from the held weights (mean |tile.w|).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import erf

from mc_engine import HardwareConfig
from mc_engine.analog.matrix import AnalogMatrix

YEAR = 3.15e7
#: A PCM tile that only drifts: no programming or read noise, no quantizers, no clipping.
DRIFT_ONLY = dict(device="pcm", prog_noise_scale=0.0, read_noise_scale=0.0, out_noise=0.0,
                  dac_bits=0, adc_bits=0, out_bound=1e6)


@pytest.fixture(scope="module")
def weights() -> np.ndarray:
    return np.random.default_rng(21).uniform(-1, 1, (256, 256)).astype(np.float32)


def chip(w: np.ndarray, t_s: float, **hw) -> AnalogMatrix:
    m = AnalogMatrix(w, HardwareConfig(**{**DRIFT_ONLY, **hw}), 0)
    m.program(17)
    m.drift(t_s)
    return m


def exact_weights(w: np.ndarray, t_s: float, **hw) -> np.ndarray:
    """The weights the chip holds at t_s, (out x in), read noise-free and uncompensated."""
    m = chip(w, t_s, **{**hw, "drift_compensation": "none"})
    return m.forward(np.eye(w.shape[1], dtype=np.float32)).T.astype(np.float64)


def folded_moments(mu: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """E|mu + sigma·xi| and var|mu + sigma·xi| for a standard normal xi (folded normal)."""
    sigma = np.broadcast_to(sigma, mu.shape)
    mean = sigma * np.sqrt(2 / np.pi) * np.exp(-mu**2 / (2 * sigma**2)) + \
        mu * erf(mu / (np.sqrt(2) * sigma))
    return mean, mu**2 + sigma**2 - mean**2


#: Probe output noise for each noise source (one-hot DAC outputs: ||x~||_2 = 1 and
#: sum_j |W_ij| x~_j^2 = |W_ik|), as a function of the weights the probe reads.
PROBE_SIGMA = {
    "out_noise": (dict(out_noise=0.8), lambda w: 0.8),
    "w_noise_additive": (dict(w_noise=0.8), lambda w: 0.8),
    "w_noise_pcm_read": (dict(w_noise=1.0, w_noise_type="pcm_read"),
                         lambda w: 1.0 * np.sqrt(np.abs(w))),
}


@pytest.mark.parametrize("source", sorted(PROBE_SIGMA))
def test_noisy_probe_sets_the_compensation_factor(weights, source):
    """With MVM noise comparable to the weights, mean |probe| is dominated by |noise|, so the
    factor m_0/m_t is much closer to 1 than the exact-weights factor mean|W_0|/mean|W_t| (about
    2 after a year of drift). Predicted: the ratio of the folded-normal means of the probe's
    65 536 outputs, each an independent draw (the probe's rows are separate inputs, its columns
    separate outputs); its standard error is the delta method on the two independent means."""
    hw, sigma = PROBE_SIGMA[source]
    w0, wt = exact_weights(weights, 0.0), exact_weights(weights, YEAR)
    m0, v0 = folded_moments(w0, sigma(w0))
    mt, vt = folded_moments(wt, sigma(wt))
    n = w0.size
    predicted = m0.mean() / mt.mean()
    se_probe = np.sqrt(v0.mean() / (n * m0.mean() ** 2) + vt.mean() / (n * mt.mean() ** 2))
    exact = np.abs(w0).mean() / np.abs(wt).mean()

    # the factor, from the compensated noisy chip's outputs against the same chip's exact ones:
    # y = c·(u + noise) with u = x W_t^T, regression estimate c = <y, u>/<u, u>
    x = np.random.default_rng(3).uniform(-1, 1, (2000, 256)).astype(np.float32)
    u = (x @ wt.T)
    y = chip(weights, YEAR, **hw).forward(x).astype(np.float64)
    c = np.sum(y * u) / np.sum(u * u)
    se_reg = np.sqrt(np.sum((y - c * u) ** 2 * u**2)) / np.sum(u * u) / c
    se = np.hypot(se_probe, se_reg)                  # both relative (of log c)

    assert se < 0.01
    assert abs(np.log(exact / predicted)) > 20 * se   # the test tells the two references apart
    # 5 standard errors: a false alarm has probability ~6e-7
    assert abs(np.log(c / predicted)) < 5 * se, (c, predicted, exact)


def test_probe_goes_through_the_adc(weights):
    """No noise, a 3-bit ADC over ±1 (step 1/3): the probe reads the quantized weights Q(W)
    (|W| < 1, nothing saturates), so the factor is mean|Q(W_0)|/mean|Q(W_t)| exactly; the
    uncompensated quantized chip itself gives Q(W_t), and y/Q(W_t) is the factor everywhere."""
    adc = dict(adc_bits=3, out_bound=1.0)
    q0, qt = exact_weights(weights, 0.0, **adc), exact_weights(weights, YEAR, **adc)
    step = 2.0 / 6
    np.testing.assert_allclose(qt / step, np.rint(qt / step), atol=1e-4)   # on the ADC grid
    predicted = np.abs(q0).mean() / np.abs(qt).mean()
    exact = np.abs(exact_weights(weights, 0.0)).mean() / np.abs(exact_weights(weights, YEAR)).mean()
    assert abs(predicted / exact - 1) > 0.02          # quantization moves the factor
    compensated = chip(weights, YEAR, **adc).forward(np.eye(256, dtype=np.float32)).T
    held = qt != 0
    assert held.mean() > 0.5
    np.testing.assert_allclose(compensated[held] / qt[held], predicted, rtol=1e-5)
    assert np.all(compensated[~held] == 0)
