"""Database engines: the only modules that know a SQL dialect.

`base.py` is the protocol the rehearsal drives; `sqlite/` and `postgres/` each hold everything
that knows their dialect. `reader_for` is how the dialect-free layers ask an engine to read SQL
text: they name a dialect and never import the dialect's module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from rollproof.core.dumps import SQLITEDUMP, dump_scheme, parse_dump_dsn
from rollproof.core.errors import UsageError
from rollproof.core.surface import POSTGRESQL, Catalog, Risk, StatementScope


class SqlReader(Protocol):
    """Reads a script's text in one dialect, without running it."""

    def static_scope(self, sql: str) -> tuple[StatementScope, ...]: ...

    def lint_destructive(self, sql: str) -> tuple[Risk, ...]: ...


class _PostgresReader:
    def static_scope(self, sql: str) -> tuple[StatementScope, ...]:
        from rollproof.engines.postgres import scope

        return scope.static_scope(sql)

    def lint_destructive(self, sql: str) -> tuple[Risk, ...]:
        from rollproof.engines.postgres import scope

        return scope.lint_destructive(sql)


class _SqlglotReader:
    def __init__(self, dialect: str) -> None:
        self.dialect = dialect

    def static_scope(self, sql: str) -> tuple[StatementScope, ...]:
        from rollproof.engines import sqlglot_scope

        return sqlglot_scope.static_scope(sql, dialect=self.dialect)

    def lint_destructive(self, sql: str) -> tuple[Risk, ...]:
        from rollproof.engines import sqlglot_scope

        return sqlglot_scope.lint_destructive(sql, dialect=self.dialect)


def reader_for(dialect: str) -> SqlReader:
    """The SQL reader of `dialect`: "postgresql" is PostgreSQL's own parser (pglast); any other
    name is a sqlglot dialect ("sqlite" for SQLite sources). An unknown name raises ValueError
    when the reader is first used."""
    if dialect == POSTGRESQL:
        return _PostgresReader()
    return _SqlglotReader(dialect)


def read_catalog(dsn: str) -> Catalog:
    """What the source database makes for its objects (automatic indexes, owned sequences and
    sequences defaults call, TOAST, foreign keys), read from its catalog in a read-only
    session: the implicit objects a declaration covers (`core.surface.Implicit`)."""
    if dsn.startswith(("postgres://", "postgresql://")):
        from rollproof.engines.postgres import implicit as pg_implicit

        return pg_implicit.read_catalog(dsn)
    from rollproof.engines.sqlite import implicit as sqlite_implicit
    from rollproof.engines.sqlite.source import parse_sqlite_dsn

    scheme = dump_scheme(dsn)
    if scheme == SQLITEDUMP:
        return sqlite_implicit.read_catalog(Path(parse_dump_dsn(dsn).path))
    if scheme is not None:
        raise UsageError(
            f"source {dsn!r}: a pg_dump archive has no catalog until it is restored; "
            "`rollproof rehearse` reads it from the restored copy"
        )
    return sqlite_implicit.read_catalog(parse_sqlite_dsn(dsn))
