"""Analog forward of a ResNet-20 CIFAR network versus the clean torch forward, one thread.

The ratio (analog time / clean fp32 time on the same 1000 images, same process, same thread
count) is the number to watch; absolute seconds depend on the machine and its load. Two more
ResNet-20 rows, timed in the same run, price the docs/physics.md mappings: 8-bit weights bit-sliced
on 2-bit cells (4 slices) and 1-bit bit-serial inputs (6 cycles of a 7-bit DAC), each as a ratio
to the clean forward and to the unsliced default analog forward (target: <= k x the latter).
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from mc_engine.analog import convert
from mc_engine.analog.readout import Readout
from mc_engine.hardware import HardwareConfig
from mc_engine.zoo import build


def _best_of(fn, repeats: int) -> float:
    """Best CPU time of ``repeats`` calls. The process is single-threaded, so its CPU time is its
    compute time, and other load on the machine does not inflate one side of a ratio."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


#: The bit-slicing and bit-serial rows (docs/physics.md), each timed beside the default analog
#: forward of the same model in the same run. ``k`` is the number of slices / input cycles: the
#: target is that k slices or k cycles cost at most k x the unsliced analog forward.
#: With weight_bits > 0 the ADC sees conductance units (g/g_max summed over rows), hence the
#: out_bound of 20 instead of the default 12 weight units: no conversion saturates at 20 on
#: the bench's images (at 5, 12 % of the rows do and bound management would retry them).
VARIANTS = {
    "8b weights, 2b cells": HardwareConfig(weight_bits=8, cell_bits=2, out_bound=20.0),
    "1b bit-serial inputs": HardwareConfig(input_bits_per_cycle=1, bound_management="none"),
}


def _preset() -> HardwareConfig:
    from mc_engine.hardware.presets import presets

    return HardwareConfig(**presets()["aihwkit_standard_hwa"])


#: The direct-convolution rows (static input ranges: no im2col), each a ratio to the clean
#: forward of the same run, with its goal: a static range of 3.0 with the default noise, and
#: aihwkit's standard preset (8-bit DAC/ADC, pcm_read weight noise, IR drop, ω = 1).
STATIC_VARIANTS = {
    "static range 3.0, default noise": (lambda: HardwareConfig(noise_management="constant",
                                                               nm_constant=3.0), 1.3),
    "aihwkit_standard_hwa preset": (_preset, 3.0),
}


def conversions(hw: HardwareConfig) -> int:
    """k: ADC conversions per output and per MVM relative to the default (slices × cycles)."""
    return hw.n_slices * Readout(hw).cycles


def run(model_name: str = "resnet20", n_images: int = 1000, batch: int = 100, repeats: int = 2,
        hw: HardwareConfig | None = None,
        variants: dict[str, HardwareConfig] | None = None) -> dict:
    """Time the clean and the analog forward of a zoo model on ``n_images`` random images.

    ``variants`` (name -> hardware) are timed in the same process on the same images; their
    seconds come back under ``"variants"``, beside ``analog_s`` of ``hw`` (default hardware).
    """
    torch.set_num_threads(1)
    model = build(model_name).eval()
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((n_images, 3, 32, 32),
                                                                   dtype=np.float32))

    def forward(m):
        def go():
            with torch.no_grad():
                for start in range(0, n_images, batch):
                    m(x[start:start + batch])
        return go

    def analog_time(config: HardwareConfig) -> float:
        analog = convert(model, config).program(0).drift(3600.0)
        forward(analog)()                  # JIT compilation and warm caches, not timed
        return _best_of(forward(analog), repeats)

    noisy = analog_time(hw or HardwareConfig())
    others = {name: analog_time(config) for name, config in (variants or {}).items()}
    clean = _best_of(forward(model), repeats)
    return {"model": model_name, "n_images": n_images, "clean_s": clean, "analog_s": noisy,
            "ratio": noisy / clean, "variants": others}


def main() -> None:
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    print("Analog forward vs clean torch fp32 forward, same images, same process, 1 thread,")
    print("default hardware (PCM, 7-bit DAC, 9-bit ADC, out_noise 0.06), read at 1 h.")
    print(f"{'model':10s} {'images':>6s} {'clean s':>8s} {'analog s':>9s} {'ratio':>6s}")
    for name, n_images in (("resnet20", 1000), ("vgg8", 200), ("mobilenet", 200)):
        res = run(name, n_images, variants={**VARIANTS, **{k: make() for k, (make, _) in
                                                           STATIC_VARIANTS.items()}}
                  if name == "resnet20" else None)
        print(f"{name:10s} {n_images:6d} {res['clean_s']:8.2f} {res['analog_s']:9.2f} "
              f"{res['ratio']:5.2f}x")
        if name == "resnet20":
            resnet20 = res
    print("(the IBM toolkit's CPU simulator: 14.4x on the ResNet-20 shape)")
    print()
    print("ResNet-20, same run: k slices / k input cycles vs the unsliced analog forward above")
    print(f"{'variant':22s} {'k':>2s} {'analog s':>9s} {'vs clean':>8s} {'vs analog':>9s}  "
          "target <= k x analog (vs analog / k)")
    for label, config in VARIANTS.items():
        k = conversions(config)
        seconds = resnet20["variants"][label]
        vs_analog = seconds / resnet20["analog_s"]
        print(f"{label:22s} {k:2d} {seconds:9.2f} {seconds / resnet20['clean_s']:7.2f}x "
              f"{vs_analog:8.2f}x  {'met' if vs_analog <= k else 'NOT met'} "
              f"({vs_analog / k:.2f}k)")
    print()
    print("ResNet-20, same run: direct convolution (static input ranges, no im2col) vs clean")
    for label, (_make, goal) in STATIC_VARIANTS.items():
        seconds = resnet20["variants"][label]
        ratio = seconds / resnet20["clean_s"]
        print(f"{label:34s} {seconds:9.2f} s {ratio:6.2f}x  goal <= {goal}x "
              f"{'met' if ratio <= goal else 'NOT met'}")
