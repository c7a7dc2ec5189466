"""What SQLite makes for a table, read from a database's schema: the objects a table's
declaration covers (`rollproof.core.surface.Implicit`).

* `sqlite_autoindex_<table>_<N>`, the index SQLite makes for a UNIQUE or non-integer PRIMARY
  KEY constraint (also known by its name alone, `core.surface.by_name`, for a table the change
  creates): WRITE, covered by the table;
* foreign keys: the parent table is READ for the child (with `foreign_keys = true` every write
  of the child reads the parent) and the child is READ for the parent (a write of the parent
  reads its children). An ON DELETE/UPDATE action that writes the child is a write, and needs
  the child declared.

The source is opened read-only (`mode=ro`, `query_only`), as every source connection is.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from rollproof.core.surface import AccessKind, Catalog, Implicit, fold_name
from rollproof.engines.sqlite.schema import quote_ident


def implicit_objects(conn: sqlite3.Connection) -> tuple[list[Implicit], list[str]]:
    """(implicit objects, table names) of the database `conn` is connected to."""
    out: list[Implicit] = []
    rows = conn.execute(
        "SELECT type, name, tbl_name, sql FROM main.sqlite_schema "
        "WHERE type IN ('table', 'index') AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
        "OR (type = 'index' AND sql IS NULL)"
    ).fetchall()
    tables = [fold_name(str(name)) for kind, name, _t, _s in rows if kind == "table"]
    for kind, name, table, sql in rows:
        if kind == "index" and sql is None:
            owner = fold_name(str(table))
            out.append(
                Implicit(
                    fold_name(str(name)),
                    owner,
                    AccessKind.WRITE,
                    f"automatic index of {owner} (UNIQUE/PRIMARY KEY)",
                )
            )
    for table in tables:
        for row in conn.execute(f"PRAGMA main.foreign_key_list({quote_ident(table)})"):
            parent = fold_name(str(row[2]))
            out.append(
                Implicit(
                    parent,
                    table,
                    AccessKind.READ,
                    f"foreign-key parent of {table}, read by its check",
                )
            )
            out.append(
                Implicit(
                    table,
                    parent,
                    AccessKind.READ,
                    f"references {parent}, read by the foreign-key check when {parent} changes",
                )
            )
    return out, tables


def read_catalog(path: Path) -> Catalog:
    """The implicit objects of a SQLite source file, opened read-only."""
    from rollproof.engines.sqlite.session import check_sqlite_file, connect_read_only

    resolved = check_sqlite_file(path)
    try:
        with contextlib.closing(connect_read_only(resolved)) as conn:
            items, tables = implicit_objects(conn)
    except sqlite3.Error:
        # A source SQLite cannot read (damaged, a hot journal) is refused when the session
        # opens it, with SQLite's reason; an empty catalog here covers nothing implicitly.
        return Catalog()
    by_object: dict[str, list[Implicit]] = {}
    for item in dict.fromkeys(items):
        by_object.setdefault(item.object, []).append(item)
    return Catalog({k: tuple(v) for k, v in by_object.items()}, frozenset(tables))
