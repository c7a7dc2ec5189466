"""Fingerprint of a PostgreSQL database: rows streamed as binary COPY, hashed as they arrive.

Same JSON shape and semantics as the SQLite engine's (rollproof.core.fingerprint); engine name
`postgresql`. What is PostgreSQL-specific, and why:

* **Rows.** A table's digest is BLAKE3 over its header (canonical JSON: name, columns, their
  types and forms, the order, and `"rows": "copy-binary"`) followed by the stream
  `COPY (SELECT v1, v2, ... FROM ONLY t ORDER BY ...) TO STDOUT (FORMAT binary)` sends: a
  fixed header, per row a field count and each value length-prefixed (-1 for NULL), a
  trailer. Python hashes it in batches as it arrives (`contents.copy_out`), so memory stays
  bounded. A large table with an integer key may be read as key ranges on several sessions of
  one snapshot and the ranges' streams joined back into that one stream (contents.py,
  pieces.py): the digest does not depend on it.
* **Forms.** Each column is read in a form whose bytes are the same on any server
  (`contents.Column.value`, decided from the catalog by `catalog.TABLE_COLUMNS`): built-in scalar
  types in binary, floats in binary with NaN canonicalised, everything else (user and
  extension types, arrays, composites, geometric and OID alias types) as text. Array and
  record send functions embed type OIDs, which differ between a source and its restored
  clone, and binary keeps a NaN's sign bit and an array's has-nulls flag, which a pg_dump
  round trip drops.
* **Order.** A table with a primary key is read in key order (NOT NULL and unique: total).
  Text and varchar key columns are compared bytewise (`USING ~<~`, or as themselves when their
  collation is "C"/"POSIX"; other collatable types `COLLATE "C"`), so the order does not
  depend on a server's collation library. A table without one ("row-digests") is read
  unordered and each row digested by this client, BLAKE2s-256 over its binary COPY tuple,
  the digests sorted: a canonical encoding of the multiset of rows (duplicates count), as
  collision resistant as BLAKE2s-256 and BLAKE3, where an XOR or sum of row hashes would not
  be. The argument is in docs/postgresql.md ("Fingerprint").
* **Types.** Each table's header names every column's type (`format_type`), so the same bytes
  in an `integer` and a `text` column digest differently; values read as text are rendered
  under fixed settings (`DateStyle ISO`, `TimeZone UTC`, `extra_float_digits 1`,
  `bytea_output hex`, `IntervalStyle postgres`, `lc_monetary C`, and `client_encoding UTF8`,
  in which the server sends all text, binary or not), set on every fingerprinting session
  because a change script may have altered them in the same transaction. `row_security` is
  off, so a read that row-level security would filter fails instead of hashing a subset of
  the rows.
* **Sequences** are their own component: `(last_value, is_called)` folded into the position
  of the counter, `last_value` when called and one step before it otherwise, negated for a
  descending sequence so that "advanced" always means "grew". A serial or identity sequence is
  keyed by its table and its definition (type, start, increment, bounds, cycle, owner column)
  is part of the table's schema object; a free-standing sequence is its own schema object.
  Functions are keyed by name, overloads folded together (their arguments are described).
* **Schema** comes from the catalogs (catalog.py), deparsed by the server's own `pg_get_*`
  functions; the inventory, and what is left out and why, is in docs/fingerprint.md.

Names in `public` are bare (`orders`), others schema-qualified (`audit.events`), matching how
changes declare their surfaces.

Performance (bench/pg.py on 2 CPUs; the figures, and what was tried and dropped, are in
docs/BENCHMARKS.md, PostgreSQL): binary COPY rather than text (no escaping, no output function
for most types); a key-less table's rows read unordered and digested by the client in C
(copyloop.py), rather than whole rows sorted on keys total on their text or the server's
SHA-256 of each row sorted on the server; bytewise text keys with `USING ~<~`
rather than `COLLATE "C"` (the sort carries no second copy of each value); libpq's COPY loop
driven directly (`copy_out`: 0.24 rather than 0.63 client CPU s per 1M rows through
`Cursor.copy()`; less again in C, copyloop.py) into one reused buffer, hash updates batched so
they release the GIL; no parallel query; tables handed out largest first and read while the
rest of the schema is, so the sessions end together; a large keyed table whose first key range
kept the client waiting on the server (jsonb: its send function is the server's work) shared
among the sessions by key range.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg

from rollproof.core.canonical import digest_json
from rollproof.core.fingerprint import Fingerprint, Reuse
from rollproof.engines.postgres import catalog, contents
from rollproof.engines.postgres.conn import quote_ident

# Connect and prepare_session are re-exported: the session and explain modules use them here.
from rollproof.engines.postgres.contents import Connect as Connect
from rollproof.engines.postgres.contents import TableReader, table_digest
from rollproof.engines.postgres.contents import prepare_session as prepare_session
from rollproof.engines.postgres.privileges import PrivilegeMask, State, masked

ENGINE = "postgresql"


def privilege_state(conn: psycopg.Connection[Any]) -> State:
    """Owner and ACL of every object the fingerprint describes, unmasked (for PrivilegeMask)."""
    state: State = {}

    def walk(doc: Any) -> None:
        if isinstance(doc, list):
            for x in doc:
                walk(x)
            return
        if not isinstance(doc, dict):
            return
        ident = doc.get("_id")
        if isinstance(ident, str) and ("owner" in doc or "acl" in doc):
            owner = doc.get("owner")
            items = doc.get("acl")
            state[ident] = (
                owner if isinstance(owner, str) else None,
                None
                if not isinstance(items, list)
                else frozenset((str(g), str(p), str(gr), bool(o)) for g, p, gr, o in items),
            )
        for value in doc.values():
            walk(value)

    for docs in describe_schema(conn, None, raw=True).values():
        walk(docs)
    return state


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


def _rows(conn: psycopg.Connection[Any], sql: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in conn.execute(sql, prepare=False).fetchall()]


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


def _reusable(reuse: Reuse, name: str) -> bool:
    return name not in reuse.written and name in reuse.base.tables


def fingerprint_connection(
    conn: psycopg.Connection[Any],
    progress: Callable[[str], None] | None = None,
    *,
    more: Connect | None = None,
    jobs: int = 1,
    reuse: Reuse | None = None,
    mask: PrivilegeMask | None = None,
) -> Fingerprint:
    """Fingerprint the database `conn` is connected to (it may be inside a transaction).

    With `more` and `jobs` > 1, tables are read over up to `jobs` extra connections at once,
    starting as soon as they are listed; the rest of the schema and the sequences are read on
    `conn` meanwhile. With `reuse`, a table not in `reuse.written` whose schema object is
    unchanged takes its digest from `reuse.base` (the caller vouches that nothing else can
    have changed it: see PostgresSession.fingerprint_clone). `mask` shows owners and
    privileges as they were before rollproof's own setup on a clone (PrivilegeMask).
    """
    prepare_session(conn)
    docs: dict[str, list[Any]] = {}
    add = _adder(docs, mask)

    tables: list[tuple[str, str, str]] = []
    sizes: dict[str, int] = {}
    excluded: list[str] = []
    for name, description, relkind, _populated, schema, relname, size in _rows(
        conn, catalog.TABLES
    ):
        add("table", name, description)
        sizes[name] = int(size)
        if relkind == "r":
            tables.append((name, schema, relname))
        elif relkind == "f":
            excluded.append(f"{name} (foreign table)")
    for name, description, relkind, populated, schema, relname, size in _rows(conn, catalog.VIEWS):
        add("view", name, description)
        sizes[name] = int(size)
        if relkind == "m":
            if populated:
                tables.append((name, schema, relname))
            else:
                excluded.append(f"{name} (materialized view not populated)")
    # Largest first, so that the sessions finish together (the order of reading does not
    # change any digest).
    tables.sort(key=lambda t: (-sizes[t[0]], t[0]))
    # Unwritten tables are not read unless their schema object turns out to differ (it is
    # complete only once the sequences are folded in, below).
    deferred, tables = (
        [t for t in tables if reuse is not None and _reusable(reuse, t[0])],
        [t for t in tables if reuse is None or not _reusable(reuse, t[0])],
    )
    reader = None
    large = {name: sizes[name] for name, _s, _r in tables if sizes[name] >= contents.SPLIT_BYTES}
    if more is not None and jobs > 1 and (len(tables) > 1 or large):
        reader = TableReader(tables, progress, more, jobs, large)
    try:
        sequences = _rest_of_schema(conn, add)
    except BaseException:
        if reader is not None:
            reader.stop()
        raise
    if reader is not None:
        digests = reader.result()
    else:
        digests = {}
        for i, (name, schema, relname) in enumerate(tables, 1):
            digests[name] = table_digest(conn, name, schema, relname)
            if progress is not None:
                progress(f"fingerprinted table {name} ({i}/{len(tables)})")
    objects = {key: digest_json(value) for key, value in docs.items()}
    ddl_text = digest_json({"objects": dict(sorted(docs.items()))})
    for name, schema, relname in deferred:
        assert reuse is not None
        key = f"table:{name}"
        if objects[key] == reuse.base.schema_objects.get(key):
            digests[name] = reuse.base.tables[name]
        else:
            digests[name] = table_digest(conn, name, schema, relname)
    return Fingerprint(
        engine=ENGINE,
        schema_structural=digest_json(objects),
        schema_ddl_text=ddl_text,
        schema_objects=objects,
        tables=digests,
        sequences=_sequence_positions(conn, sequences),
        excluded=tuple(sorted(excluded)),
    )


Add = Callable[[str, str, str], None]


def _number(text: str) -> int | str:
    # Canonical JSON holds integers up to 2**53 exactly; a bigint sequence bound is kept as text.
    value = int(text)
    return value if abs(value) < 2**53 else text


def _load(description: str) -> Any:
    """A description the server built, as Python (numbers beyond JSON's exact range as text)."""
    return json.loads(description, parse_int=_number, parse_float=str)


def _adder(docs: dict[str, list[Any]], mask: PrivilegeMask | None) -> Add:
    def add(kind: str, name: str, description: str) -> None:
        # Trigger names are per table and functions overload: same-named ones fold together,
        # in the deterministic order their queries return them.
        docs.setdefault(f"{kind}:{name}", []).append(masked(_load(description), mask))

    return add


def _raw_adder(docs: dict[str, list[Any]]) -> Add:
    def add(kind: str, name: str, description: str) -> None:
        docs.setdefault(f"{kind}:{name}", []).append(_load(description))

    return add


def describe_schema(
    conn: psycopg.Connection[Any], mask: PrivilegeMask | None, *, raw: bool = False
) -> dict[str, list[Any]]:
    """Every schema object's description, as hashed into `schema.objects` (each a list: objects
    that share a key fold together). With `raw`, unmasked and with catalog identities kept."""
    prepare_session(conn)
    docs: dict[str, list[Any]] = {}
    add = _raw_adder(docs) if raw else _adder(docs, mask)
    for row in _rows(conn, catalog.TABLES):
        add("table", str(row[0]), str(row[1]))
    for row in _rows(conn, catalog.VIEWS):
        add("view", str(row[0]), str(row[1]))
    _rest_of_schema(conn, add)
    return docs


def _rest_of_schema(conn: psycopg.Connection[Any], add: Add) -> list[tuple[str, str, str, int]]:
    """Every schema object after tables and views; the sequences to read."""
    for name, description in _rows(conn, catalog.INDEXES):
        add("index", name, description)
    for name, description in _rows(conn, catalog.TRIGGERS):
        add("trigger", name, description)
    sequences: list[tuple[str, str, str, int]] = []
    rows = _rows(conn, catalog.SEQUENCES)
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
    for name, description in _rows(conn, catalog.FUNCTIONS):
        add("function", name, description)
    for name, description in _rows(conn, catalog.TYPES):
        add("type", name, description)
    for name, description in _rows(conn, catalog.EXTENSIONS):
        add("extension", name, description)
    for name, description in _rows(conn, catalog.SCHEMAS):
        add("schema", name, description)
    for name, description in _rows(conn, catalog.OTHER_OBJECTS):
        kind, _, identity = str(name).partition(":")
        add(kind.replace(" ", "_"), identity, description)
    return sequences
