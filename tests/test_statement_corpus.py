"""Every statement form of the SQLite and PostgreSQL documentation (CREATE, ALTER, DROP,
GRANT, REVOKE, COMMENT, REFRESH, ANALYZE, VACUUM, CLUSTER, REINDEX, LOCK, SET, DO, CALL, with
common options) is classified: its objects and access kinds, or UNKNOWN with a reason a user
can act on — never a parser's bare complaint, never a parser warning on stderr, and never a
syntax error for valid SQL.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rollproof.core.surface import POSTGRESQL
from rollproof.surfaces.static import static_scope

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
