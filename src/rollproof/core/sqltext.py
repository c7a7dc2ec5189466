"""SQL script text, dialect-free: telling SQL from comments, and a statement without its
leading comments. Splitting a script into statements is a dialect fact and lives with each
engine (`rollproof.engines.sqlite.statements`, `rollproof.engines.postgres.sql`).
"""

from __future__ import annotations

import re

LEADING_COMMENTS = re.compile(r"^(\s+|--[^\n]*(\n|$)|/\*.*?\*/)+", re.S)
_ALL_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)


def has_sql(text: str) -> bool:
    """True when the text holds anything besides whitespace, `;` and SQL comments."""
    return bool(_ALL_COMMENTS.sub("", text).replace(";", "").strip())


def without_leading_comments(statement: str) -> str:
    return LEADING_COMMENTS.sub("", statement).lstrip()
