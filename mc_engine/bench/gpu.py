"""`python -m mc_engine.bench gpu` (`make bench-gpu`): the GPU check, one script, one table.

On the GPU machine (no network, no Dask): ``pip install --no-deps --no-build-isolation -e .``
then ``python -m mc_engine.bench gpu`` (under 8 minutes on an H200). ``--device cpu --quick``
runs the same rows on tiny sizes on the CPU (tests/test_bench_gpu.py). Every row is a ratio to
a reference measured in the same run, or a rate, each printed with its goal and met / missed; a
missed goal never fails the script, an error does. The table goes to stdout, the figures to
``results/bench/gpu-<UTC time>.json`` with the machine, the GPU and the commit.

Rows (the torch execution, :mod:`mc_engine.analog.torch_pass`, on ``--device``; the JSON's row
ids stay the same at the quick sizes, its ``model`` names the network measured):

* ResNet-18 and VGG-16, CIFAR-shaped random images and random weights (BatchNorm in eval mode),
  default hardware (PCM, per-vector abs-max noise management, iterative bound management):
  one chip at one read time (programming, drift and the forward, as
  :func:`mc_engine.analog.evaluate_trial` runs them on a converted model, each part timed)
  against the clean torch forward of the same images, same batches, on the same device.
* PCM programming and drift + read of ResNet-18's devices: devices/s of
  :mod:`mc_engine.analog.torch_pcm` on all the model's devices at once (device-resident), and,
  for information, through ``AnalogModel.program`` / ``drift`` (tile by tile, host arrays).
* Digits CNN (64-row tiles, the 899 embedded test images, 4 read times): trials/s of
  ``evaluate_trial`` over several chips, torch on the device against Numba on one CPU core.
* One hardware-aware training epoch of ResNet-18 (the multi-scale weight noise of
  studies/cifar10_resnet18_train_hwa.toml) on 50 000 CIFAR-shaped random images against a clean
  epoch, same loop, same batches.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mc_engine.analog import convert, evaluate_trial
from mc_engine.analog.evaluate import _count_correct
from mc_engine.analog.execution import NUMBA_CPU, Execution
from mc_engine.hardware import HardwareConfig
from mc_engine.zoo import build

OUT = Path("results") / "bench"
READ_TIME_S = 3600.0
DIGITS_TIMES = (0.0, 3600.0, 86400.0, 365 * 86400.0)
#: The weight noise of the repository's hardware-aware ResNet-18 recipe (three levels per batch).
HWA_LEVELS = (0.02, 0.04, 0.06)

#: Workload sizes: the real check, and the quick one that runs on a CPU in seconds.
#: The quick check stands the small CIFAR networks of the zoo in for ResNet-18 and VGG-16.
SIZES = {
    "full": {"images": 10_000, "batch": 500, "digits_chips": 32, "digits_cpu_chips": 8,
             "train_images": 50_000, "train_batch": 128,
             "models": {"resnet18": "resnet18", "vgg16": "vgg16"}},
    "quick": {"images": 16, "batch": 8, "digits_chips": 1, "digits_cpu_chips": 1,
              "train_images": 16, "train_batch": 8,
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
    _count_correct(analog, x[:batch], y[:batch], batch, dev)
    return {"program_s": clock.time(lambda: analog.program(1)),
            "drift_s": clock.time(lambda: analog.drift(READ_TIME_S)),
            "forward_s": clock.time(lambda: _count_correct(analog, x, y, batch, dev))}


def forward_row(name: str, size: dict, execution: Execution, clock: Clock) -> list[dict]:
    """One chip at one read time (programming, drift, the forward: what
    :func:`~mc_engine.analog.evaluate_trial` does for a converted model) vs the clean forward of
    the same images, same batches, same device."""
    role, name = name, size["models"][name]
    model = build(name).eval()
    x, y = _images(size["images"])
    batch, dev = size["batch"], execution.torch_device
    parts = _analog_parts(model, x, y, batch, execution, clock)
    clean = copy.deepcopy(model).to(dev)
    _count_correct(clean, x[:batch], y[:batch], batch, dev)
    clean_s = clock.time(lambda: _count_correct(clean, x, y, batch, dev))
    total = sum(parts.values())
    detail = ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in parts.items())
    return [{"row": f"{role}_forward", "model": name, "workload":
             f"{name}, {len(x)} CIFAR-shaped images, analog (1 chip, 1 time) / clean forward",
             "value": total, "unit": "s", "reference": clean_s, "ratio": total / clean_s,
             "goal": 2.0, "goal_kind": "ratio <=", "met": total / clean_s <= 2.0, **parts},
            {"row": f"{role}_forward_parts", "model": name, "workload": f"  of which {detail}",
             "value": parts["forward_s"], "unit": "s", "reference": clean_s,
             "ratio": parts["forward_s"] / clean_s, "goal": None, "goal_kind": None,
             "met": None}]


def _kernel_seconds(targets: list[np.ndarray], execution: Execution, clock: Clock
                    ) -> tuple[float, float]:
    """Best of 3 of torch_pcm.program and drift_read on all ``targets`` at once (one stream
    per tile), on the execution's device."""
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
    state = {}

    def program():
        state["g"], state["nu"] = torch_pcm.program(g, key, hw.g_max, hw.prog_noise_scale,
                                                    hw.drift_scale, index=index)

    def read():
        torch_pcm.drift_read(state["g"], state["nu"], key, 86400.0, hw.g_max,
                             hw.read_noise_scale, index=index)

    program()
    read()                                                     # warm-up
    return min(clock.time(program) for _ in range(3)), min(clock.time(read) for _ in range(3))


def pcm_rows(size: dict, execution: Execution, clock: Clock) -> list[dict]:
    """Devices/s of PCM programming and of drift + read on all of ResNet-18's devices."""
    name = size["models"]["resnet18"]
    analog = convert(build(name).eval(), HardwareConfig())
    targets = [t.mapping.targets() for layer in analog.analog_layers()
               for m in layer.matrices for row in m.tiles for t in row]
    n = sum(t.size for t in targets)
    t_prog, t_read = _kernel_seconds(targets, execution, clock)
    analog.use(execution)
    analog.program(0)
    analog.drift(READ_TIME_S)                                  # warm-up
    e_prog = clock.time(lambda: analog.program(1))
    e_read = clock.time(lambda: analog.drift(86400.0))
    rows = []
    for what, seconds, engine_s in (("programming", t_prog, e_prog),
                                    ("drift + read", t_read, e_read)):
        rate = n / seconds
        rows.append({"row": f"pcm_{what.split()[0]}", "model": name, "workload":
                     f"PCM {what}, {name}, {n / 1e6:.1f} M devices in one call",
                     "value": rate, "unit": "devices/s", "reference": None, "ratio": None,
                     "goal": 5e9, "goal_kind": "rate >=", "met": rate >= 5e9})
        rows.append({"row": f"pcm_{what.split()[0]}_engine", "model": name, "workload":
                     "  same through AnalogModel.program / drift (tile by tile, mapping, "
                     "compensation, host arrays)", "value": n / engine_s,
                     "unit": "devices/s", "reference": None, "ratio": None, "goal": None,
                     "goal_kind": None, "met": None})
    return rows


def digits_row(size: dict, execution: Execution, clock: Clock) -> dict:
    """Trials/s of the digits CNN over several chips: torch on the device vs Numba on 1 core."""
    from mc_engine.data.loader import load_dataset

    data = load_dataset({"dataset": "digits"}, Path("."), None)
    model = build("digits_cnn").eval()
    hw = HardwareConfig(max_input_size=64, max_output_size=64)

    def chips(ex: Execution, n: int, first: int = 1) -> Callable[[], None]:
        def go():
            for seed in range(first, first + n):
                evaluate_trial(model, hw, data.x, data.y, DIGITS_TIMES, seed, execution=ex)
        return go

    chips(NUMBA_CPU, 1, 0)()                                   # warm-up (JIT, conversion)
    cpu_s = clock.time(chips(NUMBA_CPU, size["digits_cpu_chips"]))
    chips(execution, 1, 0)()
    dev_s = clock.time(chips(execution, size["digits_chips"]))
    per = len(DIGITS_TIMES)
    dev_rate, cpu_rate = size["digits_chips"] * per / dev_s, size["digits_cpu_chips"] * per / cpu_s
    return {"row": "digits_trials", "model": "digits_cnn", "workload":
            f"digits CNN, 64-row tiles, {len(data.y)} images, trials (chip, time)/s, "
            f"{size['digits_chips']} chips / numba on 1 CPU core", "value": dev_rate,
            "unit": "trials/s", "reference": cpu_rate, "ratio": dev_rate / cpu_rate,
            "goal": 20.0, "goal_kind": "ratio >=", "met": dev_rate / cpu_rate >= 20.0}


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


def training_row(size: dict, execution: Execution, clock: Clock) -> dict:
    """One hardware-aware epoch of ResNet-18 against a clean epoch (same loop and batches)."""
    from contextlib import nullcontext
    from functools import partial

    from mc_engine.train import NoiseSpec, noisy_forward
    from mc_engine.train.noisy import NoiseSource

    dev, name = execution.torch_device, size["models"]["resnet18"]
    xn, yn = _images(size["train_images"], seed=1)
    x, y = torch.from_numpy(xn), torch.from_numpy(yn)
    batch = size["train_batch"]
    spec = NoiseSpec(weight_noise=HWA_LEVELS)

    def hwa(model):
        return noisy_forward(model, spec, NoiseSource.from_seed(0, dev))

    seconds = {}
    for label, noisy in (("clean", lambda m: nullcontext(m)), ("hwa", hwa)):
        model = build(name).to(dev)
        run = partial(_epoch, model, x, y, batch, dev, noisy)
        run(limit=2)                                            # warm-up
        seconds[label] = clock.time(run)
    ratio = seconds["hwa"] / seconds["clean"]
    return {"row": "resnet18_hwa_epoch", "model": name, "workload":
            f"{name}, one training epoch of {len(y)} images (batch {batch}), weight noise "
            f"{list(HWA_LEVELS)} / clean epoch", "value": seconds["hwa"], "unit": "s",
            "reference": seconds["clean"], "ratio": ratio, "goal": 2.0, "goal_kind": "ratio <=",
            "met": ratio <= 2.0}


def _device_info(execution: Execution) -> dict:
    info = {"device": execution.device, "cuda": torch.version.cuda}
    if execution.cuda:
        index = execution.torch_device.index or 0
        info.update(gpu=torch.cuda.get_device_name(index),
                    gpu_memory_gib=torch.cuda.get_device_properties(index).total_memory / 2**30,
                    cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                    matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)
    return info


def run(execution: Execution, quick: bool = False,
        on_step: Callable[[dict], None] | None = None) -> dict:
    """Every row of the check. A step that raises is recorded as an error and the others still
    run (the script then exits non-zero); ``on_step`` gets the result so far after each step
    (main writes it, so that a run cut short keeps the rows it measured)."""
    from mc_engine.bench.suite import machine

    size = SIZES["quick" if quick else "full"]
    clock = Clock(execution.torch_device)
    started = time.perf_counter()
    big, vgg = size["models"]["resnet18"], size["models"]["vgg16"]
    steps = [(f"{big} forward", lambda: forward_row("resnet18", size, execution, clock)),
             (f"{vgg} forward", lambda: forward_row("vgg16", size, execution, clock)),
             ("pcm devices", lambda: pcm_rows(size, execution, clock)),
             ("digits trials", lambda: [digits_row(size, execution, clock)]),
             (f"{big} training", lambda: [training_row(size, execution, clock)])]
    result = {"when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "machine": machine(), "execution": str(execution), **_device_info(execution),
              "quick": quick, "sizes": size, "rows": [], "errors": [], "steps_s": {}}
    for label, step in steps:
        t0 = time.perf_counter()
        try:
            result["rows"].extend(step())
        except Exception as exc:            # recorded, reported, and the exit status says so
            result["errors"].append({"step": label, "error": f"{type(exc).__name__}: {exc}"})
        result["steps_s"][label] = time.perf_counter() - t0
        result["wall_s"] = time.perf_counter() - started
        result["dask_imported"] = any(m.split(".")[0] in ("dask", "distributed")
                                      for m in sys.modules)
        print(f"  {label}: {result['steps_s'][label]:.1f} s", file=sys.stderr, flush=True)
        if on_step is not None:
            on_step(result)
    return result


def _value(v: float | None, unit: str) -> str:
    if v is None:
        return ""
    if unit == "s":
        return f"{v:.2f} s"
    return f"{v / 1e9:.3g} G/s" if unit == "devices/s" else f"{v:.3g}/s"


def table(result: dict) -> str:
    """The check's table (markdown)."""
    lines = ["| workload | mc-engine | reference (same run) | ratio | goal | |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        goal = "" if r["goal"] is None else (
            f"≥ {r['goal'] / 1e9:g} G/s" if r["unit"] == "devices/s"
            else f"{'≤' if '<=' in r['goal_kind'] else '≥'} {r['goal']:g}×")
        met = "" if r["met"] is None else ("pass" if r["met"] else "miss")
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}×"
        lines.append(f"| {r['workload']} | {_value(r['value'], r['unit'])} | "
                     f"{_value(r['reference'], r['unit'])} | {ratio} | {goal} | {met} |")
    for e in result["errors"]:
        lines.append(f"| {e['step']}: ERROR {e['error'][:200]} | | | | | error |")
    m = result["machine"]
    where = result.get("gpu") or m["cpu"]
    lines.append("")
    lines.append(f"Measured {result['when']} on {where} ({result['execution']}; host "
                 f"{m['cpu']}, {m['cores']} cores), torch {m['torch']} (CUDA "
                 f"{result['cuda']}), numba {m['numba']}, commit {m['commit']}; "
                 f"{result['wall_s']:.0f} s in all{', quick sizes' if result['quick'] else ''}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mc_engine.bench gpu",
                                     description="The GPU check: one table, one JSON file.")
    parser.add_argument("--device", default="cuda", help="torch device (default cuda)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes (a few dozen images, 1 chip): runs on a CPU in seconds")
    parser.add_argument("--out", type=Path, default=OUT, help="folder of the JSON (default "
                                                              "results/bench)")
    args = parser.parse_args(argv)
    execution = Execution.parse("torch", args.device)
    execution.check_available()
    print(f"GPU check on {execution} ({'quick' if args.quick else 'full'} sizes)",
          file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H%M%SZ")
    path = args.out / f"gpu-{stamp}.json"
    result = run(execution, args.quick, lambda r: path.write_text(json.dumps(r, indent=2)))
    print(table(result))
    print(f"\n(written to {path})")
    return 1 if result["errors"] else 0
