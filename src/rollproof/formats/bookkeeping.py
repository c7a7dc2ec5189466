"""Which migrations a source already has, read (read-only) from its tool's bookkeeping.

sqitch          its registry, a separate SQLite file beside the target (`sqitch.db`, or
                sqitch.conf `engine.sqlite.registry`): as sqitch decides, the project's last
                committed row of `changes` names the current change (by change id, which the
                loader computes as sqitch does); it and every change before it in the plan are
                deployed. An id not in the plan is refused, as sqitch refuses it. No registry
                file: not known (give --from).
Flyway          `flyway_schema_history`, in installed_rank order: versioned rows (SQL, JDBC)
                add their version, UNDO rows and DELETE rows take it away, a BASELINE row
                deploys every version up to its own; a repeatable migration is deployed when a
                row has its description. A failed row (success = false) is refused: Flyway
                will not migrate until it is repaired.
Liquibase       `DATABASECHANGELOG`: a changeset is deployed when a row has its ID and AUTHOR
                and a FILENAME that is its changelog's path relative to the directory, or ends
                with `/` and that path (Liquibase records the path as it was given), or its
                logicalFilePath. EXECUTED, RERAN and MARK_RAN rows count; a FAILED row is
                refused.
golang-migrate  `schema_migrations(version, dirty)`: one row, the current version; every
                migration up to it is deployed. A dirty version is refused: a failed migration
                left the database half-way and no position is known.
dbmate          `schema_migrations(version)`: one row per deployed version.
goose           `goose_db_version(version_id, is_applied)`: the last row of each version says.
Alembic         `alembic_version(version_num)`: the heads; every revision that is a head or an
                ancestor of one (down revisions and `depends_on`) is deployed. A head not in
                the script directory is refused, as Alembic refuses it.

A table the tool would create on its first run that is absent means nothing is deployed. On a
PostgreSQL source the tables are the ones the session's search_path finds (where the tools make
them by default), read in a session the server confirms read-only; sqitch's registry is the
schema `sqitch` (sqitch.conf `engine.pg.registry`) of the target database itself.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from rollproof.core.errors import SourceError
from rollproof.engines.sqlite.source import connect_read_only, parse_sqlite_dsn
from rollproof.formats.flyway import version_key
from rollproof.formats.model import Migration, Project


def is_postgres(dsn: str) -> bool:
    return dsn.startswith(("postgres://", "postgresql://"))


class _Db(Protocol):
    """The few reads the bookkeeping needs, in either dialect."""

    shown: str

    def tables(self) -> dict[str, str]:
        """Lower-cased table name -> the name as the database spells it."""
        ...

    def columns(self, table: str) -> set[str]: ...

    def qualified(self, table: str) -> str:
        """`table` (as the database spells it) quoted, in its schema when there is one."""
        ...

    def rows(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """`query` with `?` placeholders."""
        ...


class _SqliteDb:
    def __init__(self, conn: sqlite3.Connection, shown: str) -> None:
        self.conn, self.shown = conn, shown

    def tables(self) -> dict[str, str]:
        rows = self.conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")
        return {str(r[0]).lower(): str(r[0]) for r in rows.fetchall()}

    def columns(self, table: str) -> set[str]:
        rows = self.conn.execute(f"PRAGMA table_info({self.qualified(table)})").fetchall()
        return {str(r[1]).lower() for r in rows}

    def qualified(self, table: str) -> str:
        return '"' + table.replace('"', '""') + '"'

    def rows(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.conn.execute(query, tuple(params)).fetchall()]


class _PgDb:
    """A read-only PostgreSQL session (the server confirms it); `schema` None: the tables the
    search_path finds, else that schema's."""

    def __init__(self, conn: Any, shown: str, schema: str | None = None) -> None:
        self.conn, self.shown, self.schema = conn, shown, schema

    def tables(self) -> dict[str, str]:
        params: tuple[str, ...] = ()
        if self.schema is None:
            where = "pg_catalog.pg_table_is_visible(c.oid)"
        else:
            where, params = "n.nspname = %s", (self.schema,)
        rows = self.conn.execute(
            "SELECT c.relname FROM pg_catalog.pg_class c "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            f"WHERE c.relkind IN ('r', 'p', 'v') AND {where}",
            params,
        ).fetchall()
        return {str(r[0]).lower(): str(r[0]) for r in rows}

    def columns(self, table: str) -> set[str]:
        rows = self.conn.execute(
            "SELECT a.attname FROM pg_catalog.pg_attribute a "
            "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped",
            (self.qualified(table),),
        ).fetchall()
        return {str(r[0]).lower() for r in rows}

    def qualified(self, table: str) -> str:
        quoted = '"' + table.replace('"', '""') + '"'
        if self.schema is None:
            return quoted
        return '"' + self.schema.replace('"', '""') + '".' + quoted

    def rows(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.conn.execute(query.replace("?", "%s"), params).fetchall()]


def sqitch_registry(source: Path, registry: str) -> Path:
    """Where sqitch keeps the registry of the SQLite target `source` (App::Sqitch's
    `registry_uri`): an absolute registry as it is; else beside the target, named `registry`,
    with the target's extension when `registry` has none and the target has one."""
    if Path(registry).is_absolute():
        return Path(registry)
    name = source.name
    if "." in registry or "." not in name:
        return source.with_name(registry)
    return source.with_name(f"{registry}.{name.split('.', 1)[1]}")


def deployed_ids(project: Project, dsn: str) -> frozenset[str] | None:
    """The ids of the project's migrations the source records as deployed, or None when
    rollproof cannot read that from this source."""
    if project.bookkeeping is None:
        return None
    if is_postgres(dsn):
        return _postgres(project, dsn)
    path = parse_sqlite_dsn(dsn)
    if not path.is_file():
        raise SourceError(f"source {path}: no such file")
    if project.format == "sqitch":
        registry = sqitch_registry(path, project.options.get("registry", "sqitch"))
        if not registry.is_file():
            return None  # sqitch has no registry here: "not initialized for Sqitch"
        with contextlib.closing(connect_read_only(registry)) as conn:
            try:
                return _sqitch(project, _SqliteDb(conn, f"sqitch registry {registry}"))
            except sqlite3.Error as e:
                raise SourceError(f"sqitch registry {registry}: cannot read it: {e}") from e
    with contextlib.closing(connect_read_only(path)) as conn:
        try:
            return _read(project, _SqliteDb(conn, f"source {path}"))
        except sqlite3.Error as e:
            raise SourceError(f"source {path}: cannot read {project.bookkeeping}: {e}") from e


@contextlib.contextmanager
def _pg_session(dsn: str) -> Iterator[tuple[Any, str]]:
    import psycopg

    from rollproof.engines.postgres.conn import connect_source, describe_error, parse_pg_dsn

    target = parse_pg_dsn(dsn)
    conn = connect_source(target)  # refused unless the server confirms read-only
    try:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield conn, f"source {target.shown}"
        conn.execute("ROLLBACK")
    except psycopg.Error as e:
        raise SourceError(
            f"source {target.shown}: cannot read the migration tool's bookkeeping: "
            f"{describe_error(e)}"
        ) from None
    finally:
        conn.close()


def _postgres(project: Project, dsn: str) -> frozenset[str] | None:
    with _pg_session(dsn) as (conn, shown):
        if project.format == "sqitch":
            schema = project.options.get("pg_registry", "sqitch")
            db = _PgDb(conn, f"sqitch registry {shown} (schema {schema})", schema)
            return _sqitch(project, db)
        return _read(project, _PgDb(conn, shown))


def _sqitch(project: Project, db: _Db) -> frozenset[str]:
    tables = db.tables()
    if "changes" not in tables:
        return frozenset()  # sqitch has never deployed here
    name = project.options.get("project", "")
    table = db.qualified(tables["changes"])
    found = db.rows(
        f"SELECT change_id, change FROM {table} WHERE project = ? "
        "ORDER BY committed_at DESC LIMIT 1",
        (name,),
    )
    if not found:
        return frozenset()
    change_id, change = str(found[0][0]), str(found[0][1])
    for i, m in enumerate(project.migrations):
        if m.version == change_id:
            return frozenset(x.id for x in project.migrations[: i + 1])
    raise SourceError(
        f"{db.shown}: the last change deployed, {change} ({change_id}), is not in "
        f"{project.options.get('plan', 'sqitch.plan')}: sqitch refuses this too "
        "(cannot find the change in the plan)"
    )


def _read(project: Project, db: _Db) -> frozenset[str] | None:
    wanted = project.bookkeeping
    assert wanted is not None
    tables = db.tables()
    if wanted.lower() not in tables:
        return frozenset()  # the tool has never run here: nothing is deployed
    table = db.qualified(tables[wanted.lower()])
    shown = db.shown
    versions = {m.version: m.id for m in project.migrations if m.version is not None}
    if project.format == "golang-migrate":
        if "dirty" not in db.columns(tables[wanted.lower()]):
            raise SourceError(f"{shown}: {wanted} is not golang-migrate's (no dirty column)")
        rows = db.rows(f"SELECT version, dirty FROM {table}")
        if not rows:
            return frozenset()
        if len(rows) > 1:
            raise SourceError(f"{shown}: {wanted} has {len(rows)} rows, golang-migrate 1")
        current, dirty = int(rows[0][0]), bool(rows[0][1])
        if dirty:
            raise SourceError(
                f"{shown}: golang-migrate marks version {current} dirty (a migration "
                "failed half-way); fix the database before rehearsing what comes next"
            )
        return frozenset(m.id for m in project.migrations if int(m.version or 0) <= current)
    if project.format == "dbmate":
        rows = db.rows(f"SELECT version FROM {table}")
        return frozenset(versions[str(r[0])] for r in rows if str(r[0]) in versions)
    if project.format == "goose":
        state: dict[str, bool] = {}
        for version_id, applied in db.rows(
            f"SELECT version_id, is_applied FROM {table} ORDER BY id"
        ):
            state[str(version_id)] = bool(applied)
        return frozenset(versions[v] for v, on in state.items() if on and v in versions)
    if project.format == "flyway":
        return _flyway(project, db, table)
    if project.format == "liquibase":
        return _liquibase(project, db, table)
    if project.format == "alembic":
        return _alembic(project, db, table)
    return None


_FLYWAY_UNDO = ("UNDO_SQL", "UNDO_JDBC", "UNDO_SCRIPT", "DELETE")


def _flyway(project: Project, db: _Db, table: str) -> frozenset[str]:
    shown = db.shown
    rows = db.rows(
        "SELECT installed_rank, version, description, type, script, success "
        f"FROM {table} ORDER BY installed_rank"
    )
    applied: set[tuple[int, ...]] = set()
    baseline: tuple[int, ...] | None = None
    repeatable: set[str] = set()
    for rank, version, description, kind, script, success in rows:
        kind = str(kind).upper()
        if kind == "SCHEMA":
            continue  # Flyway's marker that it created the schema
        if not success:
            raise SourceError(
                f"{shown}: flyway_schema_history row {rank} ({kind} "
                f"{version or description}, {script}) failed (success = false): Flyway will "
                "not migrate until it is repaired (flyway repair)"
            )
        if version is None:
            repeatable.add(str(description))
            continue
        try:
            key = version_key(str(version))
        except ValueError:
            raise SourceError(
                f"{shown}: flyway_schema_history row {rank}: version {version!r} is not "
                "numbers separated by . or _"
            ) from None
        if kind == "BASELINE":
            baseline = key
        elif kind in _FLYWAY_UNDO:
            applied.discard(key)
        else:
            applied.add(key)
    out = set()
    for m in project.migrations:
        if m.version is None:
            if m.name in repeatable:
                out.add(m.id)
            continue
        key = version_key(m.version)
        if key in applied or (baseline is not None and key <= baseline):
            out.add(m.id)
    return frozenset(out)


_LIQUIBASE_RAN = ("EXECUTED", "RERAN", "MARK_RAN")


def _liquibase_path(recorded: str) -> str:
    text = recorded.replace("\\", "/")
    text = text.removeprefix("classpath:").removeprefix("file:")
    return str(PurePosixPath(text)).lstrip("/")


def _liquibase(project: Project, db: _Db, table: str) -> frozenset[str]:
    shown = db.shown
    rows = db.rows(f"SELECT ID, AUTHOR, FILENAME, EXECTYPE FROM {table} ORDER BY ORDEREXECUTED")
    ran: set[tuple[str, str, str]] = set()
    for cid, author, filename, exectype in rows:
        kind = str(exectype).upper()
        if kind == "FAILED":
            raise SourceError(
                f"{shown}: DATABASECHANGELOG records changeset {author}:{cid} "
                f"({filename}) as FAILED: fix the database before rehearsing what comes next"
            )
        if kind in _LIQUIBASE_RAN:
            ran.add((str(cid), str(author), _liquibase_path(str(filename))))
    out = set()
    for m in project.migrations:
        cid, author, filename = m.record
        want = _liquibase_path(filename)
        for rid, rauthor, rpath in ran:
            if (rid, rauthor) == (cid, author) and (rpath == want or rpath.endswith("/" + want)):
                out.add(m.id)
                break
    return frozenset(out)


def _ancestors(heads: Iterable[str], migrations: Iterable[Migration]) -> set[str]:
    parents = {m.id: m.requires for m in migrations}
    seen: set[str] = set()
    todo = list(heads)
    while todo:
        rev = todo.pop()
        if rev in seen:
            continue
        seen.add(rev)
        todo.extend(parents.get(rev, ()))
    return seen


def _alembic(project: Project, db: _Db, table: str) -> frozenset[str]:
    shown = db.shown
    heads = [str(r[0]) for r in db.rows(f"SELECT version_num FROM {table}")]
    ids = {m.id for m in project.migrations}
    for head in heads:
        if head not in ids:
            raise SourceError(
                f"{shown}: alembic_version names revision {head!r}, which is not in "
                f"the script directory ({project.options.get('script_location', '?')}): "
                "Alembic cannot locate it either"
            )
    return frozenset(_ancestors(heads, project.migrations) & ids)
