"""Table digests proven from page bytes: a leg's after-fingerprint without re-reading rows.

A table the change wrote must be fingerprinted again after each step of a leg. When the step
put the table's pages back exactly as they were (ROLLBACK restores them from the journal, a
restore copies the snapshot, and a change that lands on the same pages twice leaves the same
bytes), reading every row again proves what the page bytes already prove. So before re-reading
a written table, the SQLite engine checks its pages against the states whose table digest it
already knows (the snapshot's, and every state it has read since): a match takes the known
table digest; otherwise the rows are read as before, and where that state's pages lie is
remembered.

Why matching pages determine the table digest (the soundness argument):

* A state is recorded as a *page map* (for the table and each of its indexes: the b-tree's
  name, root page and every page `dbstat` reaches from that root, interior, leaf and overflow
  alike) and a *page digest*: BLAKE3 over the map, the file-header fields that decide how page
  bytes decode (page size, reserved bytes per page, schema format, text encoding), the table's
  structural schema digest, and every mapped page's number and bytes.
* To check the clone against a known state, the clone's roots (from its schema) must be the
  map's, and the page digest is recomputed over the clone's bytes at the map's page numbers.
  If it matches, every b-tree reads the same in the clone: the walk from a root reads the root
  page (same bytes), follows the child and overflow page numbers written in it (same numbers,
  all in the map, since the known state reached them), and so on down, reading the same bytes
  at every step. No page outside the map can be reached.
* The rows a fingerprint reads (`SELECT … ORDER BY …` on that table) are a function of exactly
  those b-trees, the header fields and the schema (a missing trailing column's value is the
  schema's default): equal page digests mean equal table digests.
* The digest is BLAKE3, so two different page sets do not share one by accident.

When it is not used, and the rows are read instead: the connection is inside a write
transaction (the file does not hold the transaction's pages yet); the database is in WAL mode or
has a journal or WAL file beside it (committed pages may live outside the main file); the SQLite
build has no `dbstat` table; `--full-fingerprints` was asked for.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import sqlite3
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import blake3

from rollproof.core.canonical import canonical_json
from rollproof.core.fingerprint import TableDigest


def _runs(pages: list[int]) -> tuple[tuple[int, int], ...]:
    """Sorted page numbers as (first, count) runs of consecutive pages, to hash in one call."""
    runs: list[tuple[int, int]] = []
    for p in pages:
        if runs and runs[-1][0] + runs[-1][1] == p:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((p, 1))
    return tuple(runs)


@dataclass(frozen=True, slots=True)
class PageMap:
    """Where one table's b-trees lie in one state: (name, root page, page runs) per b-tree."""

    btrees: tuple[tuple[str, int, tuple[tuple[int, int], ...]], ...]


def _side_files_empty(path: Path) -> bool:
    for suffix in ("-wal", "-journal"):
        side = path.with_name(path.name + suffix)
        if side.exists() and side.stat().st_size > 0:
            return False
    return True


@contextlib.contextmanager
def _read_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """Hold a read transaction (the caller's, if it has one): no writer changes the file."""
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN")
    try:
        yield
    finally:
        if own and conn.in_transaction:
            conn.execute("COMMIT")


def _roots(conn: sqlite3.Connection, table: str) -> list[tuple[str, int]]:
    return [
        (str(n), int(r))
        for n, r in conn.execute(
            "SELECT name, rootpage FROM main.sqlite_schema "
            "WHERE tbl_name = ? AND rootpage > 0 ORDER BY name",
            (table,),
        )
    ]


def page_map(conn: sqlite3.Connection, table: str) -> PageMap | None:
    """The pages of `table`'s b-trees as `conn` sees them now (None without `dbstat`)."""
    try:
        with _read_transaction(conn):
            trees = []
            for name, root in _roots(conn, table):
                pages = [
                    int(p)
                    for (p,) in conn.execute(
                        "SELECT pageno FROM main.dbstat WHERE name = ? ORDER BY pageno", (name,)
                    )
                ]
                trees.append((name, root, _runs(pages)))
    except sqlite3.OperationalError:
        return None  # no dbstat in this SQLite build
    return PageMap(tuple(trees)) if trees else None


def page_digest(
    conn: sqlite3.Connection, path: Path, table: str, schema: str, where: PageMap
) -> str | None:
    """BLAKE3 over `path`'s bytes at the pages `where` maps, or None if they cannot count.

    `conn` is a read-only connection to `path`; the digest is taken inside a read transaction
    (the caller's, if it holds one, so that rows it reads in the same transaction are of the
    same state). None when the file's pages cannot be trusted to be the database's (WAL mode,
    a journal beside it), or when the table's roots in `path` are not the map's.
    """
    if not _side_files_empty(path):
        return None
    with _read_transaction(conn):
        if [(n, r) for n, r, _ in where.btrees] != _roots(conn, table):
            return None
        page_size = int(conn.execute("PRAGMA main.page_size").fetchone()[0])
        with path.open("rb") as f:
            header = f.read(100)
            if len(header) < 100 or header[18:20] != b"\x01\x01":
                return None  # WAL mode, or not a database file we understand
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return None
            h = blake3.blake3(
                canonical_json(
                    {
                        "table": table,
                        "schema": schema,
                        "btrees": [
                            [n, r, [list(run) for run in runs]] for n, r, runs in where.btrees
                        ],
                        "page_size": page_size,
                        "header": header[20:21].hex() + header[44:48].hex() + header[56:60].hex(),
                    }
                ),
                max_threads=blake3.blake3.AUTO,
            )
            # Mapped, not read: the pages are hashed where they lie in the page cache.
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                view = memoryview(mapped)
                try:
                    for _name, _root, runs in where.btrees:
                        for first, count in runs:
                            start, end = (first - 1) * page_size, (first - 1 + count) * page_size
                            if end > size:
                                return None
                            h.update(view[start:end])
                finally:
                    view.release()
            return "blake3:" + str(h.hexdigest())


@dataclass(frozen=True, slots=True)
class _Known:
    where: PageMap
    page: str
    digest: TableDigest


class PageProofs:
    """The table digests a session has proven, with where each state's pages lay.

    The snapshot's states are those located while it was fingerprinted (the tables a change
    declares it writes) and, for any other table, added the first time that table is looked
    up, from the snapshot file and the before-fingerprint's table digest.
    """

    def __init__(self, snapshot: Path) -> None:
        self.snapshot = snapshot
        self._snapshot_tables: Mapping[str, TableDigest] = {}
        self._snapshot_schema: Mapping[str, str] = {}
        self._snapshot_seen: set[str] = set()
        self.known: dict[str, list[_Known]] = {}
        self.proven = 0
        """How many table digests were taken from pages instead of read (for tests)."""

    def snapshot_fingerprinted(
        self, tables: Mapping[str, TableDigest], schema: Mapping[str, str]
    ) -> None:
        """The before-fingerprint: the states located while it was taken are the snapshot's."""
        self._snapshot_tables, self._snapshot_schema = tables, schema
        self._snapshot_seen |= set(self.known)

    def _add_snapshot(self, table: str) -> None:
        if table in self._snapshot_seen:
            return
        self._snapshot_seen.add(table)
        digest = self._snapshot_tables.get(table)
        schema = self._snapshot_schema.get(f"table:{table}")
        if digest is None or schema is None:
            return
        uri = "file:" + urllib.parse.quote(str(self.snapshot)) + "?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, isolation_level=None)) as conn:
            located = self.locate(conn, self.snapshot, table, schema)
        if located is not None:
            self.remember(table, located, digest)

    def lookup(
        self, conn: sqlite3.Connection, path: Path, table: str, schema: str
    ) -> TableDigest | None:
        """The table digest of `table` as `path` holds it now, if its pages prove one."""
        self._add_snapshot(table)
        for known in reversed(self.known.get(table, [])):
            if page_digest(conn, path, table, schema, known.where) == known.page:
                self.proven += 1
                return known.digest
        return None

    def locate(
        self, conn: sqlite3.Connection, path: Path, table: str, schema: str
    ) -> tuple[PageMap, str] | None:
        """Where `table`'s pages lie in `path` now, and their page digest, to `remember` once
        the table's rows have been read in the same state."""
        where = page_map(conn, table)
        if where is None:
            return None
        page = page_digest(conn, path, table, schema, where)
        return None if page is None else (where, page)

    def remember(self, table: str, located: tuple[PageMap, str], digest: TableDigest) -> None:
        """Record that the state `located` describes has `digest` (read from its rows)."""
        where, page = located
        entries = self.known.setdefault(table, [])
        if all(k.page != page for k in entries):
            entries.append(_Known(where, page, digest))
