"""Fingerprint v1 of a PostgreSQL database, hashed server-side and streamed.

Same JSON shape and semantics as the SQLite engine's (rollproof.fingerprint); engine name
`postgresql`. What is PostgreSQL-specific, and why:

* **Rows.** Each row is encoded by the server as its composite text form,
  `ROW(c1, c2, ...)::text` (record_out: NULL is empty, an empty string is `""`, every
  delimiter inside a value is quoted, so the encoding is unambiguous), converted to UTF-8 and
  hashed with the server's `sha256`. Only the 32-byte row digests cross the wire, through
  `COPY ... TO STDOUT`, and Python hashes the stream as it arrives: memory stays bounded and
  transfer is 65 bytes a row whatever the row's width.
* **Order.** A table with a primary key is read in key order (a primary key is NOT NULL and
  unique, so the order is total); collatable key columns are compared `COLLATE "C"` (bytes), so
  the order does not depend on the scratch server's collation library. Any other table's row
  digests are sorted: the digest is that of the sorted multiset of rows, independent of
  physical order and as collision resistant as SHA-256 (no additive or XOR sum).
* **Types.** Each table's header names every column's type (`format_type`), so the same text
  in an `integer` and a `text` column digests differently; values are rendered under fixed
  settings (`DateStyle ISO`, `TimeZone UTC`, `extra_float_digits 1`, `bytea_output hex`,
  `IntervalStyle postgres`, `lc_monetary C`), set on every fingerprinting session because a
  change script may have altered them in the same transaction. `row_security` is off, so a
  read that row-level security would filter fails instead of hashing a subset of the rows.
* **Sequences** are their own component: `(last_value, is_called)` folded into the position
  of the counter, `last_value` when called and one step before it otherwise, negated for a
  descending sequence so that "advanced" always means "grew". A serial or identity sequence is
  keyed by its table and its definition (type, start, increment, bounds, cycle, owner column)
  is part of the table's schema object; a free-standing sequence is its own schema object.
  Functions are keyed by name, overloads folded together (their arguments are described).
* **Schema** comes from the catalogs, deparsed by the server's own `pg_get_*` functions:
  tables (columns in order with types, NOT NULL, defaults, identity, generation, collation;
  constraints; partitioning; inheritance; row-level security and policies; rules), indexes,
  triggers, views, materialized views, sequences, functions and procedures, enum, domain,
  composite and range types, extensions and schemas. Owners and privileges are not part of
  the fingerprint: a clone cannot always reproduce roles, and run-time enforcement changes
  them on purpose. Comments are covered by the DDL-text digest only.
* Objects that belong to an extension are described by the extension (name, version,
  schema); foreign tables and unpopulated materialized views have no readable content and
  are named in `excluded`.

Names in `public` are bare (`orders`), others schema-qualified (`audit.events`), matching how
changes declare their surfaces.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg

from rollproof.canonical import canonical_json, digest_json, tagged
from rollproof.engines.postgres_conn import quote_ident
from rollproof.fingerprint import Fingerprint, TableDigest

ENGINE = "postgresql"

SESSION_SETTINGS: tuple[tuple[str, str], ...] = (
    ("search_path", "pg_catalog, pg_temp"),
    ("DateStyle", "ISO, YMD"),
    ("IntervalStyle", "postgres"),
    ("TimeZone", "UTC"),
    ("extra_float_digits", "1"),
    ("bytea_output", "hex"),
    ("lc_monetary", "C"),
    # Never a filtered read: a query row-level security would filter raises instead.
    ("row_security", "off"),
)

_USER_NS = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') "
    "AND n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%'"
)
_NAME = "CASE WHEN n.nspname = 'public' THEN {0} ELSE n.nspname || '.' || {0} END"


def _not_extension_member(catalog: str, oid: str) -> str:
    return (
        "NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d "
        f"WHERE d.classid = '{catalog}'::pg_catalog.regclass AND d.objid = {oid} "
        "AND d.deptype = 'e')"
    )


_COLUMNS = """
SELECT coalesce(json_agg(json_build_object(
    'name', a.attname,
    'type', pg_catalog.format_type(a.atttypid, a.atttypmod),
    'notnull', a.attnotnull,
    'default', pg_catalog.pg_get_expr(ad.adbin, ad.adrelid),
    'identity', a.attidentity,
    'generated', a.attgenerated,
    'collation', CASE WHEN a.attcollation <> t.typcollation
                      THEN (SELECT collname FROM pg_catalog.pg_collation
                            WHERE oid = a.attcollation) END
) ORDER BY a.attnum), '[]'::json)
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
"""

_TABLES = f"""
SELECT {_NAME.format("c.relname")} AS name, json_build_object(
    'type', 'table',
    'kind', c.relkind,
    'persistence', c.relpersistence,
    'columns', ({_COLUMNS}),
    'constraints', (SELECT coalesce(json_agg(json_build_array(
            co.conname, co.contype, pg_catalog.pg_get_constraintdef(co.oid, true))
            ORDER BY co.conname), '[]'::json)
        FROM pg_catalog.pg_constraint co WHERE co.conrelid = c.oid),
    'partition_key', CASE WHEN c.relkind = 'p'
        THEN pg_catalog.pg_get_partkeydef(c.oid) END,
    'partition_bound', pg_catalog.pg_get_expr(c.relpartbound, c.oid),
    'inherits', (SELECT coalesce(json_agg(i.inhparent::pg_catalog.regclass::text
            ORDER BY i.inhseqno), '[]'::json)
        FROM pg_catalog.pg_inherits i WHERE i.inhrelid = c.oid),
    'options', c.reloptions,
    'row_security', json_build_array(c.relrowsecurity, c.relforcerowsecurity),
    'policies', (SELECT coalesce(json_agg(json_build_array(p.polname, p.polcmd,
            p.polpermissive, pg_catalog.pg_get_expr(p.polqual, p.polrelid),
            pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid)) ORDER BY p.polname), '[]'::json)
        FROM pg_catalog.pg_policy p WHERE p.polrelid = c.oid),
    'rules', (SELECT coalesce(json_agg(pg_catalog.pg_get_ruledef(r.oid, true)
            ORDER BY r.rulename), '[]'::json)
        FROM pg_catalog.pg_rewrite r WHERE r.ev_class = c.oid AND r.rulename <> '_RETURN')
)::text AS description,
c.relkind, c.relispopulated, n.nspname, c.relname
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'f') AND {_USER_NS}
AND {_not_extension_member("pg_class", "c.oid")}
ORDER BY 1
"""

_VIEWS = f"""
SELECT {_NAME.format("c.relname")}, json_build_object(
    'type', 'view', 'kind', c.relkind,
    'definition', pg_catalog.pg_get_viewdef(c.oid, true),
    'columns', ({_COLUMNS}),
    'options', c.reloptions
)::text, c.relkind, c.relispopulated, n.nspname, c.relname
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('v', 'm') AND {_USER_NS} AND {_not_extension_member("pg_class", "c.oid")}
ORDER BY 1
"""

_INDEXES = f"""
SELECT {_NAME.format("c.relname")}, json_build_object(
    'type', 'index',
    'table', {_NAME.format("t.relname")},
    'definition', pg_catalog.pg_get_indexdef(i.indexrelid),
    'valid', i.indisvalid,
    'constraint', (SELECT co.conname FROM pg_catalog.pg_constraint co
                   WHERE co.conindid = i.indexrelid AND co.conrelid = i.indrelid LIMIT 1)
)::text
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
JOIN pg_catalog.pg_class t ON t.oid = i.indrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE {_USER_NS} AND {_not_extension_member("pg_class", "t.oid")}
ORDER BY 1
"""

_TRIGGERS = f"""
SELECT tg.tgname, json_build_object(
    'type', 'trigger',
    'table', {_NAME.format("c.relname")},
    'definition', pg_catalog.pg_get_triggerdef(tg.oid, true),
    'enabled', tg.tgenabled
)::text
FROM pg_catalog.pg_trigger tg
JOIN pg_catalog.pg_class c ON c.oid = tg.tgrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE NOT tg.tgisinternal AND {_USER_NS} AND {_not_extension_member("pg_class", "c.oid")}
ORDER BY 1, 2
"""

_SEQUENCES = f"""
SELECT {_NAME.format("c.relname")}, json_build_object(
    'type', 'sequence',
    'data_type', pg_catalog.format_type(s.seqtypid, NULL),
    'start', s.seqstart, 'increment', s.seqincrement,
    'min', s.seqmin, 'max', s.seqmax, 'cache', s.seqcache, 'cycle', s.seqcycle,
    'persistence', c.relpersistence,
    'owned_by', o.owner
)::text, n.nspname, c.relname, s.seqincrement, o.owner_table, o.owner, o.attnum
FROM pg_catalog.pg_sequence s
JOIN pg_catalog.pg_class c ON c.oid = s.seqrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN LATERAL (
    SELECT CASE WHEN tn.nspname = 'public' THEN tc.relname
                ELSE tn.nspname || '.' || tc.relname END AS owner_table,
           CASE WHEN tn.nspname = 'public' THEN tc.relname
                ELSE tn.nspname || '.' || tc.relname END || '.' || a.attname AS owner,
           a.attnum
    FROM pg_catalog.pg_depend d
    JOIN pg_catalog.pg_class tc ON tc.oid = d.refobjid
    JOIN pg_catalog.pg_namespace tn ON tn.oid = tc.relnamespace
    JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
    WHERE d.classid = 'pg_class'::pg_catalog.regclass AND d.objid = c.oid
      AND d.refclassid = 'pg_class'::pg_catalog.regclass AND d.deptype IN ('a', 'i')
    LIMIT 1
) o ON true
WHERE {_USER_NS} AND {_not_extension_member("pg_class", "c.oid")}
ORDER BY 1
"""

_FUNCTIONS = f"""
SELECT {_NAME.format("p.proname")},
json_build_object(
    'type', 'function', 'kind', p.prokind,
    'arguments', pg_catalog.pg_get_function_identity_arguments(p.oid),
    'definition', CASE WHEN p.prokind = 'a' THEN NULL
                       ELSE pg_catalog.pg_get_functiondef(p.oid) END,
    'aggregate', CASE WHEN p.prokind = 'a' THEN (
        SELECT json_build_array(ag.aggkind, ag.aggtransfn::text, ag.aggfinalfn::text,
            ag.aggcombinefn::text, pg_catalog.format_type(ag.aggtranstype, NULL),
            ag.agginitval, pg_catalog.pg_get_function_result(p.oid))
        FROM pg_catalog.pg_aggregate ag WHERE ag.aggfnoid = p.oid) END
)::text
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE {_USER_NS} AND {_not_extension_member("pg_proc", "p.oid")}
ORDER BY 1, 2
"""

_TYPES = f"""
SELECT {_NAME.format("t.typname")}, json_build_object(
    'type', 'type', 'kind', t.typtype,
    'labels', CASE WHEN t.typtype = 'e' THEN (
        SELECT json_agg(e.enumlabel ORDER BY e.enumsortorder)
        FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid) END,
    'base', CASE WHEN t.typtype = 'd'
                 THEN pg_catalog.format_type(t.typbasetype, t.typtypmod) END,
    'notnull', t.typnotnull,
    'default', t.typdefault,
    'constraints', (SELECT coalesce(json_agg(json_build_array(co.conname,
            pg_catalog.pg_get_constraintdef(co.oid, true)) ORDER BY co.conname), '[]'::json)
        FROM pg_catalog.pg_constraint co WHERE co.contypid = t.oid),
    'attributes', CASE WHEN t.typtype = 'c' THEN (
        SELECT json_agg(json_build_array(a.attname,
            pg_catalog.format_type(a.atttypid, a.atttypmod)) ORDER BY a.attnum)
        FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped) END,
    'range', CASE WHEN t.typtype = 'r' THEN (
        SELECT json_build_array(pg_catalog.format_type(r.rngsubtype, NULL),
            r.rngsubopc::text, r.rngcanonical::text, r.rngsubdiff::text)
        FROM pg_catalog.pg_range r WHERE r.rngtypid = t.oid) END
)::text
FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
WHERE {_USER_NS} AND t.typtype IN ('e', 'd', 'c', 'r')
AND (t.typtype <> 'c' OR (SELECT relkind FROM pg_catalog.pg_class WHERE oid = t.typrelid) = 'c')
AND {_not_extension_member("pg_type", "t.oid")}
ORDER BY 1
"""

_EXTENSIONS = """
SELECT e.extname, json_build_object('type', 'extension', 'version', e.extversion,
    'schema', n.nspname)::text
FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
ORDER BY 1
"""

_SCHEMAS = f"""
SELECT n.nspname, json_build_object('type', 'schema')::text
FROM pg_catalog.pg_namespace n
WHERE {_USER_NS} AND {_not_extension_member("pg_namespace", "n.oid")}
ORDER BY 1
"""

_COMMENTS = f"""
SELECT {_NAME.format("c.relname")}, d.objsubid, d.description
FROM pg_catalog.pg_description d
JOIN pg_catalog.pg_class c ON d.classoid = 'pg_class'::pg_catalog.regclass AND d.objoid = c.oid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE {_USER_NS}
ORDER BY 1, 2
"""

_PRIMARY_KEY = """
SELECT a.attname, a.attcollation <> 0
FROM pg_catalog.pg_index i
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position)
JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = %s::pg_catalog.regclass AND i.indisprimary
ORDER BY k.position
"""

_TABLE_COLUMNS = """
SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod)
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = %s::pg_catalog.regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


def counter_name(sequence: str, owner_table: str | None, owner: str | None, first: bool) -> str:
    """The sequence component's key: the table that owns the counter, as in SQLite.

    A serial or identity column's sequence is named after its table (`orders`), so the change
    that writes the table declares the counter it advances with it. When a table owns several,
    the one on its first column keeps the table's name (so adding another never renames it)
    and each other is named by its column (`orders.ticket`); a free-standing sequence by its
    own name.
    """
    if owner_table is None or owner is None:
        return sequence
    return owner_table if first else owner


def prepare_session(conn: psycopg.Connection[Any]) -> None:
    """Fix every setting that changes how a value is rendered, and the search path.

    `set_config(..., true)` inside a transaction lasts until it ends; outside one, a plain
    session setting is used. Both are re-applied before every fingerprint.
    """
    local = conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
    for name, value in SESSION_SETTINGS:
        conn.execute(
            "SELECT pg_catalog.set_config(%s, %s, %s)", (name, value, local), prepare=False
        )


def _rows(conn: psycopg.Connection[Any], sql: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in conn.execute(sql, prepare=False).fetchall()]


def table_digest(
    conn: psycopg.Connection[Any], name: str, schema: str, relname: str
) -> TableDigest:
    """Digest one table's rows, computed by the server and streamed through COPY."""
    relation = f"{quote_ident(schema)}.{quote_ident(relname)}"
    cols = [(str(c), str(t)) for c, t in conn.execute(_TABLE_COLUMNS, (relation,), prepare=False)]
    pk = [
        (str(c), bool(coll)) for c, coll in conn.execute(_PRIMARY_KEY, (relation,), prepare=False)
    ]
    row = "ROW(" + ", ".join(f"t.{quote_ident(c)}" for c, _ in cols) + ")"
    digest = f"pg_catalog.sha256(pg_catalog.convert_to(({row})::text, 'UTF8'))"
    if pk:
        order = "primary-key"
        order_by = ", ".join(
            f"t.{quote_ident(c)}" + (' COLLATE "C"' if collatable else "") for c, collatable in pk
        )
        query = (
            f"SELECT pg_catalog.encode({digest}, 'hex') FROM ONLY {relation} t ORDER BY {order_by}"
        )
    else:
        order = "sorted-rows"
        query = (
            f"SELECT pg_catalog.encode(d, 'hex') FROM (SELECT {digest} AS d "
            f"FROM ONLY {relation} t) s ORDER BY d"
        )
    header = canonical_json(
        {
            "table": name,
            "columns": [c for c, _ in cols],
            "types": [t for _, t in cols],
            "order": order,
        }
    )
    h = hashlib.sha256(header)
    count = 0
    with conn.cursor() as cur, cur.copy(f"COPY ({query}) TO STDOUT") as copy:
        for block in copy:
            data = bytes(block)
            h.update(data)
            count += data.count(b"\n")
    return TableDigest(name=name, digest=tagged(h.hexdigest()), rows=count, order=order)


def _sequence_positions(
    conn: psycopg.Connection[Any], sequences: list[tuple[str, str, str, int]]
) -> dict[str, int]:
    if not sequences:
        return {}
    parts = [
        f"SELECT {i}, last_value, is_called FROM {quote_ident(schema)}.{quote_ident(relname)}"
        for i, (_name, schema, relname, _inc) in enumerate(sequences)
    ]
    out: dict[str, int] = {}
    for i, last_value, is_called in conn.execute(" UNION ALL ".join(parts), prepare=False):
        name, _schema, _relname, inc = sequences[int(i)]
        position = int(last_value) if is_called else int(last_value) - inc
        out[name] = position if inc > 0 else -position
    return out


Connect = Callable[[], "contextlib.AbstractContextManager[psycopg.Connection[Any]]"]
"""Opens another connection that sees exactly what the first one sees (same database, and for a
live source the same exported snapshot), for reading tables in parallel."""


def _table_digests(
    conn: psycopg.Connection[Any],
    tables: list[tuple[str, str, str]],
    progress: Callable[[str], None] | None,
    more: Connect | None,
    jobs: int,
) -> dict[str, TableDigest]:
    total = len(tables)
    done: list[str] = []
    lock = threading.Lock()

    def note(name: str) -> None:
        with lock:
            done.append(name)
            if progress is not None:
                progress(f"fingerprinted table {name} ({len(done)}/{total})")

    workers = min(jobs, total) if more is not None else 1
    if workers <= 1:
        out = {}
        for name, schema, relname in tables:
            out[name] = table_digest(conn, name, schema, relname)
            note(name)
        return out
    assert more is not None
    queue = list(reversed(tables))

    def work() -> dict[str, TableDigest]:
        got: dict[str, TableDigest] = {}
        with more() as extra:
            prepare_session(extra)
            while True:
                with lock:
                    if not queue:
                        return got
                    name, schema, relname = queue.pop()
                got[name] = table_digest(extra, name, schema, relname)
                note(name)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        parts = [f.result() for f in [pool.submit(work) for _ in range(workers)]]
    return {name: digest for part in parts for name, digest in part.items()}


def fingerprint_connection(
    conn: psycopg.Connection[Any],
    progress: Callable[[str], None] | None = None,
    *,
    more: Connect | None = None,
    jobs: int = 1,
) -> Fingerprint:
    """Fingerprint the database `conn` is connected to (it may be inside a transaction).

    With `more` and `jobs` > 1, tables are read over up to `jobs` extra connections at once;
    the schema and the sequences are always read on `conn`.
    """
    prepare_session(conn)
    objects: dict[str, str] = {}
    texts: dict[str, str] = {}

    def add(kind: str, name: str, description: str) -> None:
        key = f"{kind}:{name}"
        # Trigger names are per table and functions overload: same-named ones fold together,
        # in the deterministic order their queries return them.
        if key in objects:
            description = f"{texts[key]}\n{description}"
        texts[key] = description
        objects[key] = digest_json(description)

    tables: list[tuple[str, str, str]] = []
    excluded: list[str] = []
    for name, description, relkind, _populated, schema, relname in _rows(conn, _TABLES):
        add("table", name, description)
        if relkind == "r":
            tables.append((name, schema, relname))
        elif relkind == "f":
            excluded.append(f"{name} (foreign table)")
    for name, description, relkind, populated, schema, relname in _rows(conn, _VIEWS):
        add("view", name, description)
        if relkind == "m":
            if populated:
                tables.append((name, schema, relname))
            else:
                excluded.append(f"{name} (materialized view not populated)")
    for name, description in _rows(conn, _INDEXES):
        add("index", name, description)
    for name, description in _rows(conn, _TRIGGERS):
        add("trigger", name, description)
    sequences: list[tuple[str, str, str, int]] = []
    rows = _rows(conn, _SEQUENCES)
    first_column: dict[str, int] = {}
    for r in rows:
        if r[5] is not None:
            first_column[str(r[5])] = min(first_column.get(str(r[5]), r[7]), r[7])
    for name, description, schema, relname, inc, owner_table, owner, attnum in rows:
        # A serial or identity column's sequence is part of its table's definition (as SQLite's
        # AUTOINCREMENT is): the change that declares the table has declared it.
        if owner_table is None:
            add("sequence", name, description)
        else:
            add("table", owner_table, description)
        first = owner_table is not None and first_column[str(owner_table)] == attnum
        key = counter_name(name, owner_table, owner, first)
        sequences.append((key, schema, relname, int(inc)))
    for name, description in _rows(conn, _FUNCTIONS):
        add("function", name, description)
    for name, description in _rows(conn, _TYPES):
        add("type", name, description)
    for name, description in _rows(conn, _EXTENSIONS):
        add("extension", name, description)
    for name, description in _rows(conn, _SCHEMAS):
        add("schema", name, description)
    comments = [list(r) for r in _rows(conn, _COMMENTS)]
    ddl_text = digest_json({"objects": dict(sorted(texts.items())), "comments": comments})

    digests = _table_digests(conn, tables, progress, more, jobs)
    return Fingerprint(
        engine=ENGINE,
        schema_structural=digest_json(objects),
        schema_ddl_text=ddl_text,
        schema_objects=objects,
        tables=digests,
        sequences=_sequence_positions(conn, sequences),
        excluded=tuple(sorted(excluded)),
    )
