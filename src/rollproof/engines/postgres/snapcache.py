"""A restored snapshot kept on a named scratch server for the next rehearsal of the same source.

Why: pg_dump and pg_restore are the biggest fixed cost of a PostgreSQL rehearsal. When the
source's fingerprint (always read) equals the one a kept copy was sealed with, a server copy
of that database (CREATE DATABASE ... TEMPLATE) stands in for the dump and the restore.

It is opt-in (`ROLLPROOF_PG_SNAPSHOT_CACHE=1`, named scratch servers only) and one database per
source database: `rollproof_cache_<key>`, the key a hash of the source server's system
identifier and database name, its comment `rollproof-cache v1 <source fingerprint digest>`,
closed to connections (ALLOW_CONNECTIONS false) and a template. Nothing is trusted on that
comment alone: the copy is sealed and fingerprinted like a restored snapshot, and a copy whose
fingerprint differs from the source's is dropped with the cache, and the rehearsal dumps and
restores as without one. `rollproof gc --scratch DSN` lists them (`caches`) and, with
`--drop-caches`, removes them (`drop_caches`).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import psycopg
from psycopg import sql

from rollproof.engines.postgres.sweep import Leftover

ENV = "ROLLPROOF_PG_SNAPSHOT_CACHE"
PREFIX = "rollproof_cache_"
_COMMENT = "rollproof-cache v1 "


def enabled() -> bool:
    """Whether the user asked for snapshot reuse across rehearsals."""
    return os.environ.get(ENV, "") == "1"


def cache_name(system_id: str, dbname: str) -> str:
    """The one cache database for a source database on any scratch server."""
    key = hashlib.sha256(f"{system_id}\0{dbname}".encode()).hexdigest()[:16]
    return PREFIX + key


def sealed_digest(admin: psycopg.Connection[Any], name: str) -> str | None:
    """The source digest a cache was sealed with, or None when there is no usable cache.

    Usable means rollproof's comment, closed to connections and a template: a cache someone
    opened again is not used (and its copy would be read anyway)."""
    row = admin.execute(
        "SELECT d.datallowconn, d.datistemplate, pg_catalog.shobj_description(d.oid, "
        "'pg_database') FROM pg_catalog.pg_database d WHERE d.datname = %s",
        (name,),
    ).fetchone()
    if row is None or row[0] or not row[1]:
        return None
    comment = str(row[2] or "")
    return comment[len(_COMMENT) :] if comment.startswith(_COMMENT) else None


def drop(admin: psycopg.Connection[Any], name: str) -> None:
    """Drop a cache database (and any half-made `_new` copy of it)."""
    for db in (name, name + "_new"):
        ident = sql.Identifier(db)
        exists = admin.execute(
            "SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s", (db,)
        ).fetchone()
        if exists is None:
            continue
        admin.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(ident))
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))


def copy_pending(admin: psycopg.Connection[Any], name: str, restored: str) -> None:
    """Copy a just-restored snapshot (nobody connected) aside, not yet trusted."""
    admin.execute(
        sql.SQL("CREATE DATABASE {} TEMPLATE {} ALLOW_CONNECTIONS false").format(
            sql.Identifier(name + "_new"), sql.Identifier(restored)
        )
    )


def seal_pending(admin: psycopg.Connection[Any], name: str, digest: str) -> None:
    """Make the pending copy the cache, once the snapshot it was copied from proved equal."""
    new, ident = sql.Identifier(name + "_new"), sql.Identifier(name)
    exists = admin.execute(
        "SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s", (name,)
    ).fetchone()
    if exists is not None:
        admin.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(ident))
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(ident))
    admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(new, ident))
    admin.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true").format(ident))
    admin.execute(
        sql.SQL("COMMENT ON DATABASE {} IS {}").format(ident, sql.Literal(_COMMENT + digest))
    )


_CACHES = """
SELECT d.datname, pg_catalog.shobj_description(d.oid, 'pg_database')
FROM pg_catalog.pg_database d
WHERE d.datname ~ '^rollproof_cache_[0-9a-f]{16}(_new)?$'
ORDER BY d.datname
"""


def drop_caches(admin: psycopg.Connection[Any]) -> list[str]:
    """Drop every snapshot cache on the server (and any half-made copy); the names dropped."""
    names = [str(r[0]) for r in admin.execute(_CACHES).fetchall()]
    for name in names:
        if not name.endswith("_new"):
            drop(admin, name)
    for name in names:  # a half-made copy whose cache was never sealed
        if name.endswith("_new"):
            drop(admin, name.removesuffix("_new"))
    return names


def caches(admin: psycopg.Connection[Any], *, remove: bool) -> list[Leftover]:
    """Every snapshot cache on the server, for `rollproof gc`: left (they are kept on purpose),
    or dropped when `remove`. A cache is not a dead run's leftover, so no run's liveness decides;
    dropping one while a rehearsal copies it fails that rehearsal (exit 4), never its verdict."""
    if remove:
        why = "a snapshot kept for reuse; dropped as asked (--drop-caches)"
        return [Leftover(n, "database", True, why) for n in drop_caches(admin)]
    out = []
    for name, comment in admin.execute(_CACHES).fetchall():
        text = str(comment or "")
        sealed = text[len(_COMMENT) :] if text.startswith(_COMMENT) else None
        why = (
            f"a snapshot kept for reuse (sealed for source fingerprint {sealed})"
            if sealed
            else "a snapshot copy for reuse, not sealed (its rehearsal is running or ended early)"
        )
        out.append(Leftover(str(name), "database", False, why + "; --drop-caches removes it"))
    return out
