"""Writing files so that a crash or Ctrl-C never leaves a half-written one.

Results, the resolved study and cached zoo weights are all written under a temporary name in the
same folder and renamed into place (atomic on POSIX): readers see the old file or the new one.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

#: Temporaries are hidden files ``.<name>.<pid>.tmp`` beside their target.
TEMP_SUFFIX = ".tmp"


def temp_path(path: Path) -> Path:
    """The temporary a write of ``path`` goes to before its rename (hidden, beside it)."""
    return path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")


class WriteFailed(OSError):
    """A file could not be written (a full disk, a quota, a folder gone): names the file and
    its folder; what was there before is kept. ``hint`` says what to do."""

    def __init__(self, path: Path, err: OSError):
        super().__init__(err.errno, err.strerror or str(err))
        self.path = path
        self.message = f"cannot write {path}: {err.strerror or err}" + \
            (f" (errno {err.errno})" if err.errno else "") + \
            f"; everything written before in {path.parent} is kept"
        fix = "free space in" if err.errno in (errno.ENOSPC, errno.EDQUOT) else \
            "make sure this process can write files in"
        self.hint = f"{fix} {path.parent} (or choose another folder) and run the same " \
                    f"command again: it resumes from what is there"

    def __str__(self) -> str:
        return self.message


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(temp_path)``, then rename the temporary over ``path``; returns ``path``.

    The process id in the temporary name keeps concurrent writers of the same file apart; the
    last rename wins with a complete file. A failed write removes its temporary and raises
    :class:`WriteFailed` naming ``path``; the file there before, if any, is untouched.
    """
    path = Path(path)
    temp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(temp)
        os.replace(temp, path)
    except WriteFailed:
        raise
    except OSError as err:
        raise WriteFailed(path, err) from err
    finally:
        temp.unlink(missing_ok=True)
    return path


@contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created, left in place) for the ``with`` block;
    raises BlockingIOError at once if another process holds it. The operating system releases
    it when the process ends, however it ends, so a killed run never leaves a stale lock."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_writable_folder(folder: str | Path, key: str) -> None:
    """Raise UserInputError (naming ``key``, the option or setting that chose ``folder``)
    unless ``folder`` is, or can be created as, a folder this process may write in: checked
    before any long work, so that a file in the way is not found after an hour."""
    from mc_engine.errors import UserInputError

    folder = Path(folder)
    check_utf8_path(folder, key)
    check_path_fits(folder, key)
    for path in (folder, *folder.parents):
        if path.is_dir():
            if not os.access(path, os.W_OK | os.X_OK):
                raise UserInputError(f"cannot write in the folder {path} (permission denied)",
                                     source=key)
            return
        if path.exists() or path.is_symlink():
            raise UserInputError(f"{path} exists and is not a folder, so the folder {folder} "
                                 f"cannot be created there; choose another location",
                                 source=key)


def check_utf8_path(path: str | Path, key: str | None = None) -> None:
    """Raise UserInputError (naming ``key``, or the path itself) unless ``path`` is valid
    UTF-8: a name with a byte of another encoding (latin-1's é) cannot be handed to the Parquet
    library, which reads and writes the results."""
    from mc_engine.errors import UserInputError

    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError as err:
        byte = str(path)[err.start].encode("utf-8", "surrogateescape")
        raise UserInputError(f"the path {ascii(str(path))[1:-1]} holds the byte "
                             f"{ascii(byte)[2:-1]}, which is not UTF-8 (a file name of another "
                             f"encoding); results can only be kept under UTF-8 paths: rename it "
                             f"or choose another", source=key or None) from None


def check_path_fits(path: str | Path, key: str | None = None, source: str | None = None) -> None:
    """Raise UserInputError (at ``source`` and ``key``) when a file or folder name in ``path``
    is longer than the file system allows (NAME_MAX bytes, usually 255) or the whole path is
    (PATH_MAX): found before any work, not as ``[Errno 36]`` when the first file is written."""
    from mc_engine.errors import UserInputError

    path = Path(path)
    near = next((p for p in (path, *path.parents) if os.path.isdir(p)), Path("."))
    name_max, path_max = (_pathconf(near, "PC_NAME_MAX", 255),
                          _pathconf(near, "PC_PATH_MAX", 4096))
    for part in path.parts:
        size = len(os.fsencode(part))
        if size > name_max and part != path.anchor:
            raise UserInputError(f"the name {ascii(part[:40])[1:-1]}... has {size} bytes; the "
                                 f"file system allows at most {name_max} in a file or folder "
                                 f"name: choose a shorter one", source=source, key=key)
    size = len(os.fsencode(str(path.absolute())))
    if size >= path_max:
        raise UserInputError(f"the path has {size} bytes; the file system allows at most "
                             f"{path_max - 1}: choose a shorter one", source=source, key=key)


def _pathconf(path: Path, name: str, default: int) -> int:
    try:
        return os.pathconf(path, name)
    except (OSError, ValueError):
        return default
