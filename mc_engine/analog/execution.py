"""Where a trial's analog pass runs: an execution option, not a physics parameter.

Two executions of one description (docs/architecture.md, "Two executions of one physics"):

- ``numba`` on ``cpu`` (the default): the Numba kernels of :mod:`mc_engine.kernels`, driven by
  :mod:`mc_engine.analog.tile`, :mod:`~mc_engine.analog.readout` and
  :mod:`~mc_engine.analog.grouped`.
- ``torch`` on any torch device (``cpu``, ``cuda``, ``cuda:N``): the same passes as torch
  operations (:mod:`mc_engine.analog.torch_pass`), the counter-based generator in torch integer
  ops (:mod:`mc_engine.analog.torch_rng`), so both draw the same normals for the same trial.

``--device cuda`` implies the torch backend; the Numba backend runs only on the CPU.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from mc_engine.errors import UserInputError

BACKENDS = ("numba", "torch")
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


@dataclass(frozen=True)
class Execution:
    """A backend and a device: ``Execution()`` is Numba on the CPU."""

    backend: str = "numba"
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise UserInputError(f"backend {self.backend!r} is not known; allowed: "
                                 f"{', '.join(BACKENDS)}", key="--backend")
        if not _DEVICE.match(self.device):
            raise UserInputError(f"device {self.device!r} is not known; allowed: cpu, cuda, "
                                 "cuda:N", key="--device")
        if self.backend == "numba" and self.device != "cpu":
            raise UserInputError(f"the numba backend runs on the CPU only, not on "
                                 f"{self.device!r}: use --backend torch (or leave --backend out)",
                                 key="--backend")

    @classmethod
    def parse(cls, backend: str | None = None, device: str | None = None) -> Execution:
        """From command-line values (None = not given): ``--device cuda`` implies torch."""
        device = device or "cpu"
        if backend is None:
            backend = "numba" if device == "cpu" else "torch"
        return cls(backend, device)

    @property
    def torch(self) -> bool:
        return self.backend == "torch"

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def check_available(self) -> None:
        """Raise UserInputError (key ``--device``) when the device is not there."""
        if not self.cuda:
            return
        if not torch.cuda.is_available():
            raise UserInputError(f"device {self.device!r}: torch sees no CUDA device here "
                                 f"(torch {torch.__version__}, built "
                                 f"{'with' if torch.version.cuda else 'without'} CUDA); run "
                                 "with --device cpu, or install a CUDA build of torch",
                                 key="--device")
        index = torch.device(self.device).index
        if index is not None and index >= torch.cuda.device_count():
            raise UserInputError(f"device {self.device!r}: only {torch.cuda.device_count()} "
                                 "CUDA device(s) visible", key="--device")

    def configure(self) -> None:
        """Deterministic, full-float32 CUDA arithmetic for this process
        (:func:`mc_engine.analog.cuda.deterministic_cuda`: no TF32, which would round the
        analog MVM to 10 mantissa bits; deterministic cuDNN and cuBLAS). A no-op off CUDA."""
        if self.cuda:
            from mc_engine.analog.cuda import deterministic_cuda

            deterministic_cuda()

    def __str__(self) -> str:
        return f"{self.backend} on {self.device}"


#: The default execution: the Numba kernels on the CPU.
NUMBA_CPU = Execution()
