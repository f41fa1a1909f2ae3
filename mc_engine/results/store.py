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
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mc_engine.fileio import TEMP_SUFFIX, atomic_write, file_lock
from mc_engine.results.schema import IDEAL_SCHEMA, ideal_schema, rows_to_table

LOCK_FILE = ".lock"
STUDY_FILE = "study.toml"
IDEAL_FILE = "ideal.parquet"
CORRUPT_SUFFIX = ".corrupt"
_PART = re.compile(r"^part-(\d+)\.parquet$")
#: Columns without which a part file cannot be resumed or summarised.
RESULT_COLUMNS = ("study", "point_id", "repeat", "t_inference_s", "accuracy")


class ResultStore:
    """Reads and writes one study's results folder."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

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
        with file_lock(self.directory / LOCK_FILE):
            yield

    def parts(self) -> list[Path]:
        """The complete part files, in the order they were written."""
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir()
                 if (m := _PART.match(p.name))]
        return [p for _, p in sorted(found)]

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
                                 IDEAL_SCHEMA.names)
            if path.is_file() and problem:
                target = path.with_name(path.name + CORRUPT_SUFFIX)
                n = 1
                while target.exists():
                    n += 1
                    target = path.with_name(f"{path.name}{CORRUPT_SUFFIX}-{n}")
                path.rename(target)
                moved.append((target, problem))
        return moved

    def done_trials(self) -> set[tuple[str, int]]:
        """(point_id, repeat) of every trial already on disk."""
        done: set[tuple[str, int]] = set()
        for part in self.parts():
            table = pq.read_table(part, columns=["point_id", "repeat"])
            done.update(zip(table.column("point_id").to_pylist(),
                            table.column("repeat").to_pylist()))
        return done

    def read(self, columns: Sequence[str]) -> pa.Table:
        """These columns of every row on disk (an empty table when there is none)."""
        parts = self.parts()
        if not parts:
            return pa.table({c: pa.array([], type=rows_to_table([]).schema.field(c).type)
                             for c in columns})
        return pa.concat_tables([pq.read_table(p, columns=list(columns)) for p in parts])

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
        return atomic_write(path, lambda temp: pq.write_table(table, temp))

    def write_ideal(self, row: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> None:
        """Write ideal.parquet: one row, or one per checkpoint (rows with a checkpoint key)."""
        rows = [dict(row)] if isinstance(row, Mapping) else [dict(r) for r in row]
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
