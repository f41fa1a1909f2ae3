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
  for information, the same through ``torch.compile`` (fused kernels; full sizes only: it
  compiles for about a minute) and through ``AnalogModel.program`` / ``drift`` (tile by tile,
  host arrays).
* Digits CNN (64-row tiles, the 899 embedded test images, 4 read times): trials/s of
  ``evaluate_trial`` over several chips, torch on the device against Numba on one CPU core.
* One hardware-aware training epoch of ResNet-18 (the multi-scale weight noise of
  studies/cifar10_resnet18_train_hwa.toml) on 50 000 CIFAR-shaped random images against a clean
  epoch, same loop, same batches.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from mc_engine.analog.execution import Execution
from mc_engine.bench.gpu_rows import SIZES, Clock, digits_row, forward_row, pcm_rows, training_row

OUT = Path("results") / "bench"


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
             ("digits trials", lambda: digits_row(size, execution, clock)),
             (f"{big} training", lambda: training_row(size, execution, clock))]
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
    if unit == "devices/s":
        return f"{v / 1e9:.3g} G/s"
    return f"{v:.3g}/s" if unit.endswith("/s") else f"{v:.3g}"


def table(result: dict) -> str:
    """The check's table (markdown)."""
    lines = ["| workload | mc-engine | reference (same run) | ratio | goal | |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        goal = "" if r["goal"] is None else (
            f"≥ {r['goal'] / 1e9:g} G/s" if r["unit"] == "devices/s"
            else "yes" if r["unit"] == "" and r["goal_kind"] else
            f"{'≤' if '<=' in r['goal_kind'] else '≥'} {r['goal']:g}×")
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
