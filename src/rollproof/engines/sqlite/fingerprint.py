"""Fingerprint v4 of a SQLite database: every table's rows, read in pieces, possibly in parallel.

Table digests follow `rollproof.core.canonical` (docs/fingerprint.md):

* a table whose key orders its rows totally (an INTEGER PRIMARY KEY, a WITHOUT ROWID table, or
  a primary key whose columns are all NOT NULL) is read in key order and hashed as segments of
  SEGMENT_ROWS rows; the table digest is over the segment digests in order;
* any other table (order "row-digests") is read in whatever order SQLite returns it, no ORDER
  BY: each row is hashed on its own, the 32-byte digests are sorted (in memory up to
  RUN_DIGESTS, beyond that as sorted runs spilled to temporary files and merged), and the table
  digest is over the sorted digests. That is a commitment to the multiset of rows: independent
  of physical order, VACUUM and rowids, duplicates counted, 1 and 1.0 (or -0.0 and 0.0) still
  different because their encodings differ.

A large table is split into pieces read by worker processes (segment-aligned OFFSET ranges of
the key order; rowid ranges of a key-less table), so a one-table database keeps every core
busy; the digest is defined over segments and over the multiset, so it does not depend on how
many pieces there were. Memory stays bounded by a batch of rows and one run of digests.

Worker processes encode and hash rows inside SQLite with rollproof's C extension where it is
built (`rowcodec`), and read them into Python where it is not or cannot read a piece: the
digests are the same either way.

The hidden rowid is never hashed (VACUUM may renumber it). `sqlite_sequence` is its own
component; `sqlite_stat*` tables are statistics, excluded and named as excluded.

Longer than 600 lines because the planning of pieces, both ways of reading one (in C and in
Python), the sorted runs and their merge share one set of sizes (SEGMENT_ROWS, ROW_CHUNK,
RUN_DIGESTS, MERGE_DIGESTS, SPLIT_MIN_ROWS) that the tests shrink in one place to reach every
boundary with a few thousand rows.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import multiprocessing
import os
import shutil
import sqlite3
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import apsw
import blake3

import rollproof.engines.rowdigests as rowdigests
from rollproof.core.canonical import (
    ROW_CHUNK,
    ROW_DIGEST_SIZE,
    SEGMENT_ROWS,
    SqlValue,
    canonical_json,
    content_hasher,
    content_tagged,
    digest_json,
    encoded_rows,
    row_digests,
)
from rollproof.core.fingerprint import (
    HEADER_DEFAULTS,
    Fingerprint,
    HeaderValue,
    Reuse,
    TableDigest,
)
from rollproof.core.surface import fold_name
from rollproof.engines.sqlite.schema import (
    EXCLUDED_PREFIX,
    INTERNAL_TABLES,
    SEQUENCE_TABLE,
    columns,
    describe_table,
    normalize_sql,
    primary_key,
    quote_ident,
    rowid_alias,
    table_flags,
    view_columns,
)

if TYPE_CHECKING:
    from types import ModuleType

    from rollproof.engines.sqlite.pages import PageMap, PageProofs

ENGINE = "sqlite"
PARALLEL_MIN_BYTES = 8 << 20
"""Below this size a database is fingerprinted in one process: starting workers costs more.
Measured on 2 cores: 3 MB, one process 15 ms against two 18 ms; 9 MB, 41 against 32 ms;
33 MB, 130 against 84 ms."""
SPLIT_MIN_ROWS = 2 * SEGMENT_ROWS
"""A table is split across workers only from this many (estimated) rows."""
MERGE_RUNS_C = rowdigests.MERGE_RUNS_C
RUN_DIGESTS = rowdigests.RUN_DIGESTS
MERGE_DIGESTS = rowdigests.MERGE_DIGESTS
SPILL_PREFIX = rowdigests.SPILL_PREFIX

Row = tuple[SqlValue, ...]
Fetch = Callable[[], list[Row]]
Chunk = tuple[int, bytes | memoryview]
"""A run of a piece's rows: how many, and their encodings (key order) or row digests."""


@dataclass(frozen=True, slots=True)
class _Plan:
    """How one table is read: its columns, its key, its digest header."""

    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...] | None  # None for a row-digests table
    rowid: str | None  # a rowid alias no column shadows (to estimate and split), if any
    header: bytes
    utf16: str | None = None
    """The codec of a UTF-16 database's text ('utf-16-le' or 'utf-16-be'): its text is read as
    the stored code units (`exact_text_rows`), not as SQLite's lossy conversion to UTF-8."""
    rowid_key: bool = False
    """The key is the table's rowid (`INTEGER PRIMARY KEY`): the accelerator pages it by
    rowid ranges (rowcodec.rowid_keyed_chunks)."""
    without_rowid: bool = False
    """A WITHOUT ROWID table: its b-tree is in key order, so a key range is scanned in key
    order (rowcodec.ranged_keyed_chunks, where the key collates BINARY)."""

    @property
    def select(self) -> str:
        """The rows' query, without ORDER BY. In a UTF-16 database each column is read as two:
        the value, or a TEXT value's stored bytes; and whether it was TEXT."""
        if self.utf16 is None:
            cols = ", ".join(quote_ident(c) for c in self.columns)
        else:
            cols = ", ".join(
                f"CASE typeof({q}) WHEN 'text' THEN CAST({q} AS BLOB) ELSE {q} END, "
                f"typeof({q}) = 'text'"
                for q in map(quote_ident, self.columns)
            )
        return f"SELECT {cols} FROM main.{quote_ident(self.name)}"

    @property
    def order_by(self) -> str | None:
        """The key's columns for ORDER BY; None for a row-digests table."""
        return None if self.key is None else ", ".join(quote_ident(c) for c in self.key)

    @property
    def order(self) -> str:
        return "row-digests" if self.key is None else "primary-key"


@dataclass(frozen=True, slots=True)
class _Piece:
    """A part of a table one reader reads. Key order: rows [OFFSET, OFFSET + LIMIT) of the key
    order, both multiples of SEGMENT_ROWS (limit -1: to the end). Row digests: rowids in
    [low, high) (None: unbounded)."""

    plan: _Plan
    offset: int = 0
    limit: int = -1
    low: int | None = None
    high: int | None = None

    def query(self) -> tuple[str, tuple[int, ...]]:
        if self.plan.order_by is not None:
            sql = f"{self.plan.select} ORDER BY {self.plan.order_by}"
            if self.offset or self.limit >= 0:
                return f"{sql} LIMIT ? OFFSET ?", (self.limit, self.offset)
            return sql, ()
        bounds, params = [], []
        if self.low is not None:
            bounds.append(f"{self.plan.rowid} >= ?")
            params.append(self.low)
        if self.high is not None:
            bounds.append(f"{self.plan.rowid} < ?")
            params.append(self.high)
        where = f" WHERE {' AND '.join(bounds)}" if bounds else ""
        return self.plan.select + where, tuple(params)


@dataclass(frozen=True, slots=True)
class _Read:
    """What a reader found in one piece: its rows, and either the piece's segment digests (key
    order) or its sorted row digests as runs (bytes in memory, or a spilled file's path)."""

    rows: int
    segments: tuple[bytes, ...] = ()
    runs: tuple[bytes | bytearray | str, ...] = ()


_UTF16 = {"utf16le": "utf-16-le", "utf16be": "utf-16-be"}


def text_codec(conn: sqlite3.Connection) -> str | None:
    """The Python codec of the stored text of a UTF-16 database; None for UTF-8.

    SQLite hands UTF-16 text out converted to UTF-8, and the conversion is lossy for code units
    that are not well-formed UTF-16: a high surrogate takes the next unit's low ten bits as its
    pair whatever that unit is, so 'D800 0041' and 'D800 0441' read the same. Programs that
    write UTF-16 (sqlite3_bind_text16 from Java, JavaScript or Windows strings) store lone
    surrogates as they come, and a change between two such values would be unseen. Read as
    the stored units instead, well-formed text decodes to the same string as before (the same
    digest), and malformed text keeps every unit (a lone surrogate is encoded as marshal
    writes it, surrogatepass)."""
    encoding = str(conn.execute("PRAGMA main.encoding").fetchone()[0]).lower()
    return _UTF16.get(encoding.replace("-", ""))


def exact_text_rows(rows: list[Row], codec: str) -> list[Row]:
    """Rows read with a UTF-16 plan's select (each value, then whether it was TEXT) as the
    table's values, TEXT decoded from its stored code units."""
    out: list[Row] = []
    for row in rows:
        values: list[SqlValue] = []
        for i in range(0, len(row), 2):
            v = row[i]
            values.append(bytes(v).decode(codec, "surrogatepass") if row[i + 1] else v)  # type: ignore[arg-type]
        out.append(tuple(values))
    return out


def malformed_schema_sql(conn: sqlite3.Connection, codec: str) -> dict[tuple[str, str], str]:
    """(type, name) -> the stored code units (hex, the database's byte order) of each schema
    object whose SQL is not well-formed UTF-16: SQLite's conversion of it to UTF-8 is lossy
    (`text_codec`), so what the structural description reads from it (defaults, CHECK text,
    a view's or trigger's SQL) could not tell two such objects apart. Empty for every
    database whose schema text is well-formed, so their digests are unchanged."""
    out: dict[tuple[str, str], str] = {}
    for kind, name, raw in conn.execute(
        "SELECT type, name, CAST(sql AS BLOB) FROM main.sqlite_schema WHERE sql IS NOT NULL"
    ):
        try:
            bytes(raw).decode(codec)
        except UnicodeDecodeError:
            out[str(kind), str(name)] = bytes(raw).hex()
    return out


def _table_plan(conn: sqlite3.Connection, name: str, codec: str | None = None) -> _Plan:
    cols = columns(conn, name)
    pk = primary_key(conn, name)
    taken = {fold_name(c) for c in cols}
    rowid = next((a for a in ("rowid", "_rowid_", "oid") if a not in taken), None)
    order = "row-digests" if pk is None else "primary-key"
    header = canonical_json({"table": name, "columns": cols, "order": order})
    alias = None if pk is None else rowid_alias(conn, name)
    return _Plan(
        name,
        tuple(cols),
        None if pk is None else tuple(pk),
        rowid,
        header,
        codec,
        rowid_key=alias is not None and (alias,) == tuple(pk or ()),
        without_rowid=bool(table_flags(conn).get(name, {}).get("wr")),
    )


def _python_chunks(fetch: Fetch, piece: _Piece) -> Iterator[Chunk]:
    """A piece's rows as chunks, encoded (key order) or digested in Python, a batch each.

    A batch is ROW_CHUNK rows, which divides SEGMENT_ROWS, and a piece starts on a segment
    boundary, so no chunk crosses one."""
    keyed = piece.plan.key is not None
    codec = piece.plan.utf16
    while batch := fetch():
        if codec is not None:
            batch = exact_text_rows(batch, codec)
        yield len(batch), encoded_rows(batch) if keyed else row_digests(batch)


def _read_segments(chunks: Iterable[Chunk]) -> _Read:
    """Hash key-ordered rows as SEGMENT_ROWS-row segments (the piece starts on a boundary, and
    no chunk crosses one)."""
    segments: list[bytes] = []
    h: blake3.blake3 | None = None
    filled = rows = 0
    for count, data in chunks:
        if h is None:
            h = blake3.blake3()
        h.update(data)
        rows += count
        filled += count
        if filled > SEGMENT_ROWS:
            raise RuntimeError(f"a chunk of {count} rows crosses a segment boundary")
        if filled == SEGMENT_ROWS:
            segments.append(h.digest())
            h, filled = None, 0
    if h is not None:
        segments.append(h.digest())
    return _Read(rows=rows, segments=tuple(segments))


def _digest_module() -> ModuleType | None:
    """The C digest sorter (`_digests`), or None where it is not built."""
    from rollproof.engines.sqlite import rowcodec

    return rowcodec.digest_module()


def _sort_digests(buf: bytearray) -> bytearray:
    """Sort concatenated 32-byte digests as byte strings, in place (rowdigests.sort_digests)."""
    return rowdigests.sort_digests(buf, _digest_module())


def _read_row_digests(chunks: Iterable[Chunk], spill: str | None) -> _Read:
    """Keep the rows' digests sorted, spilling full runs to `spill` (removed again if reading
    fails, so that a piece read again leaves no stray run). The chunks are joined once, into
    the buffer that is sorted in place."""
    runs: list[bytes | bytearray | str] = []
    parts: list[bytes | memoryview] = []
    held = 0
    limit = RUN_DIGESTS * ROW_DIGEST_SIZE
    rows = 0
    try:
        for count, digests in chunks:
            rows += count
            parts.append(digests)
            held += len(digests)
            if held >= limit and spill is not None:
                fd, name = tempfile.mkstemp(prefix="run-", dir=spill)
                runs.append(name)
                with os.fdopen(fd, "wb") as f:
                    f.write(_sort_digests(bytearray().join(parts)))
                parts, held = [], 0
    except BaseException:
        for run in runs:
            if isinstance(run, str):
                with contextlib.suppress(OSError):
                    os.unlink(run)
        raise
    if parts or not runs:
        runs.append(_sort_digests(bytearray().join(parts)))
    return _Read(rows=rows, runs=tuple(runs))


def _read_piece(chunks: Iterable[Chunk], piece: _Piece, spill: str | None) -> _Read:
    if piece.plan.key is not None:
        return _read_segments(chunks)
    return _read_row_digests(chunks, spill)


def _merge_into(runs: list[rowdigests.Run], update: rowdigests.Update) -> None:
    """Give `update` the digests of sorted runs as one sorted stream (rowdigests.merge_into)."""
    rowdigests.merge_into(runs, update, _digest_module(), MERGE_DIGESTS, MERGE_RUNS_C)


def _merged_by_numpy(runs: list[rowdigests.Run]) -> Iterator[bytes]:
    """The numpy merge, where `_digests` is not built (rowdigests.merged_by_numpy)."""
    return rowdigests.merged_by_numpy(runs, MERGE_DIGESTS)


def _combine(plan: _Plan, reads: list[_Read]) -> TableDigest:
    """The table digest from its pieces' results, in piece order."""
    h = content_hasher(plan.header)
    if plan.order_by is not None:
        for read in reads:
            for segment in read.segments:
                h.update(segment)
    else:
        _merge_into([run for read in reads for run in read.runs], h.update)
    return TableDigest(
        name=plan.name,
        digest=content_tagged(h.hexdigest()),
        rows=sum(r.rows for r in reads),
        order=plan.order,
    )


def _lenient_text(data: bytes) -> str:
    # Invalid UTF-8 stored as TEXT still has to be fingerprinted; surrogateescape keeps it
    # distinct from every valid string (the encoder writes lone surrogates with surrogatepass).
    return data.decode("utf-8", "surrogateescape")


def _read_with_sqlite3(conn: sqlite3.Connection, piece: _Piece, spill: str | None) -> _Read:
    """Read a piece through Python's `sqlite3`: by the C functions where the connection has
    them and is inside a transaction (their chunks are several queries: one read transaction
    keeps them one state), else into Python (lenient with invalid UTF-8 in TEXT)."""
    from rollproof.engines.sqlite import rowcodec

    if conn.in_transaction and rowcodec.has_functions(conn):
        fast = _read_accelerated(conn, piece, spill)
        if fast is not None:
            return fast
    sql, params = piece.query()

    def read() -> _Read:
        cur = conn.execute(sql, params)
        return _read_piece(_python_chunks(lambda: cur.fetchmany(ROW_CHUNK), piece), piece, spill)

    try:
        return read()
    except sqlite3.OperationalError as e:
        if "decode" not in str(e).lower():
            raise
        previous = conn.text_factory
        conn.text_factory = _lenient_text
        try:
            return read()
        finally:
            conn.text_factory = previous


def _read_accelerated(
    conn: apsw.Connection | sqlite3.Connection, piece: _Piece, spill: str | None
) -> _Read | None:
    """A piece read through rollproof's SQLite functions (`rowcodec`), rows encoded and hashed
    in C, on a worker's APSW connection or a `sqlite3` one opened with them; None when it
    cannot be (not built, too many columns, a key `>` would not page by exactly, no rowid to
    page by, a value it refuses), for the Python path to read instead."""
    from rollproof.engines.sqlite import rowcodec

    plan = piece.plan
    if plan.utf16 is not None:
        return None  # the extension reads text as SQLite converts it to UTF-8 (text_codec)
    try:
        if not rowcodec.load(conn):
            return None
        if len(plan.columns) > rowcodec.function_arg_limit(conn):
            return None
        if plan.key is not None and not rowcodec.keyset_exact(conn, plan.name, plan.key):
            return None
    except (apsw.Error, sqlite3.Error):
        return None
    if plan.key is not None and plan.without_rowid:
        ranged = _read_ranged(conn, piece, spill)
        if ranged is not None:
            return ranged  # else keyset paging below
    if plan.key is not None and plan.rowid_key:
        chunks = rowcodec.rowid_keyed_chunks(
            conn,
            plan.name,
            plan.columns,
            plan.key[0],
            piece.offset,
            piece.limit,
            SEGMENT_ROWS,
            ROW_CHUNK,
        )
    elif plan.key is not None:
        chunks = rowcodec.keyed_chunks(
            conn,
            plan.name,
            plan.columns,
            plan.key,
            piece.offset,
            piece.limit,
            SEGMENT_ROWS,
            ROW_CHUNK,
        )
    elif plan.rowid is not None:
        chunks = rowcodec.keyless_chunks(
            conn,
            plan.name,
            plan.columns,
            plan.rowid,
            piece.low,
            piece.high,
            ROW_CHUNK,
            SEGMENT_ROWS,
        )
    else:
        return None
    try:
        return _read_piece(chunks, piece, spill)
    except (apsw.Error, sqlite3.Error, rowcodec.KeysetMismatch):
        return None


def _read_ranged(
    conn: apsw.Connection | sqlite3.Connection, piece: _Piece, spill: str | None
) -> _Read | None:
    """A WITHOUT ROWID piece read by key ranges (rowcodec.ranged_keyed_chunks) where its key
    collates BINARY; None where it cannot be, for keyset paging to read it instead."""
    from rollproof.engines.sqlite import rowcodec

    plan = piece.plan
    assert plan.key is not None
    try:
        if not rowcodec.binary_key(conn, plan.name, plan.key):
            return None
        chunks = rowcodec.ranged_keyed_chunks(
            conn,
            plan.name,
            plan.columns,
            plan.key,
            piece.offset,
            piece.limit,
            SEGMENT_ROWS,
            ROW_CHUNK,
        )
        return _read_piece(chunks, piece, spill)
    except (apsw.Error, sqlite3.Error, rowcodec.KeysetMismatch, UnicodeDecodeError):
        return None  # UnicodeDecodeError: a key bound as text that is not UTF-8 (APSW)


def _read_in_worker(path: str, piece: _Piece, spill: str | None) -> _Read:
    """One piece, in a worker process (`_read_piece_here`); a key-less piece's sorted runs are
    handed back as files in the spill directory (`_runs_to_files`)."""
    return _runs_to_files(_read_piece_here(path, piece, spill), spill)


def _runs_to_files(read: _Read, spill: str | None) -> _Read:
    """A worker's sorted runs still in memory written to the spill directory, their paths in
    their place: the fingerprinting process maps the files to merge them, instead of taking
    every digest through a pipe and unpickling it (1M key-less rows: 32 MB, about a third of
    that process's time). Files written are removed again if one fails."""
    if spill is None or all(isinstance(run, str) for run in read.runs):
        return read
    runs: list[bytes | bytearray | str] = []
    try:
        for run in read.runs:
            if not isinstance(run, str):
                fd, name = tempfile.mkstemp(prefix="run-", dir=spill)
                runs.append(name)
                with os.fdopen(fd, "wb") as f:
                    f.write(run)
                continue
            runs.append(run)
    except BaseException:
        for run in [*runs, *read.runs]:
            if isinstance(run, str):
                with contextlib.suppress(OSError):
                    os.unlink(run)
        raise
    return _Read(rows=read.rows, runs=tuple(runs))


def _read_piece_here(path: str, piece: _Piece, spill: str | None) -> _Read:
    """One piece, in this (worker) process: rows read through APSW, hashed exactly as
    in-process.

    Rows are encoded and hashed inside SQLite by rollproof's extension where it can be used
    (`_read_accelerated`), else read into Python. APSW returns rows about 30% faster than
    Python's `sqlite3` module (measured on the benchmark's tables: 0.67 -> 0.48 s for 400k
    unkeyed rows, 0.46 -> 0.29 s keyed). It is used only here, in a process of its own, and
    never while this process has a `sqlite3` connection of its own open on the same file: two
    copies of SQLite in one process do not see each other's POSIX locks (the parent's
    connections a forked worker inherits are neither used nor closed here). The piece's
    queries share one read transaction. A piece whose TEXT is not valid UTF-8 and that the
    extension does not read is read again with the standard module, whose lenient text factory
    keeps the bytes.
    """
    uri = "file:" + urllib.parse.quote(path) + "?mode=ro"
    sql, params = piece.query()
    try:
        fast = apsw.Connection(uri, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
        try:
            fast.execute("PRAGMA query_only = ON")
            fast.execute("BEGIN")
            read = _read_accelerated(fast, piece, spill)
            if read is not None:
                return read
            rows = iter(fast.execute(sql, params))
            chunks = _python_chunks(lambda: list(itertools.islice(rows, ROW_CHUNK)), piece)
            return _read_piece(chunks, piece, spill)
        finally:
            fast.close()
    except UnicodeDecodeError:
        pass
    except apsw.Error as e:
        raise sqlite3.DatabaseError(f"{piece.plan.name}: {e}") from e
    with contextlib.closing(sqlite3.connect(uri, uri=True, isolation_level=None)) as conn:
        conn.execute("PRAGMA query_only = ON")
        return _read_with_sqlite3(conn, piece, spill)


def _estimate_rows(conn: sqlite3.Connection, plan: _Plan) -> tuple[int, int, int]:
    """(estimated rows, lowest rowid, highest rowid): the rowid span where there is a rowid
    (O(log n)), else an exact count. Only how pieces are cut depends on it, never a digest."""
    if plan.rowid is not None:
        try:
            # Two subqueries: SQLite answers a lone min() or max() from the b-tree's edge, but
            # `SELECT min(x), max(x)` scans the whole table (66 ms at 1M narrow rows).
            table = f"main.{quote_ident(plan.name)}"
            low, high = conn.execute(
                f"SELECT (SELECT min({plan.rowid}) FROM {table}), "
                f"(SELECT max({plan.rowid}) FROM {table})"
            ).fetchone()
            if low is None:
                return 0, 0, 0
            return int(high) - int(low) + 1, int(low), int(high)
        except sqlite3.OperationalError:
            pass  # WITHOUT ROWID: no rowid to ask for
    count = conn.execute(f"SELECT count(*) FROM main.{quote_ident(plan.name)}").fetchone()[0]
    return int(count), 0, 0


def _pieces(conn: sqlite3.Connection, plans: list[_Plan], workers: int) -> list[_Piece]:
    """Cut the tables into pieces so that `workers` processes get similar shares: a table of
    more than its share is split (segment-aligned for key order, by rowid otherwise)."""
    estimates = {p.name: _estimate_rows(conn, p) for p in plans}
    share = max(1, sum(e[0] for e in estimates.values()) // workers)
    pieces: list[tuple[int, _Piece]] = []
    for plan in plans:
        rows, low, high = estimates[plan.name]
        n = min(workers, round(rows / share)) if rows >= SPLIT_MIN_ROWS else 1
        if n <= 1 or (plan.order_by is None and plan.rowid is None):
            pieces.append((rows, _Piece(plan)))
        elif plan.order_by is not None:
            segments = math.ceil(rows / SEGMENT_ROWS)
            cuts = [segments * i // n * SEGMENT_ROWS for i in range(n)] + [-1]
            for start, end in itertools.pairwise(cuts):
                limit = -1 if end < 0 else end - start
                pieces.append((rows // n, _Piece(plan, offset=start, limit=limit)))
        else:
            cuts = [low + (high - low + 1) * i // n for i in range(n + 1)]
            for i, (start, end) in enumerate(itertools.pairwise(cuts)):
                piece = _Piece(plan, low=start if i else None, high=end if i < n - 1 else None)
                pieces.append((rows // n, piece))
    pieces.sort(key=lambda p: -p[0])  # largest first, so the last to finish is small
    return [p for _, p in pieces]


def _worker_count(path: Path | None, tables: list[str]) -> int:
    """Worker processes to read `tables` with: 0 means in this process.

    Even one table is read faster by workers than here once the file is large enough (APSW's
    rows, and a large table is split between them).
    """
    if path is None or not tables:
        return 0
    try:
        if path.stat().st_size < PARALLEL_MIN_BYTES:
            return 0
    except OSError:
        return 0
    return os.cpu_count() or 1


def _follow_parent(parent: int) -> None:
    """A worker's initializer: exit as soon as the fingerprinting process is gone.

    A forked worker holds a copy of the parent's end of the task pipe, so a parent killed with
    SIGKILL never closes it: without this the worker waits for work forever, holding the spill
    directory's lock (inherited), and `rollproof gc` may never remove the directory.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="rollproof-follow-parent", daemon=True).start()


def _parallel_digests(
    conn: sqlite3.Connection,
    path: Path,
    plans: list[_Plan],
    workers: int,
    spill: str | None,
    meanwhile: Callable[[], None],
) -> dict[str, TableDigest]:
    # Pieces are independent, so each is read by one worker on its own read-only connection.
    # fork is used where it exists: the workers need no re-import, and they never touch the
    # parent's connections. `meanwhile` is this process's own work while the workers read
    # (they are all started by then: no thread of ours is alive across a fork).
    pieces = _pieces(conn, plans, workers)
    if any(p.order_by is None for p in plans) and _digest_module() is None:
        import numpy  # noqa: F401 - imported once here rather than in every worker
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ProcessPoolExecutor(
        max_workers=min(workers, len(pieces)),
        mp_context=ctx,
        initializer=_follow_parent,
        initargs=(os.getpid(),),
    ) as pool:
        futures: list[tuple[_Piece, Future[_Read]]] = [
            (p, pool.submit(_read_in_worker, str(path), p, spill)) for p in pieces
        ]
        meanwhile()
        results = [(p, f.result()) for p, f in futures]
    out: dict[str, TableDigest] = {}
    for plan in plans:
        mine = [(p, r) for p, r in results if p.plan.name == plan.name]
        mine.sort(key=lambda pr: pr[0].offset)  # key order; row digests are a multiset
        out[plan.name] = _combine(plan, [r for _p, r in mine])
    return out


@contextlib.contextmanager
def _spill_dir(plans: list[_Plan]) -> Iterator[str | None]:
    """A private temporary directory for sorted runs, when some table has no key; claimed
    like a workspace, so a process killed mid-spill leaves it to `rollproof gc` (lock free)."""
    if all(p.order_by is not None for p in plans):
        yield None
        return
    from rollproof.engines.workspace import make_owned_dir

    claim = make_owned_dir(SPILL_PREFIX, None)
    try:
        yield str(claim.directory)
    finally:
        shutil.rmtree(claim.directory, ignore_errors=True)
        claim.release()


def table_digest(conn: sqlite3.Connection, name: str) -> TableDigest:
    """One table's digest, read in this process through `conn`."""
    plan = _table_plan(conn, name, text_codec(conn))
    with _spill_dir([plan]) as spill:
        return _combine(plan, [_read_with_sqlite3(conn, _Piece(plan), spill)])


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
    rows_from: sqlite3.Connection | None = None,
) -> Fingerprint:
    """Fingerprint the `main` database of an open connection (it may be inside a transaction).

    `progress`, when given, hears which table is being read, for long fingerprints. `reuse`
    takes unwritten tables' digests from an earlier fingerprint (see Reuse). `parallel_path`
    names the committed database file the connection reads, so that large tables may be read
    by worker processes on their own read-only connections. `pages`, with `parallel_path`,
    lets a table that must be read be proven from its page bytes instead (sqlite_pages), and
    where each table it reads lies is remembered there; `locate`, with `pages`, names tables
    to be remembered so even if they are not read (the snapshot's tables a change will write).
    `rows_from`, read in this process instead of `conn` for the rows only, is a copy of exactly
    what `conn` sees (an open transaction's view, SqliteSession._transaction_view).
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
    codec = text_codec(conn)
    malformed = {} if codec is None else malformed_schema_sql(conn, codec)

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
            described = describe_table(conn, name, sql or "", flags.get(name, {}))
            if (kind, name) in malformed:
                described["sql_utf16_units"] = malformed[kind, name]
            objects[f"table:{name}"] = digest_json(described)
            content_tables.append(name)
        elif sql is not None:  # autoindexes (sql NULL) are described with their table
            described = {"type": kind, "table": fold_name(tbl_name), "sql": normalize_sql(sql)}
            if kind == "view":
                described["columns"] = view_columns(conn, name)
            if (kind, name) in malformed:
                described["sql_utf16_units"] = malformed[kind, name]
            objects[f"{kind}:{name}"] = digest_json(described)

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

    plans = [_table_plan(conn, name, codec) for name in to_read]
    workers = _worker_count(parallel_path, to_read)
    with _spill_dir(plans) as spill:
        if workers and parallel_path is not None:
            if progress is not None:
                progress(f"fingerprinting {len(to_read)} tables on {workers} processes")
            tables.update(
                _parallel_digests(conn, parallel_path, plans, workers, spill, locate_pages)
            )
        else:
            for i, plan in enumerate(plans, 1):
                if progress is not None:
                    progress(f"fingerprinting table {plan.name} ({i}/{len(plans)})")
                read = _read_with_sqlite3(rows_from or conn, _Piece(plan), spill)
                tables[plan.name] = _combine(plan, [read])
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
