"""The SQLite engine: read-only source, private clone by the backup API, and its isolation proof.

Longer than 600 lines because it is one `EngineSession`: the snapshot, the clones, every leg
operation and the isolation proof share the session's state (source and clone connections,
the private workspace, the guard, what was read and written), and cutting the class would
scatter that state over modules that all need it. Everything else about the dialect
(fingerprint, schema, page proofs, explanations and statement splitting) is already a module
of its own beside it.

Workspace layout (a fresh `mkdtemp` directory, mode 0700, outside the source's directory):

    snapshot.db   the pristine copy, made by the backup API from a read-only source connection,
                  then made read-only on disk; its sha256 is recorded once
    clone.db      the working clone, re-made from the snapshot for every leg and checked
                  byte-equal to it before use
    branch.db     the restore leg's committed apply, copied (and checked byte-equal) before
                  the clone is restored, for the revert leg to continue from (`branch`)

Isolation items (all must hold for PROVEN_ISOLATED_NOT_PRODUCTION). They prove what rollproof
did, not that nobody else wrote the source: a live source is proven isolated too.
* clone-distinct-file: the clone and the source differ in (device, inode) and in real path, so
  no hard link or symlink makes them the same file;
* clone-outside-source-dir: the workspace is not inside the source's directory tree;
* workspace-private: the workspace is a directory owned by us with mode 0700;
* source-opened-read-only: every connection rollproof opened to the source used `mode=ro`;
* clone-matches-source: the snapshot is the source as of one read transaction: a file copy made
  under that transaction's lock (rollback journal: no writer can commit meanwhile) whose bytes
  equal the source's read under it, or a backup made inside it (WAL: writers may commit, the
  transaction's view stays fixed) whose fingerprint equals the source's read inside it.

Whether the source moved on (others wrote it during or after the rehearsal) is an observation
recorded in `describe_source()["after"]`, not a check: its files are hashed again at the end.
The -wal and -shm SQLite makes beside a WAL source are removed again when that is provably
safe (sidefiles.py).

Change scripts run with an authorizer that denies ATTACH: a script that attached the source
file could write production from inside the clone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import shutil
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import blake3

from rollproof.core.change import Script
from rollproof.core.errors import EnvironmentProblemError, IsolationError, SourceError
from rollproof.core.fingerprint import Difference, Fingerprint, Reuse
from rollproof.core.guard import SurfaceGuard, script_error
from rollproof.core.isolation import (
    CLONE_DISTINCT_FILE,
    CLONE_MATCHES_SOURCE,
    CLONE_OUTSIDE_SOURCE_DIR,
    SOURCE_OPENED_READ_ONLY,
    WORKSPACE_PRIVATE,
    IsolationCheck,
    IsolationProof,
    source_after,
)
from rollproof.core.sqltext import without_leading_comments
from rollproof.core.steps import ENGINE_STEPS, marks_steps
from rollproof.core.surface import AccessKind
from rollproof.engines.base import (
    Progress,
    ReadOnlyOutcome,
    ScriptOutcome,
    StatementRows,
    TransactionOutcome,
)
from rollproof.engines.sqlite import rowcodec
from rollproof.engines.sqlite.errors import MACHINE_ERRORS, error_name, translated
from rollproof.engines.sqlite.explain import explain_differences
from rollproof.engines.sqlite.fingerprint import (
    ENGINE,
    PARALLEL_MIN_BYTES,
    fingerprint_connection,
)
from rollproof.engines.sqlite.impact import SqliteMeter
from rollproof.engines.sqlite.pages import PageProofs
from rollproof.engines.sqlite.schema import quote_ident
from rollproof.engines.sqlite.sidefiles import absent_side_files, tidy
from rollproof.engines.sqlite.source import (
    check_sqlite_file,
    connect_read_only,
    parse_sqlite_dsn,
    read_only_uri,
    sqlite_dsn,
)
from rollproof.engines.sqlite.statements import split_sqlite
from rollproof.engines.workspace import make_workspace


def _count_rows(conn: sqlite3.Connection, table: str) -> int:
    """A table's rows, for an estimate only: 0 where it cannot be counted (a virtual table
    whose module is not loaded; the fingerprint reads no rows of it either)."""
    try:
        return int(conn.execute(f"SELECT count(*) FROM main.{quote_ident(table)}").fetchone()[0])
    except sqlite3.Error:
        return 0


def _copy_pays(size: int, rows: int, nbytes: int) -> bool:
    """Whether copying a `size`-byte database and reading `rows` rows (`nbytes` bytes) from the
    copy on worker processes with the accelerator is estimated to take at most 70% of reading
    them through Python's `sqlite3`. The costs are this machine's, measured on the benchmark's
    shapes (docs/BENCHMARKS.md): in process 350 ns a row and 1.5 ns a byte; the copy 2 ns a
    byte; the accelerated read 150 ns a row and 0.8 ns a byte, shared by the workers. Only
    the time depends on it: the two reads give the same fingerprint."""
    if nbytes < PARALLEL_MIN_BYTES:
        return False
    here = rows * 350 + nbytes * 1.5
    workers = max(1, min(os.cpu_count() or 1, 4))
    copied = size * 2 + (rows * 150 + nbytes * 0.8) / workers
    return copied <= 0.7 * here


TRANSACTION_COPY_MAX_BYTES = 512 << 20
"""The largest database whose open transaction's view is copied for the fingerprint's workers
(`SqliteSession._transaction_copy`): the copy is held in memory once while it is written."""
VIEW_MAX_BYTES = 64 << 20
"""The largest database whose open transaction's view is copied into memory to be read in this
process (`SqliteSession._transaction_view`): it is held up to three times while it is copied."""


def _view_pays(size: int, rows: int, nbytes: int) -> bool:
    """Whether copying a `size`-byte database into memory and reading `rows` rows (`nbytes`
    bytes) from it in this process with the C functions is estimated to take at most 70% of
    reading them through Python's `sqlite3`. This machine's costs, measured on the
    benchmark's shapes (docs/BENCHMARKS.md): in Python 350 ns a row and 1.5 ns a byte; the
    copy (serialize and deserialize) 1.5 ns a byte; the functions, on the SQLite of Python's
    `sqlite3`, 200 ns a row and 0.5 ns a byte. Only the time depends on it."""
    here = rows * 350 + nbytes * 1.5
    copied = size * 1.5 + rows * 200 + nbytes * 0.5
    return copied <= 0.7 * here


class _View(sqlite3.Connection):
    """The in-memory copy of an open transaction's view (it carries rowcodec's mark)."""


_TXN_CONTROL = re.compile(r"^(BEGIN|COMMIT|END|ROLLBACK|SAVEPOINT|RELEASE)\b", re.I)
_NOT_IN_TXN = re.compile(
    r"^(VACUUM\b|ATTACH\b|DETACH\b|PRAGMA\s+(main\.)?(foreign_keys|journal_mode|"
    r"synchronous|locking_mode|legacy_alter_table|recursive_triggers)\b)",
    re.I,
)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _file_blake3(path: Path) -> str:
    """BLAKE3 of a file, memory-mapped and hashed on every core (about 10 GB/s from cache)."""
    b3 = blake3.blake3(max_threads=blake3.blake3.AUTO)
    if path.stat().st_size:
        b3.update_mmap(path)
    return str(b3.hexdigest())


def source_files(path: Path) -> list[Path]:
    """The database file and any non-empty -wal or -journal file beside it.

    An empty side file holds nothing committed: SQLite creates an empty -wal (and a -shm) when
    any reader, read-only ones included, opens a WAL-mode database that had none, so absent
    and empty are the same state here. A side file its writer removes while this looks is
    absent (a live source's writer deletes its -journal when it commits or rolls back).
    """
    out = [path]
    for suffix in ("-wal", "-journal"):
        side = path.with_name(path.name + suffix)
        try:
            if side.stat().st_size > 0:
                out.append(side)
        except FileNotFoundError:
            continue
    return out


READ_CHUNK = 8 << 20
"""Bytes a source file is read by at a time when hashed (`_fd_digests`)."""


def _blake3() -> Any:
    return blake3.blake3(max_threads=blake3.blake3.AUTO)


def _fd_digests(fd: int, *hashers: Callable[[], Any]) -> list[str]:
    """The hex digests of an open file's bytes, one per hasher (`hashlib.sha256`, `_blake3`),
    all from one read of it, so they are digests of the same bytes. Read with `pread`, never
    memory-mapped: a live source's writer may truncate a side file while it is read (a
    `-journal` in TRUNCATE mode at every commit, a `-wal` checkpointed with TRUNCATE), and a
    mapped page past the new end of a file kills the process (SIGBUS)."""
    running = [make() for make in hashers]
    offset = 0
    while chunk := os.pread(fd, READ_CHUNK, offset):
        for h in running:
            h.update(chunk)
        offset += len(chunk)
    return [str(h.hexdigest()) for h in running]


def _fd_blake3(fd: int) -> str:
    """BLAKE3 of an open file, hashed on every core."""
    (digest,) = _fd_digests(fd, _blake3)
    return digest


def _source_digests(
    path: Path, *hashers: Callable[[], Any], sides_only: bool = False
) -> list[dict[str, str]]:
    """Each hasher's digest of each of `source_files(path)`, by file name, every file opened
    and read once (`_fd_digests`). A side file removed between the listing and its opening is
    left out, as absent (`source_files`); the database file removed is the source gone (exit
    2). `sides_only` leaves the database file itself out: while a connection of this process
    holds a lock on it, opening and closing it again would drop that lock (POSIX locks are the
    process's, released by any close of the file)."""
    out: list[dict[str, str]] = [{} for _ in hashers]
    for f in source_files(path)[1:] if sides_only else source_files(path):
        try:
            fd = os.open(f, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            if f == path:
                raise SourceError(f"source {path}: removed while it was being read") from None
            continue
        try:
            for found, digest in zip(out, _fd_digests(fd, *hashers), strict=True):
                found[f.name] = digest
        finally:
            os.close(fd)
    return out


def source_bytes_digest(path: Path) -> dict[str, str]:
    """sha256 of each of `source_files(path)`, by file name (what the report records)."""
    (found,) = _source_digests(path, hashlib.sha256)
    return found


def source_bytes_blake3(path: Path) -> dict[str, str]:
    """BLAKE3 of each of `source_files(path)`: the fast check that they did not change."""
    (found,) = _source_digests(path, _blake3)
    return found


def _copy_fd(fd: int, target: Path) -> None:
    """Copy an open file's bytes to a new file `target` (in the kernel where it can)."""
    size = os.fstat(fd).st_size
    with target.open("xb") as out:
        offset = 0
        try:
            while offset < size:
                n = os.copy_file_range(fd, out.fileno(), size - offset, offset, offset)
                if n == 0:
                    break
                offset += n
        except OSError:
            out.seek(offset)
            while offset < size:
                chunk = os.pread(fd, min(1 << 20, size - offset), offset)
                if not chunk:
                    break
                out.write(chunk)
                offset += len(chunk)
        if offset != size:
            raise EnvironmentProblemError(f"snapshot copy: read {offset} of {size} bytes")


def _held_digests(held: int, path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """BLAKE3 and SHA-256 of the database (read through `held`, a descriptor opened before any
    SQLite connection to it) and of its non-empty -wal/-journal (read by name: SQLite holds no
    lock on those, so opening and closing them drops none)."""
    b3, sha256 = _fd_digests(held, _blake3, hashlib.sha256)
    sides_b3, sides_sha256 = _source_digests(path, _blake3, hashlib.sha256, sides_only=True)
    return {path.name: b3} | sides_b3, {path.name: sha256} | sides_sha256


def _head(statement: str) -> str:
    return without_leading_comments(statement)


def _short(statement: str) -> str:
    one = " ".join(_head(statement).split())
    return one if len(one) <= 80 else one[:77] + "..."


_INTERNAL = frozenset(
    {
        "sqlite_master",
        "sqlite_schema",
        "sqlite_temp_master",
        "sqlite_temp_schema",
        "sqlite_sequence",
        "sqlite_stat1",
        "sqlite_stat2",
        "sqlite_stat3",
        "sqlite_stat4",
    }
)
_WRITES = frozenset(
    {sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE, sqlite3.SQLITE_REINDEX}
)
_CREATES = frozenset(
    {
        sqlite3.SQLITE_CREATE_INDEX,
        sqlite3.SQLITE_CREATE_TABLE,
        sqlite3.SQLITE_CREATE_TRIGGER,
        sqlite3.SQLITE_CREATE_VIEW,
        sqlite3.SQLITE_CREATE_VTABLE,
    }
)
_DROPS = frozenset(
    {
        sqlite3.SQLITE_DROP_INDEX,
        sqlite3.SQLITE_DROP_TABLE,
        sqlite3.SQLITE_DROP_TRIGGER,
        sqlite3.SQLITE_DROP_VIEW,
        sqlite3.SQLITE_DROP_VTABLE,
    }
)

Authorizer = Callable[[int, str | None, str | None, str | None, str | None], int]


def authorizer_for(guard: SurfaceGuard | None) -> Authorizer:
    """The SQLite authorizer that enforces a guard while a change script is prepared.

    ATTACH and DETACH are always denied: a script that attached the source file could write
    production from inside the clone. The one exception is `ATTACH ''`, a private temporary
    database that no file backs (VACUUM attaches one to rebuild the clone into). The TEMP
    schema and such a database are the script's own scratch space, and SQLite's internal
    tables (schema, sequences, statistics) are written on the change's behalf by the
    statements that the guard does see.
    """

    def authorize(
        action: int, a1: str | None, a2: str | None, db: str | None, via: str | None
    ) -> int:
        if action == sqlite3.SQLITE_ATTACH and a1 == "":
            return sqlite3.SQLITE_OK
        if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
            return sqlite3.SQLITE_DENY
        if guard is None or (db is not None and db != "main"):
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_PRAGMA and (a1 or "").lower() == "writable_schema":
            guard.mark_opaque()  # schema edits behind the authorizer: no incremental fingerprint
            return sqlite3.SQLITE_OK
        if action in _WRITES:
            kind, obj = AccessKind.WRITE, a1
        elif action == sqlite3.SQLITE_READ:
            kind, obj = AccessKind.READ, a1
        elif action in _CREATES:
            kind, obj = AccessKind.CREATE, a1
        elif action in _DROPS:
            kind, obj = AccessKind.DROP, a1
        elif action == sqlite3.SQLITE_ALTER_TABLE:
            kind, obj = AccessKind.ALTER, a2
        else:
            return sqlite3.SQLITE_OK
        if not obj or obj.lower() in _INTERNAL:
            return sqlite3.SQLITE_OK
        return sqlite3.SQLITE_DENY if guard.check(kind, obj, via) else sqlite3.SQLITE_OK

    return authorize


def _script_error(index: int, statement: str, e: sqlite3.Error) -> str:
    """A script's failed statement, told without values (rollproof.core.guard.script_error):
    SQLite's result code name and its message with quoted strings and numbers removed. A
    trigger's RAISE message is the schema's own text, but it is treated like any other."""
    code = getattr(e, "sqlite_errorname", None) or type(e).__name__
    return script_error(index, _short(statement), code, str(e))


class _Background:
    """Work on another thread (file copies and hashes, which release the GIL); `result()`
    waits for it and re-raises what it raised, in the thread that needs the result."""

    def __init__(self, what: str, work: Callable[[], None]) -> None:
        self._what = what
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(work,), name=f"rollproof: {what}", daemon=True
        )
        self._thread.start()

    def _run(self, work: Callable[[], None]) -> None:
        try:
            work()
        except OSError as e:
            self._error = EnvironmentProblemError(f"{self._what}: {e.strerror}")
        except BaseException as e:
            self._error = e

    def result(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error

    def wait(self) -> None:
        """Let it finish (its error, if any, is raised later by `result`)."""
        self._thread.join()


@translated(lambda s: getattr(s, "source", None) or Path(getattr(s, "dsn", "the source")))
@marks_steps(ENGINE_STEPS)
class SqliteSession:
    """An `EngineSession` for a SQLite source file."""

    engine = ENGINE

    def __init__(
        self,
        dsn: str,
        *,
        workdir: Path | None = None,
        progress: Progress | None = None,
        guard: SurfaceGuard | None = None,
    ):
        self._progress = progress or (lambda _msg: None)
        self.guard = guard
        self.dsn = dsn
        self.source = check_sqlite_file(parse_sqlite_dsn(dsn))
        self._source_opens: list[str] = []
        self._source_digest_before: dict[str, str] = {}
        self._source_b3_before: dict[str, str] = {}
        self._copied = False
        self._source_fp: Fingerprint | None = None
        """The source's fingerprint read inside the snapshot's transaction (backup only)."""
        self._after: dict[str, Any] | None = None
        """Whether the source moved on since the snapshot, once the rehearsal is over."""
        if workdir is not None and workdir.absolute().resolve().is_relative_to(self.source.parent):
            # Refused before anything is created there: a workspace beside production is not
            # isolated, and a directory made inside the source's tree would be left behind.
            raise IsolationError(
                [
                    f"{CLONE_OUTSIDE_SOURCE_DIR} (--workdir {workdir} is inside the source's "
                    "directory tree)"
                ]
            )
        self._claim = make_workspace("rollproof-", workdir)
        self.workspace = self._claim.directory
        self.snapshot = self.workspace / "snapshot.db"
        self.clone = self.workspace / "clone.db"
        self._snapshot_blake3 = ""
        self._snapshot_fp: Fingerprint | None = None
        self._pages: PageProofs | None = None
        self._spare: _Background | None = None
        self._spare_path = self.workspace / "spare.db"
        self._branch_path = self.workspace / "branch.db"
        self._branched = False
        try:
            self._check_static_isolation()
            self._take_snapshot()
        except BaseException:
            shutil.rmtree(self.workspace, ignore_errors=True)
            self._claim.release()
            raise

    # -- source and snapshot ------------------------------------------------------------------

    def _open_source(self) -> sqlite3.Connection:
        uri = read_only_uri(self.source)
        self._source_opens.append(uri)
        try:
            return connect_read_only(self.source, functions=True)
        except sqlite3.Error as e:
            raise EnvironmentProblemError(
                f"source {self.source}: cannot open read-only: {e}"
            ) from e

    def _take_snapshot(self) -> None:
        """Copy the source into snapshot.db inside one read transaction on it, and prove the
        copy is the source as of that transaction (the clone-matches-source check).

        The source file is opened once, before the SQLite connection, and closed after it:
        closing any descriptor of a file drops every POSIX lock the process holds on it,
        SQLite's read lock included, so no descriptor of it is opened and closed meanwhile.

        A rollback-journal database with no journal beside it cannot change while the read
        transaction holds its SHARED lock: its bytes are copied through that descriptor and
        hashed (BLAKE3) under the lock, and the snapshot is re-read to prove it holds them; the
        SHA-256 the report shows is then read from the snapshot. In WAL mode (or with a journal
        beside it) writers may commit meanwhile, and only the transaction's view is fixed: the
        backup API copies exactly that view, and the source is fingerprinted inside the same
        transaction, for the snapshot's fingerprint to be held to.
        """
        absent = absent_side_files(self.source)
        try:
            with (
                self.source.open("rb") as held,
                contextlib.closing(self._open_source()) as src,
            ):
                src.execute("BEGIN")
                src.execute("SELECT count(*) FROM sqlite_schema").fetchone()  # the instant
                header = os.pread(held.fileno(), 20, 0)
                journal = self.source.with_name(self.source.name + "-journal")
                self._copied = header[18:20] == b"\x01\x01" and not journal.exists()
                if self._copied:
                    self._progress("snapshotting the source (file copy under a read lock)")
                    _copy_fd(held.fileno(), self.snapshot)
                    self._progress("hashing the source")
                    self._source_b3_before = {self.source.name: _fd_blake3(held.fileno())}
                else:
                    self._source_b3_before, self._source_digest_before = _held_digests(
                        held.fileno(), self.source
                    )
                    self._backup(src)
                    self._progress("fingerprinting the source in the same read transaction")
                    self._source_fp = fingerprint_connection(src, self._progress)
                src.execute("COMMIT")
        finally:
            # The -wal/-shm this connection made beside a WAL source, once nothing of ours
            # holds the file open (its own close could not: the held descriptor was open).
            tidy(self.source, absent)
        self.snapshot.chmod(0o400)
        # The snapshot is re-read once: with BLAKE3, the internal check every later copy of
        # it is held to; a copied snapshot must also equal the bytes the source hashed to.
        self._snapshot_blake3 = _file_blake3(self.snapshot)
        if self._copied:
            if self._snapshot_blake3 != self._source_b3_before[self.source.name]:
                raise EnvironmentProblemError("snapshot copy does not match the source's bytes")
            # The report's SHA-256 of the source, read from the snapshot, which holds exactly
            # the bytes the source had under the lock: the source itself is read once.
            self._source_digest_before = {self.source.name: file_sha256(self.snapshot)}

    def _backup(self, src: sqlite3.Connection) -> None:
        self._progress("snapshotting the source (backup API, read-only)")
        with contextlib.closing(sqlite3.connect(self.snapshot, isolation_level=None)) as dst:

            def report(_status: int, remaining: int, total: int) -> None:
                if total:
                    self._progress(
                        f"snapshotting the source: {100 * (total - remaining) // total}%"
                    )

            try:
                src.backup(dst, pages=4096, progress=report)
            except sqlite3.Error as e:
                raise EnvironmentProblemError(f"source {self.source}: backup failed: {e}") from e
            # The clone runs in rollback-journal mode whatever the source uses: the journal
            # mode lives in the file header, not in the content being proven.
            dst.execute("PRAGMA journal_mode = DELETE")

    def is_source(self, dsn: str, base: Path) -> bool:
        if "://" in dsn and not dsn.startswith("sqlite:"):
            return False
        try:
            return (base / parse_sqlite_dsn(dsn)).resolve() == self.source
        except SourceError:
            return False

    def snapshot_fingerprint(self) -> Fingerprint:
        if self._snapshot_fp is None:
            self._progress("fingerprinting the snapshot")
            # Where the tables the change declares it writes lie in the snapshot is taken while
            # worker processes read it, for the page proofs of later points (sqlite_pages).
            pages = PageProofs(self.snapshot)
            writes = () if self.guard is None else self.guard.writes
            with contextlib.closing(connect_read_only(self.snapshot, functions=True)) as conn:
                conn.execute("BEGIN")
                fp = fingerprint_connection(
                    conn, self._progress, parallel_path=self.snapshot, pages=pages, locate=writes
                )
                conn.execute("COMMIT")
            pages.snapshot_fingerprinted(fp.tables, fp.schema_objects)
            self._snapshot_fp, self._pages = fp, pages
        return self._snapshot_fp

    def describe_source(self) -> dict[str, Any]:
        return {
            "engine": ENGINE,
            "dsn": sqlite_dsn(self.source) if self.source.is_absolute() else self.dsn,
            "path": str(self.source),
            "bytes_sha256_before": dict(self._source_digest_before),
        } | ({} if self._after is None else {"after": self._after})

    # -- isolation ------------------------------------------------------------------------------

    def _static_checks(self) -> list[IsolationCheck]:
        checks = []
        src = self.source.stat()
        clone_target = self.clone if self.clone.exists() else self.workspace
        cst = clone_target.stat()
        same_file = (src.st_dev, src.st_ino) == (cst.st_dev, cst.st_ino)
        same_path = self.source == self.clone.resolve()
        checks.append(
            IsolationCheck(
                CLONE_DISTINCT_FILE,
                not same_file and not same_path,
                f"source (dev {src.st_dev}, inode {src.st_ino}) vs clone "
                f"(dev {cst.st_dev}, inode {cst.st_ino}); "
                f"paths {'equal' if same_path else 'differ'}",
            )
        )
        inside = self.workspace.is_relative_to(self.source.parent)
        checks.append(
            IsolationCheck(
                CLONE_OUTSIDE_SOURCE_DIR,
                not inside,
                "workspace is "
                + ("inside" if inside else "outside")
                + " the source's directory tree",
            )
        )
        wst = self.workspace.stat()
        private = stat.S_IMODE(wst.st_mode) == 0o700 and wst.st_uid == os.getuid()
        checks.append(
            IsolationCheck(
                WORKSPACE_PRIVATE,
                private,
                f"workspace mode {stat.S_IMODE(wst.st_mode):04o}, owner uid {wst.st_uid}",
            )
        )
        return checks

    def _check_static_isolation(self) -> None:
        failed = [f"{c.name} ({c.evidence})" for c in self._static_checks() if not c.holds]
        if failed:
            raise IsolationError(failed)

    def _opens_check(self) -> IsolationCheck:
        ro = bool(self._source_opens) and all(u.endswith("?mode=ro") for u in self._source_opens)
        return IsolationCheck(
            SOURCE_OPENED_READ_ONLY,
            ro,
            f"{len(self._source_opens)} connection(s) to the source, all mode=ro"
            if ro
            else f"source connections: {self._source_opens}",
        )

    def _instant_check(self) -> IsolationCheck:
        """clone-matches-source: the snapshot is the source as of one read transaction."""
        snap = self.snapshot_fingerprint()
        if self._copied:
            name = self.source.name
            same = self._snapshot_blake3 == self._source_b3_before.get(name)
            return IsolationCheck(
                CLONE_MATCHES_SOURCE,
                same,
                "snapshot copied byte for byte inside one read transaction on the source, "
                "under its read lock (rollback journal: no writer commits meanwhile); its bytes "
                + ("equal" if same else "DIFFER FROM")
                + f" the source's read under that lock ({name} sha256 "
                f"{self._source_digest_before.get(name)}); snapshot fingerprint {snap.digest}",
            )
        # The snapshot is kept in rollback-journal mode whatever the source's: the journal
        # mode is the one header field the copy changes on purpose.
        read = self._source_fp
        if read is not None and read.header.get("journal_mode") == "wal":
            header = {k: v for k, v in read.header.items() if k != "journal_mode"}
            read = dataclasses.replace(read, header=header, digest="")
        same = read is not None and read.digest == snap.digest
        return IsolationCheck(
            CLONE_MATCHES_SOURCE,
            same,
            "snapshot made by the backup API inside one read transaction on the source (a "
            "writer may commit meanwhile; the transaction's view stays fixed); the source's "
            f"fingerprint read in that transaction, {read.digest if read else None}, "
            + ("equals" if same else "DIFFERS FROM")
            + f" the snapshot's, {snap.digest} (journal mode apart: the snapshot is kept in "
            "rollback-journal mode)",
        )

    def isolation(self) -> IsolationProof:
        return IsolationProof((*self._static_checks(), self._opens_check(), self._instant_check()))

    def finish_isolation(self) -> IsolationProof:
        """The proof, and whether the source moved on since the snapshot (an observation:
        BLAKE3 decides; the SHA-256 is recomputed only to say what the source is now)."""
        same = source_bytes_blake3(self.source) == self._source_b3_before
        now = self._source_digest_before if same else source_bytes_digest(self.source)
        files = ", ".join(f"{k} sha256 {v}" for k, v in sorted(now.items()))
        self._after = source_after(not same, self.snapshot_fingerprint().digest, files).to_json()
        return self.isolation()

    # -- clones ---------------------------------------------------------------------------------

    def fresh_clone(self) -> None:
        # Checked before anything is unlinked or written: a clone path that is (or links to)
        # the source must stop the rehearsal, not overwrite production.
        self._check_static_isolation()
        for leftover in (
            self.clone,
            *(self.clone.with_name("clone.db" + s) for s in ("-journal", "-wal", "-shm")),
        ):
            leftover.unlink(missing_ok=True)
        if self._spare is not None:
            spare, self._spare = self._spare, None
            spare.result()
            os.replace(self._spare_path, self.clone)  # a checked copy, made while other work ran
            return
        self._copy_snapshot(self.clone)

    def prepare_clone(self) -> None:
        """Start copying the snapshot into a spare file on another thread (the copy and its
        BLAKE3 check release the GIL), for the next fresh_clone or restore_clone to take."""
        if self._spare is None:
            self._spare = _Background(
                "copying the snapshot", lambda: self._copy_snapshot(self._spare_path)
            )

    def _copy_snapshot(self, target: Path) -> None:
        """Copy the snapshot's bytes to `target`, and prove `target` holds them.

        The copy is re-read and must hash to the digest recorded when the snapshot was taken,
        which refuses both a copy that went wrong and a snapshot changed since. This internal
        check uses BLAKE3, several times faster than SHA-256 here; digests that appear in
        evidence stay SHA-256, which anyone can recompute with standard tools.
        """
        shutil.copyfile(self.snapshot, target)
        target.chmod(0o600)
        if _file_blake3(target) != self._snapshot_blake3:
            raise EnvironmentProblemError(
                "working clone does not match the snapshot taken at the start, byte for byte"
            )

    def restore_clone(self) -> None:
        """Restore the clone from the pre-change snapshot: its checked bytes, copied back."""
        self.fresh_clone()

    def branch(self) -> None:
        """Keep a byte copy of the committed clone as it is now, for the revert leg to continue
        from (`take_branch`): one apply (and its read) serves the restore and revert legs.

        The clone is closed (a committed apply closes its connection), so its files are the
        whole state; the copy is hashed against the clone and refused unless equal, as every
        copy of the snapshot is. The report carries the revert leg's after_apply over from the
        restore leg's (docs/report.md, `carried`)."""
        self._progress("copying the applied clone for the revert leg")
        self._drop_branch()
        for suffix in ("", "-wal"):
            source = self.clone.with_name(self.clone.name + suffix)
            if not source.exists():
                continue
            target = self._branch_path.with_name(self._branch_path.name + suffix)
            shutil.copyfile(source, target)
            target.chmod(0o600)
            if _file_blake3(target) != _file_blake3(source):
                what = suffix or "database"
                raise EnvironmentProblemError(
                    f"the copy of the applied clone does not match it byte for byte ({what})"
                )
        self._branched = True

    def take_branch(self) -> None:
        """Make the copy `branch` kept the working clone."""
        assert self._branched, "take_branch without branch"
        self._check_static_isolation()
        for suffix in ("-journal", "-wal", "-shm"):
            self.clone.with_name(self.clone.name + suffix).unlink(missing_ok=True)
        wal = self._branch_path.with_name(self._branch_path.name + "-wal")
        if wal.exists():
            os.replace(wal, self.clone.with_name(self.clone.name + "-wal"))
        os.replace(self._branch_path, self.clone)
        self._branched = False

    def _drop_branch(self) -> None:
        for suffix in ("", "-wal"):
            self._branch_path.with_name(self._branch_path.name + suffix).unlink(missing_ok=True)
        self._branched = False

    def _before_workers(self) -> None:
        """Let a background copy finish before a fingerprint may fork worker processes: no
        thread of ours is alive across a fork (a child inherits only the forking thread)."""
        if self._spare is not None:
            self._spare.wait()

    def _page_proofs(self) -> PageProofs:
        self.snapshot_fingerprint()
        assert self._pages is not None
        return self._pages

    def fingerprint_clone(self, reuse: Reuse | None = None) -> Fingerprint:
        """Fingerprint the committed clone; with `reuse`, written tables may be page-proven.

        One read transaction covers the whole fingerprint, so page digests and rows are read
        from one state. Without `reuse` (full fingerprints) every table is read.
        """
        self._before_workers()
        with contextlib.closing(connect_read_only(self.clone, functions=True)) as conn:
            conn.execute("BEGIN")
            try:
                return fingerprint_connection(
                    conn,
                    reuse=reuse,
                    parallel_path=self.clone,
                    pages=None if reuse is None else self._page_proofs(),
                )
            finally:
                conn.execute("COMMIT")

    # -- scripts --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _clone_connection(
        self, settings: Mapping[str, bool]
    ) -> Iterator[tuple[sqlite3.Connection, dict[str, Any]]]:
        # The authorizer is installed after the settings pragmas, which are rollproof's own.
        # Opened where no registration of rollproof's C functions can be active (the change
        # must fail on them here as in production).
        conn = rowcodec.connect_without_functions(
            lambda: sqlite3.connect(self.clone, isolation_level=None)
        )
        try:
            # The clone is disposable: syncing it to disk protects against power loss, which a
            # rehearsal does not survive anyway, and changes no statement's result. It halved
            # the time of the benchmark's change.
            conn.execute("PRAGMA synchronous = OFF")
            applied: dict[str, Any] = {}
            for key, value in sorted(settings.items()):
                conn.execute(f"PRAGMA {key} = {'ON' if value else 'OFF'}")
                applied[key] = bool(conn.execute(f"PRAGMA {key}").fetchone()[0])
            conn.set_authorizer(authorizer_for(self.guard))
            yield conn, applied
        finally:
            conn.close()

    def _execute(
        self,
        conn: sqlite3.Connection,
        role: str,
        statements: Sequence[str],
        in_txn: bool,
        meter: SqliteMeter | None = None,
    ) -> ScriptOutcome:
        """Run the statements in order. A denied statement does not run, and the script goes
        on past it only to collect every other denial (the leg fails either way): a change is
        declared in one run, not one denial per run. Other errors after a denial are
        consequences of the skipped statement and are not reported. A verify statement's rows
        are read to the end (an error in any row fails it) and counted, never kept."""
        denials: list[str] = []
        rows: list[StatementRows] = []
        ran = 0
        for i, stmt in enumerate(statements, 1):
            if self.guard is not None:
                self.guard.at(role, i)
            head = _head(stmt)
            if in_txn and _TXN_CONTROL.match(head):
                return ScriptOutcome(
                    i - 1,
                    not_applicable=(
                        "the script manages its own transaction "
                        f"(statement {i}: `{_short(stmt)}`); "
                        "a BEGIN..ROLLBACK around it would not be the transaction it runs in"
                    ),
                )
            if in_txn and _NOT_IN_TXN.match(head):
                return ScriptOutcome(
                    i - 1,
                    not_applicable=(
                        f"statement {i} `{_short(stmt)}` cannot run, or does nothing, "
                        "inside a transaction"
                    ),
                )
            elapsed_us = 0
            try:
                if meter is not None and not denials:
                    meter.before(conn)
                started = time.perf_counter_ns()
                cursor = conn.execute(stmt)
                elapsed_us = (time.perf_counter_ns() - started) // 1000
                if role == "verify" and cursor.description is not None:
                    returned = sum(1 for _row in cursor)
                    if returned:
                        rows.append(StatementRows(i, _short(stmt), returned))
            except sqlite3.Error as e:
                if error_name(e) in MACHINE_ERRORS:
                    # The disk or memory ran out under the script: the machine's failure, not
                    # the change's. Raised, so it ends as exit 4 and no packet says FAIL.
                    raise
                denied = [] if self.guard is None else self.guard.denials_at(role, i)
                if denied:
                    why = "; ".join(d.reason for d in denied)
                    denials.append(f"statement {i} `{_short(stmt)}` was denied: {why}")
                    continue
                if denials:
                    continue
                return ScriptOutcome(i - 1, error=_script_error(i, stmt, e), rows=tuple(rows))
            if not denials:
                ran = i
                if meter is not None:
                    meter.after(conn, i, stmt, elapsed_us)
        if denials:
            return ScriptOutcome(ran, error="; ".join(denials), rows=tuple(rows))
        return ScriptOutcome(len(statements), rows=tuple(rows))

    def _authorizing(self, conn: sqlite3.Connection, on: bool) -> None:
        """The change's authorizer on (its statements) or off (rollproof's own reads)."""
        conn.set_authorizer(authorizer_for(self.guard) if on else None)

    def run_script(self, role: str, script: Script, settings: Mapping[str, bool]) -> ScriptOutcome:
        with self._clone_connection(settings) as (conn, applied):
            outcome = self._execute(conn, role, split_sqlite(script.text), in_txn=False)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
                if outcome.ok:
                    return ScriptOutcome(
                        outcome.statements_run,
                        settings=applied,
                        error=("the script left a transaction open; it was rolled back"),
                    )
            return ScriptOutcome(
                outcome.statements_run, outcome.error, outcome.not_applicable, applied
            )

    def run_in_transaction(
        self, script: Script, settings: Mapping[str, bool], reuse_from: Fingerprint | None = None
    ) -> TransactionOutcome:
        meter = SqliteMeter(self.clone, self._authorizing)
        with self._clone_connection(settings) as (conn, applied):
            conn.execute("BEGIN")
            outcome = self._execute(
                conn, "apply", split_sqlite(script.text), in_txn=True, meter=meter
            )
            after: Fingerprint | None = None
            if outcome.ok and not conn.in_transaction:
                outcome = ScriptOutcome(
                    outcome.statements_run,
                    not_applicable="the transaction ended while the script ran",
                )
            elif outcome.ok:
                # The fingerprint is rollproof's own read, not the change's: no authorizer.
                conn.set_authorizer(None)
                written = None if self.guard is None else self.guard.written_by("apply")
                reuse = (
                    None if reuse_from is None or written is None else Reuse(reuse_from, written)
                )
                after = self._fingerprint_in_transaction(conn, reuse)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return TransactionOutcome(
                ScriptOutcome(
                    outcome.statements_run, outcome.error, outcome.not_applicable, applied
                ),
                after,
                meter.result() if outcome.ok else None,
            )

    def _fingerprint_in_transaction(
        self, conn: sqlite3.Connection, reuse: Reuse | None
    ) -> Fingerprint:
        """The clone as the open transaction sees it. `conn` runs the change's SQL and never has
        rollproof's C functions, so where the tables to read are large enough that it pays, the
        rows are read from a copy of exactly that view (`Connection.serialize`, which serves the
        connection's own uncommitted pages): a file the fingerprint's worker processes read
        (`_transaction_copy`), or, for a smaller database, an in-memory database this process
        reads with the functions (`_transaction_view`). The schema, header and sequences are
        read through `conn` either way. Otherwise the rows are read through `conn` in Python."""
        estimate = self._read_estimate(conn, reuse)
        copy = None if estimate is None else self._transaction_copy(conn, *estimate)
        if copy is not None:
            try:
                return fingerprint_connection(conn, reuse=reuse, parallel_path=copy)
            finally:
                copy.unlink(missing_ok=True)
        view = None if estimate is None else self._transaction_view(conn, *estimate)
        if view is None:
            return fingerprint_connection(conn, reuse=reuse)
        with contextlib.closing(view):
            return fingerprint_connection(conn, reuse=reuse, rows_from=view)

    def _read_estimate(
        self, conn: sqlite3.Connection, reuse: Reuse | None
    ) -> tuple[int, int, int] | None:
        """(the database's bytes, the rows the fingerprint will read, their bytes by estimate),
        or None where a copy cannot be made (no C accelerator to read it with; a Python built
        against a SQLite before 3.23, no `serialize`) or there is nothing to read."""
        from rollproof.engines.sqlite import rowcodec

        if rowcodec.extension_path() is None or not hasattr(conn, "serialize"):
            return None
        page_size = int(conn.execute("PRAGMA main.page_size").fetchone()[0])
        size = page_size * int(conn.execute("PRAGMA main.page_count").fetchone()[0])
        if size > TRANSACTION_COPY_MAX_BYTES:
            return None
        if reuse is not None:
            # What will be read: the written tables as they are now (counted, new ones too),
            # against every table's rows (the others as the earlier fingerprint counted them).
            rows = {name.lower(): t.rows for name, t in reuse.base.tables.items()}
            now = [
                str(name)
                for (name,) in conn.execute(
                    "SELECT name FROM main.sqlite_schema WHERE type = 'table'"
                )
                if str(name).lower() in reuse.written
            ]
            for name in now:
                rows[name.lower()] = _count_rows(conn, name)
            total = sum(rows.values())
            written = sum(rows[name.lower()] for name in now)
        else:
            names = conn.execute(
                "SELECT name FROM main.sqlite_schema WHERE type = 'table'"
            ).fetchall()
            total = written = sum(_count_rows(conn, str(n)) for (n,) in names)
        if total == 0 or written == 0:
            return None
        return size, written, size * written // total

    def _transaction_copy(
        self, conn: sqlite3.Connection, size: int, rows: int, nbytes: int
    ) -> Path | None:
        """A file holding the transaction's view of the clone for the worker processes, or None
        where that costs more than reading in this process.

        The header's journal bytes are set to the rollback journal's so that read-only workers
        can open it (whether the database is in WAL mode is read from `conn`, never from the
        copy: the workers read rows only). Made only when the extension is built, the database
        is at least PARALLEL_MIN_BYTES and fits in TRANSACTION_COPY_MAX_BYTES of memory, and
        copying it and reading the tables from the copy is estimated to cost less than reading
        them here (`_copy_pays`)."""
        from rollproof.engines.sqlite import rowcodec

        if rowcodec.extension_path() is None or size < PARALLEL_MIN_BYTES:
            return None
        if not _copy_pays(size, rows, nbytes):
            return None
        self._before_workers()  # the copy's readers are forked: no thread of ours may run
        self._progress("copying the open transaction's view for the fingerprint's workers")
        copy = self.workspace / "in-transaction.db"
        with open(os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            data = conn.serialize(name="main")
            f.write(data)
            if data[18:20] != b"\x01\x01":  # WAL: the workers read it as a rollback journal's
                f.seek(18)
                f.write(b"\x01\x01")
            del data
        return copy

    def _transaction_view(
        self, conn: sqlite3.Connection, size: int, rows: int, nbytes: int
    ) -> sqlite3.Connection | None:
        """An in-memory database holding the transaction's view of the clone, on a read-only
        connection with rollproof's C functions and inside a read transaction, or None where
        that cannot be had (no functions in this Python's SQLite, or no `deserialize`) or costs
        more than reading through `conn` (`_view_pays`). The copy's header says rollback
        journal, as the file copy's does; the view is at most VIEW_MAX_BYTES."""
        from rollproof.engines.sqlite import rowcodec

        if size > VIEW_MAX_BYTES or not hasattr(conn, "deserialize"):
            return None
        if not rowcodec.host_available() or not _view_pays(size, rows, nbytes):
            return None
        view = rowcodec.connect_with_functions(
            lambda: sqlite3.connect(":memory:", isolation_level=None, factory=_View)
        )
        try:
            if not rowcodec.has_functions(view):
                view.close()
                return None
            self._progress("copying the open transaction's view into memory to read it")
            data = bytearray(conn.serialize(name="main"))
            data[18:20] = b"\x01\x01"  # the rollback journal's, whatever `conn` uses
            view.deserialize(data)
            del data
            view.execute("PRAGMA query_only = ON")
            view.execute("BEGIN")
        except BaseException:
            view.close()
            raise
        return view

    def run_read_only(
        self, script: Script | None, entry_reuse: Reuse | None = None
    ) -> ReadOnlyOutcome:
        self._before_workers()
        with contextlib.closing(connect_read_only(self.clone)) as conn:
            entry = fingerprint_connection(conn, reuse=entry_reuse, parallel_path=self.clone)
            outcome: ScriptOutcome | None = None
            if script is not None:
                conn.set_authorizer(authorizer_for(self.guard))
                outcome = self._execute(conn, "verify", split_sqlite(script.text), in_txn=False)
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                conn.set_authorizer(None)
            # The connection is read-only (mode=ro, query_only), so verify wrote nothing, and
            # whatever it tried to write is in the guard's record for "verify".
            written = None if self.guard is None else self.guard.written_by("verify")
            exit_reuse = None if written is None else Reuse(entry, written)
            exit_fp = fingerprint_connection(conn, reuse=exit_reuse, parallel_path=self.clone)
        return ReadOnlyOutcome(entry, outcome, exit_fp)

    def explain(self, differences: Sequence[Difference]) -> list[Difference]:
        with contextlib.closing(connect_read_only(self.clone)) as conn:
            conn.execute("ATTACH DATABASE ? AS before", (read_only_uri(self.snapshot),))
            return explain_differences(conn, differences)

    def set_aside(self) -> None:
        """Keep a copy of the clone as it is now, for `explain_set_aside` (rehearse.rerun
        compares two applies of a non-deterministic change)."""
        shutil.copyfile(self.clone, self.workspace / "aside.db")

    def explain_set_aside(self, differences: Sequence[Difference]) -> list[Difference]:
        """`explain`, with the copy `set_aside` kept in place of the snapshot as `before`."""
        with contextlib.closing(connect_read_only(self.clone)) as conn:
            aside = read_only_uri(self.workspace / "aside.db")
            conn.execute("ATTACH DATABASE ? AS before", (aside,))
            return explain_differences(conn, differences)

    def close(self, *, keep: bool) -> Path | None:
        if self._spare is not None:
            self._spare.wait()  # its file is in the workspace: let the copy end first
            self._spare = None
            self._spare_path.unlink(missing_ok=True)
        if keep:
            self._claim.keep()
            return self.workspace
        self.snapshot.chmod(0o600)
        shutil.rmtree(self.workspace, ignore_errors=True)
        self._claim.release()
        return None
