"""The functions Dask runs on workers: one trial, and the ideal (digital) accuracy.

They take the scattered model and test set (shipped to each worker once) plus a few scalars, and
return plain dicts, so a task is cheap to send, retry and deduplicate. Device models that do not
ship with the engine (a study's ``device = "module:Class"``) travel by value the same way and are
registered on the worker before the trial runs. A trial on a torch device finds the test set
there: it is copied to the device once per worker and kept (:func:`inputs_on`), and the model's
conversion is kept per worker by :func:`mc_engine.analog.evaluate.evaluate_trial`.
"""

from __future__ import annotations

import ctypes
import functools
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import cloudpickle
import numpy as np
import torch

from mc_engine.analog.execution import NUMBA_CPU, Execution
from mc_engine.hardware import HardwareConfig
from mc_engine.hardware.devices import DEVICES, DeviceModel

_LOADED: dict[bytes, torch.nn.Module] = {}
_REGISTERED: list[bytes] = []
#: The test set on a torch device: (the scattered array, the device, the tensor there).
_ON_DEVICE: list[tuple[np.ndarray, str, torch.Tensor]] = []


def portable_model(model: torch.nn.Module, base_dir: Path) -> bytes:
    """The model as bytes that any worker can load, local or remote.

    Classes from the user's own modules (a factory file beside the study, on sys.path only in
    this process) are pickled by value, so workers need not be able to import them.
    """
    root = Path(base_dir).resolve()
    for name in {type(m).__module__ for m in model.modules()}:
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if path and Path(path).resolve().is_relative_to(root) and "site-packages" not in path:
            cloudpickle.register_pickle_by_value(module)
    return cloudpickle.dumps(model)


def portable_devices(devices: dict[str, type[DeviceModel]]) -> bytes:
    """Device model classes by name as bytes any worker can load, local or remote.

    A class from a module that is not installed (a study's ``"module:Class"`` beside it, a
    module on this process's path only) is pickled by value, so workers need not import it.
    """
    for cls in devices.values():
        module = sys.modules.get(cls.__module__)
        path = getattr(module, "__file__", None)
        installed = path is None or cls.__module__ == "__main__" or "site-packages" in path \
            or "dist-packages" in path or cls.__module__.split(".")[0] == "mc_engine"
        if not installed:
            cloudpickle.register_pickle_by_value(module)
    return cloudpickle.dumps(dict(devices))


def register_devices(blob: bytes | None) -> None:
    """Register the device models of ``portable_devices`` bytes in this process (once per
    worker and set of devices; again if another study's devices came in between)."""
    if blob is None or _REGISTERED[-1:] == [blob]:
        return
    DEVICES.update(cloudpickle.loads(blob))
    _REGISTERED[:] = [blob]


def _model(blob: bytes) -> torch.nn.Module:
    """The unpickled model, once per worker and study (keyed by the scattered bytes)."""
    if blob not in _LOADED:
        _LOADED.clear()
        _LOADED[blob] = cloudpickle.loads(blob)
    return _LOADED[blob]


def _one_thread() -> None:
    """Workers are single-threaded processes: parallelism comes from running many of them."""
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    _tune_malloc()


#: glibc mallopt parameters and the values a trial needs.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: 32 MiB: the largest mmap threshold every glibc accepts (HEAP_MAX_SIZE / 2 on 64-bit).
_MMAP_THRESHOLD = 32 << 20


@functools.cache
def _tune_malloc() -> None:
    """Keep freed arrays in the heap for the next batch instead of unmapping them.

    Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which also freezes glibc's
    mmap threshold at 128 KiB: every array of a forward pass is then a fresh mmap whose pages
    fault in again, and a trial runs about twice as slowly as in a plain process (measured on
    `dask worker`, 18.9 against 9.5 ms a forward of the digits CNN). Raising both thresholds in
    the running worker (mallopt) gives the plain-process speed; the worker keeps its peak heap.
    Other C libraries: nothing to do.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(_MMAP_THRESHOLD))
        libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(2 * _MMAP_THRESHOLD))
    except (OSError, AttributeError):
        pass


def inputs_on(x: np.ndarray, execution: Execution) -> np.ndarray | torch.Tensor:
    """The test images where ``execution`` reads them: ``x`` itself for Numba, a tensor on the
    torch device otherwise, copied there once per worker and kept while the same scattered
    array (the worker holds one object per scattered input) comes in on the same device."""
    if not execution.torch:
        return x
    if _ON_DEVICE and _ON_DEVICE[0][0] is x and _ON_DEVICE[0][1] == execution.device:
        return _ON_DEVICE[0][2]
    _ON_DEVICE.clear()                 # free the old copy (device memory) first
    tensor = torch.from_numpy(np.ascontiguousarray(x)).to(execution.torch_device)
    _ON_DEVICE[:] = [(x, execution.device, tensor)]
    return tensor


#: The Dask event topic of the heartbeats tasks send while they run (:class:`Heartbeat`).
HEARTBEAT_TOPIC = "mc-engine-heartbeat"


class Heartbeat:
    """Counts the images a task has evaluated (chips x read times x test images) and sends
    {"task", "done", "total"} to the client as a Dask event (``Worker.log_event``; the client
    subscribes to the topic) after an image batch once ``interval_s`` seconds have passed, and
    from a timer thread every ``interval_s`` seconds while a batch runs longer (a big
    network's batch takes minutes): the client hears from a running task at least that often.
    Outside a worker (or with ``interval_s`` None) it is silent; use it as a context manager."""

    def __init__(self, total: int, interval_s: float | None, topic: str = HEARTBEAT_TOPIC):
        self.total, self.done, self.interval_s, self.topic = total, 0, interval_s, topic
        self._worker = self._task = self._thread = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        if interval_s is not None:
            try:
                from distributed import get_worker

                self._worker = get_worker()
                self._task = self._worker.get_current_task()
            except ValueError:      # not in a worker (a direct call)
                self._worker = None
        self._last = time.monotonic()

    def __enter__(self) -> Heartbeat:
        if self._worker is not None and self.interval_s > 0:
            self._thread = threading.Thread(target=self._beat, daemon=True,
                                            name="mc-engine-heartbeat")
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._send()

    def __call__(self, n: int) -> None:
        self.done += n
        self._send()

    def _send(self) -> None:
        if self._worker is None:
            return
        with self._lock:
            if time.monotonic() - self._last < self.interval_s:
                return
            self._last = time.monotonic()
            msg = {"task": str(self._task), "done": self.done, "total": self.total}
        self._worker.log_event(self.topic, msg)


def run_trial(model: bytes, x: np.ndarray, y: np.ndarray, hardware: HardwareConfig,
              times_s: Sequence[float], seed: int, devices: bytes | None = None,
              layers: tuple[str, ...] | None = None,
              calibration: np.ndarray | None = None,
              execution: Execution = NUMBA_CPU, done: Heartbeat | None = None,
              batch_size: int | None = None) -> list[dict]:
    """``evaluate_trial`` for one (hardware point, repeat): one dict per inference time.

    ``devices``: the study's device models that do not ship with the engine
    (:func:`portable_devices`), registered here first. ``layers``: the layers on analog tiles
    (a layer-sensitivity trial), None = all. ``calibration``: the calibration inputs of
    adc_range = 'calibrated'. ``execution``: where the analog pass runs (on a CUDA device
    deterministically, in image batches sized to its memory: :mod:`mc_engine.analog.cuda`).
    ``done``: the task's heartbeat, told of every image batch. ``batch_size``: images per
    forward call instead of the default (only where it changes no draw:
    :func:`mc_engine.run.estimate.batch_free`).
    """
    from mc_engine.analog import evaluate_trial
    from mc_engine.analog.cuda import deterministic_cuda, image_batch_size

    _one_thread()
    if execution.cuda:
        deterministic_cuda()
    register_devices(devices)
    batch = batch_size or image_batch_size(execution, int(np.prod(x.shape[1:])), len(x))
    return evaluate_trial(_model(model), hardware, inputs_on(x, execution), y, times_s, seed,
                          batch_size=batch, layers=layers, calibration=calibration,
                          execution=execution, done=done)


def run_trials(model: bytes, x: np.ndarray, y: np.ndarray, times_s: Sequence[float],
               devices: bytes | None,
               chips: Sequence[tuple[HardwareConfig, int, tuple[str, ...] | None]],
               calibration: np.ndarray | None = None,
               execution: Execution = NUMBA_CPU, heartbeat_s: float | None = None,
               batch_sizes: Sequence[int | None] | None = None) -> list[list[dict]]:
    """:func:`run_trial` for a batch of chips (hardware, seed, layers), one task: the per-task
    costs (scheduling, deserialising, the converted model) are paid once per batch, and on the
    torch execution consecutive chips of one hardware point and layer set are evaluated in one
    call (:func:`mc_engine.analog.evaluate.evaluate_chips`). A chip's rows depend only on its
    own arguments, not on the batch it came in. ``heartbeat_s``: send the images done to the
    client at most this often (:class:`Heartbeat`; None: silent). ``batch_sizes``: per chip,
    images per forward call where the default may change (None: the default)."""
    sizes = list(batch_sizes) if batch_sizes is not None else [None] * len(chips)
    with Heartbeat(len(chips) * len(times_s) * len(x), heartbeat_s) as done:
        if not execution.torch:
            return [run_trial(model, x, y, hw, times_s, seed, devices, layers, calibration,
                              execution, done, size)
                    for (hw, seed, layers), size in zip(chips, sizes, strict=True)]
        return _torch_trials(model, x, y, times_s, devices, chips, calibration, execution,
                             done, sizes)


def _torch_trials(model: bytes, x: np.ndarray, y: np.ndarray, times_s: Sequence[float],
                  devices: bytes | None,
                  chips: Sequence[tuple[HardwareConfig, int, tuple[str, ...] | None]],
                  calibration: np.ndarray | None, execution: Execution, done: Heartbeat,
                  sizes: list[int | None]) -> list[list[dict]]:
    """:func:`run_trials` on the torch execution: consecutive chips of one hardware point and
    layer set in one call."""
    from mc_engine.analog import evaluate_chips
    from mc_engine.analog.cuda import chips_per_call, deterministic_cuda, image_batch_size

    _one_thread()
    if execution.cuda:
        deterministic_cuda()
    register_devices(devices)
    values = int(np.prod(x.shape[1:]))
    batch = image_batch_size(execution, values, len(x))
    per_call = chips_per_call(execution, batch, values)
    net, images = _model(model), inputs_on(x, execution)
    rows: list[list[dict]] = []
    start = 0
    while start < len(chips):
        hw, _, layers = chips[start]
        stop = start + 1
        while stop < len(chips) and stop - start < per_call and \
                chips[stop][0] == hw and chips[stop][2] == layers:
            stop += 1
        rows += evaluate_chips(net, hw, images, y, times_s, [c[1] for c in chips[start:stop]],
                               batch_size=sizes[start] or batch, layers=layers,
                               calibration=calibration, execution=execution, done=done)
        start = stop
    return rows


def run_ideal(model: bytes, x: np.ndarray, y: np.ndarray) -> dict:
    """The model's digital, noise-free accuracy on the same test set (on the worker's CPU,
    whatever the execution of the trials)."""
    from mc_engine.analog import evaluate_ideal

    _one_thread()
    return evaluate_ideal(_model(model), x, y)
