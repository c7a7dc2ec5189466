"""SQL script text: splitting a SQLite script into statements, and telling SQL from comments.

Shared by the SQLite engine (which runs statements one at a time) and the static surface
reader (which parses them), so both see exactly the same statements. Splitting uses SQLite's
own completeness test, `sqlite3.complete_statement`, which knows strings, comments and
`CREATE TRIGGER ... END` bodies: a `;` inside any of them does not end a statement.
"""

from __future__ import annotations

import re
import sqlite3

LEADING_COMMENTS = re.compile(r"^(\s+|--[^\n]*(\n|$)|/\*.*?\*/)+", re.S)
_ALL_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)


def has_sql(text: str) -> bool:
    """True when the text holds anything besides whitespace, `;` and SQL comments."""
    return bool(_ALL_COMMENTS.sub("", text).replace(";", "").strip())


def without_leading_comments(statement: str) -> str:
    return LEADING_COMMENTS.sub("", statement).lstrip()


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
