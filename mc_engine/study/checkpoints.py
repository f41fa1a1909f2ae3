"""A checkpoint axis given by pattern (README, "Comparing trained models: the checkpoint axis"):
``[sweep] checkpoint`` (also in ``[[sweep.zip]]``) may be one pattern or folder, or a list whose
entries are checkpoint paths, glob patterns (``"../results/checkpoints/recipes__*.pt"``) or folders
(every ``*.pt`` directly inside, as ``mc-engine train`` writes a recipe sweep's checkpoints).
Patterns and folders expand, relative to the study file's folder, to the matching files in
sorted order, each written as the pattern writes it (``../results/checkpoints/recipes__sam.pt``);
a file an earlier entry already named is not repeated, so ``["plain.pt", "*.pt"]`` puts
``plain.pt`` first (the baseline the report ranks the others against) and then the rest. The
resolved study.toml holds the expanded list, so a resumed run compares it as it does any list.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

from mc_engine.data.factory import resolve_path
from mc_engine.errors import Fail

_MAGIC = ("*", "?", "[")


def expand_checkpoint_patterns(sweep: dict[str, Any], folder: Path, fail: Fail
                               ) -> dict[str, Any]:
    """``[sweep]`` with every checkpoint pattern and folder expanded (other values as given,
    left to the sweep's own checks)."""
    out = dict(sweep)
    if "checkpoint" in out:
        out["checkpoint"] = _expand(out["checkpoint"], folder, "sweep.checkpoint", fail)
    zips = out.get("zip")
    if isinstance(zips, list):
        out["zip"] = [{**z, "checkpoint": _expand(z["checkpoint"], folder,
                                                  f"sweep.zip[{i}].checkpoint", fail)}
                      if isinstance(z, dict) and "checkpoint" in z else z
                      for i, z in enumerate(zips)]
    return out


def _expand(value: Any, folder: Path, where: str, fail: Fail) -> Any:
    entries = [value] if isinstance(value, str) else value
    if not isinstance(entries, list) or not all(isinstance(v, str) for v in entries):
        return value
    found: list[str] = []
    for entry in entries:
        path = resolve_path(entry, folder)
        if any(c in entry for c in _MAGIC):
            matches = sorted(glob.glob(entry, root_dir=folder)) if not Path(entry).is_absolute() \
                else sorted(glob.glob(entry))
            matches = [m for m in matches if resolve_path(m, folder).is_file()]
            if not matches:
                raise fail(where, f"the pattern {entry!r} matches no checkpoint file (relative "
                                  f"to {folder}); train them first (mc-engine train) or fix "
                                  f"the pattern")
        elif path.is_dir():
            names = sorted(p.name for p in path.iterdir() if p.suffix == ".pt" and p.is_file())
            if not names:
                raise fail(where, f"the folder {entry!r} holds no checkpoint (*.pt); train "
                                  f"into it first (mc-engine train --out)")
            matches = [f"{entry.rstrip('/')}/{name}" for name in names]
        else:
            if isinstance(value, str):    # one plain path: refused as not a list
                return value
            matches = [entry]
        seen = {resolve_path(f, folder).resolve() for f in found}
        found += [m for m in matches if m == entry or resolve_path(m, folder).resolve()
                  not in seen]
    return found
