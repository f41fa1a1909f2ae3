"""What a study will cost, from a short timed probe: the time of one (chip, read time) and the
peak memory of a worker, printed by ``mc-engine validate``; and the evaluation batch that fits a
worker's memory where the batch size changes no result (:func:`batch_free`).

The probe converts the model for the study's first hardware point, programs it once (timed),
drifts it to the last read time (timed) and runs two small image batches through it, timed (the
difference gives the time per image, the rest the time per call; sized by time, up to a batch
within PROBE_S seconds) and two batches sized by their bytes (at least PROBE_INPUT_BYTES of
input) with the process's peak resident memory measured around each: Linux's VmHWM, reset
before each batch through /proc/self/clear_refs, elsewhere the resident size sampled every
millisecond;
glibc's malloc set to map every large array on its own meanwhile, so that the resident size
follows the live arrays).
The forward's memory grows linearly with the batch (activations, DAC outputs, im2col rows), so
the two batches give its slope and intercept, extrapolated to the run's batch. A worker's peak
is then: the worker process itself (WORKER_BASE_BYTES: torch, Numba and Dask imported), the
scattered inputs (test images, labels, calibration inputs, the model's weights), the converted
model (its conductances and caches, measured) and the forward of one batch.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mc_engine.analog.evaluate import BATCH_SIZE
from mc_engine.analog.execution import NUMBA_CPU, Execution
from mc_engine.hardware import HardwareConfig
from mc_engine.study.units import format_duration

#: A worker process's resident memory before its first task: torch, Numba, Dask and mc-engine
#: imported (measured on `dask worker --nthreads 1`, Linux x86-64: 520 MiB).
WORKER_BASE_BYTES = 520 * 2**20
#: Images in the probe's two timed batches (after a warm-up of PROBE_IMAGES[0]); more, up to a
#: batch, when the warm-up shows that a batch of PROBE_S seconds holds more.
PROBE_IMAGES = (8, 24)
PROBE_S = 0.5
#: The memory probe's larger batch holds at least this many bytes of input images (at least
#: PROBE_IMAGES[1] images, at most a batch).
PROBE_INPUT_BYTES = 256 << 10
#: Fraction of a worker's memory limit a run's estimated peak may take (Dask pauses a worker
#: at 80 % of its limit and restarts it at 95 %).
MEMORY_FRACTION = 0.7


@dataclass(frozen=True)
class Estimate:
    """A probe's figures: seconds to program a chip, seconds per (chip, read time) over the
    test set, and the bytes of a worker's peak memory, by part, at ``batch`` images."""

    program_s: float
    read_s: float
    n_images: int
    batch: int
    inputs_bytes: int
    model_bytes: int
    forward_bytes_at: Callable[[int], int]
    basis: str

    @property
    def peak_bytes(self) -> int:
        return self.peak_at(self.batch)

    def peak_at(self, batch: int) -> int:
        """A worker's estimated peak with ``batch``-image forward calls."""
        return WORKER_BASE_BYTES + self.inputs_bytes + self.model_bytes + \
            self.forward_bytes_at(min(batch, self.n_images))

    def line(self, n_trials: int, n_times: int) -> str:
        """One line for ``mc-engine validate``."""
        total = n_trials * (self.program_s + n_times * self.read_s)
        return (f"estimate: {_seconds(self.read_s)} per (chip, read time) over {self.n_images} "
                f"images, {_seconds(self.program_s)} to program a chip: about "
                f"{_core_time(total)} of one worker for {n_trials} trials x {n_times} times; "
                f"peak worker memory about {_bytes(self.peak_bytes)} with {self.batch}-image "
                f"batches ({_bytes(WORKER_BASE_BYTES)} worker + {_bytes(self.inputs_bytes)} "
                f"inputs + {_bytes(self.model_bytes)} converted model + "
                f"{_bytes(self.forward_bytes_at(min(self.batch, self.n_images)))} forward); "
                f"{self.basis}")


def batch_free(hw: HardwareConfig) -> bool:
    """Whether the rows of ``hw`` are the same whatever the images per forward call.

    Each forward call of a layer draws its short-term noise (input, weight, output noise) from
    keys that count the calls, with counters that are the rows' indices within the call
    (docs/physics.md, "Random numbers and reproducibility"), so with any of those noises on,
    another batch size gives other draws. Without them a forward call draws nothing, and
    every other step (noise and bound management, DAC, ADC, slices, drift compensation) is
    per input row, so each image's output, and a trial's rows, do not depend on the batch
    (tests/test_estimate.py checks it bit for bit)."""
    return hw.inp_noise == 0 and hw.out_noise == 0 and hw.w_noise == 0


def fitting_batch(estimate: Estimate, limit_bytes: int) -> int:
    """The largest batch (at most BATCH_SIZE) whose estimated peak is within MEMORY_FRACTION
    of ``limit_bytes``; 1 when even one image does not fit."""
    budget = MEMORY_FRACTION * limit_bytes
    if estimate.peak_at(BATCH_SIZE) <= budget:
        return BATCH_SIZE
    lo, hi = 1, BATCH_SIZE
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if estimate.peak_at(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def probe(model: nn.Module, hw: HardwareConfig, x: np.ndarray, times_s: Sequence[float],
          calibration: np.ndarray | None = None, execution: Execution = NUMBA_CPU,
          batch: int = BATCH_SIZE, extra_bytes: int = 0, timed: bool = True) -> Estimate:
    """Time and measure one chip of ``model`` on ``hw`` (see the module's docstring);
    ``extra_bytes``: inputs a worker holds beside the test images (labels, model weights).
    ``timed`` False: memory only (the times are 0; this process's malloc is left as it is)."""
    from mc_engine.analog import convert
    from mc_engine.run.tasks import _tune_malloc

    device = execution.torch_device if execution.torch else None
    meter = _Meter(execution)
    with meter.measure() as before:
        analog = convert(model, hw).use(execution)
        started = time.perf_counter()
        analog.program(0, calibration)
        program_s = time.perf_counter() - started
    model_bytes = max(0, meter.now() - before[0])
    started = time.perf_counter()
    analog.drift(float(max(times_s)))
    drift_s = time.perf_counter() - started
    n = [min(k, len(x)) for k in PROBE_IMAGES]

    def forward(k: int) -> tuple[float, int]:
        xb = torch.from_numpy(np.ascontiguousarray(x[:k]))
        if device is not None:
            xb = xb.to(device)
        with torch.no_grad(), meter.measure() as base:
            started = time.perf_counter()
            analog(xb)
            spent = time.perf_counter() - started
        return spent, max(0, meter.peak - base[0])

    if timed:
        _tune_malloc()                       # timed as a worker runs (run/tasks.py)
    forward(n[0])                            # warm-up: caches, lazy allocations
    t1, _ = forward(n[0])
    more = min(batch, len(x), int(PROBE_S * n[0] / max(t1, 1e-6)))
    if more > n[1]:                          # a small network: as many as PROBE_S allows
        n = [max(n[0], more // 3), more]
        t1, _ = forward(n[0]) if timed else (0.0, 0)
    t2, _ = forward(n[1]) if timed else (0.0, 0)
    # Memory at sizes set by the bytes of an image, not by time (the same on a busy machine):
    # enough images that the arrays are well above the malloc's mapping threshold.
    top = min(batch, len(x), max(PROBE_IMAGES[1], PROBE_INPUT_BYTES //
                                 max(1, int(x[:1].nbytes))))
    k = [min(top, max(PROBE_IMAGES[0], top // 3)), top]
    with _exact_malloc():                    # measured apart: mapping every array is slower
        (_, m1), (_, m2) = forward(k[0]), forward(k[1])
    wide = n[1] > n[0]
    per_image_s = max(0.0, (t2 - t1) / (n[1] - n[0])) if wide else t2 / max(n[1], 1)
    per_call_s = max(0.0, t1 - per_image_s * n[0])
    calls = -(-len(x) // max(1, min(batch, len(x))))
    slope = max(0.0, (m2 - m1) / (k[1] - k[0])) if k[1] > k[0] else m2 / max(k[1], 1)
    intercept = max(0.0, m2 - slope * k[1])
    inputs = int(x.nbytes) + extra_bytes + (int(calibration.nbytes) if calibration is not None
                                            else 0)
    basis = (f"from a timed probe of {n[0]} and {n[1]} images through the first hardware "
             f"point ({execution}); memory of {k[0]} and {k[1]} images {meter.how}, "
             f"extrapolated linearly in the batch")
    return Estimate(program_s=program_s,
                    read_s=drift_s + per_call_s * calls + per_image_s * len(x),
                    n_images=len(x), batch=min(batch, len(x)), inputs_bytes=inputs,
                    model_bytes=model_bytes,
                    forward_bytes_at=lambda b: int(intercept + slope * b), basis=basis)


@contextmanager
def _exact_malloc() -> Iterator[None]:
    """glibc's malloc with a fixed, small mmap threshold while the probe runs: every array
    above 64 KiB is its own mapping, returned when freed, so the resident size follows the
    live arrays and its peak is theirs (the default's dynamic threshold would serve them from
    a heap already resident). Afterwards the settings of a worker (:mod:`mc_engine.run.tasks`)."""
    from mc_engine.run.tasks import _M_MMAP_THRESHOLD, _M_TRIM_THRESHOLD, _MMAP_THRESHOLD

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(64 << 10))
        libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(128 << 10))
    except (OSError, AttributeError):
        libc = None
    try:
        yield
    finally:
        if libc is not None:
            libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(_MMAP_THRESHOLD))
            libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(2 * _MMAP_THRESHOLD))


def probe_inputs(study, inputs, execution: Execution = NUMBA_CPU,
                 timed: bool = True) -> Estimate:
    """:func:`probe` of a study's first hardware point with its loaded ``inputs``
    (:class:`mc_engine.study.inputs.Inputs`)."""
    weights = sum(t.numel() * t.element_size() for t in inputs.model.state_dict().values())
    return probe(inputs.model, study.points[0], inputs.dataset.x, study.inference_times_s,
                 inputs.calibration, execution,
                 extra_bytes=int(inputs.dataset.y.nbytes) + weights, timed=timed)


def memory_note(study, estimate: Estimate, limit_bytes: int) -> str:
    """What a worker memory limit means for a study's batches: one line."""
    fits = fitting_batch(estimate, limit_bytes)
    budget = f"{MEMORY_FRACTION:.0%} of {_bytes(limit_bytes)}"
    free = [hw for hw in study.points if batch_free(hw)]
    if fits >= min(BATCH_SIZE, estimate.n_images):
        return f"memory: {BATCH_SIZE}-image batches fit {budget} per worker"
    need = _bytes(estimate.peak_at(BATCH_SIZE) / MEMORY_FRACTION)
    if len(free) == len(study.points):
        return (f"memory: {BATCH_SIZE}-image batches need about {need} per worker; the "
                f"points draw no short-term noise, so they run in {fits}-image batches to fit "
                f"{budget} (the same rows)")
    return (f"warning: {BATCH_SIZE}-image batches need about {need} per worker, more than "
            f"{budget}; {len(study.points) - len(free)} of {len(study.points)} points draw "
            f"short-term noise whose draws depend on the batch, so they keep {BATCH_SIZE}-image "
            f"batches: give the workers at least {need}"
            + (f" (the others run in {fits}-image batches)" if free else ""))


class _Meter:
    """Peak memory around a block: the process's resident set on the CPU (VmHWM after a reset
    where Linux allows it, else sampled), torch's peak allocation on a CUDA device."""

    def __init__(self, execution: Execution):
        self.cuda = execution.cuda
        self.device = execution.torch_device if execution.cuda else None
        self.peak = 0
        self.how = "of the CUDA device (torch's peak allocation)" if self.cuda else \
            "as the peak resident size (VmHWM)" if _can_reset_hwm() else \
            "as the resident size sampled every millisecond"

    def now(self) -> int:
        if self.cuda:
            return int(torch.cuda.memory_allocated(self.device))
        return _rss()

    def measure(self):
        meter = self

        class _Block:
            def __enter__(self):
                self.base = [meter.now()]
                self._stop = threading.Event()
                self._sampled = self.base[0]
                if meter.cuda:
                    torch.cuda.synchronize(meter.device)
                    torch.cuda.reset_peak_memory_stats(meter.device)
                elif _can_reset_hwm():
                    _reset_hwm()
                else:
                    self._thread = threading.Thread(target=self._sample, daemon=True)
                    self._thread.start()
                return self.base

            def _sample(self):
                while not self._stop.wait(0.001):
                    self._sampled = max(self._sampled, _rss())

            def __exit__(self, *exc):
                if meter.cuda:
                    torch.cuda.synchronize(meter.device)
                    meter.peak = int(torch.cuda.max_memory_allocated(meter.device))
                elif _can_reset_hwm():
                    meter.peak = _hwm()
                else:
                    self._stop.set()
                    self._thread.join()
                    meter.peak = max(self._sampled, _rss())
                return False

        return _Block()


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _hwm() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return _rss()


def _reset_hwm() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


_RESETTABLE: list[bool] = []


def _can_reset_hwm() -> bool:
    if not _RESETTABLE:
        try:
            _reset_hwm()
            _hwm()
            _RESETTABLE.append(True)
        except (OSError, ValueError):
            _RESETTABLE.append(False)
    return _RESETTABLE[0]


def _seconds(s: float) -> str:
    return f"{s * 1000:.3g} ms" if s < 1 else f"{s:.3g} s" if s < 60 else format_duration(
        round(s))


def _core_time(s: float) -> str:
    return f"{s / 3600:.3g} core-hours" if s >= 3600 else _seconds(s)


def _bytes(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"
