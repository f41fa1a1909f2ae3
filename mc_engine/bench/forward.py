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


def run(model_name: str = "resnet20", n_images: int = 1000, batch: int = 100, repeats: int = 2,
        hw: HardwareConfig | None = None) -> dict:
    """Time the clean and the analog forward of a zoo model on ``n_images`` random images."""
    torch.set_num_threads(1)
    model = build(model_name).eval()
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
    return {"model": model_name, "n_images": n_images, "clean_s": clean, "analog_s": noisy,
            "ratio": noisy / clean}


def main() -> None:
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    print("Analog forward vs clean torch fp32 forward, same images, same process, 1 thread,")
    print("default hardware (PCM, 7-bit DAC, 9-bit ADC, out_noise 0.06), read at 1 h.")
    print(f"{'model':10s} {'images':>6s} {'clean s':>8s} {'analog s':>9s} {'ratio':>6s}")
    for name, n_images in (("resnet20", 1000), ("vgg8", 200), ("mobilenet", 200)):
        res = run(name, n_images)
        print(f"{name:10s} {n_images:6d} {res['clean_s']:8.2f} {res['analog_s']:9.2f} "
              f"{res['ratio']:5.2f}x")
    print("(the IBM toolkit's CPU simulator: 14.4x on the ResNet-20 shape)")
