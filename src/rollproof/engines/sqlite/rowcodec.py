"""A table's rows encoded and hashed inside SQLite, by rollproof's loadable extension.

Reading a row into Python costs more than encoding and hashing it: APSW builds an object for
every value, and a table without a key then pays three calls a row for its row digest. The
extension (`csrc/rowcodec.c`) does that work in C, in aggregate functions over a chunk of rows:
`rollproof_rows` returns the chunk's encodings (one BLAKE3 update here), `rollproof_row_digests`
the rows' BLAKE2s digests, both byte for byte what `rollproof.core.canonical` produces (text
that is not valid UTF-8 included, as the lenient Python reader decodes it). The tests hold the
two paths to the same digests.

Chunks follow each other, each a query of its own inside the caller's read transaction. A table
whose key is its rowid, a WITHOUT ROWID table whose key collates BINARY, and a table without a
key are read by ranges: the bound `n` rows on is found by an OFFSET over the key (or rowid), the
range read by a plain scan, the key order checked in C (`rollproof_rows_after`,
`rollproof_rows_keyed`; a key-less table's digests need none). Any other key is read by keyset
pagination: `WHERE key > last ORDER BY key LIMIT n` (the first chunk of a piece by OFFSET, as in
the Python path). That is the key order only if comparing with `>` orders exactly as `ORDER BY`
does and no two rows tie, so a key whose index collates differently from its columns is left to
the Python path (`keyset_exact`), as is a piece where the key a chunk ended on does not bind
back as exactly the stored key (`KeysetMismatch`: `>` applies the column's affinity to the bound
value, and a key read out of a UTF-16 database or a rewritten schema may differ from what is
stored), and everything the extension cannot do: it is not built (no C compiler at install) or
not loadable, the table has more columns than a function takes arguments, a key-less table has
no rowid to page by, a key's text is not valid UTF-8 (it could not be bound again), or a chunk
is larger than SQLite's length limit. Those fall back silently: same digest, slower.

The functions are registered SQLITE_DIRECTONLY, so a view, trigger or generated column of the
database being read cannot call them. They are on these connections only, none of which ever
runs a change's or a user's SQL:

* the fingerprint workers' own read-only APSW connections, loaded from `_rowcodec` (extension
  loading is switched off again as soon as they are);
* read-only connections of Python's `sqlite3` module that rollproof opens to fingerprint a file
  in its own process (`connect_with_functions`: a file too small for workers, a WAL database, a
  snapshot or committed clone, and the in-memory copy of an open transaction's view the session
  reads, `SqliteSession._transaction_view`). Python's `sqlite3` cannot load extensions in every
  build, so the second copy of the same code, `_rowcodec_host`, is registered with that module's
  SQLite library as an automatic extension (`sqlite3_auto_extension`, found through ctypes) for
  exactly the one `connect` call, and cancelled again before anything else runs. That needs
  SQLite 3.31 (SQLITE_DIRECTONLY) and the library to be the one the module runs on (its version
  is compared); otherwise, or on a connection opened any other way, the in-process read takes
  the Python path.

A connection on which a change or a verify script runs never has them, so a script calling
`rollproof_rows` fails in a rehearsal as it would in production.
"""

from __future__ import annotations

import functools
import importlib.util
import marshal
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import Any, TypeVar

import apsw

from rollproof.engines.sqlite.schema import quote_ident

EXTENSION = "rollproof.engines.sqlite._rowcodec"
HOST_EXTENSION = "rollproof.engines.sqlite._rowcodec_host"
ENTRY_POINT = "sqlite3_rowcodec_init"
HOST_MIN_SQLITE = (3, 31, 0)
"""The oldest SQLite the in-process functions are registered with: SQLITE_DIRECTONLY is 3.31's."""
FUNCTIONS_MARK = "rollproof_functions"
"""The attribute `connect_with_functions` sets on a connection that has the functions."""
CHUNK_BYTES = 512 << 10
"""Bytes of encoded rows one chunk query aims at: large enough that a query's own cost (about
10 us) vanishes, small enough to bound memory whatever the row width and to keep reusing the
same memory (whole read of the 1M-row wide table, CPU a row: 128 KiB 716 ns, 512 KiB 689 ns,
1 MiB 705 ns, 4 MiB 761 ns; a narrow row reaches a whole segment first either way)."""

Chunk = tuple[int, bytes]
AnyConnection = apsw.Connection | sqlite3.Connection
"""A connection with the functions: a worker's APSW one, or one of `connect_with_functions`."""
"""Rows in a chunk, and their encodings (keyed) or their row digests (key-less)."""


@functools.cache
def extension_path() -> str | None:
    """The built extension's file, or None when this install has none."""
    spec = importlib.util.find_spec(EXTENSION)
    return None if spec is None else spec.origin


def load(conn: AnyConnection) -> bool:
    """Load the extension into an APSW connection; False if there is none or it does not
    load. A `sqlite3` connection cannot load it: whether it has the functions already."""
    if isinstance(conn, sqlite3.Connection):
        return has_functions(conn)
    path = extension_path()
    if path is None:
        return False
    conn.enable_load_extension(True)
    try:
        conn.load_extension(path, ENTRY_POINT)
    except apsw.Error:
        return False
    finally:
        conn.enable_load_extension(False)
    return True


def keyset_exact(conn: AnyConnection, table: str, key: Sequence[str]) -> bool:
    """Whether `WHERE key > last` follows `ORDER BY key` exactly: both compare with the key
    columns' own collations, so it does when the primary-key index (which keeps the key unique)
    collates every key column as the column does (the column's as SQLite reports it, through
    `rollproof_collation`; False where it cannot say). A rowid alias has no index: integers."""
    found = [
        row[1]
        for row in conn.execute(f"PRAGMA main.index_list({quote_ident(table)})")
        if row[3] == "pk"
    ]
    if not found:
        return True
    indexed = [
        (row[2], row[4])
        for row in conn.execute(f"PRAGMA main.index_xinfo({quote_ident(found[0])})")
        if row[5]
    ]
    if [name for name, _coll in indexed] != list(key):
        return False
    for name, coll in indexed:
        row = conn.execute("SELECT rollproof_collation(?, ?)", (table, name)).fetchone()
        declared = None if row is None else row[0]
        if declared is None or str(coll).lower() != str(declared).lower():
            return False
    return True


def function_arg_limit(conn: AnyConnection) -> int:
    """The most arguments a SQL function takes on this connection (SQLITE_LIMIT_FUNCTION_ARG)."""
    if isinstance(conn, sqlite3.Connection):
        return conn.getlimit(sqlite3.SQLITE_LIMIT_FUNCTION_ARG)
    return int(conn.limit(apsw.SQLITE_LIMIT_FUNCTION_ARG))


# -- the functions on connections of Python's own sqlite3 module ------------------------------

_HOST_LOCK = threading.Lock()
Conn = TypeVar("Conn", bound=sqlite3.Connection)


@functools.cache
def _host() -> tuple[Any, Any, int] | None:
    """(sqlite3_auto_extension, sqlite3_cancel_auto_extension, the entry point's address) of
    the SQLite library Python's `sqlite3` module runs on, or None where that cannot be had:
    the copy is not built, the library is too old, `_sqlite3` is built into the interpreter,
    the symbols are not exported, or the library found is not the one the module reports."""
    if sqlite3.sqlite_version_info < HOST_MIN_SQLITE:
        return None
    spec = importlib.util.find_spec(HOST_EXTENSION)
    if spec is None or spec.origin is None:
        return None
    try:
        import _sqlite3
        import ctypes

        library = ctypes.CDLL(_sqlite3.__file__)
        library.sqlite3_libversion.restype = ctypes.c_char_p
        if library.sqlite3_libversion().decode() != sqlite3.sqlite_version:
            return None
        register, cancel = library.sqlite3_auto_extension, library.sqlite3_cancel_auto_extension
        entry = ctypes.CDLL(spec.origin)[ENTRY_POINT]
    except (AttributeError, OSError, ImportError, UnicodeDecodeError):
        return None
    for fn in (register, cancel):
        fn.argtypes, fn.restype = [ctypes.c_void_p], ctypes.c_int
    address = ctypes.cast(entry, ctypes.c_void_p).value
    return None if address is None else (register, cancel, address)


def host_available() -> bool:
    """Whether `connect_with_functions` can give a connection the functions in this process."""
    return _host() is not None


def connect_with_functions(connect: Callable[[], Conn]) -> Conn:
    """`connect()`, its connection given the functions where this Python's SQLite allows.

    The entry point is an automatic extension only while `connect` runs, under a lock that
    `connect_without_functions` takes too, so a connection that will run a change's SQL is
    never opened meanwhile (one another library or thread opens at that moment would get the
    functions, DIRECTONLY). The connection must be of a `sqlite3` subclass (it is marked with
    FUNCTIONS_MARK) and is never to run a change's or a user's SQL.
    """
    host = _host()
    if host is None:
        return connect()
    register, cancel, address = host
    with _HOST_LOCK:
        if register(address) != 0:
            return connect()
        try:
            conn = connect()
        except sqlite3.Error:
            conn = None  # a failure of the entry point itself fails the open: open it without
        finally:
            cancel(address)
    if conn is None:
        return connect()
    try:
        conn.execute("SELECT rollproof_collation(NULL, NULL)").fetchone()
    except sqlite3.Error:
        return conn  # not registered after all: the Python path reads
    setattr(conn, FUNCTIONS_MARK, True)
    return conn


def connect_without_functions(connect: Callable[[], Conn]) -> Conn:
    """`connect()` while no registration is active. Every connection that may run a change's
    or a user's SQL is opened this way, under the lock `connect_with_functions` registers
    under, so it cannot catch the functions from another thread's registration."""
    with _HOST_LOCK:
        return connect()


def has_functions(conn: sqlite3.Connection) -> bool:
    """Whether `connect_with_functions` gave `conn` the functions."""
    return getattr(conn, FUNCTIONS_MARK, False) is True


def _next_size(rows: int, size: int, most: int) -> int:
    """Rows for the next chunk: about CHUNK_BYTES at this chunk's bytes per row."""
    return max(1, min(most, rows * CHUNK_BYTES // max(1, size)))


class KeysetMismatch(Exception):
    """The key a chunk ended on, bound again, is not exactly the stored key: `WHERE key > ?`
    would not continue where the chunk ended, so the piece is read by the Python path."""


def _same_key_sql(table: str, key: Sequence[str]) -> str:
    """Counts the rows whose key is exactly the bound one: equal under the columns' own
    affinity and collation (as `>` compares), and of the same storage class and bytes."""
    cols = ", ".join(map(quote_ident, key))
    marks = ", ".join("?" * len(key))
    equal = f"({cols}) = ({marks})" if len(key) > 1 else f"{cols} = ?"
    same = " AND ".join(
        f"typeof({quote_ident(k)}) = typeof(?) AND CAST({quote_ident(k)} AS BLOB) = CAST(? AS BLOB)"
        for k in key
    )
    return f"SELECT count(*) FROM main.{quote_ident(table)} WHERE {equal} AND {same}"


def keyed_chunks(
    conn: AnyConnection,
    table: str,
    columns: Sequence[str],
    key: Sequence[str],
    offset: int,
    limit: int,
    segment_rows: int,
    first_rows: int,
) -> Iterator[Chunk]:
    """Rows [offset, offset + limit) of the key order (limit -1: to the end) as chunks of
    encoded rows. `offset` is a multiple of `segment_rows` and no chunk crosses a multiple of
    it, so every segment is a run of whole chunks."""
    cols = ", ".join(map(quote_ident, columns))
    keys = ", ".join(map(quote_ident, key))
    marks = ", ".join("?" * len(key))
    after = f"({keys}) > ({marks})" if len(key) > 1 else f"{keys} > ?"
    rows = f"SELECT {cols} FROM main.{quote_ident(table)}"
    head = f"SELECT count(*), rollproof_rows({cols}), rollproof_last({keys}) FROM "
    first = f"{head}({rows} ORDER BY {keys} LIMIT ? OFFSET ?)"
    later = f"{head}({rows} WHERE {after} ORDER BY {keys} LIMIT ?)"
    check = _same_key_sql(table, key)
    done, want = 0, first_rows
    last: tuple[object, ...] | None = None
    while limit < 0 or done < limit:
        n = min(want, segment_rows - done % segment_rows)
        if limit >= 0:
            n = min(n, limit - done)
        if last is None:
            count, data, tail = conn.execute(first, (n, offset)).fetchone()  # type: ignore[misc]
        else:
            count, data, tail = conn.execute(later, (*last, n)).fetchone()  # type: ignore[misc]
        if count:
            yield count, data
        done += count
        if count < n:
            return
        last = marshal.loads(tail)  # noqa: S302 - our own encoding of the key's SQL values
        # Bound again, the key must be the stored one, or `>` would skip or repeat rows: a
        # TEXT column's affinity turning a stored integer into text, a NULL in a key a
        # rewritten schema calls NOT NULL, text SQLite converted lossily from UTF-16.
        params = (*last, *(v for v in last for _ in range(2)))
        (same,) = conn.execute(check, params).fetchone()  # type: ignore[misc]
        if same != 1:
            raise KeysetMismatch(f"table {table}: the key after row {offset + done} is not exact")
        want = _next_size(count, len(data), segment_rows)


def _following(table: str, rowid: str, upper: bool) -> str:
    """The rowid `n` rows on from `?` in rowid order (below a bound, with `upper`): an OFFSET
    over the rowids alone, which visits no column (about 15 ns a row)."""
    bound = f" AND {rowid} < ?" if upper else ""
    return (
        f"SELECT {rowid} FROM main.{quote_ident(table)} WHERE {rowid} >= ?{bound} "
        f"ORDER BY {rowid} LIMIT 1 OFFSET ?"
    )


def rowid_keyed_chunks(
    conn: AnyConnection,
    table: str,
    columns: Sequence[str],
    key: str,
    offset: int,
    limit: int,
    segment_rows: int,
    first_rows: int,
) -> Iterator[Chunk]:
    """`keyed_chunks` for a table whose key is its rowid (`key`, an INTEGER PRIMARY KEY).

    Each chunk is a rowid range [lo, next) read by a plain scan: `next`, the rowid `n` rows
    on, is found first (`_following`), so the range holds exactly the `n` rows wanted. That
    spares the ordered subquery with a LIMIT that `keyed_chunks` reads through (SQLite runs
    it as a co-routine: about 100 ns a row more on narrow rows). The scan has no ORDER BY;
    `rollproof_rows_after` refuses rows that do not come in increasing rowid order, so the
    order the segments need is checked, not assumed (the piece then falls back to Python)."""
    k = quote_ident(key)
    cols = ", ".join(map(quote_ident, columns))
    t = f"main.{quote_ident(table)}"
    first = f"SELECT {k} FROM {t} ORDER BY {k} LIMIT 1 OFFSET ?"
    following = _following(table, k, upper=False)
    to_end = f"SELECT count(*), rollproof_rows_after({k}, {cols}) FROM {t} WHERE {k} >= ?"
    between = f"{to_end} AND {k} < ?"
    row = conn.execute(first, (offset,)).fetchone()
    if row is None:
        return
    lo = row[0]
    done, want = 0, first_rows
    while limit < 0 or done < limit:
        n = min(want, segment_rows - done % segment_rows)
        if limit >= 0:
            n = min(n, limit - done)
        nxt = conn.execute(following, (lo, n)).fetchone()
        if nxt is None:  # n rows or fewer are left: read to the end
            count, data = conn.execute(to_end, (lo,)).fetchone()  # type: ignore[misc]
        else:
            count, data = conn.execute(between, (lo, nxt[0])).fetchone()  # type: ignore[misc]
            if count != n:
                raise KeysetMismatch(f"table {table}: {count} rows between two rowids, not {n}")
        if count:
            yield count, data
        done += count
        if nxt is None:
            return
        lo = nxt[0]
        want = _next_size(count, len(data), segment_rows)


def binary_key(conn: AnyConnection, table: str, key: Sequence[str]) -> bool:
    """Whether every key column collates BINARY (as SQLite reports it): the order
    `rollproof_rows_keyed` checks rows against."""
    for name in key:
        row = conn.execute("SELECT rollproof_collation(?, ?)", (table, name)).fetchone()
        if row is None or str(row[0]).upper() != "BINARY":
            return False
    return True


def ranged_keyed_chunks(
    conn: AnyConnection,
    table: str,
    columns: Sequence[str],
    key: Sequence[str],
    offset: int,
    limit: int,
    segment_rows: int,
    first_rows: int,
) -> Iterator[Chunk]:
    """`keyed_chunks` for a WITHOUT ROWID table whose key collates BINARY: each chunk a key
    range [lo, next) read by a plain scan of the table's b-tree, `next` the key `n` rows on
    (an OFFSET over the key, as `rowid_keyed_chunks` does over rowids), instead of the ordered
    subquery with a LIMIT that SQLite runs as a co-routine, and no `rollproof_last` per row.

    Each bound is bound again as read, so each must be exactly the stored key (`_same_key_sql`,
    as in keyset paging) and each range must hold exactly `n` rows; `rollproof_rows_keyed`
    refuses rows that do not come in increasing key order. Any of those failing raises
    KeysetMismatch or SQLite's error, and the piece is read another way."""
    m = len(key)
    keys = ", ".join(map(quote_ident, key))
    cols = ", ".join(map(quote_ident, columns))
    t = f"main.{quote_ident(table)}"
    marks = ", ".join("?" * m)
    left, right = (f"({keys})", f"({marks})") if m > 1 else (keys, "?")
    first = f"SELECT {keys} FROM {t} ORDER BY {keys} LIMIT 1 OFFSET ?"
    following = f"SELECT {keys} FROM {t} WHERE {left} >= {right} ORDER BY {keys} LIMIT 1 OFFSET ?"
    to_end = (
        f"SELECT count(*), rollproof_rows_keyed({m}, {keys}, {cols}) FROM {t} "
        f"WHERE {left} >= {right}"
    )
    between = f"{to_end} AND {left} < {right}"
    check = _same_key_sql(table, key)

    def exact(bound: tuple[object, ...]) -> None:
        params = (*bound, *(v for v in bound for _ in range(2)))
        (same,) = conn.execute(check, params).fetchone()  # type: ignore[misc]
        if same != 1:
            raise KeysetMismatch(f"table {table}: a range bound is not exactly a stored key")

    row = conn.execute(first, (offset,)).fetchone()
    if row is None:
        return
    lo = tuple(row)
    exact(lo)
    done, want = 0, first_rows
    while limit < 0 or done < limit:
        n = min(want, segment_rows - done % segment_rows)
        if limit >= 0:
            n = min(n, limit - done)
        nxt = conn.execute(following, (*lo, n)).fetchone()
        if nxt is None:  # n rows or fewer are left: read to the end
            count, data = conn.execute(to_end, lo).fetchone()  # type: ignore[misc]
        else:
            hi = tuple(nxt)
            exact(hi)
            count, data = conn.execute(between, (*lo, *hi)).fetchone()  # type: ignore[misc]
            if count != n:
                raise KeysetMismatch(f"table {table}: {count} rows between two keys, not {n}")
        if count:
            yield count, data
        done += count
        if nxt is None:
            return
        lo = hi
        want = _next_size(count, len(data), segment_rows)


def keyless_chunks(
    conn: AnyConnection,
    table: str,
    columns: Sequence[str],
    rowid: str,
    low: int | None,
    high: int | None,
    first_rows: int,
    most_rows: int,
) -> Iterator[Chunk]:
    """The row digests of the rows with rowid in [low, high) (None: unbounded), in chunks.

    Each chunk is a rowid range found as in `rowid_keyed_chunks`, read by a plain scan; the
    digests form a multiset, so the order the scan meets the rows in does not matter."""
    cols = ", ".join(map(quote_ident, columns))
    t = f"main.{quote_ident(table)}"
    upper = () if high is None else (high,)
    bound = "" if high is None else f" AND {rowid} < ?"
    following = _following(table, rowid, upper=high is not None)
    to_end = f"SELECT count(*), rollproof_row_digests({cols}) FROM {t} WHERE {rowid} >= ?{bound}"
    between = (
        f"SELECT count(*), rollproof_row_digests({cols}) FROM {t} "
        f"WHERE {rowid} >= ? AND {rowid} < ?"
    )
    if low is None:
        row = conn.execute(f"SELECT {rowid} FROM {t} ORDER BY {rowid} LIMIT 1").fetchone()
        if row is None:
            return
        lo = row[0]
    else:
        lo = low
    n = first_rows
    while True:
        nxt = conn.execute(following, (lo, *upper, n)).fetchone()
        if nxt is None:
            count, data = conn.execute(to_end, (lo, *upper)).fetchone()  # type: ignore[misc]
        else:
            count, data = conn.execute(between, (lo, nxt[0])).fetchone()  # type: ignore[misc]
            if count != n:
                raise KeysetMismatch(f"table {table}: {count} rows between two rowids, not {n}")
        if count:
            yield count, data
        if nxt is None:
            return
        lo = nxt[0]
        n = min(most_rows, n * 2)


@functools.cache
def digest_module() -> ModuleType | None:
    """The C digest sorter (`_digests`: sort and merge 32-byte digests in place), or None where
    this install has none (no C compiler at install); numpy sorts then."""
    import rollproof.engines.rowdigests as rowdigests

    return rowdigests.digest_module()
