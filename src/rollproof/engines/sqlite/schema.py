"""SQLite schema facts: the structural description of every schema object, and SQL normalisation.

The structural description is read from SQLite's own pragmas (columns, indexes, foreign keys,
table flags) and, for what no pragma exposes (column collations, CHECK constraints, trigger and
view bodies, partial-index conditions), from the stored SQL normalised token by token with
sqlglot's SQLite tokenizer. Normalisation removes only what SQLite itself ignores (whitespace,
comments, the case of its keywords, bracket and backquote quoting, the ASCII case of names), so
a table rebuilt back to the same definition describes the same; it keeps string literals byte
for byte, and what SQLite may read as data: a double-quoted name (a string when no column
matches), a DEFAULT's names, non-ASCII case (`_render`; docs/fingerprint.md).
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

import apsw
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import SqlglotError
from sqlglot.tokenizer_core import Token, TokenType

from rollproof.core.surface import fold_name

_SQLITE = Dialect.get_or_raise("sqlite")
_NAME_TYPES = frozenset({TokenType.IDENTIFIER, TokenType.VAR})
_LITERAL_TYPES = frozenset(
    {
        TokenType.STRING,
        TokenType.HEX_STRING,
        TokenType.BIT_STRING,
        TokenType.NATIONAL_STRING,
        TokenType.RAW_STRING,
        TokenType.BYTE_STRING,
        TokenType.HEREDOC_STRING,
        TokenType.UNICODE_STRING,
        TokenType.NUMBER,
    }
)

EXCLUDED_PREFIX = "sqlite_stat"
SEQUENCE_TABLE = "sqlite_sequence"
INTERNAL_TABLES = frozenset(
    {"sqlite_schema", "sqlite_master", "sqlite_temp_schema", "sqlite_temp_master", SEQUENCE_TABLE}
)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def tokens(sql: str) -> list[Token] | None:
    try:
        return list(_SQLITE.tokenize(sql))
    except (SqlglotError, ValueError):
        return None


SQLITE_KEYWORDS = frozenset(apsw.keywords)
"""SQLite's own keywords (147 in 3.4x), as the library in use reports them: only these are
case-blind words; any other word in SQL is a name."""
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_QUOTES = frozenset('"[`')


def _render(
    tok: Token, sql: str, *, names_as_written: bool = False, after: Token | None = None
) -> str:
    """One token as the structural description keeps it; `after` is the token before it."""
    if tok.token_type in _LITERAL_TYPES:
        return f"{tok.token_type.name}:{tok.text!r}"
    quote = sql[tok.start : tok.start + 1]
    if quote not in _QUOTES and tok.text.upper() in ("TRUE", "FALSE"):
        return tok.text.upper()  # unquoted, the constants 1 and 0 (no column of that name)
    if tok.token_type in _NAME_TYPES or (
        _WORD.fullmatch(tok.text) and tok.text.upper() not in SQLITE_KEYWORDS
    ):
        # A name, whatever sqlglot calls it: `Date` or `Total` is a keyword to sqlglot, a name
        # to SQLite, and its case may be data (an alias, a DEFAULT's string).
        collation = after is not None and after.text.upper() == "COLLATE"
        if quote == '"' and not collation:
            # SQLite reads a double-quoted name that matches no column as a string literal
            # (`WHERE a <> "X"`, a view's `SELECT "Hello"`, a trigger's `VALUES ("x")`), where
            # `[X]` or `X` would be an error: its case is data, and its quotes count. (A
            # collation's name is never a string.)
            return f'"{tok.text}"'
        return tok.text if names_as_written else fold_name(tok.text)
    return " ".join(tok.text.split()).upper()


def _render_all(toks: list[Token], sql: str, *, names_as_written: bool = False) -> str:
    return " ".join(
        _render(t, sql, names_as_written=names_as_written, after=toks[i - 1] if i else None)
        for i, t in enumerate(toks)
    )


_NO_SPACE_BEFORE = frozenset({TokenType.COMMA, TokenType.R_PAREN, TokenType.DOT})
_NO_SPACE_AFTER = frozenset({TokenType.L_PAREN, TokenType.DOT})
_SPACED_WORDS = frozenset({"CHECK", "AS", "IN", "KEY", "UNIQUE", "DEFAULT", "EXISTS", "VALUES"})
"""Words the tokenizer may read as names that are followed by `(` without being a function."""


def display_sql(sql: str, toks: list[Token] | None = None) -> str:
    """SQL (or a run of its tokens) as a person reads it: each token as written, comments gone,
    one space between tokens except around `(`, `)`, `,` and `.` (so `lower(x)`, `a, b`)."""
    if toks is None:
        toks = tokens(sql)
        if toks is None:
            return " ".join(sql.split())
    out = ""
    prev: Token | None = None
    for t in toks:
        raw = sql[t.start : t.end + 1]
        if prev is not None and not (
            t.token_type in _NO_SPACE_BEFORE
            or prev.token_type in _NO_SPACE_AFTER
            or (
                t.token_type == TokenType.L_PAREN
                and prev.token_type in _NAME_TYPES
                and prev.text.upper() not in _SPACED_WORDS
            )
        ):
            out += " "
        out += raw
        prev = t
    return out


def table_parts(sql: str) -> tuple[dict[str, str], list[str]]:
    """A CREATE TABLE as written (for a person): each column's definition after its name, by
    lower-case name, and the table constraints."""
    toks = tokens(sql)
    if toks is None:
        return {}, []
    columns: dict[str, str] = {}
    constraints: list[str] = []
    for part in _split_top_level(toks):
        if not part:
            continue
        if " ".join(part[0].text.split()).upper() in _TABLE_CONSTRAINT_WORDS:
            constraints.append(display_sql(sql, part))
        else:
            columns[fold_name(part[0].text)] = display_sql(sql, part[1:])
    return columns, constraints


def index_parts(sql: str) -> dict[str, str | None]:
    """An index's parts as written: `unique`, `table`, `columns` (keys and expressions) and
    `partial WHERE` (its condition, or None)."""
    toks = tokens(sql)
    if toks is None:
        return {"definition": " ".join(sql.split())}
    words = [t.text.upper() for t in toks]
    out: dict[str, str | None] = {
        "unique": "UNIQUE"
        if "UNIQUE" in words[: words.index("INDEX") if "INDEX" in words else 0]
        else "not unique",
        "table": None,
        "columns": None,
        "partial WHERE": None,
    }
    depth = 0
    open_at = None
    for i, t in enumerate(toks):
        if (
            t.token_type == TokenType.ON
            and depth == 0
            and out["table"] is None
            and i + 1 < len(toks)
        ):
            out["table"] = toks[i + 1].text
        elif t.token_type == TokenType.L_PAREN:
            if depth == 0 and open_at is None:
                open_at = i
            depth += 1
        elif t.token_type == TokenType.R_PAREN:
            depth -= 1
            if depth == 0 and open_at is not None and out["columns"] is None:
                out["columns"] = display_sql(sql, toks[open_at + 1 : i])
        elif t.token_type == TokenType.WHERE and depth == 0:
            out["partial WHERE"] = display_sql(sql, toks[i + 1 :])
            break
    return out


def normalize_sql(sql: str, *, names_as_written: bool = False) -> str:
    """Token-normalised SQL: whitespace, comments, quoting and keyword case do not count, nor
    the ASCII case of a name unless it is double-quoted (then it may be a string, `_render`).
    `names_as_written` keeps every name's case: a column DEFAULT reads any name as a string
    (`DEFAULT Yes` is 'Yes')."""
    toks = tokens(sql)
    if toks is None:  # not tokenisable: fall back to whitespace folding, still deterministic
        return "raw:" + " ".join(sql.split())
    return _render_all(toks, sql, names_as_written=names_as_written)


def _split_top_level(toks: list[Token]) -> list[list[Token]]:
    """Split the tokens inside the outermost parentheses of CREATE TABLE at top-level commas."""
    depth = 0
    parts: list[list[Token]] = []
    current: list[Token] = []
    started = False
    for t in toks:
        if t.token_type == TokenType.L_PAREN:
            depth += 1
            if depth == 1 and not started:
                started = True
                continue
        elif t.token_type == TokenType.R_PAREN:
            depth -= 1
            if depth == 0 and started:
                parts.append(current)
                break
        if not started:
            continue
        if depth == 1 and t.token_type == TokenType.COMMA:
            parts.append(current)
            current = []
        else:
            current.append(t)
    return parts


_TABLE_CONSTRAINT_WORDS = frozenset({"CONSTRAINT", "PRIMARY KEY", "UNIQUE", "CHECK", "FOREIGN KEY"})


def _checks_and_collations(
    sql: str,
) -> tuple[list[str], dict[str, str], dict[str, str], list[str]]:
    """CHECK constraints (normalised, with their column), explicit column collations, each
    column's whole definition after its name (normalised: generated expressions, AUTOINCREMENT,
    ON CONFLICT clauses, REFERENCES ... DEFERRABLE, constraint names, which no pragma shows),
    and the table constraints (normalised, sorted)."""
    toks = tokens(sql)
    if toks is None:
        return ["raw:" + " ".join(sql.split())], {}, {}, []
    checks: list[str] = []
    collations: dict[str, str] = {}
    definitions: dict[str, str] = {}
    table_constraints: list[str] = []
    for part in _split_top_level(toks):
        if not part:
            continue
        head = " ".join(part[0].text.split()).upper()
        column = None if head in _TABLE_CONSTRAINT_WORDS else fold_name(part[0].text)
        if column is None:
            table_constraints.append(_render_all(part, sql))
        else:
            definitions[column] = _render_all(part[1:], sql)
        i = 0
        while i < len(part):
            word = part[i].text.upper()
            if word == "COLLATE" and column is not None and i + 1 < len(part):
                collations[column] = part[i + 1].text.upper()
            if (
                word == "CHECK"
                and i + 1 < len(part)
                and part[i + 1].token_type == TokenType.L_PAREN
            ):
                depth, j = 0, i + 1
                while j < len(part):
                    if part[j].token_type == TokenType.L_PAREN:
                        depth += 1
                    elif part[j].token_type == TokenType.R_PAREN:
                        depth -= 1
                        if depth == 0:
                            break
                    j += 1
                body = _render_all(part[i + 1 : j + 1], sql)
                checks.append(f"{column or ''}:{body}")
                i = j
            i += 1
    return sorted(checks), collations, definitions, sorted(table_constraints)


def _pragma(
    conn: sqlite3.Connection, pragma: str, name: str, schema: str = "main"
) -> list[tuple[Any, ...]]:
    return list(conn.execute(f"PRAGMA {quote_ident(schema)}.{pragma}({quote_ident(name)})"))


def describe_table(
    conn: sqlite3.Connection, name: str, sql: str, flags: dict[str, Any], schema: str = "main"
) -> dict[str, Any]:
    """A table's structural description (its digest is the `table:<name>` schema object).
    `schema` is the attached database to read (the explainer describes `before` too)."""
    checks, collations, definitions, table_constraints = _checks_and_collations(sql)
    columns = []
    for _cid, col, ctype, notnull, dflt, pk, hidden in _pragma(conn, "table_xinfo", name, schema):
        columns.append(
            {
                "name": col,  # as declared: a rename that only changes case is visible
                "type": normalize_sql(str(ctype)) if ctype else "",
                "notnull": bool(notnull),
                "default": None
                if dflt is None
                else normalize_sql(str(dflt), names_as_written=True),
                "pk": pk,
                "hidden": hidden,
                "collation": collations.get(fold_name(col), "BINARY"),
                "definition": definitions.get(fold_name(col), ""),
            }
        )
    fks: dict[int, dict[str, Any]] = {}
    for fid, _seq, table, frm, to, on_update, on_delete, match in _pragma(
        conn, "foreign_key_list", name, schema
    ):
        fk = fks.setdefault(
            fid,
            {
                "table": fold_name(table),
                "from": [],
                "to": [],
                "on_update": on_update,
                "on_delete": on_delete,
                "match": match,
            },
        )
        fk["from"].append(fold_name(frm))
        fk["to"].append(None if to is None else fold_name(to))
    constraints = []
    for _seq, idx_name, unique, origin, partial in _pragma(conn, "index_list", name, schema):
        if origin == "c":
            continue  # explicit indexes are schema objects of their own
        constraints.append(
            {
                "origin": origin,
                "unique": bool(unique),
                "partial": bool(partial),
                "columns": index_columns(conn, idx_name, schema),
            }
        )
    return {
        "type": "table",
        "columns": columns,
        "checks": checks,
        "table_constraints": table_constraints,
        "foreign_keys": sorted(fks.values(), key=repr),
        "constraints": sorted(constraints, key=repr),
        "without_rowid": bool(flags.get("wr")),
        "strict": bool(flags.get("strict")),
    }


def view_columns(conn: sqlite3.Connection, name: str, schema: str = "main") -> list[Any]:
    """A view's result columns as SQLite names them (name, declared type): a program reads a
    view's rows by these names, and they follow the SQL as written (an alias's case, or an
    unaliased expression's text), which the normalised SQL does not keep. A view SQLite cannot
    prepare (it reads a table that is gone) is described by that error instead."""
    try:
        return [
            [col, ctype] for _cid, col, ctype, *_rest in _pragma(conn, "table_xinfo", name, schema)
        ]
    except sqlite3.Error as e:
        return [f"error: {e}"]


def index_columns(conn: sqlite3.Connection, index: str, schema: str = "main") -> list[list[Any]]:
    return [
        [None if cname is None else fold_name(cname), cid if cname is None else 0, desc, coll]
        for _seqno, cid, cname, desc, coll, key in _pragma(conn, "index_xinfo", index, schema)
        if key
    ]


def table_flags(conn: sqlite3.Connection, schema: str = "main") -> dict[str, dict[str, Any]]:
    """`PRAGMA table_list` for one schema: type, ncol, wr (WITHOUT ROWID), strict."""
    out = {}
    for where, name, ttype, ncol, wr, strict in conn.execute(
        f"PRAGMA {quote_ident(schema)}.table_list"
    ):
        if where == schema:
            out[name] = {"type": ttype, "ncol": ncol, "wr": wr, "strict": strict}
    return out


def primary_key(conn: sqlite3.Connection, name: str) -> list[str] | None:
    """Primary-key columns in key order, or None when rows cannot be ordered by a key alone.

    A primary key of an ordinary rowid table that is not the rowid itself may hold several
    NULLs (a SQLite quirk), so ties would leave row order physical; unless its columns are NOT
    NULL, such a table uses the row-digests order. `INTEGER PRIMARY KEY DESC` is not a rowid
    alias either: SQLite gives it an automatic index, which is how it is told apart here.
    """
    info = _pragma(conn, "table_xinfo", name)
    pk = sorted((r[5], r[1], r[2], r[3]) for r in info if r[5] > 0)
    if not pk:
        return None
    flags = table_flags(conn).get(name, {})
    if rowid_alias(conn, name) or flags.get("wr") or all(notnull for _k, _n, _t, notnull in pk):
        return [n for _k, n, _t, _nn in pk]
    return None


def rowid_alias(conn: sqlite3.Connection, name: str) -> str | None:
    """The column that is the table's rowid (`INTEGER PRIMARY KEY`), or None: a WITHOUT ROWID
    table has none, and `INTEGER PRIMARY KEY DESC` is not one (SQLite gives it an automatic
    index, which is how it is told apart here)."""
    pk = [r for r in _pragma(conn, "table_xinfo", name) if r[5] > 0]
    if len(pk) != 1 or str(pk[0][2]).strip().upper() != "INTEGER":
        return None
    if table_flags(conn).get(name, {}).get("wr"):
        return None
    if any(origin == "pk" for _s, _n, _u, origin, _p in _pragma(conn, "index_list", name)):
        return None
    return str(pk[0][1])


def columns(conn: sqlite3.Connection, name: str) -> list[str]:
    """Stored and generated columns, in order (the hidden rowid is never included)."""
    return [r[1] for r in _pragma(conn, "table_xinfo", name) if r[6] in (0, 2, 3)]
