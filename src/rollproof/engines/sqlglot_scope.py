"""The sqlglot reader: what SQL touches and may destroy, read from the text (SQLite and any
sqlglot dialect; PostgreSQL has its own parser in `postgres/scope.py`).

Longer than 600 lines because every statement form a reader meets is classified here, each
with its one rule (splitting, triggers read by their tokens, SQLite's maintenance statements,
syntax errors told in SQLite's words, names, reads, the destructive lint), and the rules share
the helpers that normalise names and collect reads; split apart, each part would import the
rest. Pure functions, no IO beyond an in-memory SQLite that only prepares a statement:
`static_scope` lists every statement's objects and access kinds, `lint_destructive` flags
statements that destroy data. `rollproof.engines.reader_for` is how other layers reach it.

Invariants:

* A statement rollproof does not understand is UNKNOWN with a reason, never silently ignored
  and never shown as touching nothing. The accesses listed for an UNKNOWN statement are a
  lower bound (what could be established), never the whole story; `lint_destructive` and
  `undeclared` cannot see into it, so a caller must treat any UNKNOWN statement as unproven.
* Splitting never cuts a statement at a `;` inside a string or a comment, and for SQLite not
  inside a trigger body either: the pieces are joined until `sqlite3.complete_statement`
  accepts them (SQLite's own rule). Other dialects are cut at sqlglot's `;` tokens, which a
  string cannot hold; a BEGIN ... END body there is cut, and its trigger reads as UNKNOWN.
* Object names are lower-cased (SQLite compares identifiers case-insensitively, quoted or not)
  and SQLite's `main.` prefix is dropped. Any other qualifier (`temp.t`, `aux.t`, a postgres
  `public.t`) is kept, so a write to another schema never matches a declaration of the bare name.

Choices where SQL is ambiguous, stated once here:

* An object named only in a FROM, a join or a DML target may be a table or a view; its
  `object_type` is "unknown". The type is given only where the syntax says it (CREATE TABLE,
  DROP VIEW, ALTER TABLE, CREATE INDEX ... ON t, ...).
* CREATE INDEX creates the index and READs its table: building it reads every row, but the
  table's rows and definition are unchanged (the fingerprint treats an explicit index as an
  object of its own). CREATE TRIGGER likewise READs the table (or, INSTEAD OF, the view) it is
  attached to; what its body writes is WRITE, reads are READ.
* A FOREIGN KEY's REFERENCES target is READ: the new definition depends on it.
* ALTER TABLE t RENAME TO u is ALTER of t and CREATE of u. SQLite also rewrites references to
  t inside triggers and views; those objects are not named in the statement and not listed.
* DROP TABLE is a DROP of the table only; the indexes and triggers it drops with it are not
  named in the statement and are not listed.
* DELETE without WHERE is DELETE_ALL only (it is the truncate-like pattern; it is not also
  reported as TRUNCATE, which is kept for the TRUNCATE statement itself). A WHERE that is
  always true (`WHERE 1`) is not detected.
* Accesses of one statement are listed as its own actions in the order written, then the
  objects it reads, sorted by name; an identical access is listed once.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.dialects.sqlite import SQLite
from sqlglot.errors import ParseError, SqlglotError
from sqlglot.tokenizer_core import Token, TokenType

from rollproof.core.sqltext import without_leading_comments
from rollproof.core.surface import (
    PROVEN_BY,
    TEXT_WIDTH,
    Access,
    AccessKind,
    Implicit,
    ObjectType,
    Risk,
    RiskCode,
    StatementScope,
    fold_name,
)
from rollproof.engines.sqlite.statements import split_sqlite

_CREATE_TYPES = {"TABLE": ObjectType.TABLE, "VIEW": ObjectType.VIEW, "INDEX": ObjectType.INDEX}
_DROP_TYPES = {**_CREATE_TYPES, "TRIGGER": ObjectType.TRIGGER}
_TOKEN_REPR = re.compile(r"<Token token_type: [^,]+, text: (.*?), line: .*?>")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
_NAME_TOKENS = frozenset({TokenType.VAR, TokenType.IDENTIFIER})
_TABLE_OPTIONS = re.compile(
    r"\)\s*(?:WITHOUT\s+ROWID|STRICT)(?:\s*,\s*(?:WITHOUT\s+ROWID|STRICT))*\s*;?\s*$", re.I
)
_REPLACE = re.compile(r"^(\s*)REPLACE(\s)", re.I)
_EXPLAIN = re.compile(r"^\s*EXPLAIN(?:\s+QUERY\s+PLAN)?\s+", re.I)
_SYNTAX = ("syntax error", "incomplete input", "unrecognized token")


class _Quiet(logging.Filter):
    """sqlglot warns on its logger when it falls back to an opaque Command; rollproof reports
    that as UNKNOWN with a reason, so the warning must not reach the user's stderr."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.WARNING


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    logger = logging.getLogger("sqlglot")
    quiet = _Quiet()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def sqlite_syntax_error(statement: str) -> str | None:
    """SQLite's own complaint when it cannot parse `statement` (`near "tabel": syntax error`),
    or None. The statement is only prepared (EXPLAIN), on an empty in-memory database, so a
    missing table is not a syntax error and nothing runs."""
    body = statement.strip().removesuffix(";")
    text = body if _EXPLAIN.match(body) else "EXPLAIN " + body
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute(text)
    except sqlite3.Error as e:
        message = str(e)
        if any(marker in message for marker in _SYNTAX):
            return message
    finally:
        conn.close()
    return None


@dataclass(frozen=True, slots=True)
class _Statement:
    index: int
    text: str
    node: exp.Expr | None
    """The parsed statement, for the lint; None when there is nothing to lint."""
    accesses: tuple[Access, ...]
    unknown: str | None
    implied: tuple[Implicit, ...] = ()
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _Reading:
    """What one statement touches; `unknown` set means the list may be incomplete."""

    accesses: list[Access]
    unknown: str | None = None
    implied: tuple[Implicit, ...] = ()


def static_scope(sql: str, *, dialect: str = "sqlite") -> tuple[StatementScope, ...]:
    """Every statement of `sql`, in order, with every object it touches, read by sqlglot in
    `dialect` (a sqlglot dialect name; an unknown one raises ValueError)."""
    return tuple(
        StatementScope(
            index=s.index,
            text=s.text,
            accesses=s.accesses,
            unknown=s.unknown,
            implied=s.implied,
            error=s.error,
        )
        for s in _statements(sql, dialect)
    )


def lint_destructive(sql: str, *, dialect: str = "sqlite") -> tuple[Risk, ...]:
    """Every statement of `sql` that destroys data or cannot be reverted losslessly.

    A statement `static_scope` reports UNKNOWN may be destructive and is not shown here: an
    empty result proves nothing about it. Trigger bodies are not linted: they run when the
    trigger fires, not when the change is applied.
    """
    d = Dialect.get_or_raise(dialect)
    risks: list[Risk] = []
    for st in _statements(sql, dialect):
        for code, obj, message in _findings(st.node, d):
            risks.append(
                Risk(
                    statement=st.index,
                    text=st.text,
                    code=code,
                    object=obj,
                    message=message,
                    proven_by=PROVEN_BY[code],
                )
            )
    return tuple(risks)


# --- splitting -------------------------------------------------------------------------------


def _statements(sql: str, dialect: str) -> list[_Statement]:
    d = Dialect.get_or_raise(dialect)
    sqlite = isinstance(d, SQLite)
    pieces = split_sqlite(sql) if sqlite else _split_tokens(sql, d)
    statements = [_statement(i, piece, d, sqlite) for i, piece in enumerate(pieces, start=1)]
    return _without_temp(statements) if sqlite else statements


_CREATE_TEMP = re.compile(r"\s*CREATE\s+TEMP(?:ORARY)?\s", re.IGNORECASE)


def _temp_created(st: _Statement) -> str | None:
    """The name a `CREATE TEMP TABLE | VIEW | TRIGGER` statement makes, if it is one."""
    if not _CREATE_TEMP.match(st.text):
        return None
    created = [a.object for a in st.accesses if a.kind is AccessKind.CREATE]
    return created[0] if created else None


def _without_temp(statements: list[_Statement]) -> list[_Statement]:
    """SQLite: what a script does to its own TEMP objects is left out. They live in the
    connection's private TEMP schema, gone when it closes, and SQLite looks a bare name up in
    TEMP first, so from its `CREATE TEMP` to its `DROP` a name is the TEMP object, as is any
    `temp.` name. (The run-time authorizer allows the TEMP schema for the same reason; what a
    TEMP view reads or a TEMP trigger writes in `main` is still reported.)"""
    temp: set[str] = set()
    out = []
    for st in statements:
        made = _temp_created(st)
        if made is not None:
            temp.add(made)
        kept = tuple(
            a for a in st.accesses if a.object not in temp and not a.object.startswith("temp.")
        )
        for a in st.accesses:
            if a.kind is AccessKind.DROP and a.object in temp and made is None:
                temp.discard(a.object)
        out.append(replace(st, accesses=kept))
    return out


def _split_tokens(sql: str, d: Dialect) -> list[str]:
    try:
        tokens = d.tokenize(sql)
    except SqlglotError:
        # Where the script cannot even be tokenized its statements cannot be found either:
        # the whole script becomes one statement, which then reads as UNKNOWN with the reason.
        return [sql.strip()] if sql.strip() else []
    out: list[str] = []
    start, has_tokens = 0, False
    for tok in tokens:
        if tok.token_type is TokenType.SEMICOLON:
            if has_tokens:
                out.append(sql[start : tok.start].strip())
            start, has_tokens = tok.end + 1, False
        else:
            has_tokens = True
    if has_tokens:
        out.append(sql[start:].strip())
    return out


def _display(piece: str) -> str:
    one = " ".join(without_leading_comments(piece).split()).removesuffix(";").rstrip()
    return one if len(one) <= TEXT_WIDTH else one[: TEXT_WIDTH - 3] + "..."


# --- one statement ---------------------------------------------------------------------------


def _statement(index: int, piece: str, d: Dialect, sqlite: bool) -> _Statement:
    with _quiet():
        return _statement_quiet(index, piece, d, sqlite)


def _statement_quiet(index: int, piece: str, d: Dialect, sqlite: bool) -> _Statement:
    text = _display(piece)
    if sqlite:
        error = sqlite_syntax_error(piece)
        if error is not None:
            return _Statement(index, text, None, (), f"SQLite refuses it: {error}", error=error)
        explained = _EXPLAIN.match(piece)
        if explained:
            # EXPLAIN prepares the statement (the authorizer sees its every access) and runs
            # none of it: its scope is the statement's.
            inner = _statement_quiet(index, piece[explained.end() :], d, sqlite)
            return _Statement(index, text, None, inner.accesses, inner.unknown, inner.implied)
        piece = _TABLE_OPTIONS.sub(")", piece)  # WITHOUT ROWID, STRICT: sqlglot stops there
        piece = _REPLACE.sub(r"\1INSERT OR REPLACE\2", piece)
    try:
        tokens = d.tokenize(piece)
    except SqlglotError as e:
        return _Statement(index, text, None, (), _error_reason(e))
    words = [t.text.upper() for t in tokens if t.token_type is not TokenType.SEMICOLON]
    if _is_transaction_control(words):
        return _Statement(index, text, None, (), None)
    if sqlite:
        special = _sqlite_maintenance(words, tokens)
        if special is not None:
            return _Statement(index, text, None, _ordered(special.accesses), special.unknown)
    if _is_create_trigger(words):
        reading = _trigger(piece, tokens, d, sqlite)
        return _Statement(index, text, None, _ordered(reading.accesses), reading.unknown)
    node, reason = _parse_one(piece, d)
    if (
        sqlite
        and words[:2] == ["ALTER", "TABLE"]
        and (node is None or isinstance(node, exp.Command))
    ):
        # SQLite accepted it (checked above) where sqlglot did not (`ADD COLUMN b` without a
        # type, `ADD b` without COLUMN): its short grammar is read from the words.
        alter = _sqlite_alter_table(tokens)
        return _Statement(index, text, None, _ordered(alter.accesses), alter.unknown)
    if node is None:
        return _Statement(index, text, None, (), reason)
    reading = _read(node, d, sqlite)
    return _Statement(
        index, text, node, _ordered(reading.accesses), reading.unknown, reading.implied
    )


def _parse_one(text: str, d: Dialect) -> tuple[exp.Expr | None, str]:
    try:
        parsed = sqlglot.parse(text, read=d)
    except SqlglotError as e:
        return None, _error_reason(e)
    nodes = [n for n in parsed if n is not None and not isinstance(n, exp.Semicolon)]
    if len(nodes) != 1:
        return None, f"sqlglot read {len(nodes)} statements where the script has one"
    return nodes[0], ""


def _error_reason(e: SqlglotError) -> str:
    if isinstance(e, ParseError) and e.errors:
        first = e.errors[0]
        description = _TOKEN_REPR.sub(r"'\1'", str(first.get("description", "")))
        return (
            f"sqlglot cannot parse it: {description} "
            f"(line {first.get('line')}, column {first.get('col')})"
        )
    # The tokenizer wraps its precise complaint ("Missing ' from 1:7") in a generic one.
    cause = e.__cause__
    detail = str(cause) if isinstance(cause, SqlglotError) and str(cause) else str(e)
    lines = _ANSI.sub("", detail).strip().splitlines()
    return f"sqlglot cannot parse it: {lines[0] if lines else type(e).__name__}"


def _sqlite_maintenance(words: list[str], tokens: list[Token]) -> _Reading | None:
    """ANALYZE, VACUUM, REINDEX, ATTACH and DETACH, read by their words (sqlglot keeps them as
    text); None for any other statement."""
    head = words[0] if words else ""
    named, _ = _dotted(tokens, 1, True) if len(tokens) > 1 else (None, 1)
    if named in ("main", "temp"):
        named = None  # a schema name: the whole database
    if head == "ANALYZE":
        # Statistics go to sqlite_stat1, which is SQLite's own and not part of the content.
        reads = [] if named is None else [Access(named, AccessKind.READ, ObjectType.UNKNOWN)]
        return _Reading(reads)
    if head == "VACUUM":
        if re.search(r"\bINTO\b", " ".join(words)):
            return _Reading(
                [],
                "VACUUM INTO writes a copy of the database to a file, which a change may not "
                "do; take the copy outside the change",
            )
        return _Reading([])  # rebuilds the file; no row or definition changes
    if head == "REINDEX":
        if named is None:
            return _Reading(
                [],
                "REINDEX without a name rebuilds every index of the database; name the table "
                "or index (REINDEX t), or declare every index in writes",
            )
        return _Reading([Access(named, AccessKind.WRITE, ObjectType.UNKNOWN)])
    if head in ("ATTACH", "DETACH"):
        return _Reading(
            [],
            f"{head} is refused at run time: a change may not open another database file "
            "(ATTACH '' AS x, a private temporary database, is the exception)",
        )
    return None


def _sqlite_alter_table(tokens: list[Token]) -> _Reading:
    """`ALTER TABLE t RENAME TO u | RENAME [COLUMN] a TO b | ADD [COLUMN] def | DROP [COLUMN]
    c`, SQLite's whole ALTER TABLE, read by its words: t is altered, u created, and a table the
    added column REFERENCES read (as for the statements sqlglot parses)."""
    target, at = _dotted(tokens, 2, True)
    if target is None:
        return _Reading([], "ALTER TABLE: its table name was not found")
    accesses = [Access(target, AccessKind.ALTER, ObjectType.TABLE)]
    words = [t.text.upper() for t in tokens]
    if words[at : at + 2] == ["RENAME", "TO"]:
        new, _ = _dotted(tokens, at + 2, True)
        if new is None:
            return _Reading(accesses, "ALTER TABLE RENAME: the new name was not found")
        accesses.append(Access(new, AccessKind.CREATE, ObjectType.TABLE))
    for i, word in enumerate(words):
        if word == "REFERENCES":
            parent, _ = _dotted(tokens, i + 1, True)
            if parent is not None:
                accesses.append(Access(parent, AccessKind.READ, ObjectType.UNKNOWN))
    return _Reading(accesses)


def _is_transaction_control(words: list[str]) -> bool:
    # sqlglot models BEGIN, COMMIT and ROLLBACK [TO] but reads SAVEPOINT x, RELEASE x, END and
    # START TRANSACTION as bare column expressions, so these are recognised by their words.
    if not words:
        return False
    head, rest = words[0], words[1:]
    if head == "SAVEPOINT":
        return len(rest) == 1
    if head == "RELEASE":
        return len(rest) == 1 or (len(rest) == 2 and rest[0] == "SAVEPOINT")
    if head == "END":
        return rest in ([], ["TRANSACTION"])
    return head == "START" and rest[:1] == ["TRANSACTION"]


def _is_create_trigger(words: list[str]) -> bool:
    if words[:1] != ["CREATE"]:
        return False
    at = 2 if words[1:2] in (["TEMP"], ["TEMPORARY"]) else 1
    return words[at : at + 1] == ["TRIGGER"]


def _read(node: exp.Expr, d: Dialect, sqlite: bool) -> _Reading:
    """The accesses of one parsed statement (not a trigger: see `_trigger`)."""
    if isinstance(node, exp.Command):
        return _Reading(
            [], f"sqlglot does not model this {str(node.this).upper()} statement (kept as text)"
        )
    nested = next((c for c in node.find_all(exp.Command) if not _alter_action(c)), None)
    if nested is not None:
        return _Reading([], "sqlglot does not model part of it (kept as text)")
    if isinstance(node, exp.Transaction | exp.Commit | exp.Rollback | exp.Pragma):
        return _Reading([])
    if isinstance(node, exp.Query | exp.Values):
        return _Reading(_reads(node, set(), sqlite))
    if isinstance(node, exp.Insert | exp.Update | exp.Delete):
        return _read_dml(node, sqlite)
    if isinstance(node, exp.TruncateTable):
        tables = [t for t in node.expressions if isinstance(t, exp.Table)]
        writes = [Access(_name(t, sqlite), AccessKind.WRITE, ObjectType.TABLE) for t in tables]
        return _Reading(writes)
    if isinstance(node, exp.Create):
        return _read_create(node, sqlite)
    if isinstance(node, exp.Alter):
        return _read_alter(node, d, sqlite)
    if isinstance(node, exp.Drop):
        return _read_drop(node, sqlite)
    return _Reading([], f"not a statement rollproof classifies (sqlglot read it as {node.key})")


def _read_dml(node: exp.Insert | exp.Update | exp.Delete, sqlite: bool) -> _Reading:
    target = _table(node.this)
    if target is None:
        return _Reading(_reads(node, set(), sqlite), "sqlglot did not find the target table")
    targets = [target]
    # MySQL's multi-table DELETE names every table it deletes from in `tables`.
    targets += [t for t in node.args.get("tables") or [] if isinstance(t, exp.Table)]
    writes = [Access(_name(t, sqlite), AccessKind.WRITE, ObjectType.UNKNOWN) for t in targets]
    return _Reading(writes + _reads(node, {id(t) for t in targets}, sqlite))


def _read_create(node: exp.Create, sqlite: bool) -> _Reading:
    kind = str(node.args.get("kind") or "").upper()
    if kind == "INDEX":
        return _read_create_index(node, sqlite)
    object_type = _CREATE_TYPES.get(kind, ObjectType.UNKNOWN)
    target = _table(node.this)
    if object_type is ObjectType.UNKNOWN:
        # A function, schema or sequence body is not a query over objects: nothing is read
        # from it, and only a plain name is reported as created.
        named = [] if target is None else [_name(target, sqlite)]
        created = [Access(name, AccessKind.CREATE, object_type) for name in named]
        return _Reading(created, f"CREATE {kind} makes an object rollproof does not model")
    if target is None:
        return _Reading(
            _reads(node, set(), sqlite), f"CREATE {kind}: sqlglot did not find its name"
        )
    accesses = [
        Access(_name(target, sqlite), AccessKind.CREATE, object_type),
        *_reads(node, {id(target)}, sqlite),
    ]
    properties = node.args.get("properties")
    if properties is not None and properties.find(exp.VirtualProperty):
        # A virtual table's module creates shadow tables whose names only it knows.
        return _Reading(
            accesses,
            (
                "a virtual table's module may create tables it does not name; declare its "
                "shadow tables (name_data, name_idx, ...) and rehearse with --allow-undeclared"
            ),
        )
    return _Reading(accesses, implied=_fk_parents(node, _name(target, sqlite), sqlite))


def _fk_parents(node: exp.Expr, table: str, sqlite: bool) -> tuple[Implicit, ...]:
    """The parents a table's REFERENCES clauses name: read by the foreign-key check for the
    table, so covered by its declaration (listed, never holding scoping)."""
    out: list[Implicit] = []
    for ref in node.find_all(exp.Reference):
        parent = _table(ref.this)
        if parent is not None:
            name = _name(parent, sqlite)
            reason = f"foreign-key parent of {table}, read by its check"
            out.append(Implicit(name, table, AccessKind.READ, reason))
    return tuple(dict.fromkeys(out))


def _read_create_index(node: exp.Create, sqlite: bool) -> _Reading:
    index = node.this
    params = index.args.get("params") if isinstance(index, exp.Index) else None
    table = index.args.get("table") if isinstance(index, exp.Index) else None
    # sqlglot misreads a schema-qualified index name (`main.ix ON t`) as index `main` on table
    # `ix`, leaving `t (...)` as an `on` function call; such a reading is refused, not used.
    if (
        not isinstance(index, exp.Index)
        or not isinstance(index.this, exp.Identifier)
        or not isinstance(table, exp.Table)
        or not isinstance(params, exp.IndexParameters)
        or not params.args.get("columns")
        or params.args.get("on") is not None
    ):
        return _Reading([], "sqlglot did not read the index's name, table and columns")
    name = fold_name(index.this.name)
    accesses = [
        Access(name, AccessKind.CREATE, ObjectType.INDEX),
        Access(_name(table, sqlite), AccessKind.READ, ObjectType.TABLE),
    ]
    return _Reading(accesses + _reads(node, {id(table)}, sqlite))


def _read_alter(node: exp.Alter, d: Dialect, sqlite: bool) -> _Reading:
    kind = str(node.args.get("kind") or "").upper()
    target = _table(node.this)
    if target is None:
        return _Reading([], f"ALTER {kind}: sqlglot did not find its name")
    object_type = _CREATE_TYPES.get(kind, ObjectType.UNKNOWN)
    accesses = [Access(_name(target, sqlite), AccessKind.ALTER, object_type)]
    skip = {id(target)}
    unknown: str | None = None
    if object_type is ObjectType.UNKNOWN:
        unknown = f"ALTER {kind} changes an object rollproof does not model"
    for action in node.args.get("actions") or []:
        if isinstance(action, exp.AlterRename):
            new = _table(action.this)
            if new is None:
                unknown = "sqlglot did not find the new name of the RENAME"
                continue
            accesses.append(Access(_name(new, sqlite), AccessKind.CREATE, object_type))
            skip.add(id(new))
        elif isinstance(action, exp.Command) and _dropped_column(action, d) is None:
            unknown = f"sqlglot does not model this ALTER action: {_folded(action.sql(d))}"
    return _Reading(
        accesses + _reads(node, skip, sqlite),
        unknown,
        implied=_fk_parents(node, _name(target, sqlite), sqlite),
    )


def _read_drop(node: exp.Drop, sqlite: bool) -> _Reading:
    kind = str(node.args.get("kind") or "").upper()
    object_type = _DROP_TYPES.get(kind, ObjectType.UNKNOWN)
    drops = [
        Access(_name(t, sqlite), AccessKind.DROP, object_type)
        for t in node.args.get("tables") or []
        if isinstance(t, exp.Table) and _name(t, sqlite)
    ]
    if object_type is ObjectType.UNKNOWN:
        return _Reading(drops, f"DROP {kind} removes an object rollproof does not model")
    if not drops:
        return _Reading([], f"DROP {kind}: sqlglot did not find its name")
    return _Reading(drops)


def _trigger(piece: str, tokens: list[Token], d: Dialect, sqlite: bool) -> _Reading:
    """CREATE TRIGGER, read by its tokens: sqlglot cannot parse one as a whole.

    sqlglot keeps CREATE TRIGGER as opaque text and ends it at the first `;` of the body. The
    header has a fixed grammar, so its name and table are read from the tokens; the WHEN
    condition and each body statement are then handed to sqlglot one at a time. Anything that
    does not fit that shape (for example a postgres `EXECUTE FUNCTION` trigger) is UNKNOWN.
    """
    words = [t.text.upper() for t in tokens]
    at = words.index("TRIGGER") + 1
    if words[at : at + 3] == ["IF", "NOT", "EXISTS"]:
        at += 3
    name, at = _dotted(tokens, at, sqlite)
    on = next((i for i in range(at, len(tokens)) if tokens[i].token_type is TokenType.ON), None)
    if name is None or on is None:
        return _Reading([], "the trigger's name or table could not be read")
    on_view = "INSTEAD" in words[at:on]
    table, at = _dotted(tokens, on + 1, sqlite)
    if table is None:
        return _Reading([], "the trigger's name or table could not be read")
    accesses = [
        Access(name, AccessKind.CREATE, ObjectType.TRIGGER),
        Access(table, AccessKind.READ, ObjectType.VIEW if on_view else ObjectType.TABLE),
    ]
    end = len(tokens)
    while end > 0 and tokens[end - 1].token_type is TokenType.SEMICOLON:
        end -= 1
    begin = next((i for i in range(at, end) if tokens[i].token_type is TokenType.BEGIN), None)
    if begin is None or tokens[end - 1].token_type is not TokenType.END:
        return _Reading(accesses, "the trigger has no BEGIN ... END body rollproof can read")
    if words[at : at + 3] == ["FOR", "EACH", "ROW"]:
        at += 3
    when: list[Token] = []
    if at < begin and words[at] == "WHEN":
        when = tokens[at + 1 : begin]
    elif at < begin:
        return _Reading(accesses, "the trigger header has words rollproof does not know")
    if when:
        node, reason = _parse_one(_span(piece, when), d)
        if node is None:
            return _Reading(accesses, f"trigger WHEN condition: {reason}")
        accesses += _reads(node, set(), sqlite)
    for number, statement in enumerate(_body_statements(tokens[begin + 1 : end - 1]), start=1):
        node, reason = _parse_one(_span(piece, statement), d)
        if node is None:
            return _Reading(accesses, f"trigger body statement {number}: {reason}")
        inner = _read(node, d, sqlite)
        accesses += inner.accesses
        if inner.unknown is not None:
            return _Reading(accesses, f"trigger body statement {number}: {inner.unknown}")
    return _Reading(accesses)


def _body_statements(tokens: list[Token]) -> list[list[Token]]:
    # A body statement cannot hold a `;` outside a string, and a string is a single token.
    out: list[list[Token]] = [[]]
    for tok in tokens:
        if tok.token_type is TokenType.SEMICOLON:
            out.append([])
        else:
            out[-1].append(tok)
    return [statement for statement in out if statement]


def _span(text: str, tokens: list[Token]) -> str:
    """The source text from the first token to the last (token positions are inclusive)."""
    return text[tokens[0].start : tokens[-1].end + 1]


def _dotted(tokens: list[Token], at: int, sqlite: bool) -> tuple[str | None, int]:
    """A `name` or `schema.name` starting at token `at`, normalised, and the index after it."""

    def ident(i: int) -> str | None:
        if i >= len(tokens):
            return None
        tok = tokens[i]
        if tok.token_type in _NAME_TOKENS or _NAME.match(tok.text):
            return fold_name(tok.text)
        return None

    first = ident(at)
    if first is None:
        return None, at
    if at + 2 < len(tokens) and tokens[at + 1].token_type is TokenType.DOT:
        second = ident(at + 2)
        if second is None:
            return None, at
        qualified = second if sqlite and first == "main" else f"{first}.{second}"
        return qualified, at + 3
    return first, at + 1


# --- names and reads -------------------------------------------------------------------------


def _table(node: exp.Expr | None) -> exp.Table | None:
    """The table a DML target or CREATE names; a column list (`t (a, b)`) is looked through."""
    if isinstance(node, exp.Schema):
        node = node.this
    if isinstance(node, exp.Table) and isinstance(node.this, exp.Identifier) and node.name:
        return node
    return None


def _name(table: exp.Table, sqlite: bool) -> str:
    parts = [fold_name(p) for p in (table.catalog, table.db, table.name) if p]
    if sqlite and len(parts) == 2 and parts[0] == "main":
        parts = parts[1:]
    return ".".join(parts)


def _reads(node: exp.Expr, skip: set[int], sqlite: bool) -> list[Access]:
    """Every database object named under `node` except the `skip` nodes (by identity)."""
    out: list[Access] = []
    for table in node.find_all(exp.Table):
        if id(table) in skip or _table(table) is None or _is_cte(table):
            continue  # a table-valued function (json_each(...)) has no Identifier name
        object_type = ObjectType.INDEX if table.arg_key == "indexed" else ObjectType.UNKNOWN
        out.append(Access(_name(table, sqlite), AccessKind.READ, object_type))
    return out


def _is_cte(table: exp.Table) -> bool:
    """True when an unqualified name refers to a CTE of an enclosing WITH, not an object."""
    if table.db or table.catalog:
        return False
    name = fold_name(table.name)
    parent = table.parent
    while parent is not None:
        with_ = parent.args.get("with_")
        if isinstance(with_, exp.With) and any(
            fold_name(cte.alias) == name for cte in with_.expressions
        ):
            return True
        parent = parent.parent
    return False


def _ordered(accesses: Sequence[Access]) -> tuple[Access, ...]:
    actions = [a for a in accesses if a.kind is not AccessKind.READ]
    reads = sorted(
        (a for a in accesses if a.kind is AccessKind.READ), key=lambda a: (a.object, a.object_type)
    )
    return tuple(dict.fromkeys([*actions, *reads]))


def _alter_action(node: exp.Command) -> bool:
    return isinstance(node.parent, exp.Alter) and node.arg_key == "actions"


def _dropped_column(action: exp.Command, d: Dialect) -> str | None:
    """The column of SQLite's `ALTER TABLE t DROP c` (COLUMN omitted), which sqlglot keeps
    as an opaque `DROP` action; None for any other opaque action."""
    if str(action.this).upper() != "DROP":
        return None
    try:
        tokens = d.tokenize(str(action.expression or ""))
    except SqlglotError:
        return None
    if len(tokens) == 1 and tokens[0].token_type in _NAME_TOKENS:
        return fold_name(tokens[0].text)
    return None


def _folded(text: str) -> str:
    return " ".join(text.split())


# --- lint ------------------------------------------------------------------------------------


def _findings(node: exp.Expr | None, d: Dialect) -> list[tuple[RiskCode, str, str]]:
    """(code, object, message) for each way one parsed statement destroys data."""
    if node is None:
        return []
    sqlite = isinstance(d, SQLite)
    out: list[tuple[RiskCode, str, str]] = []
    if isinstance(node, exp.Drop) and str(node.args.get("kind") or "").upper() == "TABLE":
        for t in node.args.get("tables") or []:
            if isinstance(t, exp.Table):
                name = _name(t, sqlite)
                out.append((RiskCode.DROP_TABLE, name, f"drops table {name} and every row in it"))
    elif isinstance(node, exp.Alter) and str(node.args.get("kind") or "").upper() == "TABLE":
        target = _table(node.this)
        if target is not None:
            out += _alter_findings(node, _name(target, sqlite), d)
    elif isinstance(node, exp.Delete) and node.args.get("where") is None:
        target = _table(node.this)
        if target is not None:
            name = _name(target, sqlite)
            message = f"deletes every row of {name} (no WHERE clause): a truncate in effect"
            out.append((RiskCode.DELETE_ALL, name, message))
    elif isinstance(node, exp.Update) and node.args.get("where") is None:
        target = _table(node.this)
        if target is not None:
            name = _name(target, sqlite)
            message = f"updates every row of {name} (no WHERE clause), overwriting the old values"
            out.append((RiskCode.UPDATE_ALL, name, message))
    elif isinstance(node, exp.TruncateTable):
        for t in node.expressions:
            if isinstance(t, exp.Table):
                name = _name(t, sqlite)
                out.append((RiskCode.TRUNCATE, name, f"truncates table {name}, removing every row"))
    return out


def _alter_findings(node: exp.Alter, table: str, d: Dialect) -> list[tuple[RiskCode, str, str]]:
    out: list[tuple[RiskCode, str, str]] = []
    for action in node.args.get("actions") or []:
        if isinstance(action, exp.Drop) and str(action.args.get("kind") or "").upper() == "COLUMN":
            columns = [fold_name(c.name) for c in action.args.get("tables") or []]
        elif isinstance(action, exp.Command):
            column = _dropped_column(action, d)
            columns = [] if column is None else [column]
        else:
            columns = []
        for column in columns:
            message = f"drops column {column} of table {table} and its value in every row"
            out.append((RiskCode.DROP_COLUMN, table, message))
        changed = _type_change(action, d)
        if changed is not None:
            column, new_type = changed
            message = (
                f"changes column {column} of table {table} to type {new_type}; this may narrow "
                "it and truncate, round or reject values (the old width is not known statically)"
            )
            out.append((RiskCode.TYPE_CHANGE, table, message))
    return out


def _type_change(action: exp.Expr, d: Dialect) -> tuple[str, str] | None:
    """(column, new type) for `ALTER COLUMN c TYPE t` (postgres) or `MODIFY/CHANGE` (MySQL)."""
    if isinstance(action, exp.AlterColumn) and isinstance(action.args.get("dtype"), exp.DataType):
        return fold_name(action.name), action.args["dtype"].sql(d)
    if isinstance(action, exp.ModifyColumn) and isinstance(action.this, exp.ColumnDef):
        kind = action.this.args.get("kind")
        if isinstance(kind, exp.DataType):
            renamed = action.args.get("rename_from")
            column = renamed.name if isinstance(renamed, exp.Identifier) else action.this.name
            return fold_name(column), kind.sql(d)
    return None
