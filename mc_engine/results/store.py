"""A study's results folder: Parquet part files written atomically, study.toml, ideal.parquet.

Layout of ``<out>/<study name>/``::

    study.toml          the resolved study that produced the rows
    ideal.parquet       digital, noise-free accuracy of the model on the same data
    part-00000.parquet  one file per written batch of complete trials
    ...

A part file is written under a temporary name and renamed into place, so a crash or Ctrl-C never
leaves a half-written file, and every trial's rows land in one file: a trial is either on disk
completely or not at all, which is what resume relies on. A part file or ideal.parquet damaged
anyway (a full disk, a copy cut short) is set aside as ``<name>.corrupt`` by the next run, which
then runs its trials (computes the ideal accuracy) again; nothing readable is ever deleted.

The store knows its own trials exactly. Every part file carries the stamp of the study that wrote
it (:func:`identity_stamp`: the sha256 of the study's identity and fingerprint, in the Parquet
metadata): a resume refuses a part file of another study by name (:meth:`ResultStore.check_own`;
files of older versions, without a stamp, are checked by the study name and trial seed of every
row). A trial is done only when it has a row with a finite accuracy at every inference time
(other rows are left out when read, :func:`finite_rows`); a row that appears twice (a part file
copied) counts once (:func:`unique_rows`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mc_engine.errors import UserInputError
from mc_engine.fileio import TEMP_SUFFIX, atomic_write, file_lock
from mc_engine.results.conform import read_part
from mc_engine.results.schema import IDEAL_COLUMNS, ideal_schema, rows_to_table

LOCK_FILE = ".lock"
STUDY_FILE = "study.toml"
IDEAL_FILE = "ideal.parquet"
CORRUPT_SUFFIX = ".corrupt"
_PART = re.compile(r"^part-(\d+)\.parquet$")
#: Columns without which a part file cannot be resumed or summarised.
RESULT_COLUMNS = ("study", "point_id", "repeat", "t_inference_s", "accuracy")
#: What makes a row unique: one trial (point x repeat) at one inference time.
ROW_KEYS = ("study", "point_id", "repeat", "t_inference_s")
#: The Parquet metadata key of a part file's study stamp.
STAMP_KEY = b"mc_engine.study_identity"


def identity_stamp(identity: Mapping[str, Any], fingerprint: Mapping[str, Any]) -> str:
    """The stamp of a study's rows: sha256 of its identity (``Study.identity()``: name, seed,
    times, model, data, mode) and of its model and data fingerprint (the model's only without a
    checkpoint axis, whose checkpoints may grow). Rows of two studies with the same stamp are
    comparable trials of one study."""
    prints = {k: fingerprint.get(k) for k in ("model", "data")}
    if "checkpoints" in fingerprint:
        prints.pop("model")
    text = json.dumps({"identity": identity, "fingerprint": prints}, sort_keys=True,
                      default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def part_stamp(path: Path) -> str | None:
    """The study stamp of a part file (None: written before stamps, or not by mc-engine)."""
    metadata = pq.read_schema(path).metadata or {}
    stamp = metadata.get(STAMP_KEY)
    return stamp.decode() if stamp is not None else None


def finite_rows(table: pa.Table) -> pa.Table:
    """The rows of ``table`` with a finite accuracy (a trial with any other is not done)."""
    return table.filter(pc.fill_null(pc.is_finite(table.column("accuracy")), False))


def unique_rows(table: pa.Table) -> tuple[pa.Table, pa.Array]:
    """``table`` with each (study, point_id, repeat, t_inference_s) once, the first of
    repeated rows kept, in the order of ``table``; and the indices of the rows dropped."""
    if table.num_rows == 0 or not set(ROW_KEYS) <= set(table.column_names):
        return table, pa.array([], pa.int64())
    index = pa.array(range(table.num_rows), pa.int64())
    keys = pa.table({**{k: table.column(k) for k in ROW_KEYS}, "i": index})
    first = keys.group_by(list(ROW_KEYS), use_threads=False).aggregate([("i", "min")])
    kept = pc.take(first.column("i_min"), pc.sort_indices(first.column("i_min")))
    return table.take(kept), pc.filter(index, pc.invert(pc.is_in(index, kept)))


class ResultStore:
    """Reads and writes one study's results folder."""

    def __init__(self, directory: str | Path, stamp: str | None = None):
        self.directory = Path(directory)
        #: The study stamp written into every part file (:func:`identity_stamp`).
        self.stamp = stamp

    @property
    def study_file(self) -> Path:
        return self.directory / STUDY_FILE

    @property
    def ideal_file(self) -> Path:
        return self.directory / IDEAL_FILE

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's write lock; raises BlockingIOError if another process holds it.

        Two runs writing the same folder would pick the same part numbers and overwrite each
        other's files, so a run takes this lock for as long as it writes.
        """
        for odd in self.not_files():
            raise UserInputError(f"is named like a file mc-engine writes there ("
                                 f"{odd.name}) but is not a file; move it out of "
                                 f"{self.directory}", source=str(odd))
        with file_lock(self.directory / LOCK_FILE):
            yield

    def parts(self) -> list[Path]:
        """The complete part files, in the order they were written."""
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir()
                 if (m := _PART.match(p.name)) and p.is_file()]
        return [p for _, p in sorted(found)]

    def not_files(self) -> list[Path]:
        """Entries named like the files this store writes (part files, study.toml,
        ideal.parquet, .lock) that are no files (a folder ``part-00005.parquet``): not
        results, and in the way of the file of that name."""
        if not self.directory.is_dir():
            return []
        ours = (STUDY_FILE, IDEAL_FILE, LOCK_FILE)
        return sorted(p for p in self.directory.iterdir()
                      if (_PART.match(p.name) or p.name in ours) and not p.is_file())

    def clear(self) -> None:
        """Delete everything this store writes (and nothing else a user may keep there)."""
        if not self.directory.is_dir():
            return
        for path in self.directory.iterdir():
            ours = (_PART.match(path.name) or path.name in (STUDY_FILE, IDEAL_FILE)
                    or path.name.endswith(TEMP_SUFFIX))
            if ours and path.is_file():
                path.unlink()

    def remove_temporaries(self) -> None:
        """Delete leftovers of writes that were interrupted before their rename."""
        if self.directory.is_dir():
            for path in self.directory.glob(f".*{TEMP_SUFFIX}"):
                path.unlink()

    def set_aside_unreadable(self) -> list[tuple[Path, str]]:
        """Rename every unreadable part file and an unreadable ideal.parquet to
        ``<name>.corrupt`` (``.corrupt-2``, ... if taken); returns (new path, why) of each, so
        that the caller can say so. Their trials are then missing and are run again."""
        moved = []
        for path in [*self.parts(), self.ideal_file]:
            problem = unreadable(path, RESULT_COLUMNS if path != self.ideal_file else
                                 IDEAL_COLUMNS)
            if path.is_file() and problem:
                target = path.with_name(path.name + CORRUPT_SUFFIX)
                n = 1
                while target.exists():
                    n += 1
                    target = path.with_name(f"{path.name}{CORRUPT_SUFFIX}-{n}")
                path.rename(target)
                moved.append((target, problem))
        return moved

    def check_own(self, name: str, stamp: str, seed_of: Callable[[int], int]) -> None:
        """Raise UserInputError naming the first part file that holds rows of another study
        than the one of ``stamp`` (:func:`identity_stamp`); a part file without a stamp (older
        versions) must hold rows of study ``name`` whose seed is ``seed_of(repeat)``."""
        seeds: dict[int, int] = {}
        for part in self.parts():
            theirs = part_stamp(part)
            if theirs is not None:
                why = "" if theirs == stamp else "it was written by a study whose seed, " \
                    "inference times, model, data, mode or name differ from this one's"
            elif "seed" not in pq.read_schema(part).names:
                raise UserInputError(f"has neither a study stamp nor a 'seed' column (written "
                                     f"by an older mc-engine, or by another program), so its "
                                     f"rows cannot be checked as trials of this study; move it "
                                     f"out of {self.directory}, or re-run with --fresh to "
                                     f"discard every result there", source=str(part))
            else:
                table = read_part(part, ["study", "repeat", "seed"])
                why = ""
                for study, repeat, seed in zip(*(table.column(c).to_pylist()
                                                 for c in ("study", "repeat", "seed"))):
                    expected = seeds.setdefault(repeat, seed_of(repeat))
                    if study != name or seed != expected:
                        why = f"a row of study {study!r} (repeat {repeat}, seed {seed}) is no " \
                              f"trial of this study ({name!r}, seed {expected})"
                        break
            if why:
                raise UserInputError(f"holds rows of another study: {why}; move it out of "
                                     f"{self.directory}, or re-run with --fresh to discard "
                                     f"every result there", source=str(part))

    def done_trials(self, times: Sequence[float] | None = None) -> set[tuple[str, int]]:
        """(point_id, repeat) of every trial completely on disk: with a finite accuracy at each
        of ``times`` (default: at every time it has a row at). A trial with a non-finite row
        (NaN accuracy) is not done, and is run again."""
        rows: dict[tuple[str, int], set[float]] = {}
        finite: dict[tuple[str, int], set[float]] = {}
        for part in self.parts():
            table = read_part(part, ["point_id", "repeat", "t_inference_s", "accuracy"])
            for pid, repeat, t, acc in zip(*(table.column(c).to_pylist()
                                              for c in table.column_names)):
                rows.setdefault((pid, repeat), set()).add(t)
                if acc is not None and math.isfinite(acc):
                    finite.setdefault((pid, repeat), set()).add(t)
        wanted = set(times) if times is not None else None
        return {trial for trial, at in finite.items()
                if at >= (wanted if wanted is not None else rows[trial])}

    def executions(self) -> set[tuple[str, str]]:
        """(backend, compute_device) of the rows on disk; a part file written before those
        columns holds Numba-on-CPU rows (``EXECUTION_DEFAULTS``)."""
        from mc_engine.results.schema import EXECUTION_DEFAULTS

        found: set[tuple[str, str]] = set()
        for part in self.parts():
            table = read_part(part, list(EXECUTION_DEFAULTS))
            columns = [[v or default for v in table.column(c).to_pylist()]
                       if c in table.column_names else [default] * table.num_rows
                       for c, default in EXECUTION_DEFAULTS.items()]
            found |= set(zip(*columns))
        return found

    def read(self, columns: Sequence[str]) -> pa.Table:
        """These columns of every row on disk (an empty table when there is none): rows with a
        finite accuracy (:func:`finite_rows`), each once (:func:`unique_rows`)."""
        parts = self.parts()
        if not parts:
            return pa.table({c: pa.array([], type=rows_to_table([]).schema.field(c).type)
                             for c in columns})
        names = list(dict.fromkeys([*columns, *ROW_KEYS, "accuracy"]))
        table = pa.concat_tables([read_part(p, names) for p in parts],
                                 promote_options="default")
        return unique_rows(finite_rows(table))[0].select(list(columns))

    def write_text(self, name: str, text: str) -> None:
        atomic_write(self.directory / name, lambda temp: temp.write_text(text, encoding="utf-8"))

    def write_trials(self, rows: Sequence[Mapping[str, Any]],
                     device_params: Sequence[str] = (), checkpoint: bool = False) -> Path:
        """Write rows (complete trials) as the next part file; returns its path.

        ``device_params``: the study's device-parameter columns (``Study.device_params``), so
        that every part file of a study has the same columns; ``checkpoint``: the study has a
        checkpoint axis (a ``checkpoint`` column).
        """
        parts = self.parts()
        number = int(_PART.match(parts[-1].name).group(1)) + 1 if parts else 0
        path = self.directory / f"part-{number:05d}.parquet"
        table = rows_to_table(rows, device_params, checkpoint)
        if self.stamp is not None:
            table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                                   STAMP_KEY: self.stamp.encode()})
        return atomic_write(path, lambda temp: pq.write_table(table, temp))

    def write_ideal(self, row: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> None:
        """Write ideal.parquet: one row, or one per checkpoint (rows with a checkpoint key)."""
        rows = [dict(row)] if isinstance(row, Mapping) else [dict(r) for r in row]
        rows = [{"loss": None, "perplexity": None, **r} for r in rows]   # a classifier's: none
        table = pa.Table.from_pylist(rows, schema=ideal_schema("checkpoint" in rows[0]))
        atomic_write(self.ideal_file, lambda temp: pq.write_table(table, temp))


def unreadable(path: Path, columns: Sequence[str]) -> str:
    """Why ``path`` is not a complete Parquet file with ``columns`` ("" when it is one)."""
    try:
        names = pq.read_table(path).column_names
    except FileNotFoundError:
        return ""
    except (OSError, pa.ArrowException) as err:
        return f"not a readable Parquet file ({' '.join(str(err).split())[:200]})"
    missing = [c for c in columns if c not in names]
    return f"lacks the column {missing[0]!r}" if missing else ""
