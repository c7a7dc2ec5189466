"""What SQLite makes for a table, read from a database's schema: the objects a table's
declaration covers (`rollproof.core.surface.Implicit`).

* `sqlite_autoindex_<table>_<N>`, the index SQLite makes for a UNIQUE or non-integer PRIMARY
  KEY constraint (also known by its name alone, `core.surface.by_name`, for a table the change
  creates): WRITE, covered by the table;
* a virtual table's shadow tables (FTS3/4/5 `<name>_data`, `_idx`, `_content`, ...; R*Tree
  `<name>_node`, ...), which its module reads and writes whenever the virtual table is read or
  written: WRITE, covered by a declared write of the virtual table, and READ, covered by its
  declaration in either list. SQLite names them (`PRAGMA table_list` type `shadow`); the owner
  is the virtual table whose name, with `_`, begins the shadow's (the longest, as
  `docs_x_content` belongs to `docs_x`, not `docs`);
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
    out += _shadow_tables(conn)
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
    from rollproof.engines.sqlite.source import check_sqlite_file, connect_read_only

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


def _shadow_tables(conn: sqlite3.Connection) -> list[Implicit]:
    """Each shadow table, covered by the virtual table that owns it."""
    listed = conn.execute("PRAGMA main.table_list").fetchall()
    virtual = [fold_name(str(name)) for _s, name, kind, *_r in listed if kind == "virtual"]
    out: list[Implicit] = []
    for _schema, name, kind, *_rest in listed:
        if kind != "shadow":
            continue
        shadow = fold_name(str(name))
        owners = [v for v in virtual if shadow.startswith(v + "_")]
        if not owners:
            continue
        owner = max(owners, key=len)
        why = f"shadow table of the virtual table {owner}, kept by its module"
        out.append(Implicit(shadow, owner, AccessKind.WRITE, why))
        out.append(Implicit(shadow, owner, AccessKind.READ, why))
    return out
