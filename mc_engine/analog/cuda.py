"""CUDA settings of a torch execution: deterministic cuBLAS and cuDNN, image batches sized to
the device (docs/architecture.md, "Two executions of one physics").

Free of Dask, so that the Python API and the GPU check use it without a cluster.
"""

from __future__ import annotations

import functools
import os

import torch

from mc_engine.analog.evaluate import BATCH_SIZE
from mc_engine.analog.execution import Execution

#: cuBLAS's setting for deterministic GEMMs (torch's reproducibility notes): set in every GPU
#: worker before CUDA starts, so that rows are bitwise the same across runs on one GPU type.
CUBLAS_WORKSPACE = ":4096:8"
#: Image batches on a CUDA device: a multiple of BATCH_SIZE images that take about
#: MEMORY_FRACTION of the device's memory at BYTES_PER_INPUT_VALUE bytes of the analog forward
#: per input value of an image (im2col unfolds, bit slices and noise of the widest layer: a
#: conservative figure, about 12 MiB a CIFAR image), at most MAX_BATCH_FACTOR x BATCH_SIZE.
MEMORY_FRACTION = 0.25
BYTES_PER_INPUT_VALUE = 4096
MAX_BATCH_FACTOR = 20


@functools.cache
def deterministic_cuda() -> None:
    """Deterministic cuBLAS and cuDNN in this process (once, before its first CUDA work where
    possible): rows on one GPU type are then bitwise the same across runs and worker counts."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def image_batch_size(execution: Execution, values_per_image: int, n_images: int) -> int:
    """Images per forward call: BATCH_SIZE on the CPU; on a CUDA device the multiple of
    BATCH_SIZE that fills MEMORY_FRACTION of its memory at BYTES_PER_INPUT_VALUE bytes per input
    value (at most MAX_BATCH_FACTOR x BATCH_SIZE, and no more than the test set needs).

    The rule reads the device's *total* memory (torch.cuda.mem_get_info), not what is free at
    the moment: each forward call draws its own noise (its keys count the calls), so the batch
    size is part of what a trial draws, and it must not change with what else runs on the GPU.
    One GPU type gives one batch size, hence bitwise the same rows.
    """
    if not execution.cuda:
        return BATCH_SIZE
    _, total = torch.cuda.mem_get_info(execution.torch_device)
    return cuda_batch_size(total, values_per_image, n_images)


def cuda_batch_size(total_bytes: int, values_per_image: int, n_images: int) -> int:
    """:func:`image_batch_size`'s rule for a device of ``total_bytes``."""
    per_batch = BATCH_SIZE * BYTES_PER_INPUT_VALUE * max(1, values_per_image)
    factor = max(1, min(MAX_BATCH_FACTOR, int(total_bytes * MEMORY_FRACTION // per_batch)))
    needed = max(1, -(-n_images // BATCH_SIZE))   # batches of BATCH_SIZE the test set fills
    return BATCH_SIZE * min(factor, needed)


#: Chips evaluated together in one call (:func:`mc_engine.analog.evaluate.evaluate_chips`) at
#: most; on a CUDA device also limited by its memory (:func:`chips_per_call`).
MAX_CHIPS = 64


def chips_per_call(execution: Execution, batch: int, values_per_image: int) -> int:
    """How many chips of a task run in one call: 1 off the torch execution (the Numba
    execution runs chips one by one), MAX_CHIPS on the CPU, and on a CUDA device as many as
    fill MEMORY_FRACTION of its memory at the image batch's footprint (the image batch itself
    does not shrink: it is part of what a trial draws)."""
    if not execution.torch:
        return 1
    if not execution.cuda:
        return MAX_CHIPS
    _, total = torch.cuda.mem_get_info(execution.torch_device)
    per_chip = batch * BYTES_PER_INPUT_VALUE * max(1, values_per_image)
    return max(1, min(MAX_CHIPS, int(total * MEMORY_FRACTION // per_chip)))
