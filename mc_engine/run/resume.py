"""Whether results on disk may be resumed by a run: the same study identity, model and data
(their fingerprint) and the same execution (backend, device type)."""

from __future__ import annotations

import tomllib

from mc_engine.analog.execution import Execution
from mc_engine.errors import UserInputError
from mc_engine.results import ResultStore
from mc_engine.study import Study, parse_study
from mc_engine.study.inputs import TABLE, fingerprint_mismatch, what_changed
from mc_engine.study.spec import FINGERPRINT_KEYS


def _device_type(device: str) -> str:
    return device.split(":")[0]


def check_execution(store: ResultStore, execution: Execution) -> None:
    """Refuse to add rows of ``execution`` to results of another backend or device type (cpu,
    cuda): the same draws, rounded differently, would mix in one study. Rows written before
    the execution columns count as Numba on the CPU."""
    here = (execution.backend, _device_type(execution.device))
    there = sorted(store.executions())
    if all((b, _device_type(d)) == here for b, d in there):
        return
    held = ", ".join(f"--backend {b} --device {d}" for b, d in there)
    backend, device = next((b, d) for b, d in there if (b, _device_type(d)) != here)
    raise UserInputError(
        f"the results in {store.directory} were computed with {held}, this run is --backend "
        f"{execution.backend} --device {execution.device}: rows of two executions (the same "
        f"draws, rounded differently) would mix in one study; run with --backend {backend} "
        f"--device {device} to resume them, --fresh to discard them, or use another --out",
        key="--backend" if backend != execution.backend else "--device")


def check_resumable(store: ResultStore, study: Study, fingerprint: dict[str, str]) -> None:
    """Refuse to add rows to results made with another seed, set of times, model or data.

    The tables must agree and so must the fingerprint of the loaded model weights and test
    data; results whose study.toml is missing or lacks the fingerprint cannot be checked and
    are refused too.
    """
    if not (store.parts() or store.ideal_file.is_file()):
        return
    if not store.study_file.is_file():
        raise UserInputError(f"the results in {store.directory} have no "
                             f"{store.study_file.name}, so they cannot be checked against this "
                             f"study; re-run with --fresh to discard them, or use another --out",
                             source=study.source)
    try:
        stored = tomllib.loads(store.study_file.read_text(encoding="utf-8"))
        # Only the identity tables: hardware fields may have changed between engine versions.
        previous = parse_study({k: stored.get(k) for k in ("study", "model", "data")},
                               source=str(store.study_file))
    except (UserInputError, tomllib.TOMLDecodeError, OSError):
        raise UserInputError(f"the results in {store.directory} have an unreadable "
                             f"{store.study_file.name}; re-run with --fresh to start over",
                             source=study.source) from None
    old, new = previous.identity(), study.identity()
    for key in new:
        if old[key] != new[key]:
            raise UserInputError(
                f"differs from the study that wrote the results in {store.directory} "
                f"({old[key]!r} there); re-run with --fresh to discard them, or use another "
                f"--out", source=study.source,
                key=f"study.{key}" if key not in ("model", "data") else key)
    if not previous.fingerprint:
        raise UserInputError(f"the results in {store.directory} were written without a "
                             f"fingerprint of their model and data, so they cannot be checked "
                             f"against this study; re-run with --fresh to discard them, or use "
                             f"another --out", source=study.source)
    problem = fingerprint_mismatch(previous.fingerprint, fingerprint)
    if problem:
        key, here, there = problem
        raise UserInputError(
            f"the {key} differs from the one that wrote the results in {store.directory} "
            f"(sha256 {here[:12]}... here, {there[:12]}... there: "
            f"{what_changed(key)} changed); re-run with --fresh to discard "
            f"them, or use another --out", source=study.source,
            key=key if key in FINGERPRINT_KEYS else
            "hardware.device_table" if key.startswith(TABLE) else "sweep.checkpoint")
