"""`make bench`: every throughput figure of the engine in one run, as a table and as JSON.

Each figure is a ratio to a reference measured in the same run (see forward.py and
throughput.py). The JSON (results/bench/bench-<UTC time>.json and latest.json) carries the
machine, the versions and the commit, so runs on different days or machines can be compared.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path

import numba
import numpy as np
import torch

import mc_engine
from mc_engine.bench import forward, throughput
from mc_engine.zoo.models import ZOO_NAMES

OUT = Path("results") / "bench"


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "numba": numba.__version__, "numpy": np.__version__,
            "engine": mc_engine.__version__, "commit": commit,
            "load_average": os.getloadavg()[0]}


def run() -> dict:
    models = [("resnet20", 1000, 100)] + ([("resnet18", 100, 50)] if "resnet18" in ZOO_NAMES
                                          else [])
    resnet20 = {**forward.VARIANTS,
                **{k: make() for k, (make, _) in forward.STATIC_VARIANTS.items()}}
    fwd = {name: forward.run(name, n, batch=batch,
                             variants=resnet20 if name == "resnet20" else None)
           for name, n, batch in models}
    device_model = "resnet18" if "resnet18" in ZOO_NAMES else "resnet20"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        result = {"when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                  "machine": machine(), "forward": fwd,
                  "trial": throughput.trial_cost(folder),
                  "devices": throughput.device_rates(device_model),
                  "workers": throughput.worker_scaling(folder),
                  "memory": throughput.client_memory(folder),
                  "worker_memory": throughput.worker_memory(device_model)}
    return result


def table(r: dict) -> str:
    """The README table (markdown) of a bench result."""
    rows = ["| workload | mc-engine | reference (same run) | ratio | goal |",
            "|---|---|---|---|---|"]
    for name, f in r["forward"].items():
        rows.append(f"| {name}, {f['n_images']} CIFAR-shaped images, analog / clean forward "
                    f"| {f['analog_s']:.2f} s | {f['clean_s']:.2f} s | {f['ratio']:.2f}× "
                    f"| ≤ 1.5× |")
    for label, seconds in r["forward"]["resnet20"]["variants"].items():
        if label in forward.STATIC_VARIANTS:
            goal = forward.STATIC_VARIANTS[label][1]
            clean = r["forward"]["resnet20"]["clean_s"]
            rows.append(f"| resnet20, {label}, direct convolution, / clean forward | "
                        f"{seconds:.2f} s | {clean:.2f} s | {seconds / clean:.2f}× | ≤ {goal}× |")
            continue
        k = forward.conversions(forward.VARIANTS[label])
        base = r["forward"]["resnet20"]["analog_s"]
        rows.append(f"| resnet20, {label} ({k} conversions), / default analog | "
                    f"{seconds:.2f} s | {base:.2f} s | {seconds / base:.2f}× | ≤ {k}× |")
    t = r["trial"]
    rows.append(f"| {t['workload']} | {t['seconds'] * 1e3:.1f} ms | "
                f"{t['reference_s'] * 1e3:.2f} ms clean | {t['ratio']:.1f}× | ≤ 2× |")
    d = r["devices"]
    rows.append(f"| PCM programming incl. compensation reference, {d['model']}, "
                f"{d['devices'] / 1e6:.1f} M devices | {d['program_devices_per_s'] / 1e6:.0f} M/s "
                f"| | | ≥ 50 M/s |")
    rows.append(f"| PCM drift + read noise + compensation at one time, same | "
                f"{d['drift_devices_per_s'] / 1e6:.0f} M/s | | | ≥ 50 M/s |")
    w = r["workers"]
    rows.append(f"| {w['workload']}, 2 workers vs 1 | {w['two_workers_s']:.1f} s | "
                f"{w['one_worker_s']:.1f} s | {w['speedup']:.2f}× faster | ≥ 1.8× |")
    m = r["memory"]
    peaks = " → ".join(f"{v:.0f}" for v in m["client_peak_mib"].values())
    trials = " → ".join(m["client_peak_mib"])
    rows.append(f"| client peak RSS, {trials} trials ({m['workload']}) | {peaks} MiB | | "
                f"{m['growth_kib_per_trial']:+.1f} KiB/trial | flat |")
    wm = r["worker_memory"]
    rows.append(f"| worker peak RSS, one {wm['model']} trial, 100 images | "
                f"{wm['worker_peak_mib']:.0f} MiB | | | |")
    mach = r["machine"]
    rows.append("")
    rows.append(f"Measured {r['when']} on {mach['cpu']} ({mach['cores']} cores, load average "
                f"{mach['load_average']:.1f}), one thread per process, torch {mach['torch']}, "
                f"numba {mach['numba']}, commit {mach['commit']}.")
    return "\n".join(rows)


def main() -> int:
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    result = run()
    OUT.mkdir(parents=True, exist_ok=True)
    stamp = result["when"].replace(":", "").replace("+0000", "Z")
    text = json.dumps(result, indent=2)
    (OUT / f"bench-{stamp}.json").write_text(text)
    (OUT / "latest.json").write_text(text)
    print(table(result))
    print(f"\n(written to {OUT / 'latest.json'})")
    return 0
