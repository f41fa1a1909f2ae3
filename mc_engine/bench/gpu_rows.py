"""The rows of the GPU check (mc_engine/bench/gpu.py): each a function of the sizes, the
execution and a clock that synchronises CUDA around what it times."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mc_engine.analog import convert
from mc_engine.analog.cuda import image_batch_size
from mc_engine.analog.evaluate import _score
from mc_engine.analog.execution import NUMBA_CPU, Execution
from mc_engine.hardware import HardwareConfig
from mc_engine.zoo import build

READ_TIME_S = 3600.0
DIGITS_TIMES = (0.0, 3600.0, 86400.0, 365 * 86400.0)
#: The weight noise of the repository's hardware-aware ResNet-18 recipe (three levels per batch).
HWA_LEVELS = (0.02, 0.04, 0.06)

#: Workload sizes: the real check, and the quick one that runs on a CPU in seconds.
#: The quick check stands the small CIFAR networks of the zoo in for ResNet-18 and VGG-16.
SIZES = {
    "full": {"images": 10_000, "batch": None, "digits_chips": 32, "digits_cpu_chips": 8,
             "train_images": 50_000, "train_batch": 128, "compile_pcm": True, "tile_batches": 40,
             "models": {"resnet18": "resnet18", "vgg16": "vgg16"}},
    "quick": {"images": 16, "batch": 8, "digits_chips": 2, "digits_cpu_chips": 1,
              "train_images": 16, "train_batch": 8, "compile_pcm": False, "tile_batches": 1,
              "models": {"resnet18": "resnet20", "vgg16": "vgg8"}},
}


class Clock:
    """Wall time of a block on a device: synchronised on CUDA before and after."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def time(self, fn: Callable[[], object]) -> float:
        self.sync()
        start = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - start


def _images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, 3, 32, 32), dtype=np.float32),
            rng.integers(0, 10, n).astype(np.int64))


def _analog_parts(model: nn.Module, x: np.ndarray, y: np.ndarray, batch: int,
                  execution: Execution, clock: Clock) -> dict[str, float]:
    dev = execution.torch_device
    analog = convert(model, HardwareConfig()).use(execution)
    analog.program(0).drift(READ_TIME_S)                       # warm-up
    _score(analog, x[:batch], y[:batch], batch, dev)
    return {"program_s": clock.time(lambda: analog.program(1)),
            "drift_s": clock.time(lambda: analog.drift(READ_TIME_S)),
            "forward_s": clock.time(lambda: _score(analog, x, y, batch, dev))}


def forward_row(name: str, size: dict, execution: Execution, clock: Clock) -> list[dict]:
    """One chip at one read time (programming, drift, the forward: what
    :func:`~mc_engine.analog.evaluate_trial` does for a converted model) vs the clean forward of
    the same images, same batches, same device."""
    role, name = name, size["models"][name]
    model = build(name).eval()
    x, y = _images(size["images"])
    dev = execution.torch_device
    batch = size["batch"] or image_batch_size(execution, int(np.prod(x.shape[1:])), len(x))
    parts = _analog_parts(model, x, y, batch, execution, clock)
    clean = copy.deepcopy(model).to(dev)
    _score(clean, x[:batch], y[:batch], batch, dev)
    clean_s = clock.time(lambda: _score(clean, x, y, batch, dev))
    total = sum(parts.values())
    detail = ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in parts.items())
    return [{"row": f"{role}_forward", "model": name, "workload":
             f"{name}, {len(x)} CIFAR-shaped images in batches of {batch}, analog (1 chip, "
             "1 time) / clean forward",
             "value": total, "unit": "s", "reference": clean_s, "ratio": total / clean_s,
             "goal": 2.0, "goal_kind": "ratio <=", "met": total / clean_s <= 2.0, **parts},
            {"row": f"{role}_forward_parts", "model": name, "workload": f"  of which {detail}",
             "value": parts["forward_s"], "unit": "s", "reference": clean_s,
             "ratio": parts["forward_s"] / clean_s, "goal": None, "goal_kind": None,
             "met": None}]


def _kernel_seconds(targets: list[np.ndarray], execution: Execution, clock: Clock,
                    compiled: bool = False) -> dict:
    """Best of 3 of torch_pcm.program and drift_read on all ``targets`` at once (one stream
    per tile), on the execution's device; ``compiled``: through torch.compile (fused kernels),
    with the count of results that differ from the eager ones."""
    from mc_engine.analog import torch_pcm
    from mc_engine.analog.torch_rng import key_bits

    dev = execution.torch_device
    keys = np.random.default_rng(0).integers(0, 2**64 - 1, len(targets), dtype=np.uint64,
                                             endpoint=True)
    g = torch.from_numpy(np.concatenate(targets)).to(dev)
    key = torch.cat([torch.full((t.size,), key_bits(k), dtype=torch.int64)
                     for t, k in zip(targets, keys)]).to(dev)
    index = torch.cat([torch.arange(t.size, dtype=torch.int64) for t in targets]).to(dev)
    hw = HardwareConfig()
    prog_fn, read_fn = torch_pcm.program, torch_pcm.drift_read
    if compiled:
        prog_fn, read_fn = torch.compile(prog_fn), torch.compile(read_fn)
    state = {}

    def program():
        state["g"], state["nu"] = prog_fn(g, key, hw.g_max, hw.prog_noise_scale,
                                          hw.drift_scale, index=index)

    def read():
        state["out"] = read_fn(state["g"], state["nu"], key, 86400.0, hw.g_max,
                               hw.read_noise_scale, index=index)

    start = time.perf_counter()
    program()
    read()                                                     # warm-up (and compilation)
    out = {"warm_up_s": time.perf_counter() - start,
           "program_s": min(clock.time(program) for _ in range(3)),
           "read_s": min(clock.time(read) for _ in range(3))}
    if compiled:
        eager_g, eager_nu = torch_pcm.program(g, key, hw.g_max, hw.prog_noise_scale,
                                              hw.drift_scale, index=index)
        eager_read = torch_pcm.drift_read(eager_g, eager_nu, key, 86400.0, hw.g_max,
                                          hw.read_noise_scale, index=index)
        out["differ_from_eager"] = {"g_prog": int((eager_g != state["g"]).sum()),
                                    "nu": int((eager_nu != state["nu"]).sum()),
                                    "read": int((eager_read != state["out"]).sum())}
    return out


def pcm_rows(size: dict, execution: Execution, clock: Clock) -> list[dict]:
    """Devices/s of PCM programming and of drift + read on all of ResNet-18's devices."""
    name = size["models"]["resnet18"]
    analog = convert(build(name).eval(), HardwareConfig())
    targets = [t.mapping.targets() for layer in analog.analog_layers()
               for m in layer.matrices for row in m.tiles for t in row]
    n = sum(t.size for t in targets)
    eager = _kernel_seconds(targets, execution, clock)
    fused = None
    if size["compile_pcm"]:
        try:
            fused = _kernel_seconds(targets, execution, clock, compiled=True)
        except Exception as exc:          # information only: the engine runs the eager ops
            fused = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    analog.use(execution)
    analog.program(0)
    analog.drift(READ_TIME_S)                                  # warm-up
    engine = {"program_s": clock.time(lambda: analog.program(1)),
              "read_s": clock.time(lambda: analog.drift(86400.0))}
    rows = []
    for what, part in (("programming", "program_s"), ("drift + read", "read_s")):
        tag = f"pcm_{what.split()[0]}"
        rate = n / eager[part]
        rows.append({"row": tag, "model": name, "workload":
                     f"PCM {what}, {name}, {n / 1e6:.1f} M devices in one call",
                     "value": rate, "unit": "devices/s", "reference": None, "ratio": None,
                     "goal": 5e9, "goal_kind": "rate >=", "met": rate >= 5e9})
        if fused is not None:
            bad = "error" in fused
            rows.append({"row": f"{tag}_compiled", "model": name, "workload":
                         "  same through torch.compile (information: "
                         + (f"failed, {fused['error'][:80]}" if bad else
                            f"compiled in {fused['warm_up_s']:.0f} s, results differing from "
                            f"eager: {fused['differ_from_eager']}") + ")",
                         "value": None if bad else n / fused[part], "unit": "devices/s",
                         "reference": None, "ratio": None, "goal": None, "goal_kind": None,
                         "met": None, "detail": fused})
        rows.append({"row": f"{tag}_engine", "model": name, "workload":
                     "  same through AnalogModel.program / drift (tile by tile, mapping, "
                     "compensation, host arrays)", "value": n / engine[part],
                     "unit": "devices/s", "reference": None, "ratio": None, "goal": None,
                     "goal_kind": None, "met": None})
    return rows


def digits_row(size: dict, execution: Execution, clock: Clock) -> list[dict]:
    """Trials/s of the digits CNN: the device's chips batched in one call (evaluate_chips, what
    a Dask task of that many chips runs) vs Numba on 1 core, chip after chip; and whether the
    device's rows are bitwise the same with the chips batched and run alone (reproducibility
    across chip batch sizes) and how they compare with Numba's."""
    from mc_engine.analog import evaluate_chips
    from mc_engine.analog.cuda import image_batch_size
    from mc_engine.data.loader import load_dataset

    data = load_dataset({"dataset": "digits"}, Path("."), None)
    model = build("digits_cnn").eval()
    hw = HardwareConfig(max_input_size=64, max_output_size=64)
    batch = image_batch_size(execution, int(np.prod(data.x.shape[1:])), len(data.y))
    n_dev, n_cpu = size["digits_chips"], size["digits_cpu_chips"]

    def run(ex: Execution, seeds: list[int], per_call: int | None = None):
        per_call = per_call or len(seeds)
        out = []
        for k in range(0, len(seeds), per_call):
            out += evaluate_chips(model, hw, data.x, data.y, DIGITS_TIMES,
                                  seeds[k:k + per_call], batch_size=batch if ex.torch else 500,
                                  execution=ex)
        return out

    run(NUMBA_CPU, [0])                                        # warm-up (JIT, conversion)
    cpu_s = clock.time(lambda: run(NUMBA_CPU, list(range(1, 1 + n_cpu))))
    run(execution, list(range(100, 100 + n_dev)))              # warm-up (compile, conversions)
    seeds = list(range(1, 1 + n_dev))
    dev_rows: list = []
    dev_s = clock.time(lambda: dev_rows.extend(run(execution, seeds)))
    per = len(DIGITS_TIMES)
    dev_rate, cpu_rate = n_dev * per / dev_s, n_cpu * per / cpu_s
    few = seeds[:min(4, n_dev)]
    alone = run(execution, few, per_call=1)
    same = [[r["n_correct"] for r in rows] for rows in alone] == \
        [[r["n_correct"] for r in rows] for rows in dev_rows[:len(few)]]
    numba = run(NUMBA_CPU, few)
    acc_dev = np.mean([r["accuracy"] for rows in dev_rows[:len(few)] for r in rows])
    acc_cpu = np.mean([r["accuracy"] for rows in numba for r in rows])
    return [{"row": "digits_trials", "model": "digits_cnn", "workload":
             f"digits CNN, 64-row tiles, {len(data.y)} images, trials (chip, time)/s, "
             f"{n_dev} chips in one call / numba on 1 CPU core", "value": dev_rate,
             "unit": "trials/s", "reference": cpu_rate, "ratio": dev_rate / cpu_rate,
             "goal": 20.0, "goal_kind": "ratio >=", "met": dev_rate / cpu_rate >= 20.0},
            {"row": "digits_chip_batch_bitwise", "model": "digits_cnn", "workload":
             f"  rows of {len(few)} chips batched = the chips alone, bitwise (1 = yes)",
             "value": float(same), "unit": "", "reference": None, "ratio": None,
             "goal": 1.0, "goal_kind": "ratio >=", "met": same},
            {"row": "digits_vs_numba", "model": "digits_cnn", "workload":
             f"  mean accuracy of those chips on the device / on numba (image batch {batch} "
             "vs 500: other MVM draws, same chips)", "value": float(acc_dev), "unit": "",
             "reference": float(acc_cpu), "ratio": float(acc_dev / acc_cpu), "goal": None,
             "goal_kind": None, "met": None}]


def _epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, dev: torch.device,
           noisy, limit: int | None = None) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(y)))
    starts = range(0, len(y), batch)
    model.train()
    with noisy(model):
        for k, start in enumerate(starts):
            if limit is not None and k >= limit:
                break
            idx = order[start:start + batch]
            xb, yb = x[idx].to(dev), y[idx].to(dev)
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            float(loss.detach())                # the loop reads the loss every batch


def training_row(size: dict, execution: Execution, clock: Clock) -> list[dict]:
    """Hardware-aware epochs of ResNet-18 against a clean epoch (same loop and batches): the
    repository's weight-noise recipe (noisy weights, digital path), and the tile pass in grad
    mode (aihwkit's standard periphery: 8-bit DAC and ADC, out_noise 0.04, pcm_read weight
    noise 0.0175, bound ±10, ω = 1 columnwise, through analog/torch_pass.py), the latter timed
    on its first batches and extrapolated to the epoch."""
    from contextlib import nullcontext
    from functools import partial

    from mc_engine.train import NoiseSpec, noisy_forward
    from mc_engine.train.noisy import TRAIN_PERIPHERY, NoiseSource

    dev, name = execution.torch_device, size["models"]["resnet18"]
    xn, yn = _images(size["train_images"], seed=1)
    x, y = torch.from_numpy(xn), torch.from_numpy(yn)
    batch = size["train_batch"]
    n_batches = -(-len(y) // batch)
    periphery = HardwareConfig(**{**TRAIN_PERIPHERY, "dac_bits": 8, "adc_bits": 8,
                                  "out_noise": 0.04, "out_bound": 10.0, "w_noise": 0.0175,
                                  "w_noise_type": "pcm_read", "weight_scaling_omega": 1.0,
                                  "weight_scaling_columnwise": True,
                                  "bound_management": "none"})
    specs = {"hwa": (NoiseSpec(weight_noise=HWA_LEVELS), None),
             "tiles": (NoiseSpec(hardware=periphery, weight_noise=(0.02,)),
                       size["tile_batches"])}

    def noisy_with(spec):
        return lambda model: noisy_forward(model, spec, NoiseSource.from_seed(0, dev))

    seconds = {}
    model = build(name).to(dev)
    run = partial(_epoch, model, x, y, batch, dev, lambda m: nullcontext(m))
    run(limit=2)                                                # warm-up
    seconds["clean"] = clock.time(run)
    for label, (spec, limit) in specs.items():
        model = build(name).to(dev)
        run = partial(_epoch, model, x, y, batch, dev, noisy_with(spec))
        run(limit=2)
        done = n_batches if limit is None else min(limit, n_batches)
        seconds[label] = clock.time(partial(run, limit=done)) * n_batches / done
    rows = []
    for label, text in (("hwa", f"weight noise {list(HWA_LEVELS)}"),
                        ("tiles", f"the tile pass in grad mode (8-bit DAC/ADC, noise, ω), "
                                  f"{min(size['tile_batches'], n_batches)} batches "
                                  "extrapolated")):
        ratio = seconds[label] / seconds["clean"]
        rows.append({"row": f"resnet18_{label}_epoch", "model": name, "workload":
                     f"{name}, one training epoch of {len(y)} images (batch {batch}), {text} "
                     "/ clean epoch", "value": seconds[label], "unit": "s",
                     "reference": seconds["clean"], "ratio": ratio, "goal": 2.0,
                     "goal_kind": "ratio <=", "met": ratio <= 2.0})
    return rows
