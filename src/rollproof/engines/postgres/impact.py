"""Measuring what each statement of a change does to a PostgreSQL database while it runs.

    meter = PgMeter()
    meter.before(conn)                      # just before a statement runs
    meter.after(conn, index, text, us)      # just after it ran
    meter.result() -> Impact

The meter reads from the change's own connection, inside the transaction leg's still-open
transaction, between the change's statements: the only place where the locks the change holds,
the storage it replaced and the WAL it wrote can all be seen before commit (or, here, rollback).

* **Locks**: `pg_locks` rows of this backend (`pid = pg_backend_pid()`), relation locks only,
  on relations that existed before the change (one the change creates is invisible to every
  other session until commit, so nobody can wait on it). Per statement, the relations on which
  it took a mode stronger than the transaction held before it; every lock is held to commit.
* **Rewrites**: a relation whose `relfilenode` changed had its storage replaced (a table
  rewrite, an index rebuilt, a TRUNCATE); its size afterwards is `pg_relation_size`.
* **Indexes built**: an index the statement created, or whose storage it replaced.
* **WAL**: `pg_current_wal_insert_lsn()` just before and just after the statement. The figure is
  the server's: on a scratch server only this rehearsal writes to, it is the change's.

rollproof's own queries must not change the answer: they read only catalogs and `pg_locks`
(catalog relations are below `FirstNormalObjectId` and are not counted), and size only
relations the change already holds a lock on, or created, so the ACCESS SHARE lock
`pg_relation_size` takes is never a new lock on a relation the report lists. They run in a
savepoint, so a failure of theirs cannot abort the change's transaction; it ends the
measurement with the reason instead. TOAST relations and temporary objects are not listed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg

from rollproof.core.impact import (
    PG_LOCK_NAMES,
    Impact,
    Rewrite,
    StatementImpact,
    not_measured,
    stronger,
)
from rollproof.engines.postgres.sql import short

ENGINE = "postgresql"
FIRST_NORMAL_OID = 16384
"""PostgreSQL's FirstNormalObjectId: every object below it is the system's own."""

_RELATIONS = """
SELECT c.oid::bigint,
       CASE WHEN n.nspname = 'public' THEN c.relname ELSE n.nspname || '.' || c.relname END,
       c.relkind::text, c.relfilenode::bigint
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid >= 16384 AND n.nspname <> 'pg_toast'
  AND n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%'
"""
_LOCKS = """
SELECT l.relation::bigint, l.mode
FROM pg_catalog.pg_locks l
WHERE l.pid = pg_catalog.pg_backend_pid() AND l.locktype = 'relation' AND l.granted
  AND l.relation >= 16384
  AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d
                    WHERE d.datname = pg_catalog.current_database())
"""
_LSN = "SELECT pg_catalog.pg_current_wal_insert_lsn()::text"
_SETTINGS = (
    "SELECT pg_catalog.current_setting('wal_level'), pg_catalog.current_setting('server_version')"
)
_SIZE = "SELECT pg_catalog.pg_relation_size(%s::oid)"
_KINDS = {
    "r": "table",
    "p": "partitioned table",
    "m": "materialized view",
    "i": "index",
    "I": "partitioned index",
    "S": "sequence",
    "v": "view",
    "f": "foreign table",
    "c": "type",
}
_SAVEPOINT = "rollproof_impact"


def lsn_bytes(lsn: str) -> int:
    """A `pg_lsn` text (`16/B374D848`) as a byte position."""
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


@dataclass(frozen=True, slots=True)
class _Relation:
    name: str
    kind: str
    filenode: int


class PgMeter:
    """Measures the statements of one script on one connection (module docstring)."""

    def __init__(self) -> None:
        self._baseline: dict[int, _Relation] | None = None
        self._now: dict[int, _Relation] = {}
        self._held: dict[int, str] = {}
        self._lsn = 0
        self._statements: list[StatementImpact] = []
        self._settings: dict[str, str] = {}
        self._failed: str | None = None

    def before(self, conn: psycopg.Connection[Any]) -> None:
        if self._failed is not None:
            return
        with self._measuring(conn):
            if self._baseline is None:
                row = conn.execute(_SETTINGS).fetchone()
                if row is not None:
                    self._settings = {"wal_level": str(row[0]), "server_version": str(row[1])}
                self._baseline = self._relations(conn)
                self._now = dict(self._baseline)
            self._lsn = self._insert_lsn(conn)

    def after(self, conn: psycopg.Connection[Any], index: int, text: str, duration_us: int) -> None:
        if self._failed is not None or self._baseline is None:
            return
        with self._measuring(conn):
            wal = self._insert_lsn(conn) - self._lsn
            locks = self._new_locks(conn)
            now = self._relations(conn)
            rewritten: list[Rewrite] = []
            built: list[Rewrite] = []
            for oid, rel in sorted(now.items(), key=lambda item: item[1].name):
                was = self._now.get(oid)
                replaced = was is not None and was.filenode != rel.filenode and rel.filenode != 0
                if replaced:
                    rewritten.append(Rewrite(rel.name, rel.kind, self._size(conn, oid)))
                if rel.kind == "index" and (replaced or was is None):
                    built.append(Rewrite(rel.name, rel.kind, self._size(conn, oid)))
            self._now = now
            self._statements.append(
                StatementImpact(
                    index=index,
                    statement=short(text),
                    duration_us=duration_us,
                    locks=locks,
                    rewritten=tuple(rewritten),
                    indexes_built=tuple(built),
                    wal_bytes=max(0, wal),
                )
            )

    def result(self) -> Impact:
        if self._failed is not None:
            return not_measured(ENGINE, self._failed)
        return Impact(ENGINE, True, None, tuple(self._statements), dict(self._settings))

    @contextlib.contextmanager
    def _measuring(self, conn: psycopg.Connection[Any]) -> Iterator[None]:
        """rollproof's reads, in a savepoint: a failure ends the measurement, not the change."""
        conn.execute(f"SAVEPOINT {_SAVEPOINT}")
        try:
            yield
        except psycopg.Error as e:
            conn.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
            self._failed = (
                "rollproof could not read the impact: "
                f"{e.diag.message_primary or type(e).__name__} (SQLSTATE {e.diag.sqlstate})"
            )
        finally:
            if conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS:
                conn.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")

    def _insert_lsn(self, conn: psycopg.Connection[Any]) -> int:
        row = conn.execute(_LSN).fetchone()
        assert row is not None
        return lsn_bytes(str(row[0]))

    def _relations(self, conn: psycopg.Connection[Any]) -> dict[int, _Relation]:
        return {
            int(oid): _Relation(str(name), _KINDS.get(str(kind), str(kind)), int(filenode))
            for oid, name, kind, filenode in conn.execute(_RELATIONS).fetchall()
        }

    def _new_locks(self, conn: psycopg.Connection[Any]) -> dict[str, tuple[str, str]]:
        """Relations (that existed before the change) locked more strongly than before."""
        assert self._baseline is not None
        strongest: dict[int, str] = {}
        for oid, mode in conn.execute(_LOCKS).fetchall():
            name = PG_LOCK_NAMES.get(str(mode))
            if name is not None and int(oid) in self._baseline:
                strongest[int(oid)] = stronger(strongest.get(int(oid)), name)
        out: dict[str, tuple[str, str]] = {}
        for oid, mode in strongest.items():
            if self._held.get(oid) is None or stronger(self._held[oid], mode) != self._held[oid]:
                self._held[oid] = mode
                rel = self._baseline[oid]
                out[rel.name] = (rel.kind, mode)
        return dict(sorted(out.items()))

    def _size(self, conn: psycopg.Connection[Any], oid: int) -> int | None:
        row = conn.execute(_SIZE, (oid,)).fetchone()
        return None if row is None or row[0] is None else int(row[0])
