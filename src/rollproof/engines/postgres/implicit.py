"""What PostgreSQL makes for a table, read from the catalog: the objects a table's declaration
covers (`rollproof.core.surface.Implicit`).

* indexes that back a constraint (primary key, unique, exclusion) and indexes a partitioned
  index made on a partition: WRITE, covered by their table;
* sequences a table owns (serial, identity, OWNED BY) and sequences a column default calls
  (`nextval('s')` without OWNED BY): WRITE, covered by the table;
* TOAST tables: WRITE, covered by their table;
* partitions: WRITE, covered by their parent only when the change itself creates them (the
  static reader says so); an existing partition is its own table and is declared by name;
* foreign keys: the referenced table is READ for the referencing one (the key's check reads
  it) and the referencing table is READ for the referenced one.

Names are normalised like every declaration (lower case, `public.` dropped). The source is read
in a read-only session (`connect_source`), one query per kind, nothing written.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import psycopg

from rollproof.core.errors import EnvironmentProblemError
from rollproof.core.surface import AccessKind, Catalog, Implicit
from rollproof.engines.postgres.conn import connect_source, describe_error, parse_pg_dsn

_NAME = """CASE WHEN {n}.nspname = 'public' THEN {c}.relname
               ELSE {n}.nspname || '.' || {c}.relname END"""
_USER = "{n}.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"

_CONSTRAINT_INDEXES = f"""
SELECT {_NAME.format(n="ni", c="ci")}, {_NAME.format(n="nt", c="ct")}, 'index of constraint '
       || (SELECT string_agg(conname, ', ' ORDER BY conname) FROM pg_catalog.pg_constraint k
           WHERE k.conindid = i.indexrelid)
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class ci ON ci.oid = i.indexrelid
JOIN pg_catalog.pg_namespace ni ON ni.oid = ci.relnamespace
JOIN pg_catalog.pg_class ct ON ct.oid = i.indrelid
JOIN pg_catalog.pg_namespace nt ON nt.oid = ct.relnamespace
WHERE {_USER.format(n="nt")}
  AND (EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conindid = i.indexrelid
                 AND k.conrelid = i.indrelid)
       OR EXISTS (SELECT 1 FROM pg_catalog.pg_inherits h WHERE h.inhrelid = i.indexrelid))
"""

_SEQUENCES = f"""
SELECT {_NAME.format(n="ns", c="s")}, {_NAME.format(n="nt", c="t")},
       CASE WHEN d.classid = 'pg_catalog.pg_attrdef'::regclass
            THEN 'sequence a default of ' || {_NAME.format(n="nt", c="t")} || ' calls'
            ELSE 'sequence owned by ' || {_NAME.format(n="nt", c="t")} END
FROM pg_catalog.pg_depend d
JOIN pg_catalog.pg_class s ON s.oid = CASE WHEN d.classid = 'pg_catalog.pg_attrdef'::regclass
                                           THEN d.refobjid ELSE d.objid END
JOIN pg_catalog.pg_namespace ns ON ns.oid = s.relnamespace
LEFT JOIN pg_catalog.pg_attrdef ad
       ON d.classid = 'pg_catalog.pg_attrdef'::regclass AND ad.oid = d.objid
JOIN pg_catalog.pg_class t ON t.oid = CASE WHEN d.classid = 'pg_catalog.pg_attrdef'::regclass
                                           THEN ad.adrelid ELSE d.refobjid END
JOIN pg_catalog.pg_namespace nt ON nt.oid = t.relnamespace
WHERE s.relkind = 'S' AND {_USER.format(n="nt")}
  AND ((d.classid = 'pg_catalog.pg_attrdef'::regclass
        AND d.refclassid = 'pg_catalog.pg_class'::regclass)
    OR (d.classid = 'pg_catalog.pg_class'::regclass
        AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.deptype IN ('a', 'i')))
"""

_TOAST = f"""
SELECT 'pg_toast.' || tt.relname, {_NAME.format(n="nt", c="t")}, 'TOAST table of '
       || {_NAME.format(n="nt", c="t")}
FROM pg_catalog.pg_class t
JOIN pg_catalog.pg_namespace nt ON nt.oid = t.relnamespace
JOIN pg_catalog.pg_class tt ON tt.oid = t.reltoastrelid
WHERE {_USER.format(n="nt")}
"""

_FOREIGN_KEYS = f"""
SELECT {_NAME.format(n="nc", c="c")}, {_NAME.format(n="np", c="p")}, k.conname
FROM pg_catalog.pg_constraint k
JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
JOIN pg_catalog.pg_namespace nc ON nc.oid = c.relnamespace
JOIN pg_catalog.pg_class p ON p.oid = k.confrelid
JOIN pg_catalog.pg_namespace np ON np.oid = p.relnamespace
WHERE k.contype = 'f' AND {_USER.format(n="nc")}
"""

_TABLES = f"""
SELECT {_NAME.format(n="n", c="c")}
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'f') AND {_USER.format(n="n")}
"""


def implicit_objects(conn: psycopg.Connection[Any]) -> list[Implicit]:
    """Every implicit object of the database `conn` is connected to (see the module doc)."""
    out: list[Implicit] = []
    for query in (_CONSTRAINT_INDEXES, _SEQUENCES, _TOAST):
        for obj, owner, reason in conn.execute(query).fetchall():
            out.append(Implicit(str(obj), str(owner), AccessKind.WRITE, str(reason)))
    for child, parent, name in conn.execute(_FOREIGN_KEYS).fetchall():
        out.append(
            Implicit(
                str(parent),
                str(child),
                AccessKind.READ,
                f"parent of foreign key {name} of {child}, read by its check",
            )
        )
        out.append(
            Implicit(
                str(child),
                str(parent),
                AccessKind.READ,
                f"references {parent} (foreign key {name}), read by the check when {parent} "
                "changes",
            )
        )
    return out


def catalog_of(items: Iterable[Implicit], tables: Iterable[str] = ()) -> Catalog:
    by_object: dict[str, list[Implicit]] = {}
    for item in items:
        by_object.setdefault(item.object, []).append(item)
    return Catalog({k: tuple(v) for k, v in by_object.items()}, frozenset(tables))


def read_catalog(dsn: str) -> Catalog:
    """The implicit objects of a PostgreSQL source, read in a read-only session."""
    target = parse_pg_dsn(dsn)
    conn = connect_source(target)
    with contextlib.closing(conn):
        try:
            return catalog_from(conn)
        except psycopg.Error as e:
            raise EnvironmentProblemError(
                f"source {target.shown}: cannot read the catalog: {describe_error(e)}"
            ) from None


def catalog_from(conn: psycopg.Connection[Any]) -> Catalog:
    """The implicit objects of the database `conn` is on (a source, or a restored dump)."""
    items = implicit_objects(conn)
    tables = [str(r[0]) for r in conn.execute(_TABLES).fetchall()]
    return catalog_of(items, tables)
