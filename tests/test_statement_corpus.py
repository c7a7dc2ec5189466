"""Every statement form of the SQLite and PostgreSQL documentation (CREATE, ALTER, DROP,
GRANT, REVOKE, COMMENT, REFRESH, ANALYZE, VACUUM, CLUSTER, REINDEX, LOCK, SET, DO, CALL, with
common options) is classified: its objects and access kinds, or UNKNOWN with a reason a user
can act on — never a parser's bare complaint, never a parser warning on stderr, and never a
syntax error for valid SQL.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from rollproof.core.model import LegName, Verdict
from rollproof.core.surface import POSTGRESQL
from rollproof.surfaces.static import static_scope
from tests.conftest import MakeChange, rehearse_checked

DATA = Path(__file__).parent / "data" / "statements"
SEPARATOR = "\n-- ---\n"
# Words that make a reason something a user can act on: what to declare, run, name or move.
ACTIONABLE = (
    "declare",
    "run it",
    "name the",
    "take the",
    "move it",
    "rehearse",
    "remove",
    "is refused",
)
NOT_ACTIONABLE = ("not a statement rollproof classifies", "sqlglot does not model", "cannot parse")


def _corpus(name: str) -> list[str]:
    text = (DATA / name).read_text()
    body = text.split("\n", 1)[1]  # the header comment
    return [s.strip() for s in body.split(SEPARATOR) if s.strip()]


CASES = [
    pytest.param(dialect, sql, id=f"{dialect}-{i}")
    for dialect, name in (("sqlite", "sqlite.sql"), (POSTGRESQL, "postgresql.sql"))
    for i, sql in enumerate(_corpus(name), 1)
]


@pytest.mark.parametrize(("dialect", "sql"), CASES)
def test_every_statement_is_classified(
    dialect: str, sql: str, capfd: pytest.CaptureFixture[str]
) -> None:
    [scope] = static_scope(sql, dialect=dialect)
    assert scope.error is None, scope.error  # valid SQL is never a syntax error
    if scope.unknown is not None:
        reason = scope.unknown
        assert not any(bad in reason for bad in NOT_ACTIONABLE), reason
        assert any(word in reason for word in ACTIONABLE), reason
    else:
        for access in scope.accesses:
            assert access.object
            assert access.object == access.object.lower()
    captured = capfd.readouterr()
    assert captured.err == ""
    assert captured.out == ""


def test_the_corpus_covers_every_kind_of_statement() -> None:
    heads = {s.split()[0].upper() for _d, s in (c.values for c in CASES)}  # type: ignore[misc]
    assert {
        "CREATE", "ALTER", "DROP", "GRANT", "REVOKE", "COMMENT", "REFRESH", "ANALYZE", "VACUUM",
        "CLUSTER", "REINDEX", "LOCK", "SET", "DO", "CALL",
    } <= heads  # fmt: skip


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("ALTER TABLE t1 ADD COLUMN e", [("t1", "ALTER")]),
        ("ALTER TABLE t1 ADD e2", [("t1", "ALTER")]),
        ('ALTER TABLE main.t1 ADD COLUMN "E 3" NOT NULL DEFAULT 0', [("t1", "ALTER")]),
        ("ALTER TABLE t1 ADD COLUMN f REFERENCES t2", [("t1", "ALTER"), ("t2", "READ")]),
        ("ALTER TABLE t1 ADD COLUMN f TEXT REFERENCES t2 (x)", [("t1", "ALTER"), ("t2", "READ")]),
        ("ALTER TABLE t1 RENAME TO t9", [("t1", "ALTER"), ("t9", "CREATE")]),
        ("ALTER TABLE t1 RENAME b TO b3", [("t1", "ALTER")]),
        ("ALTER TABLE t1 DROP d", [("t1", "ALTER")]),
    ],
)
def test_sqlite_alter_table_forms_name_their_objects(
    sql: str, expected: list[tuple[str, str]]
) -> None:
    """SQLite's ALTER TABLE, including the forms sqlglot does not parse (a column without a
    type, ADD without COLUMN), names the table altered, created and referenced."""
    [scope] = static_scope(sql, dialect="sqlite")
    assert scope.unknown is None
    assert sorted((a.object, str(a.kind)) for a in scope.accesses) == sorted(expected)


TEMP_REBUILD = """\
CREATE TEMP TABLE t_backup AS SELECT * FROM t1;
DROP TABLE t1;
CREATE TABLE t1 (a INTEGER PRIMARY KEY, b);
INSERT INTO t1 SELECT a, b FROM t_backup;
DROP TABLE t_backup;
INSERT INTO t_backup VALUES (1);
CREATE TEMP VIEW v AS SELECT * FROM t2;
CREATE TEMP TRIGGER tr AFTER INSERT ON t1 BEGIN INSERT INTO t3 VALUES (new.a); END;
INSERT INTO temp.scratch VALUES (1);
"""


def test_a_scripts_own_temp_objects_need_no_declaring() -> None:
    """SQLite: from `CREATE TEMP` to `DROP`, a bare name is the script's TEMP object (looked up
    before `main`); what a TEMP view reads or a TEMP trigger writes in `main` still counts, and
    after the DROP the same name is `main`'s again."""
    scopes = static_scope(TEMP_REBUILD, dialect="sqlite")
    assert [sorted((a.object, str(a.kind)) for a in s.accesses) for s in scopes] == [
        [("t1", "READ")],
        [("t1", "DROP")],
        [("t1", "CREATE")],
        [("t1", "WRITE")],
        [],
        [("t_backup", "WRITE")],
        [("t2", "READ")],
        [("t1", "READ"), ("t3", "WRITE")],
        [],
    ]
    assert all(s.unknown is None for s in scopes)


def test_a_table_rebuilt_through_a_temp_backup_is_rehearsed(
    tmp_path: Path, make_change: MakeChange
) -> None:
    """The rebuild a SQLite migration does to drop a column, through a TEMP copy, declared with
    the table alone: READY, and every leg runs (the revert puts the column back empty, so it
    FAILs naming the lost values, while the transaction and restore legs PASS)."""
    source = tmp_path / "prod.db"
    with contextlib.closing(sqlite3.connect(source)) as conn:
        conn.executescript(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, a, b); INSERT INTO t VALUES (1, 1, 1);"
        )
    change = make_change(
        "CREATE TEMP TABLE t_backup AS SELECT * FROM t;\nDROP TABLE t;\n"
        "CREATE TABLE t (id INTEGER PRIMARY KEY, a);\n"
        "INSERT INTO t SELECT id, a FROM t_backup;\nDROP TABLE t_backup;\n",
        "ALTER TABLE t ADD COLUMN b;\n",
        surfaces='writes = ["t"]\n',
    )
    result = rehearse_checked(change, str(source))
    verdicts = {leg.name: leg.verdict for leg in result.legs}
    assert verdicts[LegName.TRANSACTION] is Verdict.PASS
    assert verdicts[LegName.RESTORE] is Verdict.PASS
    assert verdicts[LegName.REVERT] is Verdict.FAIL
    assert [e for e in result.surfaces.events if e.decision == "denied"] == []
