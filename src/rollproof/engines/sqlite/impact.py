"""Measuring what each statement of a change does to a SQLite database while it runs.

    meter = SqliteMeter(clone_path)
    meter.before(conn)                      # just before a statement runs
    meter.after(conn, index, text, us)      # just after it ran
    meter.result() -> Impact

The meter reads the clone inside the transaction leg's still-open transaction, between the
change's statements. SQLite has no per-table locks: a writing transaction holds the one
database-wide write lock from its first write until COMMIT (other writers wait; in
rollback-journal mode readers wait too while COMMIT writes).

* **Pages written**: the clone runs in rollback-journal mode, and SQLite copies each page into
  the journal the first time a transaction changes it; pages added past the end of the file are
  not journaled. So the pages a statement wrote for the first time in the transaction are the
  journal's new records plus the file's growth: what COMMIT would write to the database file.
  The journal header gives the record size (page size + 8) and where records start.
* **Rows changed**: `total_changes` (rows inserted, updated or deleted).
* **Rebuilt**: a table that existed before whose root page changed (the 12-step ALTER TABLE
  rebuild: create, copy, drop, rename), with its size after (`dbstat`).
* **Indexes built**: an index that is new, or whose root page changed (REINDEX).
* **Write lock**: from the start of the first statement that wrote a page until commit, right
  after the last statement (summed in `core.impact`).

The meter's reads go through the change's connection with its authorizer removed for them (they
are rollproof's, not the change's) and restored after; they read the schema table, pragmas and
`dbstat`, and write nothing.
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Callable
from pathlib import Path

from rollproof.core.impact import Impact, Rewrite, StatementImpact, not_measured
from rollproof.core.sqltext import without_leading_comments

ENGINE = "sqlite"
_JOURNAL_MAGIC = bytes.fromhex("d9d505f920a163d7")
_SCHEMA = "SELECT type, name, rootpage FROM main.sqlite_schema WHERE rootpage > 0"


def journaled_pages(journal: Path) -> int:
    """How many page records a rollback journal holds (0: no journal, or an empty one).

    Header: magic (8 bytes), record count, nonce, initial page count, sector size, page size
    (big-endian 32-bit); records start one sector in, each a page number, the page and a
    checksum."""
    try:
        with journal.open("rb") as f:
            header = f.read(28)
            size = f.seek(0, 2)
    except FileNotFoundError:
        return 0
    if len(header) < 28 or header[:8] != _JOURNAL_MAGIC:
        return 0
    fields: tuple[int, ...] = struct.unpack(">IIIII", header[8:28])
    sector, page_size = fields[3], fields[4]
    if not sector or not page_size:
        return 0
    return max(0, (size - sector) // (page_size + 8))


Authorize = Callable[[sqlite3.Connection, bool], None]
"""Removes (False) or restores (True) the change's authorizer around rollproof's own reads."""


class SqliteMeter:
    """Measures the statements of one script on one connection (module docstring)."""

    def __init__(self, database: Path, authorize: Authorize) -> None:
        self._journal = database.with_name(database.name + "-journal")
        self._authorize = authorize
        self._start_pages: int | None = None
        self._roots: dict[tuple[str, str], int] = {}
        self._existed: set[str] = set()
        self._journaled = 0
        self._grown = 0
        self._changes = 0
        self._statements: list[StatementImpact] = []
        self._failed: str | None = None

    def before(self, conn: sqlite3.Connection) -> None:
        if self._failed is not None:
            return
        try:
            self._authorize(conn, False)
            if self._start_pages is None:
                self._start_pages = int(conn.execute("PRAGMA main.page_count").fetchone()[0])
                self._roots = self._schema(conn)
                self._existed = {name for kind, name in self._roots if kind == "table"}
            self._journaled = journaled_pages(self._journal)
            self._changes = conn.total_changes
        except (sqlite3.Error, OSError) as e:
            self._failed = f"rollproof could not read the impact: {e}"
        finally:
            self._authorize(conn, True)

    def after(self, conn: sqlite3.Connection, index: int, text: str, duration_us: int) -> None:
        if self._failed is not None or self._start_pages is None:
            return
        try:
            self._authorize(conn, False)
            changes = conn.total_changes - self._changes
            journaled = journaled_pages(self._journal)
            grown = max(
                0, int(conn.execute("PRAGMA main.page_count").fetchone()[0]) - self._start_pages
            )
            pages = max(0, journaled - self._journaled) + max(0, grown - self._grown)
            self._grown = max(self._grown, grown)
            roots = self._schema(conn)
            rebuilt: list[Rewrite] = []
            built: list[Rewrite] = []
            for (kind, name), root in sorted(roots.items()):
                was = self._roots.get((kind, name))
                if kind == "table" and name in self._existed and was is not None and was != root:
                    rebuilt.append(Rewrite(name, "table", self._size(conn, name)))
                elif kind == "table" and name in self._existed and was is None:
                    # renamed into place (the rebuild's last step): a new root under an old name
                    rebuilt.append(Rewrite(name, "table", self._size(conn, name)))
                if kind == "index" and was != root:
                    built.append(Rewrite(name, "index", self._size(conn, name)))
            self._roots = roots
            self._statements.append(
                StatementImpact(
                    index=index,
                    statement=_short(text),
                    duration_us=duration_us,
                    rewritten=tuple(rebuilt),
                    indexes_built=tuple(built),
                    pages_written=pages,
                    rows_changed=max(0, changes),
                )
            )
        except (sqlite3.Error, OSError) as e:
            self._failed = f"rollproof could not read the impact: {e}"
        finally:
            self._authorize(conn, True)

    def result(self) -> Impact:
        if self._failed is not None:
            return not_measured(ENGINE, self._failed)
        return Impact(ENGINE, True, None, tuple(self._statements))

    def _schema(self, conn: sqlite3.Connection) -> dict[tuple[str, str], int]:
        return {(str(k), str(n)): int(r) for k, n, r in conn.execute(_SCHEMA).fetchall()}

    def _size(self, conn: sqlite3.Connection, name: str) -> int | None:
        try:
            row = conn.execute(
                "SELECT sum(pgsize) FROM main.dbstat WHERE name = ?", (name,)
            ).fetchone()
        except sqlite3.Error:
            return None  # a build without dbstat: the size is not known
        return None if row is None or row[0] is None else int(row[0])


def _short(statement: str) -> str:
    one = " ".join(without_leading_comments(statement).split())
    return one if len(one) <= 80 else one[:77] + "..."
