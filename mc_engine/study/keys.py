"""Trial identity: stable hardware-point ids and the per-repeat seed.

``point_id`` hashes the complete hardware parameter set, so a point keeps its id when the sweep is
reordered or extended, which is what lets a re-run skip the trials already on disk. The trial seed
depends on (study seed, repeat) only, not on the point: repeat r of every hardware point draws the
same device randomness (common random numbers), so paired differences between points have low
variance (docs/physics.md).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from mc_engine.hardware import HardwareConfig, from_dict

POINT_ID_LENGTH = 12

#: Hardware fields added after results folders already existed, with the value every older point
#: had: at that value they are left out of the id, so a folder written before they existed
#: resumes instead of running every point again (and keeping the old rows beside the new).
LATER_FIELDS: dict[str, Any] = {"adc_range": "fixed", "calibration_samples": 256,
                                "g_converter": "single_pair", "dual_pair_f": 3.0,
                                "n_pair_f": "", "device_table": "", "ir_drop": 0.0,
                                "ir_drop_g_ratio": 1.0 / (0.35 * 5e-6), "input_range_std": 3.0}


def point_id(hardware: HardwareConfig | Mapping[str, Any], checkpoint: str | None = None,
             layer: str | None = None) -> str:
    """A short stable hash of a hardware point's full, canonical parameter set.

    A mapping (``to_dict``'s flat form) is completed with the defaults first, so spelling out a
    default value does not change the id. A device's own parameters enter under their names, so
    the ids of points on the built-in devices (which have none) are unchanged by them; likewise
    ``checkpoint`` (the checkpoint axis's file, as the study names it) and ``layer``
    (layer-sensitivity studies: which layer alone is analog) enter, under their own keys, only
    when given: without them the id is the hardware point's alone.
    """
    config = hardware if isinstance(hardware, HardwareConfig) else from_dict(hardware)
    values = {k: v for k, v in config.to_dict().items()
              if not (k in LATER_FIELDS and v == LATER_FIELDS[k])}
    if checkpoint is not None:
        values["checkpoint"] = checkpoint
    if layer is not None:
        values["layer"] = layer
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:POINT_ID_LENGTH]


def trial_seed(study_seed: int, repeat: int) -> int:
    """The seed handed to a trial: SeedSequence([study seed, repeat]), as a non-negative int64."""
    state = np.random.SeedSequence([study_seed, repeat]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))
