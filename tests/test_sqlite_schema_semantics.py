"""No difference in what a SQLite schema object does goes unseen by the fingerprint.

The structural description reads view, trigger, index, CHECK, DEFAULT and generated-column SQL
normalised (whitespace, comments, quoting style and keyword case do not count), so that a table
rebuilt to the same definition reads the same. Normalising too much is a false PASS: a revert
that leaves `DEFAULT "Yes"` where `DEFAULT "yes"` was changes every later insert, because SQLite
reads a double-quoted name that matches no column as a string; a view's `AS Total` names the
column programs read; `Ä` and `ä` are two names to SQLite. Each of these once read as the same.

The oracle is SQLite itself. Each template puts one spelling into one kind of object, and a
probe observes what the object does (a view's column names and rows; the value a DEFAULT or a
generated column produces; which values a CHECK or a partial UNIQUE index accepts; what a
trigger writes). For any two spellings both accepted by SQLite: if the probes differ, the
fingerprints must differ. The converse is not required (a quoting-style change that does the
same may still read as a difference), but the formatting that does not count is held to that
by the fixed rows at the end and by tests/test_fingerprint_properties.py.
"""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rollproof.core.fingerprint import compare
from rollproof.core.surface import fold_name
from rollproof.engines.sqlite.source import fingerprint_file

Probe = Callable[[sqlite3.Connection], Any]


def _rows(conn: sqlite3.Connection, sql: str) -> Any:
    cur = conn.execute(sql)
    return [d[0] for d in cur.description], [tuple(map(repr, r)) for r in cur.fetchall()]


def _accepts(conn: sqlite3.Connection, insert: str, groups: list[list[tuple[object, ...]]]) -> Any:
    """For each group of rows: whether inserting all of them, together, was accepted."""
    out = []
    for rows in groups:
        conn.execute("SAVEPOINT p")
        try:
            for row in rows:
                conn.execute(insert, row)
            out.append(True)
        except sqlite3.IntegrityError:
            out.append(False)
        finally:
            conn.execute("ROLLBACK TO p")
            conn.execute("RELEASE p")
    return out


CANDIDATES = ["Yes", "yes", "YES", "a", "A", "Ä", "ä", "x", "1"]


@dataclass(frozen=True)
class Template:
    name: str
    ddl: str  # `{s}` is the spelling
    probe: Probe


TEMPLATES = [
    Template(
        "view select",
        "CREATE TABLE t (a, b); INSERT INTO t VALUES ('x', 1);CREATE VIEW v AS SELECT {s} FROM t",
        lambda c: _rows(c, "SELECT * FROM v"),
    ),
    Template(
        "view alias",
        "CREATE TABLE t (a, b); INSERT INTO t VALUES ('x', 1);"
        "CREATE VIEW v AS SELECT a AS {s} FROM t",
        lambda c: _rows(c, "SELECT * FROM v"),
    ),
    Template(
        "default",
        "CREATE TABLE t (a, b DEFAULT {s})",
        lambda c: (
            c.execute("INSERT INTO t (a) VALUES (1)"),
            _rows(c, "SELECT b, typeof(b) FROM t"),
        )[1],
    ),
    Template(
        "check",
        "CREATE TABLE t (a, b, CHECK (a <> {s}))",
        lambda c: _accepts(c, "INSERT INTO t (a) VALUES (?)", [[(v,)] for v in CANDIDATES]),
    ),
    Template(
        "generated column",
        "CREATE TABLE t (a, b, g AS ({s}))",
        lambda c: (
            c.execute("INSERT INTO t (a, b) VALUES ('x', 1)"),
            _rows(c, "SELECT g, typeof(g) FROM t"),
        )[1],
    ),
    Template(
        "partial unique index",
        "CREATE TABLE t (a, b); CREATE UNIQUE INDEX i ON t (b) WHERE a <> {s}",
        lambda c: _accepts(c, "INSERT INTO t VALUES (?, 7)", [[(v,), (v,)] for v in CANDIDATES]),
    ),
    Template(
        "view where",
        "CREATE TABLE t (a, b); INSERT INTO t VALUES ('x', 1), ('Yes', 2), ('yes', 3);"
        "CREATE VIEW v AS SELECT b FROM t WHERE a <> {s}",
        lambda c: _rows(c, "SELECT * FROM v ORDER BY b"),
    ),
    Template(
        "trigger when",
        "CREATE TABLE t (a, b); CREATE TABLE log (x);"
        "CREATE TRIGGER tr AFTER INSERT ON t WHEN new.a <> {s} BEGIN INSERT INTO log VALUES (1); END",
        lambda c: [
            (c.execute("INSERT INTO t VALUES (?, 1)", (v,)), _rows(c, "SELECT count(*) FROM log"))[
                1
            ]
            for v in CANDIDATES
        ],
    ),
    Template(
        "trigger",
        "CREATE TABLE t (a, b); CREATE TABLE log (x);"
        "CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO log SELECT {s} FROM t; END",
        lambda c: (c.execute("INSERT INTO t VALUES ('x', 1)"), _rows(c, "SELECT * FROM log"))[1],
    ),
]

WORDS = [
    *("Yes", "yes", "YES", "a", "A", "b", "B", "Ä", "ä", "Total", "total", "Date", "date"),
    *("Key", "key", "True", "true", "Current_Date", "current_date", "NoCase", "nocase"),
]
QUOTES = ['"{}"', "[{}]", "`{}`", "{}", "'{}'"]
SPELLINGS = st.builds(lambda q, w: q.format(w), st.sampled_from(QUOTES), st.sampled_from(WORDS))


def _build(path: Path, ddl: str) -> bool:
    """Whether SQLite accepted the schema (and its probe can run on it)."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        try:
            conn.executescript(ddl)
        except sqlite3.Error:
            return False
    return True


def _probe(path: Path, template: Template) -> Any:
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("BEGIN")
        try:
            return template.probe(conn)
        except sqlite3.Error as e:
            # An error is the behaviour; its message names the name as it was spelled.
            return f"error: {type(e).__name__}: {fold_name(str(e))}"
        finally:
            conn.execute("ROLLBACK")


@settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(template=st.sampled_from(TEMPLATES), one=SPELLINGS, two=SPELLINGS)
def test_objects_that_do_different_things_fingerprint_differently(
    template: Template, one: str, two: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        a, b = Path(tmp) / "a.db", Path(tmp) / "b.db"
        if not (_build(a, template.ddl.format(s=one)) and _build(b, template.ddl.format(s=two))):
            return  # SQLite refused a spelling: nothing to compare
        behaves_alike = _probe(a, template) == _probe(b, template)
        fa, fb = fingerprint_file(a), fingerprint_file(b)
        if not behaves_alike:
            assert not compare(fa, fb, strict_sequences=True).equal, (template.name, one, two)


@pytest.mark.parametrize(
    ("template", "one", "two"),
    [
        ("default", '"Yes"', '"yes"'),
        ("check", '"X"', '"x"'),
        ("view select", '"Hello"', '"hello"'),
        ("view alias", "Total", "total"),
        ("view alias", "Date", "date"),
        ("trigger", '"Yes"', '"yes"'),
        ("partial unique index", '"Yes"', '"yes"'),
        ("view select", '"Ä"', '"ä"'),
        ("default", "Date", "date"),
        ("default", "[True]", "True"),
        ("trigger", '"yes"', "[Yes]"),
    ],
)
def test_the_named_cases_differ(tmp_path: Path, template: str, one: str, two: str) -> None:
    (t,) = [t for t in TEMPLATES if t.name == template]
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    assert _build(a, t.ddl.format(s=one))
    assert _build(b, t.ddl.format(s=two))
    assert _probe(a, t) != _probe(b, t)
    assert not compare(fingerprint_file(a), fingerprint_file(b), strict_sequences=True).equal


@pytest.mark.parametrize(
    ("template", "one", "two"),
    [
        ("check", "b", "[B]"),  # a column, however quoted or cased
        ("check", "`b`", "[B]"),
        ("check", '"b"', '  "b"'),
        ("default", "'Yes'", "'Yes' "),
        ("view select", "a,  b", "A , B"),
        ("trigger", "a", "[a]"),
        ("partial unique index", "'x'", " 'x'"),
        ("generated column", "b  +  1", "B+1"),
    ],
)
def test_formatting_that_does_the_same_does_not_count(
    tmp_path: Path, template: str, one: str, two: str
) -> None:
    (t,) = [t for t in TEMPLATES if t.name == template]
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    assert _build(a, t.ddl.format(s=one))
    assert _build(b, t.ddl.format(s=two))
    assert _probe(a, t) == _probe(b, t)
    fa, fb = fingerprint_file(a), fingerprint_file(b)
    assert fa.schema_objects == fb.schema_objects
    assert compare(fa, fb, strict_sequences=True).equal
