"""Table digests proven from page bytes: a leg's after-fingerprint without re-reading rows.

A table the change wrote must be fingerprinted again after each step of a leg. When the step
put the table's pages back exactly as they were (ROLLBACK restores them from the journal, a
restore copies the snapshot, and a revert that rewrites values in place often leaves them
byte-identical), reading every row again proves what the page bytes already prove. So before
re-reading a written table, the SQLite engine digests the pages that hold it and looks that
digest up among the page digests of states whose table digest it already knows (the snapshot's,
and every state it has re-read since). A hit takes the known table digest; a miss re-reads the
rows as before, and the page digest of what was read is remembered.

Why a page digest determines the table digest (the soundness argument):

* The page digest covers every page of every b-tree of the table, the table itself and each of
  its indexes (`dbstat` lists the pages reachable from each b-tree's root, interior, leaf and
  overflow pages alike), each page's number and every byte of it, each b-tree's root page, and
  the file-header fields that decide how page bytes decode: page size, reserved bytes per page,
  schema format and text encoding. It also covers the table's structural schema digest (columns,
  types, defaults, collations, WITHOUT ROWID), which the fingerprint compares anyway.
* The rows a fingerprint reads (`SELECT … ORDER BY …` on that table) are a function of exactly
  those inputs: SQLite reads them by walking those b-trees from their roots, and the rows of a
  missing trailing column come from the schema's default. Two states with equal page digests
  therefore return the same rows in the same order and have the same table digest.
* The digest is BLAKE3, so two different page sets do not share one by accident.

When it is not used, and the rows are read instead: the connection is inside a write
transaction (the file does not hold the transaction's pages yet); the database is in WAL mode or
has a journal or WAL file beside it (committed pages may live outside the main file); the SQLite
build has no `dbstat` table; `--full-fingerprints` was asked for.
"""

from __future__ import annotations

import mmap
import os
import sqlite3
import struct
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

import blake3

from rollproof.canonical import canonical_json
from rollproof.fingerprint import TableDigest


def _runs(pages: list[int]) -> list[tuple[int, int]]:
    """Sorted page numbers as (first, count) runs of consecutive pages, to read in one call."""
    runs: list[tuple[int, int]] = []
    for p in pages:
        if runs and runs[-1][0] + runs[-1][1] == p:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((p, 1))
    return runs


def page_digest(conn: sqlite3.Connection, path: Path, table: str, schema: str) -> str | None:
    """BLAKE3 over the pages of `table`'s b-trees in the committed file `path`, or None.

    `conn` is a read-only connection to `path` (it has written nothing); the digest is taken
    inside a read transaction (the caller's, if it holds one, so that rows it reads in the same
    transaction are of the same state), and no writer can change the file while its pages are
    read. None when the file's pages cannot be trusted to be the database's (see the module
    docstring).
    """
    for suffix in ("-wal", "-journal"):
        side = path.with_name(path.name + suffix)
        if side.exists() and side.stat().st_size > 0:
            return None
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN")
    try:
        # The first read takes the SHARED lock: from here to COMMIT no writer can change the file.
        btrees = conn.execute(
            "SELECT name, rootpage FROM main.sqlite_schema "
            "WHERE tbl_name = ? AND rootpage > 0 ORDER BY name",
            (table,),
        ).fetchall()
        if not btrees:
            return None
        page_size = int(conn.execute("PRAGMA main.page_size").fetchone()[0])
        with path.open("rb") as f:
            header = f.read(100)
            if len(header) < 100 or header[18:20] != b"\x01\x01":
                return None  # WAL mode, or not a database file we understand
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return None
            # Mapped, not read: the pages are hashed where they lie in the page cache.
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                view = memoryview(mapped)
                try:
                    h = blake3.blake3(
                        canonical_json(
                            {
                                "table": table,
                                "schema": schema,
                                "btrees": [[str(n), int(r)] for n, r in btrees],
                                "page_size": page_size,
                                "header": header[20:21].hex()
                                + header[44:48].hex()
                                + header[56:60].hex(),
                            }
                        ),
                        max_threads=blake3.blake3.AUTO,
                    )
                    for name, _root in btrees:
                        pages = [
                            int(p)
                            for (p,) in conn.execute(
                                "SELECT pageno FROM main.dbstat WHERE name = ? ORDER BY pageno",
                                (name,),
                            )
                        ]
                        h.update(struct.pack("<Q", len(pages)))
                        for first, count in _runs(pages):
                            start, end = (first - 1) * page_size, (first - 1 + count) * page_size
                            if end > size:
                                return None
                            h.update(struct.pack("<QQ", first, count))
                            h.update(view[start:end])
                    return "blake3:" + str(h.hexdigest())
                finally:
                    view.release()
    except sqlite3.OperationalError:
        return None  # no dbstat in this SQLite build, or the file changed shape under us
    finally:
        if own and conn.in_transaction:
            conn.execute("COMMIT")


class PageProofs:
    """The table digests a session has proven, by the page digest of the state they were in.

    `known` maps a page digest to the table digest of the state it was taken in. The snapshot's
    entries are added lazily, the first time a table is looked up, from the snapshot file and
    its fingerprint's table digests.
    """

    def __init__(
        self,
        snapshot: Path,
        snapshot_tables: Mapping[str, TableDigest],
        snapshot_schema: Mapping[str, str],
    ) -> None:
        self.snapshot = snapshot
        self._snapshot_tables = snapshot_tables
        self._snapshot_schema = snapshot_schema
        self._snapshot_seen: set[str] = set()
        self.known: dict[str, TableDigest] = {}
        self.proven = 0
        """How many table digests were taken from page digests instead of read: for tests and
        for the benchmark's account of where time goes."""

    def _add_snapshot(self, table: str) -> None:
        if table in self._snapshot_seen:
            return
        self._snapshot_seen.add(table)
        digest = self._snapshot_tables.get(table)
        schema = self._snapshot_schema.get(f"table:{table}")
        if digest is None or schema is None:
            return
        uri = "file:" + urllib.parse.quote(str(self.snapshot)) + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        try:
            pd = page_digest(conn, self.snapshot, table, schema)
        finally:
            conn.close()
        if pd is not None:
            self.known[pd] = digest

    def lookup(
        self, conn: sqlite3.Connection, path: Path, table: str, schema: str
    ) -> tuple[TableDigest | None, str | None]:
        """The proven table digest of `table` as `path` holds it now, and its page digest."""
        pd = page_digest(conn, path, table, schema)
        if pd is None:
            return None, None
        if pd not in self.known:
            self._add_snapshot(table)
        hit = self.known.get(pd)
        if hit is not None:
            self.proven += 1
        return hit, pd

    def remember(self, page: str, digest: TableDigest) -> None:
        self.known[page] = digest
