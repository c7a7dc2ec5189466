"""Positions: the source with every earlier migration applied, where a migration is rehearsed.

The source itself is the first position (nothing applied yet): a migration rehearsed there is
rehearsed against the source, so its packet's commands.sh and RERUN.sh reproduce it. Every
later position is private and removed after the run:

SQLite      a copy of the source (SQLite's backup API over a read-only connection) with the
            earlier migrations applied; the position's rehearsal source is that file.
PostgreSQL  the engine's own clone (a `PostgresSession` without a guard: the source read in a
            read-only snapshot, pg_dump'd and restored on the scratch server, its working clone
            made from that snapshot), with the earlier migrations applied in the clone; each
            position is handed to the rehearsal as a pg_dump archive of the clone
            (`pgdump:PATH`), restored on the scratch server like any dump source.

The source is only read: SQLite by its bytes' sha256, PostgreSQL by its content fingerprint
(read-only transactions), each taken before and after the run.

Kept positions (`keep`, `rehearse-dir --keep-positions DIR`): each later position is written
to DIR as a file of its own, `position-<n>.db` (a SQLite copy, made with the backup API) or
`position-<n>.dump` (the pg_dump archive), n the number of migrations applied to the source,
and handed to the rehearsal as a dump source (`sqlitedump:PATH`, `pgdump:PATH`). The packet
records it with its sha256 (`#sha256=`), so its RERUN.sh re-rehearses from that file and
refuses one that hashes differently. The cost is disk: one copy of the database per later
position.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from rollproof.core.errors import EnvironmentProblemError, UsageError
from rollproof.core.surface import POSTGRESQL, Catalog
from rollproof.engines import read_catalog
from rollproof.engines.sqlite.source import connect_read_only, parse_sqlite_dsn
from rollproof.formats.model import Migration

Say = Callable[[str], None]


class Positions(Protocol):
    """Where each migration of a range is rehearsed."""

    dialect: str
    proof: str
    """What `digest` is: "sha256" (a file's bytes) or "content fingerprint"."""
    start: str
    """The source the range's own round trip is given (after `mark_start`)."""

    def digest(self) -> str:
        """The source's digest, read-only."""
        ...

    def apply(self, m: Migration) -> None:
        """Apply `m` to the position: the next position."""
        ...

    def now(self) -> str:
        """The source a rehearsal at the current position is given."""
        ...

    def mark_start(self) -> None:
        """The current position is where the range starts."""
        ...

    def catalog(self, start: bool = False) -> Catalog:
        """The current position's catalog (or the range start's), read-only."""
        ...

    def close(self) -> None: ...


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class SqlitePositions:
    """Positions of a SQLite source: private file copies."""

    dialect = "sqlite"
    proof = "sha256"

    def __init__(self, source: str, private: Path, say: Say, keep: Path | None = None) -> None:
        self.source = source
        self.keep = keep
        self._applied = 0
        self._dirty = False
        self._start_catalog: str = source
        """What the range start's catalog is read from: the source, or a private copy."""
        self.path = parse_sqlite_dsn(source)
        if not self.path.is_file():
            raise UsageError(f"source {self.path}: no such file")
        self.private = private
        self.say = say
        self.position = private / "position.db"
        self.start: str = source
        self.current: str = source
        """What a rehearsal at the current position is given: the source until a migration
        has been applied, then the private copy."""
        self._copied = False

    def digest(self) -> str:
        return _sha256(self.path)

    def _copy(self) -> None:
        with (
            contextlib.closing(connect_read_only(self.path)) as ro,
            contextlib.closing(sqlite3.connect(self.position)) as copy,
        ):
            ro.backup(copy)
        self._copied = True

    def apply(self, m: Migration) -> None:
        if not self._copied:
            self._copy()
        with contextlib.closing(sqlite3.connect(self.position, isolation_level=None)) as conn:
            try:
                conn.executescript(m.apply.text)
            except sqlite3.Error as e:
                raise UsageError(
                    f"migration {m.id} ({m.apply.path}) cannot be applied to reach the next "
                    f"position: {e}"
                ) from e
        self._applied += 1
        self._dirty = True
        if self.keep is None:
            self.current = str(self.position)

    def now(self) -> str:
        if self.keep is not None and self._dirty:
            kept = self.keep / f"position-{self._applied}.db"
            with (
                contextlib.closing(connect_read_only(self.position)) as ro,
                contextlib.closing(sqlite3.connect(kept)) as copy,
            ):
                ro.backup(copy)
            self.current = f"sqlitedump:{kept}"
            self._dirty = False
        return self.current

    def mark_start(self) -> None:
        """The position the range starts from is the current one."""
        if not self._copied:
            return
        copy = self.private / "range-start.db"
        shutil.copyfile(self.position, copy)
        self._start_catalog = str(copy)
        self.start = self.now() if self.keep is not None else str(copy)

    def catalog(self, start: bool = False) -> Catalog:
        if start:
            return read_catalog(self._start_catalog)
        return read_catalog(str(self.position) if self._copied else self.source)

    def close(self) -> None:
        """Nothing held open between steps."""


class PostgresPositions:
    """Positions of a PostgreSQL source: the engine's clone on the scratch server."""

    dialect = POSTGRESQL
    proof = "content fingerprint"

    def __init__(
        self,
        source: str,
        scratch: str,
        private: Path,
        say: Say,
        workdir: Path | None,
        keep: Path | None = None,
    ) -> None:
        self.source = source
        self.keep = keep
        self._count = 0
        self.scratch_spec = scratch
        self.private = private
        self.say = say
        self.workdir = workdir
        self.start: str = source
        self.current: str = source
        self._start_catalog: Catalog | None = None
        self._session: Any = None
        self._dumps = 0
        self._applied = False
        """The clone has changed since `current` was dumped."""

    def digest(self) -> str:
        from rollproof.engines.postgres.source import fingerprint_source

        return fingerprint_source(self.source).digest

    def _clone(self) -> Any:
        """The engine's clone of the source, made once (first migration applied)."""
        if self._session is None:
            from rollproof.engines.postgres.session import PostgresSession

            self.say("cloning the source to build the positions after the first migration")
            session = PostgresSession(
                self.source, scratch=self.scratch_spec, workdir=self.workdir, progress=self.say
            )
            try:
                session.fresh_clone()
            except BaseException:
                session.close(keep=False)
                raise
            self._session = session
        return self._session

    def _target(self) -> Any:
        session = self._clone()
        return session.scratch.with_db(session.clone_db)

    def apply(self, m: Migration) -> None:
        import psycopg

        from rollproof.engines.postgres.conn import connect, describe_error
        from rollproof.engines.postgres.sql import split_postgres

        with contextlib.closing(connect(self._target(), what="scratch")) as conn:
            try:
                if m.no_transaction:
                    for stmt in split_postgres(m.apply.text):
                        conn.execute(stmt)
                else:
                    with conn.transaction():
                        for stmt in split_postgres(m.apply.text):
                            conn.execute(stmt)
            except psycopg.Error as e:
                raise UsageError(
                    f"migration {m.id} ({m.apply.path}) cannot be applied to reach the next "
                    f"position: {describe_error(e)}"
                ) from None
        self._applied = True
        self._count += 1

    def now(self) -> str:
        """The source a rehearsal at the current position is given (dumped when it changed)."""
        if self._applied:
            self.current = self._dump()
            self._applied = False
        return self.current

    def _dump(self) -> str:
        """The clone as it is now, as a pg_dump archive: the next rehearsal's source."""
        from rollproof.engines.postgres.conn import connect, resolved, subprocess_env
        from rollproof.engines.postgres.tools import find_tool, run_tool

        target = self._target()
        with contextlib.closing(connect(target, what="scratch")) as conn:
            child = resolved(conn, target)
        self._dumps += 1
        if self.keep is not None:
            path = self.keep / f"position-{self._count}.dump"
        else:
            path = self.private / f"position-{self._dumps}.dump"
        run = run_tool(
            [
                find_tool("pg_dump"),
                "--format=custom",
                "--no-password",
                f"--file={path}",
                f"--dbname={child.conninfo}",
            ],
            env=subprocess_env(child),
            secrets=child.secrets(),
            progress=self.say,
            label="pg_dump",
        )
        failure = run.failure("pg_dump of the position")
        if failure is not None:
            raise EnvironmentProblemError(failure)
        return f"pgdump:{path}"

    def mark_start(self) -> None:
        self.start = self.now()
        self._start_catalog = self.catalog()

    def catalog(self, start: bool = False) -> Catalog:
        if start and self._start_catalog is not None:
            return self._start_catalog
        if self.now() == self.source:
            return read_catalog(self.source)
        import psycopg

        from rollproof.engines.postgres.conn import connect, describe_error
        from rollproof.engines.postgres.implicit import catalog_from

        target = self._target()
        with contextlib.closing(connect(target, read_only=True, what="scratch")) as conn:
            try:
                return catalog_from(conn)
            except psycopg.Error as e:
                raise EnvironmentProblemError(
                    f"scratch {target.shown}: cannot read the position's catalog: "
                    f"{describe_error(e)}"
                ) from None

    def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            session.close(keep=False)
