"""Splitting a SQLite script into statements.

Shared by the SQLite engine (which runs statements one at a time) and the sqlglot surface
reader (which parses them), so both see exactly the same statements. Splitting uses SQLite's
own completeness test, `sqlite3.complete_statement`, which knows strings, comments and
`CREATE TRIGGER ... END` bodies: a `;` inside any of them does not end a statement.
"""

from __future__ import annotations

import sqlite3

from rollproof.core.sqltext import has_sql


def split_sqlite(sql: str) -> list[str]:
    """Split a script into complete statements, each keeping its own trailing `;`."""
    out: list[str] = []
    current = ""
    for piece in sql.split(";"):
        current += piece + ";"
        if sqlite3.complete_statement(current):
            if has_sql(current):
                out.append(current.strip())
            current = ""
    if has_sql(current):
        out.append(current.strip().removesuffix(";"))
    return out
