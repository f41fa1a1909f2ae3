"""Analog forward of a ResNet-20 CIFAR network versus the clean torch forward, one thread.

The ratio (analog time / clean fp32 time on the same 1000 images, same process, same thread
count) is the number to watch; absolute seconds depend on the machine and its load.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from mc_engine.analog import convert
from mc_engine.hardware import HardwareConfig
from mc_engine.zoo import build


def _best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def run(n_images: int = 1000, batch: int = 100, repeats: int = 2,
        hw: HardwareConfig | None = None) -> dict:
    """Time the clean and the analog forward of resnet20 on ``n_images`` random images."""
    torch.set_num_threads(1)
    model = build("resnet20").eval()
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((n_images, 3, 32, 32),
                                                                   dtype=np.float32))
    analog = convert(model, hw or HardwareConfig()).program(0).drift(3600.0)

    def forward(m):
        def go():
            with torch.no_grad():
                for start in range(0, n_images, batch):
                    m(x[start:start + batch])
        return go

    forward(analog)()                      # JIT compilation and warm caches, not timed
    clean = _best_of(forward(model), repeats)
    noisy = _best_of(forward(analog), repeats)
    return {"n_images": n_images, "clean_s": clean, "analog_s": noisy, "ratio": noisy / clean}


def main() -> None:
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    res = run()
    print(f"ResNet-20 (CIFAR, 32x32), {res['n_images']} images, 1 thread, default hardware")
    print(f"  clean torch fp32 forward : {res['clean_s']:.2f} s")
    print(f"  analog forward (mc-engine): {res['analog_s']:.2f} s")
    print(f"  ratio analog / clean     : {res['ratio']:.2f}x  (aihwkit CPU: 14.4x)")
