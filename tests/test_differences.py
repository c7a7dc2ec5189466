"""Differences a person can act on: example rows (key, old -> new), their bound, secrets
withheld, forbidden objects silent, schema attributes, and report.md showing them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from rollproof.core.errors import UsageError
from rollproof.core.explain import sql_literal
from rollproof.core.model import LegName
from rollproof.core.policy import load_policy
from rollproof.rehearse.flow import RehearsalResult
from rollproof.rehearse.report import report_json, report_markdown
from tests.conftest import MakeChange, assert_valid_report, rehearse_checked


@pytest.fixture
def people(tmp_path: Path) -> Path:
    path = tmp_path / "prod" / "people.db"
    path.parent.mkdir()
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, email TEXT, note TEXT);"
        "CREATE TABLE vault (k TEXT PRIMARY KEY NOT NULL, v TEXT);"
        "CREATE INDEX people_name ON people(name) WHERE note IS NULL;"
    )
    conn.executemany(
        "INSERT INTO people (name, email, note) VALUES (?, ?, ?)",
        [(f"p{i}", f"p{i}@example.com", "line\nbreak" if i == 1 else None) for i in range(50)],
    )
    conn.executemany("INSERT INTO vault VALUES (?, ?)", [("a", "TOPSECRET-1"), ("b", "x")])
    conn.commit()
    conn.close()
    return path


def _revert_detail(result: RehearsalResult, component: str) -> dict[str, object]:
    leg = next(x for x in result.legs if x.name is LegName.REVERT)
    return dict(next(d for d in leg.differences if d.component == component).detail)


def _run(
    make_change: MakeChange, source: Path, apply: str, revert: str, **kwargs: object
) -> RehearsalResult:
    result = rehearse_checked(
        make_change(apply, revert), str(source), legs=[LegName.REVERT], **kwargs
    )
    assert_valid_report(report_json(result))
    return result


def test_examples_show_key_and_old_new_values_bounded_by_max_examples(
    people: Path, make_change: MakeChange
) -> None:
    result = _run(
        make_change,
        people,
        "UPDATE people SET name = upper(name);",
        "UPDATE people SET name = name;",
        max_examples=3,
    )
    detail = _revert_detail(result, "table:people")
    assert detail["examples"] == [
        {
            "change": "changed",
            "key": f"id={i}",
            "values": [{"column": "name", "old": f"'p{i - 1}'", "new": f"'P{i - 1}'"}],
        }
        for i in (1, 2, 3)
    ]
    assert detail["examples_omitted"] == 47
    md = report_markdown(result)
    assert "  - changed id=1: name 'p0' -> 'P0'" in md
    assert "  - 47 more rows differ" in md


def test_missing_rows_show_their_values(people: Path, make_change: MakeChange) -> None:
    result = _run(make_change, people, "DELETE FROM people WHERE id = 2;", "SELECT 1;")
    detail = _revert_detail(result, "table:people")
    assert detail["examples"] == [
        {
            "change": "missing",
            "key": "id=2",
            "values": [
                {"column": "name", "old": "'p1'", "new": None},
                {"column": "email", "old": "'p1@example.com'", "new": None},
                {"column": "note", "old": "'line' || char(10) || 'break'", "new": None},
            ],
        }
    ]


def test_secret_columns_and_forbidden_objects_are_never_shown(
    people: Path, make_change: MakeChange, tmp_path: Path
) -> None:
    policy_file = tmp_path / "rollproof.toml"
    policy_file.write_text('[secrets]\ncolumns = ["people.email"]\n[forbidden]\nobjects = []\n')
    policy = load_policy(policy_file)
    assert policy.secret_columns == ("people.email",)
    result = _run(
        make_change,
        people,
        "UPDATE people SET email = 'leaked@example.com', name = 'n' WHERE id = 1;",
        "SELECT 1;",
        policy=policy,
    )
    detail = _revert_detail(result, "table:people")
    assert detail["columns_redacted"] == ["email"]
    assert "p0@example.com" not in str(report_json(result))
    assert "p0@example.com" not in report_markdown(result)
    assert detail["examples"] == [
        {
            "change": "changed",
            "key": "id=1",
            "values": [{"column": "name", "old": "'p0'", "new": "'n'"}],
        }
    ]


def test_a_forbidden_table_shows_no_value(
    people: Path, make_change: MakeChange, tmp_path: Path
) -> None:
    from rollproof.core.explain import RowExample, ShowPolicy, show_examples

    sample = (RowExample("changed", (("k", "'a'"),), (("v", "'TOPSECRET-1'", "NULL"),)),)
    shown = show_examples("vault", sample, 1, ShowPolicy(forbidden_objects=("vault",)))
    assert shown == {"examples": [], "examples_omitted": 1, "columns_redacted": ["k", "v"]}
    shown = show_examples("main.vault", sample, 1, ShowPolicy(secret_columns=("vault.k",)))
    assert shown["examples"][0]["key"] == "k=(redacted)"


def test_max_examples_is_bounded(people: Path, make_change: MakeChange) -> None:
    with pytest.raises(UsageError):
        _run(make_change, people, "SELECT 1;", "SELECT 1;", max_examples=1001)


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        (None, "NULL"),
        (7, "7"),
        (-0.0, "-0.0"),
        ("it's", "'it''s'"),
        (b"\x00\xff", "X'00FF'"),
        ("x" * 200, "'" + "x" * 120 + "'… (200 characters)"),
    ],
)
def test_values_are_sql_literals_cut_to_a_bound(value: object, literal: str) -> None:
    assert sql_literal(value) == literal


def test_schema_attribute_says_old_and_new(people: Path, make_change: MakeChange) -> None:
    result = _run(
        make_change,
        people,
        "DROP INDEX people_name;\nCREATE INDEX people_name ON people(name);",
        "SELECT 1;",
    )
    detail = _revert_detail(result, "schema:index:people_name")
    assert detail["attributes"] == [
        {
            "object": "index people_name",
            "attribute": "partial WHERE",
            "old": "note IS NULL",
            "new": None,
        }
    ]
    leg = next(x for x in result.legs if x.name is LegName.REVERT)
    assert "index people_name: partial WHERE note IS NULL removed" in (leg.reason or "")
