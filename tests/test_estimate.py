"""Cost estimates and memory-fitted batches (mc_engine/run/estimate.py).

The batch size is part of what a trial draws when a point has short-term noise (the keys count
forward calls, the counters are rows within a call), so only points without it may change it:
checked here bit for bit on the model outputs, for both executions, and the opposite for a
noisy point (which is why it keeps its batch).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mc_engine import HardwareConfig
from mc_engine.analog import convert
from mc_engine.analog.execution import Execution
from mc_engine.cli import main
from mc_engine.data import digits_split
from mc_engine.results import load_results
from mc_engine.run import run_study
from mc_engine.run.estimate import (
    WORKER_BASE_BYTES,
    Estimate,
    batch_free,
    fitting_batch,
)
from mc_engine.study import load_study
from mc_engine.zoo import build

X = digits_split()["x_test"][:120]
QUIET = [
    HardwareConfig(device="pcm", adc_bits=7, dac_bits=6, out_noise=0.0),
    HardwareConfig(device="pcm", weight_bits=6, cell_bits=2, adc_bits=8, out_noise=0.0,
                   bound_management="iterative", out_bound=2.0),
    HardwareConfig(device="pcm", noise_management="none", drift_compensation="none",
                   out_noise=0.0),
]
NOISY = [HardwareConfig(device="pcm", out_noise=0.05),
         HardwareConfig(inp_noise=0.02, out_noise=0.0),
         HardwareConfig(w_noise=0.02, w_noise_type="additive_constant", out_noise=0.0)]


def outputs(model, hw, batch, execution):
    analog = convert(model, hw).use(execution)
    analog.program(7)
    analog.drift(86400.0)
    with torch.no_grad():
        return torch.cat([analog(torch.from_numpy(X[i:i + batch]))
                          for i in range(0, len(X), batch)]).numpy()


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn"])
def test_points_without_short_term_noise_give_the_same_outputs_at_any_batch(name, backend):
    model = build(name).eval()
    execution = Execution.parse(backend, "cpu")
    for hw in QUIET:
        assert batch_free(hw)
        full = outputs(model, hw, 120, execution)
        for batch in (37, 8) if backend == "numba" else (37,):
            np.testing.assert_array_equal(outputs(model, hw, batch, execution), full)


def test_points_with_short_term_noise_draw_by_the_batch():
    model = build("digits_cnn").eval()
    execution = Execution.parse("numba", "cpu")
    for hw in NOISY:
        assert not batch_free(hw)
        assert not np.array_equal(outputs(model, hw, 120, execution),
                                  outputs(model, hw, 37, execution))


def synthetic(per_image: int, model: int = 100 << 20) -> Estimate:
    return Estimate(program_s=1.0, read_s=2.0, n_images=1000, batch=500, inputs_bytes=0,
                    model_bytes=model, forward_bytes_at=lambda b: per_image * b, basis="")


def test_fitting_batch_is_the_largest_within_the_budget():
    est = synthetic(1 << 20)                          # 1 MiB a image
    assert fitting_batch(est, 10 * 2**30) == 500
    limit = int((WORKER_BASE_BYTES + (100 << 20) + (200 << 20)) / 0.7) + 2  # 200 images
    assert fitting_batch(est, limit) == 200
    assert fitting_batch(est, WORKER_BASE_BYTES) == 1  # nothing fits: the smallest batch
    assert est.peak_at(500) == WORKER_BASE_BYTES + (100 << 20) + (500 << 20)


PROBE = """
import numpy as np
from mc_engine import HardwareConfig
from mc_engine.data import digits_split
from mc_engine.run.estimate import probe
from mc_engine.zoo import build
model = build("digits_cnn").eval()
x = np.repeat(digits_split()["x_test"], 2, axis=0)[:1000]
est = probe(model, HardwareConfig(device="pcm", out_noise=0.05), x, [0.0, 3600.0])
print(est.program_s, est.read_s, est.n_images, est.forward_bytes_at(500),
      est.forward_bytes_at(50), est.model_bytes, est.inputs_bytes == x.nbytes)
print(est.line(10, 2))
"""


def test_the_probe_measures_growing_forward_memory_and_positive_times():
    """digits_cnn's first conv output alone is 8 x 8 x 8 floats (2 KiB) an image, so 500
    images need at least 1 MiB live at once; the extrapolation must see at least that, and
    stay within a generous factor (the forward holds a few such arrays, not hundreds).

    In a fresh process, as validate's probe runs: the peak resident size only grows when the
    heap does, and a long-lived process (this test session) reuses freed memory that is still
    resident, so a probe there sees less than the forward holds."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).parent.parent
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          cwd=root, timeout=300, check=True)
    numbers, line = done.stdout.strip().split("\n")[-2:]
    program_s, read_s, n_images, at_500, at_50, model_bytes, inputs_ok = numbers.split()
    assert float(program_s) > 0 and float(read_s) > 0 and int(n_images) == 1000
    activation = 500 * 8 * 8 * 8 * 4
    assert activation <= float(at_500) <= 200 * activation
    assert float(at_500) >= float(at_50)
    assert int(model_bytes) >= 0 and inputs_ok == "True"
    assert line.startswith("estimate: ") and "per (chip, read time) over 1000 images" in line
    assert "peak worker memory about" in line and "500-image batches" in line


QUIET_STUDY = """
[study]
name = "{name}"
seed = 4
repeats = 2
inference_times = ["0s", "1d"]
[model]
zoo = "digits_cnn"
[data]
dataset = "digits"
limit = 200
[hardware]
device = "pcm"
adc_bits = 7
{extra}
"""


def test_a_tight_memory_limit_shrinks_only_batches_that_change_no_row(tmp_path, warm_cluster,
                                                                      cache_dir, capsys):
    """With a limit below the estimate, a point without short-term noise runs in smaller
    batches (said on stderr) and its rows are the default run's; a noisy one is warned
    about and keeps its batch."""
    path = tmp_path / "q.toml"
    path.write_text(QUIET_STUDY.format(name="quiet", extra="out_noise = 0.0"))
    study = load_study(path)
    free = run_study(study, tmp_path / "a", scheduler=warm_cluster, cache_dir=cache_dir,
                     progress=False)
    tight = run_study(study, tmp_path / "b", scheduler=warm_cluster, cache_dir=cache_dir,
                      progress=False, memory_limit=WORKER_BASE_BYTES)
    err = capsys.readouterr().err
    assert "they run in 1-image batches" in err
    a, b = (load_results(o.results_dir).drop(columns="wall_s") for o in (free, tight))
    pd.testing.assert_frame_equal(a, b)
    path.write_text(QUIET_STUDY.format(name="noisy", extra="out_noise = 0.05"))
    run_study(load_study(path), tmp_path / "c", scheduler=warm_cluster, cache_dir=cache_dir,
              progress=False, memory_limit=WORKER_BASE_BYTES)
    assert "warning: 500-image batches need about" in capsys.readouterr().err


def test_validate_prints_the_estimate_and_the_memory_note(tmp_path, cache_dir, capsys):
    path = tmp_path / "v.toml"
    path.write_text(QUIET_STUDY.format(name="v", extra="out_noise = 0.05"))
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / ".cache").symlink_to(cache_dir)
    assert main(["validate", str(path), "--out", str(tmp_path / "r"),
                 "--memory-limit", "100MB"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("estimate: ") and "2 times" in out[1]
    assert out[2].startswith("warning: 500-image batches need about")
    assert main(["validate", str(path), "--memory-limit", "lots"]) == 2
