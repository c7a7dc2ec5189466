"""A SQLite source read, never written: its DSN, its file's checks, read-only connections and
its fingerprint (`rollproof fingerprint`, a grant's source fingerprint).

Apart from the rehearsal's session (session.py), so that reading a source imports the
fingerprint and nothing a rehearsal needs besides (the guard, explanations, page proofs,
statement splitting): `tests/test_startup_imports.py` holds the command to that.
"""

from __future__ import annotations

import contextlib
import sqlite3
import stat
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import apsw

from rollproof.core.errors import EnvironmentProblemError, SourceError
from rollproof.core.fingerprint import Fingerprint
from rollproof.core.redact import redact_dsn
from rollproof.engines.sqlite.errors import translate
from rollproof.engines.sqlite.fingerprint import fingerprint_connection
from rollproof.engines.sqlite.sidefiles import absent_side_files, tidy

SQLITE_HEADER = b"SQLite format 3\x00"


def parse_sqlite_dsn(dsn: str) -> Path:
    """`sqlite:///relative.db`, `sqlite:////absolute.db`, or a plain path, to a Path.

    The three-slash form is relative and the four-slash form absolute, as in SQLAlchemy.
    Errors show the DSN with any password removed.
    """
    shown = repr(redact_dsn(dsn))
    if any(not c.isprintable() for c in dsn):
        raise SourceError(f"source {shown}: a DSN or path cannot hold control characters")
    if dsn.startswith("sqlite:"):
        rest = dsn[len("sqlite:") :]
        if not rest.startswith("///"):
            raise SourceError(
                f"source {shown}: a SQLite DSN is sqlite:///relative.db or sqlite:////absolute.db"
            )
        rest = rest[3:]
        if "?" in rest or "#" in rest:
            raise SourceError(f"source {shown}: query parameters are not supported")
        path = urllib.parse.unquote(rest)
    elif "://" in dsn:
        raise SourceError(f"source {shown}: unsupported scheme (this engine takes sqlite:///…)")
    else:
        path = dsn
    if not path or path == ":memory:":
        raise SourceError(f"source {shown}: names no database file")
    return Path(path)


def sqlite_dsn(path: Path) -> str:
    """The DSN `parse_sqlite_dsn` reads back as exactly `path`: every character a DSN gives a
    meaning to (`%`, `?`, `#`, whitespace, non-ASCII) is percent-encoded, so a file named
    `p%41.db` is not recorded as one that decodes to `pA.db`."""
    return "sqlite:///" + urllib.parse.quote(str(path), safe="/")


def check_sqlite_file(path: Path) -> Path:
    """The resolved path of an existing SQLite database file, or a clear error."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SourceError(f"source {path}: no such file") from None
    except OSError as e:
        raise EnvironmentProblemError(f"source {path}: cannot stat: {e.strerror}") from e
    if not stat.S_ISREG(st.st_mode):
        raise SourceError(f"source {path}: not a regular file")
    if st.st_size == 0:
        return path.resolve()  # SQLite reads an empty file as an empty database
    try:
        with path.open("rb") as f:
            header = f.read(100)
    except OSError as e:
        raise EnvironmentProblemError(f"source {path}: cannot read: {e.strerror}") from e
    if not header.startswith(SQLITE_HEADER):
        raise SourceError(f"source {path}: not a SQLite database (bad header)")
    problem = header_problem(header)
    if problem is not None:
        raise SourceError(f"source {path}: not a usable SQLite database: {problem}")
    return path.resolve()


def header_problem(header: bytes) -> str | None:
    """What is wrong with a database file's 100-byte header, or None. Checked before anything
    is copied, so a damaged source is the user's to fix (exit 2), never a leg that fails as if
    the change had (a write-version byte SQLite does not know makes the clone read-only)."""
    if not header.startswith(SQLITE_HEADER):
        return "bad header (no 'SQLite format 3' magic)"
    if len(header) < 100:
        return f"truncated: {len(header)} bytes, less than the 100-byte header"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        return f"page size {page_size} in the header is not a power of two from 512 to 65536"
    for offset, what in ((18, "write"), (19, "read")):
        if header[offset] not in (1, 2):
            return f"file format {what} version {header[offset]} (SQLite knows 1 and 2)"
    return None


def read_only_uri(path: Path) -> str:
    return "file:" + urllib.parse.quote(str(path)) + "?mode=ro"


class _ReadOnlyConnection(sqlite3.Connection):
    """A `mode=ro` connection that, once closed, removes the -wal/-shm it made beside a WAL
    database, when that is provably safe (sidefiles.tidy): the directory is left as found."""

    tidy_path: Path | None = None
    tidy_absent: frozenset[str] = frozenset()

    def close(self) -> None:
        super().close()
        if self.tidy_path is not None and self.tidy_absent:
            path, self.tidy_path = self.tidy_path, None
            tidy(path, self.tidy_absent)


def connect_read_only(path: Path, *, functions: bool = False) -> sqlite3.Connection:
    """A read-only connection (`mode=ro`, query_only) to a database file. With `functions`,
    it has rollproof's C functions where this Python's SQLite allows (rowcodec): only for a
    connection that reads a fingerprint and never runs a change's or a user's SQL."""
    absent = absent_side_files(path)

    def connect() -> _ReadOnlyConnection:
        return sqlite3.connect(
            read_only_uri(path), uri=True, isolation_level=None, factory=_ReadOnlyConnection
        )

    from rollproof.engines.sqlite import rowcodec

    if functions:
        conn = rowcodec.connect_with_functions(connect)
    else:
        conn = rowcodec.connect_without_functions(connect)
    conn.tidy_path, conn.tidy_absent = path, absent
    conn.execute("PRAGMA query_only = ON")
    return conn


def fingerprint_file(path: Path, progress: Callable[[str], None] | None = None) -> Fingerprint:
    """Fingerprint a SQLite file, opening it read-only, as it is at one instant.

    One read transaction covers the whole fingerprint, so a live database being written is
    fingerprinted as of one commit. In rollback-journal mode its SHARED lock keeps every writer
    from committing until the end, so worker processes (for a large file) read that same state.
    In WAL mode a writer may commit meanwhile and only this connection's snapshot is fixed, so
    a WAL database is read here, in one process.
    """
    resolved = check_sqlite_file(path)
    with contextlib.closing(connect_read_only(resolved, functions=True)) as conn:
        try:
            conn.execute("BEGIN")
            conn.execute("SELECT count(*) FROM main.sqlite_schema").fetchone()  # the instant
            wal = str(conn.execute("PRAGMA main.journal_mode").fetchone()[0]).lower() == "wal"
            return fingerprint_connection(conn, progress, parallel_path=None if wal else resolved)
        except (sqlite3.Error, apsw.Error, OSError, MemoryError) as e:
            mapped = translate(e, path)
            if mapped is not None:
                raise mapped from e
            if isinstance(e, sqlite3.DatabaseError):
                raise SourceError(f"source {path}: cannot read database: {e}") from e
            raise
        finally:
            # A read that failed on a damaged file may fail again here: keep the first error.
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("COMMIT")
