"""Tables of measurements beside a study (``device_table``, docs/devices.md).

A device model that reads measured data (the per-level statistics of ``device = "table"``, the
drift table of ``pcm_custom_drift``) names the columns it needs; the study reads the CSV file
once, relative to its own folder, and the parsed table travels inside every hardware point that
uses it (to the Dask workers too), so no worker needs the file. The study's fingerprint holds the
file's sha256: a resume after the table changed is refused, like a changed checkpoint.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mc_engine.errors import UserInputError

#: Rows of one table: far beyond any measurement campaign, small enough to ship with every point.
MAX_ROWS = 100_000


@dataclass(frozen=True)
class DeviceTable:
    """A CSV table of numbers: its name as the study gives it, columns, rows and the file's
    sha256. Frozen and hashable, so it can sit inside a :class:`HardwareConfig`."""

    name: str
    columns: tuple[str, ...]
    rows: tuple[tuple[float, ...], ...]
    sha256: str

    def column(self, name: str) -> np.ndarray:
        """One column as a float64 array, in file order."""
        i = self.columns.index(name)
        return np.array([row[i] for row in self.rows], dtype=np.float64)


#: The tables read in this process, by the name the study gives them (the study reads them
#: before it builds its hardware points; a hardware point keeps its own copy).
TABLES: dict[str, DeviceTable] = {}


def parse_table(text: str, name: str, sha256: str = "") -> DeviceTable:
    """A table from CSV text: a header of column names, then rows of finite numbers; blank
    lines and lines starting with '#' are skipped. Problems raise UserInputError keyed
    ``device_table``, naming the file and the line."""

    def fail(message: str) -> UserInputError:
        return UserInputError(f"{name!r}: {message}", key="device_table")

    lines = [(i + 1, line) for i, line in enumerate(text.splitlines())
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise fail("no header line (expected comma-separated column names, then rows of numbers)")
    reader = csv.reader(io.StringIO("\n".join(line for _, line in lines)))
    records = list(reader)
    header = tuple(c.strip() for c in records[0])
    if len(set(header)) != len(header) or not all(header):
        raise fail(f"line {lines[0][0]}: the header must name every column once, got "
                   f"{', '.join(header)}")
    if len(records) - 1 > MAX_ROWS:
        raise fail(f"{len(records) - 1} rows; at most {MAX_ROWS} fit one table")
    rows = []
    for (number, _), record in zip(lines[1:], records[1:]):
        if len(record) != len(header):
            raise fail(f"line {number}: {len(record)} values for {len(header)} columns")
        row = []
        for column, value in zip(header, record):
            try:
                x = float(value)
            except ValueError:
                raise fail(f"line {number}, column {column}: expected a number, got "
                           f"{value.strip()!r}") from None
            if not math.isfinite(x):
                raise fail(f"line {number}, column {column}: expected a finite number, got "
                           f"{value.strip()!r}")
            row.append(x)
        rows.append(tuple(row))
    if not rows:
        raise fail("no rows of numbers after the header")
    return DeviceTable(name=name, columns=header, rows=tuple(rows), sha256=sha256)


def read_table(path: str | Path, name: str | None = None) -> DeviceTable:
    """Read the CSV file at ``path`` (``name``: how the study names it, default the path)."""
    path = Path(path)
    name = str(path) if name is None else name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserInputError(f"{name!r}: file not found (looked for {path.resolve()})",
                             key="device_table") from None
    except OSError as err:
        raise UserInputError(f"{name!r}: cannot read it: {err.strerror}",
                             key="device_table") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserInputError(f"{name!r}: not UTF-8 text (expected a CSV file)",
                             key="device_table") from None
    return parse_table(text, name, hashlib.sha256(data).hexdigest())


def register_table(table: DeviceTable) -> DeviceTable:
    """Make ``table`` the one hardware points naming ``table.name`` use in this process."""
    TABLES[table.name] = table
    return table


def lookup_table(name: str) -> DeviceTable:
    """The table registered under ``name``, else the file ``name`` (relative to the working
    directory, as a Python user names it) read and registered."""
    if name in TABLES:
        return TABLES[name]
    return register_table(read_table(name, name))
