"""Which migrations a source already has, read (read-only) from its tool's bookkeeping table.

golang-migrate  `schema_migrations(version, dirty)`: one row, the current version; every
                migration up to it is deployed. A dirty version is refused: a failed migration
                left the database half-way and no position is known.
dbmate          `schema_migrations(version)`: one row per deployed version.
goose           `goose_db_version(version_id, is_applied)`: the last row of each version says.

SQLite sources only. sqitch (its registry lives in another database), Flyway
(`flyway_schema_history`) and PostgreSQL sources answer None: give `--from`.
"""

from __future__ import annotations

import contextlib
import sqlite3

from rollproof.core.errors import SourceError
from rollproof.engines.sqlite.session import connect_read_only, parse_sqlite_dsn
from rollproof.formats.model import Project


def is_postgres(dsn: str) -> bool:
    return dsn.startswith(("postgres://", "postgresql://"))


def _tables(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'").fetchall()
    return {str(r[0]) for r in rows}


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {str(r[1]) for r in conn.execute(f'PRAGMA table_info("{table}")').fetchall()}


def deployed_ids(project: Project, dsn: str) -> frozenset[str] | None:
    """The ids of the project's migrations the source records as deployed, or None when
    rollproof cannot read that from this source."""
    if project.bookkeeping is None or is_postgres(dsn):
        return None
    path = parse_sqlite_dsn(dsn)
    if not path.is_file():
        raise SourceError(f"source {path}: no such file")
    with contextlib.closing(connect_read_only(path)) as conn:
        try:
            return _read(project, conn, str(path))
        except sqlite3.Error as e:
            raise SourceError(f"source {path}: cannot read {project.bookkeeping}: {e}") from e


def _read(project: Project, conn: sqlite3.Connection, shown: str) -> frozenset[str] | None:
    table = project.bookkeeping
    assert table is not None
    if table not in _tables(conn):
        return frozenset()  # the tool has never run here: nothing is deployed
    versions = {m.version: m.id for m in project.migrations if m.version is not None}
    if project.format == "golang-migrate":
        if "dirty" not in _columns(conn, table):
            raise SourceError(f"source {shown}: {table} is not golang-migrate's (no dirty column)")
        rows = conn.execute(f"SELECT version, dirty FROM {table}").fetchall()
        if not rows:
            return frozenset()
        if len(rows) > 1:
            raise SourceError(f"source {shown}: {table} has {len(rows)} rows, golang-migrate 1")
        current, dirty = int(rows[0][0]), bool(rows[0][1])
        if dirty:
            raise SourceError(
                f"source {shown}: golang-migrate marks version {current} dirty (a migration "
                "failed half-way); fix the database before rehearsing what comes next"
            )
        return frozenset(m.id for m in project.migrations if int(m.version or 0) <= current)
    if project.format == "dbmate":
        rows = conn.execute(f"SELECT version FROM {table}").fetchall()
        return frozenset(versions[str(r[0])] for r in rows if str(r[0]) in versions)
    if project.format == "goose":
        state: dict[str, bool] = {}
        for version_id, applied in conn.execute(
            f"SELECT version_id, is_applied FROM {table} ORDER BY id"
        ).fetchall():
            state[str(version_id)] = bool(applied)
        return frozenset(versions[v] for v, on in state.items() if on and v in versions)
    return None
