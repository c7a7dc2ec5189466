"""A table's contents as the PostgreSQL fingerprint reads them: columns, forms, order, COPY.

Split from fingerprint.py (which assembles the whole fingerprint) because reading rows is its
own job: how each column is read (`Column.value`), in which order (`TablePlan`), the
binary COPY loop is copyloop.py's), and sharing the tables, and the ranges of a large keyed
table, among sessions of one snapshot (`TableReader`; pieces.py joins the ranges' streams).
The digests and the reasons for each form and order are in fingerprint.py's docstring.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import psycopg

import rollproof.engines.rowdigests as rowdigests
from rollproof.core.canonical import (
    canonical_json,
    content_hasher,
    content_tagged,
)
from rollproof.core.fingerprint import TableDigest
from rollproof.engines.postgres import catalog, copyloop, pieces
from rollproof.engines.postgres.conn import quote_ident

SESSION_SETTINGS: tuple[tuple[str, str], ...] = (
    ("search_path", "pg_catalog, pg_temp"),
    ("DateStyle", "ISO, YMD"),
    ("IntervalStyle", "postgres"),
    ("TimeZone", "UTC"),
    ("extra_float_digits", "1"),
    ("bytea_output", "hex"),
    ("lc_monetary", "C"),
    # COPY sends its text in the client encoding: always UTF-8.
    ("client_encoding", "UTF8"),
    ("max_parallel_workers_per_gather", "0"),
    # Never a filtered read: a query row-level security would filter raises instead.
    ("row_security", "off"),
)

ROW_DIGEST = "blake2s-256 of the binary COPY tuple"
"""A row-digests table's header names how each row is digested (`copy_row_digests`)."""

_TEXT = frozenset({25, 1043})
"""text and character varying: compared bytewise with the pattern operator `~<~`."""


class Column(NamedTuple):
    name: str
    type: str
    oid: int
    bytewise: bool | None  # None: not collatable
    base: str | None  # a domain's base type with its modifier; None for any other type
    form: str  # "binary", "float" or "text": how the value is read (catalog.TABLE_COLUMNS)
    oid_valued: bool  # holds OIDs of catalog rows (regclass, ...), which differ per server

    @property
    def ref(self) -> str:
        return f"t.{quote_ident(self.name)}"

    def key(self) -> str:
        """This column as a sort key, compared bytewise when text-like (`~<~` for text and
        varchar: unlike `COLLATE "C"`, the sort carries no second copy; a byte collation as is,
        so its index can serve the order)."""
        if self.bytewise is None or self.bytewise:
            return self.ref
        if self.oid in _TEXT:
            return f"{self.ref} USING ~<~"
        return f'{self.ref} COLLATE "C"'

    def value(self) -> str:
        """The column as read: a form whose binary COPY bytes are the same on any server.

        "text": the type's output function (user and extension types, arrays, composites,
        geometric and OID alias types), under the session's fixed settings. "float": the
        value with every NaN made the one NaN text input gives (arithmetic can leave a NaN
        with its sign bit set, which prints, dumps and restores as plain NaN). A domain is
        read as its base type, so a row's `record_send` names only built-in type OIDs.
        """
        if self.form == "text":
            return f"{self.ref}::pg_catalog.text"
        ref = self.ref if self.base is None else f"{self.ref}::{self.base}"
        if self.form == "float":
            kind = self.base or self.type
            return f"CASE WHEN {ref} = 'NaN'::{kind} THEN 'NaN'::{kind} ELSE {ref} END"
        return ref


def prepare_session(conn: psycopg.Connection[Any]) -> None:
    """Fix every setting that changes how a value is rendered, and the search path.

    `set_config(..., true)` inside a transaction lasts until it ends; outside one, a plain
    session setting is used. Both are re-applied before every fingerprint.
    """
    local = conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
    calls = ", ".join("pg_catalog.set_config(%s, %s, %s)" for _ in SESSION_SETTINGS)
    params = [x for name, value in SESSION_SETTINGS for x in (name, value, local)]
    conn.execute(f"SELECT {calls}", params, prepare=False)


SPLIT_BYTES = 64 << 20
"""A keyed table at least this large (pg_table_size) may be read as key ranges on several
sessions (`range_count`)."""

SERVER_BOUND = 0.6
"""Share of the first range's read spent waiting for the server from which the other ranges
are handed to other sessions: one session reads rows about as fast as the client can take
them unless the server's work per row (send functions, detoasting) is the larger part."""

RANGE_BYTES = 16 << 20
"""About how much of the table one key range covers (on disk)."""

MAX_RANGES = 32
"""At most this many ranges a table (each is one more query)."""

_INTEGERS = frozenset({20, 21, 23})
"""bigint, smallint, integer: a single key column of these is cut into ranges arithmetically."""


class TablePlan(NamedTuple):
    """How one table is read, decided from the catalog (the digest does not depend on it
    beyond `header` and `order`)."""

    name: str
    header: bytes
    order: str
    select: str  # SELECT ... FROM ONLY relation t, without ORDER BY
    source: str  # FROM ONLY relation t
    keys: str  # the ORDER BY list ("" for row-digests)
    split: str | None  # a single integer key column: the table may be read in key ranges
    width: int  # the columns read


def range_count(plan: TablePlan, size: int, sessions: int) -> int:
    """Key ranges to cut a table of `size` bytes on disk into (1: read whole): a large table
    with an integer key, in ranges of about `RANGE_BYTES`."""
    if plan.split is None or size < SPLIT_BYTES or sessions < 2:
        return 1
    return max(sessions, min(MAX_RANGES, size // RANGE_BYTES))


def plan_table(conn: psycopg.Connection[Any], name: str, schema: str, relname: str) -> TablePlan:
    """Columns, forms and order of one table, and the query that reads it."""
    relation = f"{quote_ident(schema)}.{quote_ident(relname)}"
    cols: dict[int, Column] = {
        int(num): Column(str(c), str(t), int(oid), bytewise, base, str(form), bool(aliased))
        for num, c, t, oid, bytewise, base, form, aliased in conn.execute(
            catalog.TABLE_COLUMNS, (relation, relation), prepare=False
        )
    }
    pk = [
        cols[int(num)] for (num,) in conn.execute(catalog.PRIMARY_KEY, (relation,), prepare=False)
    ]
    values = ", ".join(c.value() for c in cols.values())
    source = f"FROM ONLY {relation} t"
    select = f"SELECT {values} {source}"
    split = None
    if pk and not any(c.oid_valued for c in pk):
        # A primary key is unique and NOT NULL: its order is total. (One over OIDs would order
        # the clone differently from the source.)
        order = "primary-key"
        keys = ", ".join(c.key() for c in pk)
        if len(pk) == 1 and pk[0].oid in _INTEGERS:
            split = pk[0].ref
    else:
        order = "row-digests"
        keys = ""
    described: dict[str, object] = {
        "table": name,
        "columns": [c.name for c in cols.values()],
        "types": [c.type for c in cols.values()],
        "forms": [c.form for c in cols.values()],
        "order": order,
        "rows": "copy-binary",
    }
    if order == "row-digests":
        described["row_digest"] = ROW_DIGEST
    return TablePlan(name, canonical_json(described), order, select, source, keys, split, len(cols))


def table_digest(
    conn: psycopg.Connection[Any], name: str, schema: str, relname: str
) -> TableDigest:
    """Digest one table: its header, then its rows as binary COPY in a canonical order.

    With a primary key, the rows themselves in key order; without one, each row's BLAKE2s-256
    over its binary COPY tuple, computed by this client and sorted.
    """
    return read_table(conn, plan_table(conn, name, schema, relname))


def read_table(conn: psycopg.Connection[Any], plan: TablePlan) -> TableDigest:
    """Read a planned table on one session (see `read_range` for a share of a keyed one)."""
    h = content_hasher(plan.header)
    if plan.order == "primary-key":
        framing = pieces.Framing(plan.name, True, True, h.update)
        statement = f"COPY ({plan.select} ORDER BY {plan.keys}) TO STDOUT (FORMAT binary)"
        messages = copyloop.copy_out(conn, statement, framing)
        framing.close()
        rows = messages - 1
    else:
        rows = _row_digests(conn, plan, h)
    return TableDigest(plan.name, content_tagged(h.hexdigest()), rows, plan.order)


def _row_digests(conn: psycopg.Connection[Any], plan: TablePlan, h: Any) -> int:
    """Hash a row-digests table's sorted row digests into `h`; return its rows.

    The rows come unordered (a plain scan: the server does no per-row work beyond sending
    them); this client digests each one (`copyloop.copy_row_digests`), sorts the digests and
    merges the sorted runs into `h` (rowdigests.SortedRuns: bounded memory, spilled past 64 MiB).
    """
    statement = f"COPY ({plan.select}) TO STDOUT (FORMAT binary)"
    with rowdigests.SortedRuns() as runs:
        rows = copyloop.copy_row_digests(conn, statement, plan.width, runs)
        runs.merge_into(h.update)
    return rows


def key_cuts(conn: psycopg.Connection[Any], plan: TablePlan, count: int) -> list[int]:
    """Keys cutting a table into `count` ranges of its integer key (empty when it has no rows):
    even cuts of the key span, so a skewed key only costs time."""
    assert plan.split is not None
    row = conn.execute(
        f"SELECT min({plan.split}), max({plan.split}) {plan.source}", prepare=False
    ).fetchone()
    if row is None or row[0] is None or count < 2:
        return []
    low, high = int(row[0]), int(row[1])
    return [low + (high - low + 1) * i // count for i in range(1, count)]


def key_range(plan: TablePlan, low: int | None, high: int | None) -> str:
    """The WHERE clause of the keys from `low` (included) to `high` (excluded)."""
    assert plan.split is not None
    parts = [] if low is None else [f"{plan.split} >= {low}"]
    parts += [] if high is None else [f"{plan.split} < {high}"]
    return " AND ".join(parts) or "true"


def key_ranges(conn: psycopg.Connection[Any], plan: TablePlan, count: int) -> list[str]:
    """WHERE clauses cutting a table into `count` ranges of its key, in key order (empty when
    it has no rows); together they cover every key once."""
    return range_wheres(plan, key_cuts(conn, plan, count))


def range_wheres(plan: TablePlan, cuts: list[int]) -> list[str]:
    """The WHERE clauses of the ranges between `cuts` (none without cuts)."""
    if not cuts:
        return []
    bounds: list[int | None] = [None, *cuts, None]
    return [key_range(plan, a, b) for a, b in itertools.pairwise(bounds)]


def read_range(
    conn: psycopg.Connection[Any],
    plan: TablePlan,
    where: str,
    index: int,
    stream: pieces.OrderedStream,
    waits: list[float] | None = None,
) -> bool:
    """Read range `index` of a split keyed table into `stream`; True when it completed it."""
    framing = pieces.Framing(
        plan.name, index == 0, index == stream.count - 1, lambda b: stream.put(index, b)
    )
    query = f"{plan.select} WHERE {where} ORDER BY {plan.keys}"
    messages = copyloop.copy_out(conn, f"COPY ({query}) TO STDOUT (FORMAT binary)", framing, waits)
    framing.close()
    return stream.finish(index, messages - 1)


Connect = Callable[[], "contextlib.AbstractContextManager[psycopg.Connection[Any]]"]
"""Opens another connection that sees exactly what the first one sees (same database, and for a
live source the same exported snapshot), for reading tables in parallel."""


class _Range(NamedTuple):
    """A later key range of a split table, waiting on the queue for a free session."""

    plan: TablePlan
    where: str
    position: int
    stream: pieces.OrderedStream


class TableReader:
    """Reads tables on up to `jobs` extra sessions in the background, largest first.

    A large keyed table (`range_count`) is cut into key ranges. The session that takes it
    reads the first range; if it spent most of that time waiting for the server
    (`SERVER_BOUND`), it queues the others next in line, where any session takes them as it
    comes free, and otherwise reads them itself. Ranges are taken in key order, so the range
    whose turn it is is always being read and the sessions cannot deadlock
    (pieces.OrderedStream). Sessions wait for work while a table in `large` (name: size on
    disk, at least `SPLIT_BYTES`) is still undecided.
    """

    def __init__(
        self,
        tables: list[tuple[str, str, str]],
        progress: Callable[[str], None] | None,
        more: Connect,
        jobs: int,
        large: dict[str, int],
    ) -> None:
        self._queue: list[tuple[str, str, str] | _Range] = list(reversed(tables))
        self._total = len(tables)
        self._done = 0
        self._progress = progress
        self._more = more
        self._jobs = jobs
        listed = {t[0] for t in tables}
        self._large = {name: size for name, size in large.items() if name in listed}
        self._undecided = len(self._large)
        self._streams: list[pieces.OrderedStream] = []
        self._cond = threading.Condition()
        self._got: dict[str, TableDigest] = {}
        workers = min(jobs, len(tables) + (jobs - 1) * len(self._large))
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers))
        self._futures = [self._pool.submit(self._work) for _ in range(workers)]

    def _record(self, digest: TableDigest) -> None:
        with self._cond:
            self._got[digest.name] = digest
            self._done += 1
            if self._progress is not None:
                self._progress(f"fingerprinted table {digest.name} ({self._done}/{self._total})")

    def _take(self) -> tuple[str, str, str] | _Range | None:
        with self._cond:
            while not self._queue and self._undecided > 0:
                self._cond.wait()
            return self._queue.pop() if self._queue else None

    def _range(
        self, extra: psycopg.Connection[Any], item: _Range, waits: list[float] | None = None
    ) -> None:
        if read_range(extra, item.plan, item.where, item.position, item.stream, waits):
            digest = content_tagged(item.stream.digest())
            self._record(TableDigest(item.plan.name, digest, item.stream.rows, "primary-key"))

    def _decided(self, name: str, ranges: list[_Range]) -> None:
        with self._cond:
            self._queue.extend(reversed(ranges))
            if name in self._large:
                self._undecided -= 1
            self._cond.notify_all()

    def _table(self, extra: psycopg.Connection[Any], name: str, schema: str, relname: str) -> None:
        plan = plan_table(extra, name, schema, relname)
        count = range_count(plan, self._large.get(name, 0), self._jobs)
        cuts = key_cuts(extra, plan, count) if count > 1 else []
        wheres = range_wheres(plan, cuts)
        if not wheres:
            self._decided(name, [])
            self._record(read_table(extra, plan))
            return
        stream = pieces.OrderedStream(content_hasher(plan.header), len(wheres))
        ranges = [_Range(plan, w, i, stream) for i, w in enumerate(wheres)]
        with self._cond:
            self._streams.append(stream)
        # The first range tells whether the server or this client is the slower: only when
        # the client mostly waited do other sessions take the rest.
        waits: list[float] = []
        began = time.perf_counter()
        self._range(extra, ranges[0], waits)
        shared = sum(waits) >= SERVER_BOUND * (time.perf_counter() - began)
        self._decided(name, ranges[1:] if shared else [])
        if not shared:
            # The rest in one read: a query per range would leave the server idle between them.
            stream.shorten(2)
            rest = _Range(plan, key_range(plan, cuts[0], None), 1, stream)
            self._range(extra, rest)

    def _work(self) -> None:
        try:
            with self._more() as extra:
                prepare_session(extra)
                while (item := self._take()) is not None:
                    if isinstance(item, _Range):
                        self._range(extra, item)
                    else:
                        self._table(extra, *item)
        except BaseException:
            with self._cond:
                self._queue.clear()
                self._undecided = 0
                self._cond.notify_all()
                for stream in self._streams:
                    stream.abort()
            raise

    def stop(self) -> None:
        """Take no further table (after an error elsewhere) and wait for the sessions."""
        with self._cond:
            self._queue.clear()
            self._undecided = 0
            self._cond.notify_all()
            for stream in self._streams:
                stream.abort()
        self._pool.shutdown(wait=True)

    def result(self) -> dict[str, TableDigest]:
        errors: list[BaseException] = []
        try:
            for f in self._futures:
                error = f.exception()
                if error is not None:
                    errors.append(error)
        finally:
            self.stop()
        # The first error that caused the others (theirs only say a range was abandoned).
        for error in sorted(errors, key=lambda e: isinstance(e, pieces.Aborted)):
            raise error
        return self._got
