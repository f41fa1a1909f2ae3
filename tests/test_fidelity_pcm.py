"""PCM device statistics against aihwkit 1.2.0 (tests/data/aihwkit/pcm_device_stats.csv).

Each reference row is 200 000 draws of one device at one target conductance; we draw 400 000
through the public device model (the registered 'pcm' DeviceModel) and compare every column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mc_engine.hardware import HardwareConfig
from mc_engine.hardware.devices import DEVICES
from tests.conftest import AIHWKIT, std_standard_error

REF = pd.read_csv(AIHWKIT / "pcm_device_stats.csv")
REF_N = 200_000
N = 400_000
TIMES = (0, 3600, 86400, 31536000)


@pytest.mark.parametrize("g_target", REF["g_target_uS"].tolist())
def test_pcm_device_statistics_match_aihwkit(g_target):
    row = REF[REF["g_target_uS"] == g_target].iloc[0]
    device = DEVICES["pcm"](HardwareConfig())
    rng = np.random.default_rng(2026)
    g_prog, nu = device.program(np.full(N, g_target), rng)
    samples = {"g_prog": g_prog, "nu": nu}
    for t in TIMES:
        samples[f"g_t{t}"] = device.read(g_prog, nu, t, rng)
    for name, a in samples.items():
        ref_mean, ref_std = row[f"{name}_mean"], row[f"{name}_std"]
        # Within 4 standard errors of the difference of two independent estimates. The std's
        # error comes from the kurtosis of our samples (clipped, skewed distributions near 0).
        se_mean = np.sqrt(ref_std**2 / REF_N + a.std() ** 2 / N)
        assert abs(a.mean() - ref_mean) <= 4 * se_mean, (name, a.mean(), ref_mean)
        se_std = float(std_standard_error(a[:, None])[0]) * np.sqrt(1 + N / REF_N)
        assert abs(a.std() - ref_std) <= 4 * se_std, (name, a.std(), ref_std)
