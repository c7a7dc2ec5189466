"""SQLite driver errors translated at the engine's boundary, so none reaches the user as a bug.

A `sqlite3` or APSW exception that escapes a session method is never the change's fault (a
script's own errors are caught where the script runs and recorded as its outcome); it says
something about the source file or the machine:

    SQLITE_CORRUPT, SQLITE_NOTADB, SQLITE_FORMAT, SQLITE_RANGE      SourceError (exit 2): the
                                                                     source file is damaged
    SQLITE_READONLY with a `-journal` beside the source             SourceError: a hot journal
                                                                     (a crashed writer) needs
                                                                     recovery by its application
    SQLITE_FULL, SQLITE_IOERR*, SQLITE_NOMEM, SQLITE_CANTOPEN,      EnvironmentProblemError
    SQLITE_NOLFS; OSError ENOSPC/EDQUOT/EIO; MemoryError             (exit 4) naming the resource

Anything else stays what it is (an internal error, exit 70, if it is a bug). `translated` is a
class decorator: every public method of the class translates what escapes it, so a method added
later is covered without remembering to wrap it.
"""

from __future__ import annotations

import errno
import functools
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import apsw

from rollproof.core.errors import EnvironmentProblemError, RollproofError, SourceError

_SOURCE_DAMAGE = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_FORMAT", "SQLITE_RANGE"})
_RESOURCE = {
    "SQLITE_FULL": "the disk is full",
    "SQLITE_NOMEM": "out of memory",
    "SQLITE_CANTOPEN": "a database file cannot be opened",
    "SQLITE_NOLFS": "the file system cannot hold a file this large",
}
MACHINE_ERRORS = frozenset({*_RESOURCE, "SQLITE_IOERR"})
"""Result codes that mean the machine failed (disk, memory, I/O), whoever's statement hit them."""
_DISK_ERRNOS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EIO: "an I/O error",
    errno.EFBIG: "a file grew past the size limit",
    errno.EROFS: "the file system is read-only",
}
_APSW_NAMES: dict[type[BaseException], str] = {
    apsw.CorruptError: "SQLITE_CORRUPT",
    apsw.NotADBError: "SQLITE_NOTADB",
    apsw.FormatError: "SQLITE_FORMAT",
    apsw.RangeError: "SQLITE_RANGE",
    apsw.FullError: "SQLITE_FULL",
    apsw.IOError: "SQLITE_IOERR",
    apsw.NoMemError: "SQLITE_NOMEM",
    apsw.CantOpenError: "SQLITE_CANTOPEN",
    apsw.ReadOnlyError: "SQLITE_READONLY",
}


def error_name(e: BaseException) -> str | None:
    """SQLite's primary result-code name of a driver exception (`SQLITE_IOERR` for every
    extended I/O code), or None for anything that is not a SQLite error."""
    if isinstance(e, sqlite3.Error):
        name = getattr(e, "sqlite_errorname", None)
        # Extended codes (SQLITE_IOERR_SHORT_READ, SQLITE_READONLY_ROLLBACK) to their primary.
        return "_".join(name.split("_")[:2]) if isinstance(name, str) else None
    for kind, name in _APSW_NAMES.items():
        if isinstance(e, kind):
            return name
    return None


def translate(e: BaseException, source: Path) -> RollproofError | None:
    """The `RollproofError` a driver or OS error escaping the engine stands for, or None."""
    if isinstance(e, RollproofError):
        return None
    if isinstance(e, MemoryError):
        return EnvironmentProblemError(f"out of memory while working on source {source}")
    if isinstance(e, OSError) and e.errno in _DISK_ERRNOS:
        return EnvironmentProblemError(
            f"{_DISK_ERRNOS[e.errno]} while copying or writing the rehearsal's files for "
            f"source {source}; free space or point --workdir / TMPDIR elsewhere"
        )
    name = error_name(e)
    if name is None:
        return None
    if name in _SOURCE_DAMAGE:
        return SourceError(
            f"source {source}: {e} ({name}): the file is damaged or not a complete SQLite "
            "database; check it with PRAGMA integrity_check"
        )
    if name == "SQLITE_READONLY" and Path(f"{source}-journal").exists():
        return SourceError(
            f"source {source}: a hot journal ({source}-journal) is beside it: a writer crashed "
            "mid-transaction; open the database once with its application to roll it back"
        )
    if name == "SQLITE_IOERR":
        return EnvironmentProblemError(f"an I/O error while working on source {source}: {e}")
    if name in _RESOURCE:
        return EnvironmentProblemError(
            f"{_RESOURCE[name]} while working on source {source}: {e}; free space or point "
            "--workdir / TMPDIR elsewhere"
        )
    return None


_C = TypeVar("_C", bound=type)


def translated(source_of: Callable[[Any], Path]) -> Callable[[_C], _C]:
    """A class decorator: each public method translates driver errors that escape it, naming
    the source `source_of(self)` returns."""

    def wrap(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except (sqlite3.Error, apsw.Error, OSError, MemoryError) as e:
                mapped = translate(e, source_of(self))
                if mapped is None:
                    raise
                raise mapped from e

        return call

    def decorate(cls: _C) -> _C:
        for name, value in list(vars(cls).items()):
            if callable(value) and (not name.startswith("_") or name == "__init__"):
                setattr(cls, name, wrap(value))
        return cls

    return decorate
