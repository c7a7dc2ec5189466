"""Fingerprint v2 of a SQLite database, streamed from one connection.

Rows are read in a canonical order, fetched in batches and hashed as one stream of encoded
rows (rollproof.core.canonical), so memory stays bounded by one batch whatever the table's size:

* a table whose key orders its rows totally (an INTEGER PRIMARY KEY, a WITHOUT ROWID table, or
  a primary key whose columns are all NOT NULL) is read in primary-key order;
* any other table is read sorted by every column with BINARY collation, and each run of rows
  SQL finds equal but that are encoded differently (1 and 1.0, -0.0 and 0.0) is put in the
  order of the encodings. That is a total order on the multiset of rows, so the digest is
  that of the sorted multiset: independent of physical order, VACUUM and rowids, and as
  collision resistant as BLAKE3 (no additive or XOR combination). SQLite does the sort,
  spilling to temporary files rather than memory for large tables.

The hidden rowid is never hashed (VACUUM may renumber it). `sqlite_sequence` is its own
component; `sqlite_stat*` tables are statistics, excluded and named as excluded.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import operator
import os
import sqlite3
import urllib.parse
from collections.abc import Callable, Collection
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import apsw

from rollproof.core.canonical import (
    ROW_CHUNK,
    SqlValue,
    canonical_json,
    content_hasher,
    content_tagged,
    digest_json,
    encode_rows,
)
from rollproof.core.fingerprint import (
    HEADER_DEFAULTS,
    Fingerprint,
    HeaderValue,
    Reuse,
    TableDigest,
)
from rollproof.engines.sqlite.pages import PageMap, PageProofs
from rollproof.engines.sqlite.schema import (
    EXCLUDED_PREFIX,
    INTERNAL_TABLES,
    SEQUENCE_TABLE,
    columns,
    describe_table,
    normalize_sql,
    primary_key,
    quote_ident,
    table_flags,
)

ENGINE = "sqlite"
PARALLEL_MIN_BYTES = 8 << 20
"""Below this size a database is fingerprinted in one process: starting workers costs more.
Measured on 2 cores: 3 MB, one process 15 ms against two 18 ms; 9 MB, 41 against 32 ms;
33 MB, 130 against 84 ms."""


def _worker_count(path: Path | None, tables: list[str]) -> int:
    """Worker processes to read `tables` with: 0 means in this process.

    Even one table is read faster by one worker than here once the file is large enough
    (APSW's rows, see _digest_in_worker: 0.12 s against 0.175 s on the benchmark's 200k-row
    table, fork included).
    """
    if path is None or not tables:
        return 0
    try:
        if path.stat().st_size < PARALLEL_MIN_BYTES:
            return 0
    except OSError:
        return 0
    return min(len(tables), os.cpu_count() or 1)


def _digest_in_worker(path: str, name: str) -> TableDigest:
    """One table's digest, in a worker process: rows read through APSW, checked by the same
    encoder and hash as the standard module's (the digest cannot tell them apart).

    APSW returns rows about 30% faster than Python's `sqlite3` module (measured on the
    benchmark's tables: 0.67 -> 0.48 s for 400k unkeyed rows, 0.46 -> 0.29 s keyed). It is used
    only here, in a process of its own, and never while this process has a `sqlite3` connection
    of its own open on the same file: two copies of SQLite in one process do not see each
    other's POSIX locks (the parent's connections a forked worker inherits are neither used
    nor closed here). A table whose TEXT is not valid UTF-8 is read again with the standard module,
    whose lenient text factory keeps the bytes.
    """
    uri = "file:" + urllib.parse.quote(path) + "?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, isolation_level=None)) as conn:
        conn.execute("PRAGMA query_only = ON")
        query, header, order = _table_query(conn, name)
    try:
        fast = apsw.Connection(uri, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
        try:
            fast.execute("PRAGMA query_only = ON")
            rows = fast.execute(query)
            return _hash_rows(lambda: list(itertools.islice(rows, ROW_CHUNK)), name, header, order)
        finally:
            fast.close()
    except UnicodeDecodeError:
        pass
    except apsw.Error as e:
        raise sqlite3.DatabaseError(f"{name}: {e}") from e
    with contextlib.closing(sqlite3.connect(uri, uri=True, isolation_level=None)) as conn:
        conn.execute("PRAGMA query_only = ON")
        return table_digest(conn, name)


def _parallel_digests(
    path: Path, names: list[str], workers: int, meanwhile: Callable[[], None]
) -> dict[str, TableDigest]:
    # Tables are independent, so each is read by one worker on its own read-only connection.
    # fork is used where it exists: the workers need no re-import, and they never touch the
    # parent's connections. `meanwhile` is this process's own work while the workers read
    # (they are all started by then: no thread of ours is alive across a fork).
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = {name: pool.submit(_digest_in_worker, str(path), name) for name in names}
        meanwhile()
        return {name: f.result() for name, f in futures.items()}


def _lenient_text(data: bytes) -> str:
    # Invalid UTF-8 stored as TEXT still has to be fingerprinted; surrogateescape keeps it
    # distinct from every valid string (the encoder writes lone surrogates with surrogatepass).
    return data.decode("utf-8", "surrogateescape")


def _table_query(conn: sqlite3.Connection, name: str) -> tuple[str, bytes, str]:
    """The canonical-order query of a table, its digest header, and its order mode."""
    cols = columns(conn, name)
    pk = primary_key(conn, name)
    select = ", ".join(quote_ident(c) for c in cols)
    if pk is not None:
        order_by, order = ", ".join(quote_ident(c) for c in pk), "primary-key"
    else:
        # Storage classes and ±0.0 are told apart afterwards, by _settle_ties.
        order_by = ", ".join(f"{quote_ident(c)} COLLATE BINARY" for c in cols)
        order = "sorted-rows"
    query = f"SELECT {select} FROM main.{quote_ident(name)} ORDER BY {order_by}"
    header = canonical_json({"table": name, "columns": cols, "order": order})
    return query, header, order


def table_digest(conn: sqlite3.Connection, name: str) -> TableDigest:
    query, header, order = _table_query(conn, name)

    def hashed() -> TableDigest:
        cur = conn.execute(query)
        return _hash_rows(lambda: cur.fetchmany(ROW_CHUNK), name, header, order)

    try:
        return hashed()
    except sqlite3.OperationalError as e:
        if "decode" not in str(e).lower():
            raise
        previous = conn.text_factory
        conn.text_factory = _lenient_text
        try:
            return hashed()
        finally:
            conn.text_factory = previous


def _row_key(row: tuple[SqlValue, ...]) -> bytes:
    return encode_rows([row])


def _settle_ties(rows: list[tuple[SqlValue, ...]]) -> list[tuple[SqlValue, ...]]:
    """Put each run of adjacent equal rows in the order of their encodings.

    Sorting by every column orders distinct rows totally except where SQL sees equal values
    that are encoded differently: 1 and 1.0, and -0.0 and 0.0 (which SQLite even prints the
    same). Such rows are equal to Python too and adjacent in SQL order, so sorting each run of
    equal rows by its encoding makes the order canonical. Runs are rare (duplicate rows), and
    the check for them runs in C.
    """
    if not any(map(operator.eq, rows, rows[1:])):
        return rows
    out: list[tuple[SqlValue, ...]] = []
    run: list[tuple[SqlValue, ...]] = []
    for row in rows:
        if run and row != run[0]:
            out.extend(sorted(run, key=_row_key) if len(run) > 1 else run)
            run = []
        run.append(row)
    out.extend(sorted(run, key=_row_key) if len(run) > 1 else run)
    return out


def _hash_rows(
    fetch: Callable[[], list[tuple[SqlValue, ...]]], name: str, header: bytes, order: str
) -> TableDigest:
    """Hash the rows `fetch` returns batch by batch (an empty batch ends them)."""
    h = content_hasher(header)
    count = 0
    if order == "primary-key":  # a key orders rows totally: hash the driver's batches directly
        while batch := fetch():
            h.update(encode_rows(batch))
            count += len(batch)
    else:
        carry: list[tuple[SqlValue, ...]] = []
        while batch := fetch():
            rows = carry + batch if carry else batch
            # The trailing run may continue into the next batch: hold it back until it ends.
            k = len(rows) - 1
            while k > 0 and rows[k - 1] == rows[-1]:
                k -= 1
            ready, carry = rows[:k], rows[k:]
            if ready:
                h.update(encode_rows(_settle_ties(ready)))
                count += len(ready)
        if carry:
            h.update(encode_rows(_settle_ties(carry)))
            count += len(carry)
    return TableDigest(name=name, digest=content_tagged(h.hexdigest()), rows=count, order=order)


_AUTO_VACUUM = {0: "none", 1: "full", 2: "incremental"}


def database_header(conn: sqlite3.Connection) -> dict[str, HeaderValue]:
    """The database header's fields a program can set and the file keeps, each left out when
    at its value in a new database (HEADER_DEFAULTS): user_version and application_id (where
    applications keep their schema version and file type), auto_vacuum (set with VACUUM) and
    WAL journaling (`PRAGMA journal_mode = WAL` persists in the file; every other journal mode
    is the connection's, not the database's). Read through pragmas, so inside an open
    transaction they are the transaction's values. docs/fingerprint.md lists the fields left
    out and why."""
    defaults = HEADER_DEFAULTS[ENGINE]
    journal = str(conn.execute("PRAGMA main.journal_mode").fetchone()[0]).lower()
    found: dict[str, HeaderValue] = {
        "user_version": int(conn.execute("PRAGMA main.user_version").fetchone()[0]),
        "application_id": int(conn.execute("PRAGMA main.application_id").fetchone()[0]),
        "auto_vacuum": _AUTO_VACUUM.get(
            int(conn.execute("PRAGMA main.auto_vacuum").fetchone()[0]), "unknown"
        ),
        "journal_mode": "wal" if journal == "wal" else defaults["journal_mode"],
    }
    return {k: v for k, v in sorted(found.items()) if v != defaults[k]}


def fingerprint_connection(
    conn: sqlite3.Connection,
    progress: Callable[[str], None] | None = None,
    *,
    reuse: Reuse | None = None,
    parallel_path: Path | None = None,
    pages: PageProofs | None = None,
    locate: Collection[str] = (),
) -> Fingerprint:
    """Fingerprint the `main` database of an open connection (it may be inside a transaction).

    `progress`, when given, hears which table is being read, for long fingerprints. `reuse`
    takes unwritten tables' digests from an earlier fingerprint (see Reuse). `parallel_path`
    names the committed database file the connection reads, so that large tables may be read
    by worker processes on their own read-only connections. `pages`, with `parallel_path`,
    lets a table that must be read be proven from its page bytes instead (sqlite_pages), and
    where each table it reads lies is remembered there; `locate`, with `pages`, names tables
    to be remembered so even if they are not read (the snapshot's tables a change will write).
    """
    schema_rows = conn.execute(
        "SELECT type, name, tbl_name, sql FROM main.sqlite_schema ORDER BY type, name"
    ).fetchall()
    excluded = sorted(
        name
        for kind, name, _t, _s in schema_rows
        if kind == "table" and name.startswith(EXCLUDED_PREFIX)
    )
    kept = [r for r in schema_rows if r[1] not in excluded]
    ddl_text = digest_json([[k, n, t, s] for k, n, t, s in kept])
    flags = table_flags(conn)

    objects: dict[str, str] = {}
    content_tables: list[str] = []
    for kind, name, tbl_name, sql in kept:
        if name in INTERNAL_TABLES:
            continue
        if kind == "table":
            ttype = flags.get(name, {}).get("type", "table")
            if ttype == "virtual":
                objects[f"table:{name}"] = digest_json(
                    {"type": "virtual", "sql": normalize_sql(sql)}
                )
                continue
            objects[f"table:{name}"] = digest_json(
                describe_table(conn, name, sql or "", flags.get(name, {}))
            )
            content_tables.append(name)
        elif sql is not None:  # autoindexes (sql NULL) are described with their table
            objects[f"{kind}:{name}"] = digest_json(
                {"type": kind, "table": tbl_name.lower(), "sql": normalize_sql(sql)}
            )

    tables: dict[str, TableDigest] = {}
    to_read: list[str] = []
    for name in content_tables:
        if (
            reuse is not None
            and name.lower() not in reuse.written
            and name in reuse.base.tables
            and objects[f"table:{name}"] == reuse.base.schema_objects.get(f"table:{name}")
        ):
            tables[name] = reuse.base.tables[name]
        else:
            to_read.append(name)
    if pages is not None and parallel_path is not None and reuse is not None:
        for name in list(to_read):
            proven = pages.lookup(conn, parallel_path, name, objects[f"table:{name}"])
            if proven is not None:
                tables[name] = proven
                to_read.remove(name)
    located: dict[str, tuple[PageMap, str] | None] = {}

    def locate_pages() -> None:
        # Where the tables about to be read lie, so that a later state can be proven equal to
        # this one from its pages (sqlite_pages); done while worker processes read the rows.
        if pages is not None and parallel_path is not None:
            read_again = to_read if reuse is not None else []
            wanted = {t.lower() for t in locate}
            for name in [*read_again, *(t for t in content_tables if t.lower() in wanted)]:
                if name not in located:
                    located[name] = pages.locate(
                        conn, parallel_path, name, objects[f"table:{name}"]
                    )

    workers = _worker_count(parallel_path, to_read)
    if workers and parallel_path is not None:
        if progress is not None:
            progress(f"fingerprinting {len(to_read)} tables on {workers} processes")
        tables.update(_parallel_digests(parallel_path, to_read, workers, locate_pages))
    else:
        for i, name in enumerate(to_read, 1):
            if progress is not None:
                progress(f"fingerprinting table {name} ({i}/{len(to_read)})")
            tables[name] = table_digest(conn, name)
        locate_pages()
    if pages is not None:
        for name, where in located.items():
            if where is not None:
                pages.remember(name, where, tables[name])
    tables = dict(sorted(tables.items()))
    sequences: dict[str, int] = {}
    if any(n == SEQUENCE_TABLE for _k, n, _t, _s in kept):
        for name, seq in conn.execute(
            f"SELECT name, seq FROM main.{SEQUENCE_TABLE} ORDER BY name, seq"
        ):
            sequences[str(name)] = int(seq)
    return Fingerprint(
        engine=ENGINE,
        header=database_header(conn),
        schema_structural=digest_json(objects),
        schema_ddl_text=ddl_text,
        schema_objects=objects,
        tables=tables,
        sequences=sequences,
        excluded=tuple(excluded),
    )
