"""Completeness of the SQLite fingerprint, as a matrix generated from one table of rows.

Every kind of persistent state a program can set (docs/fingerprint.md, "What a SQLite
fingerprint reads") is a row of `SETTABLE`: SQL that sets it, and SQL that puts it back. Each row
makes two rehearsals on the same source:

* apply = set it + one real change (a row inserted); revert = undo the real change only. The
  revert leg must FAIL, and its differences must name the attribute;
* the same apply; revert = undo the real change and put the attribute back. It must PASS.

Rows for the issue's defects ("No false PASS") are in the table too: a user_version set beside a
row and forgotten by the revert, and a change that only bumps user_version (an honest change, not
"apply changed nothing").
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest

from rollproof.core.model import LegName, Point, Verdict
from rollproof.rehearse.flow import RehearsalResult
from rollproof.rehearse.report import report_json
from tests.conftest import MakeChange, assert_valid_report, rehearse_checked

SOURCE = """
CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, status TEXT);
CREATE INDEX items_name ON items(name);
CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, a INTEGER, g INTEGER AS (a * 2));
CREATE TABLE counters (id INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER);
CREATE TABLE notes (body TEXT);
CREATE VIEW open_items AS SELECT id, name FROM items WHERE status = 'open';
INSERT INTO items (name, status) VALUES ('a', 'open'), ('b', 'closed'), ('c', 'open');
INSERT INTO t (name, a) VALUES ('x', 1), ('y', 2);
INSERT INTO counters (n) VALUES (1), (2);
INSERT INTO notes VALUES ('hello'), ('hello'), ('bye');
"""

REAL = "INSERT INTO items (name, status) VALUES ('zz', 'open');\n"
UNDO_REAL = "DELETE FROM items WHERE name = 'zz';\n"
T_COLUMNS = "id INTEGER PRIMARY KEY, name TEXT, a INTEGER, g INTEGER AS (a * 2)"


def rebuild_t(definition: str, options: str = "") -> str:
    """Rebuild table t with another definition, keeping its rows (SQLite's 12-step recipe)."""
    return (
        f"CREATE TABLE t_new ({definition}){options};\n"
        "INSERT INTO t_new (id, name, a) SELECT id, name, a FROM t;\n"
        "DROP TABLE t;\n"
        "ALTER TABLE t_new RENAME TO t;\n"
    )


@dataclass(frozen=True)
class Settable:
    """One kind of persistent state: SQL that sets it, SQL that puts it back, and the words a
    failing revert must use to name it."""

    name: str
    set_sql: str
    restore_sql: str
    named: str
    source_extra: str = ""
    extra_toml: str = ""


SETTABLE: tuple[Settable, ...] = (
    # -- the database header ----------------------------------------------------------------
    Settable(
        "user_version (issue: set beside a row, forgotten by the revert)",
        "PRAGMA user_version = 42;\n",
        "PRAGMA user_version = 0;\n",
        "database header: user_version 0 -> 42",
    ),
    Settable(
        "application_id",
        "PRAGMA application_id = 1296388936;\n",
        "PRAGMA application_id = 0;\n",
        "database header: application_id 0 -> 1296388936",
    ),
    Settable(
        "journal_mode WAL (persists in the file)",
        "PRAGMA journal_mode = WAL;\n",
        "PRAGMA journal_mode = DELETE;\n",
        "database header: journal_mode rollback-journal -> wal",
    ),
    Settable(
        "auto_vacuum full -> incremental",
        "PRAGMA auto_vacuum = INCREMENTAL;\n",
        "PRAGMA auto_vacuum = FULL;\n",
        "database header: auto_vacuum full -> incremental",
        source_extra="auto_vacuum=FULL",
    ),
    # -- tables -----------------------------------------------------------------------------
    Settable(
        "column added",
        "ALTER TABLE items ADD COLUMN email TEXT;\n",
        "ALTER TABLE items DROP COLUMN email;\n",
        "table items: column email TEXT added",
    ),
    Settable(
        "column collation",
        rebuild_t(T_COLUMNS.replace("name TEXT", "name TEXT COLLATE NOCASE")),
        rebuild_t(T_COLUMNS),
        "column t.name: collation BINARY -> NOCASE",
    ),
    Settable(
        "column default",
        rebuild_t(T_COLUMNS.replace("name TEXT", "name TEXT DEFAULT 'n/a'")),
        rebuild_t(T_COLUMNS),
        "column t.name: default (none) -> 'n/a'",
    ),
    Settable(
        "column NOT NULL",
        rebuild_t(T_COLUMNS.replace("name TEXT", "name TEXT NOT NULL")),
        rebuild_t(T_COLUMNS),
        "column t.name: NOT NULL nullable -> NOT NULL",
    ),
    Settable(
        "column type",
        rebuild_t(T_COLUMNS.replace("name TEXT", "name VARCHAR(20)")),
        rebuild_t(T_COLUMNS),
        "column t.name: type TEXT -> VARCHAR(20)",
    ),
    Settable(
        "generated column expression (same values, other definition)",
        rebuild_t(T_COLUMNS.replace("AS (a * 2)", "AS (a + a)")),
        rebuild_t(T_COLUMNS),
        "column t.g: definition INTEGER AS (a * 2) -> INTEGER AS (a + a)",
    ),
    Settable(
        "generated column stored instead of virtual",
        rebuild_t(T_COLUMNS.replace("AS (a * 2)", "AS (a * 2) STORED")),
        rebuild_t(T_COLUMNS),
        "column t.g: storage generated VIRTUAL -> generated STORED",
    ),
    Settable(
        "AUTOINCREMENT",
        rebuild_t(T_COLUMNS.replace("PRIMARY KEY", "PRIMARY KEY AUTOINCREMENT")),
        rebuild_t(T_COLUMNS),
        "column t.id: definition INTEGER PRIMARY KEY -> INTEGER PRIMARY KEY AUTOINCREMENT",
    ),
    Settable(
        "CHECK constraint",
        rebuild_t(T_COLUMNS + ", CHECK (a > 0)"),
        rebuild_t(T_COLUMNS),
        "table t: constraint CHECK (a > 0) added",
    ),
    Settable(
        "WITHOUT ROWID",
        rebuild_t(T_COLUMNS, " WITHOUT ROWID"),
        rebuild_t(T_COLUMNS),
        "table t: WITHOUT ROWID no -> yes",
    ),
    Settable(
        "STRICT",
        rebuild_t(T_COLUMNS, " STRICT"),
        rebuild_t(T_COLUMNS),
        "table t: STRICT no -> yes",
    ),
    Settable(
        "table added",
        "CREATE TABLE extra (id INTEGER PRIMARY KEY);\n",
        "DROP TABLE extra;\n",
        "table extra: definition",
    ),
    # -- indexes, triggers, views -----------------------------------------------------------
    Settable(
        "index added",
        "CREATE INDEX items_status ON items(status);\n",
        "DROP INDEX items_status;\n",
        "index items_status: definition",
    ),
    Settable(
        "partial index (issue: WHERE clause added)",
        "DROP INDEX items_name;\nCREATE INDEX items_name ON items(name) WHERE status = 'open';\n",
        "DROP INDEX items_name;\nCREATE INDEX items_name ON items(name);\n",
        "index items_name: partial WHERE status = 'open' added",
    ),
    Settable(
        "expression index",
        "DROP INDEX items_name;\nCREATE INDEX items_name ON items(lower(name));\n",
        "DROP INDEX items_name;\nCREATE INDEX items_name ON items(name);\n",
        "index items_name: columns name -> lower(name)",
    ),
    Settable(
        "index made unique",
        "DROP INDEX items_name;\nCREATE UNIQUE INDEX items_name ON items(name);\n",
        "DROP INDEX items_name;\nCREATE INDEX items_name ON items(name);\n",
        "index items_name: unique not unique -> UNIQUE",
    ),
    Settable(
        "index collation",
        "DROP INDEX items_name;\nCREATE INDEX items_name ON items(name COLLATE NOCASE);\n",
        "DROP INDEX items_name;\nCREATE INDEX items_name ON items(name);\n",
        "index items_name: columns name -> name COLLATE NOCASE",
    ),
    Settable(
        "trigger added",
        "CREATE TRIGGER notes_upper AFTER INSERT ON notes BEGIN SELECT 1; END;\n",
        "DROP TRIGGER notes_upper;\n",
        "trigger notes_upper: definition",
    ),
    Settable(
        "view redefined",
        "DROP VIEW open_items;\n"
        "CREATE VIEW open_items AS SELECT id, name FROM items WHERE status <> 'closed';\n",
        "DROP VIEW open_items;\n"
        "CREATE VIEW open_items AS SELECT id, name FROM items WHERE status = 'open';\n",
        "view open_items: definition",
    ),
    # -- content and sequences --------------------------------------------------------------
    Settable(
        "a value changed",
        "UPDATE items SET status = 'closed' WHERE name = 'a';\n",
        "UPDATE items SET status = 'open' WHERE name = 'a';\n",
        "changed id=1: status 'open' -> 'closed'",
    ),
    Settable(
        "a duplicate row removed (table without a key)",
        "DELETE FROM notes WHERE rowid = (SELECT max(rowid) FROM notes WHERE body = 'bye');\n",
        "INSERT INTO notes VALUES ('bye');\n",
        "missing body='bye'",
    ),
    Settable(
        "sqlite_sequence advanced (strict_sequences)",
        "INSERT INTO counters (n) VALUES (3);\nDELETE FROM counters WHERE n = 3;\n",
        "UPDATE sqlite_sequence SET seq = 2 WHERE name = 'counters';\n",
        "sequence counters advanced from 2 to 3",
        extra_toml="strict_sequences = true\n",
    ),
)


def _source(tmp_path: Path, row: Settable) -> Path:
    path = tmp_path / "prod" / "prod.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    if row.source_extra:
        conn.execute(f"PRAGMA {row.source_extra}")
    conn.executescript(SOURCE)
    conn.commit()
    conn.close()
    return path


def _rehearse(
    make_change: MakeChange, source: Path, apply: str, revert: str, extra: str
) -> RehearsalResult:
    change = make_change(apply, revert, extra=extra)
    result = rehearse_checked(
        change, str(source), legs=[LegName.REVERT, LegName.RESTORE], allow_undeclared=True
    )
    assert_valid_report(report_json(result))
    return result


def _revert(result: RehearsalResult):  # type: ignore[no-untyped-def]
    return next(leg for leg in result.legs if leg.name is LegName.REVERT)


def _words(result: RehearsalResult) -> str:
    """Everything a failing revert says: summaries, attributes and example rows, as report.md
    and the console show them."""
    from rollproof.verify.report_md import difference_lines

    leg = _revert(result)
    return "\n".join(
        line for d in (*leg.differences, *leg.tolerated) for line in difference_lines(d.to_json())
    )


@pytest.mark.parametrize("row", SETTABLE, ids=[r.name for r in SETTABLE])
def test_a_revert_that_forgets_it_fails_naming_it(
    tmp_path: Path, make_change: MakeChange, row: Settable
) -> None:
    source = _source(tmp_path, row)
    result = _rehearse(make_change, source, REAL + row.set_sql, UNDO_REAL, row.extra_toml)
    revert = _revert(result)
    assert revert.verdict is Verdict.FAIL, revert.reason
    assert row.named in _words(result)
    restore = next(leg for leg in result.legs if leg.name is LegName.RESTORE)
    assert restore.verdict is Verdict.PASS, restore.reason


@pytest.mark.parametrize("row", SETTABLE, ids=[r.name for r in SETTABLE])
def test_a_revert_that_restores_it_passes(
    tmp_path: Path, make_change: MakeChange, row: Settable
) -> None:
    source = _source(tmp_path, row)
    result = _rehearse(
        make_change, source, REAL + row.set_sql, row.restore_sql + UNDO_REAL, row.extra_toml
    )
    assert {str(leg.name): leg.verdict for leg in result.legs} == {
        "revert": Verdict.PASS,
        "restore": Verdict.PASS,
    }, [leg.reason for leg in result.legs]


@pytest.mark.parametrize(
    "row",
    [r for r in SETTABLE if r.name.startswith(("user_version", "application_id"))],
    ids=lambda r: r.name.split(" ")[0],
)
def test_a_change_that_only_sets_a_header_field_is_honest(
    tmp_path: Path, make_change: MakeChange, row: Settable
) -> None:
    """The issue's second defect: a change that only bumps user_version used to FAIL as "apply
    changed nothing". With a revert that restores it, every rollback path passes."""
    source = _source(tmp_path, row)
    change = make_change(row.set_sql, row.restore_sql)
    result = rehearse_checked(change, str(source))
    assert result.overall is Verdict.PASS, [leg.reason for leg in result.legs]
    applied = next(leg for leg in result.legs if leg.name is LegName.REVERT)
    assert any(r.holds and str(r.invariant) == "after_apply != before" for r in applied.invariants)


def test_statistics_are_excluded_and_named(tmp_path: Path, make_change: MakeChange) -> None:
    """sqlite_stat* is left out on purpose (query-planner statistics, not content): ANALYZE
    left behind by a revert passes, and the report names the exclusion."""
    source = _source(tmp_path, SETTABLE[0])
    result = _rehearse(make_change, source, REAL + "ANALYZE;\n", UNDO_REAL, "")
    revert = _revert(result)
    assert revert.verdict is Verdict.PASS, revert.reason
    assert "sqlite_stat1" in revert.fingerprints[Point.AFTER_APPLY].excluded
    assert "sqlite_stat1" in revert.fingerprints[Point.AFTER_REVERT].excluded
