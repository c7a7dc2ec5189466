"""PostgreSQL differences a person can act on: example rows (key, old -> new), tables without
a key compared as multisets of whole rows, the `max_examples` bound, and the same ShowPolicy
as SQLite (a secret column's values, a forbidden table's rows never shown, anywhere).

Each test rehearses against the real source and scratch servers; the secret/forbidden test
runs the real `rollproof rehearse` in a subprocess and searches every byte it wrote and
printed for the planted values, with a twin (no policy) that finds them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rollproof.core.explain import sql_literal
from rollproof.core.model import LegName, Verdict
from rollproof.rehearse.flow import RehearsalResult
from rollproof.rehearse.flow import rehearse as _rehearse
from rollproof.rehearse.packet import write_packet
from rollproof.rehearse.report import report_json
from rollproof.verify.reader import check_packet
from tests.conftest import assert_valid_report
from tests.pg_fixtures import (
    MakePgChange,
    MakeSource,
    Servers,
    make_pg_change_fixture,  # noqa: F401  (fixture)
    pg_servers_fixture,  # noqa: F401  (fixture)
    pg_source_fixture,  # noqa: F401  (fixture)
)

REPO = Path(__file__).resolve().parent.parent

ACCOUNTS = """
CREATE TABLE accounts (
    id integer PRIMARY KEY, email text NOT NULL, credit numeric(8, 2), active boolean,
    avatar bytea, seen timestamptz
);
INSERT INTO accounts
SELECT i, 'a' || i || '@example.com', i * 1.5, i % 2 = 0, decode(lpad(to_hex(i), 4, '0'), 'hex'),
       timestamptz '2026-01-01 00:00:00+00' + i * interval '1 hour'
FROM generate_series(1, 12) AS i;
CREATE TABLE bag (x integer, y text);
INSERT INTO bag VALUES (1, 'a'), (1, 'a'), (2, 'it''s'), (3, NULL);
"""


def rehearse(*args: Any, **kwargs: Any) -> RehearsalResult:
    result = _rehearse(*args, **kwargs)
    assert_valid_report(report_json(result))
    return result


def _revert_detail(result: RehearsalResult, component: str) -> dict[str, Any]:
    leg = next(x for x in result.legs if x.name is LegName.REVERT)
    assert leg.verdict is Verdict.FAIL, leg.reason
    return dict(next(d for d in leg.differences if d.component == component).detail)


def test_a_forgotten_update_shows_the_key_and_old_new_values(
    pg_servers: Servers, pg_source: MakeSource, make_pg_change: MakePgChange, tmp_path: Path
) -> None:
    dsn = pg_source(ACCOUNTS)
    change = make_pg_change(
        "UPDATE accounts SET email = 'gone', credit = NULL, active = NULL, avatar = NULL "
        "WHERE id = 7;\nDELETE FROM accounts WHERE id = 3;\n"
        "INSERT INTO accounts (id, email) VALUES (99, 'new');\n",
        "SELECT 1;\n",
        surfaces='writes = ["accounts"]\n',
    )
    result = rehearse(change, dsn, scratch=pg_servers.scratch, legs=[LegName.REVERT])
    packet = write_packet(result, tmp_path / "packet")
    assert check_packet(packet).ok  # the validator re-renders report.md from report.json
    report = json.loads((packet / "report.json").read_text())
    [leg] = report["legs"]
    [diff] = leg["differences"]
    detail = diff["detail"]
    assert detail["rows_changed"] == 1
    assert detail["rows_missing"] == 1
    assert detail["rows_added"] == 1
    # Merge order: the key's text, byte by byte ("(3)" < "(7)" < "(99)").
    assert detail["examples"] == [
        {
            "change": "missing",
            "key": "id=3",
            "values": [
                {"column": "email", "old": "'a3@example.com'", "new": None},
                {"column": "credit", "old": "4.50", "new": None},
                {"column": "active", "old": "false", "new": None},
                {"column": "avatar", "old": "X'0003'", "new": None},
                {"column": "seen", "old": "'2026-01-01 03:00:00+00'", "new": None},
            ],
        },
        {
            "change": "changed",
            "key": "id=7",
            "values": [
                {"column": "email", "old": "'a7@example.com'", "new": "'gone'"},
                {"column": "credit", "old": "10.50", "new": "NULL"},
                {"column": "active", "old": "false", "new": "NULL"},
                {"column": "avatar", "old": "X'0007'", "new": "NULL"},
            ],
        },
        {
            "change": "added",
            "key": "id=99",
            "values": [
                {"column": "email", "old": None, "new": "'new'"},
                {"column": "credit", "old": None, "new": "NULL"},
                {"column": "active", "old": None, "new": "NULL"},
                {"column": "avatar", "old": None, "new": "NULL"},
                {"column": "seen", "old": None, "new": "NULL"},
            ],
        },
    ]
    assert detail["examples_omitted"] == 0
    md = (packet / "report.md").read_text()
    assert (
        "  - changed id=7: email 'a7@example.com' -> 'gone', credit 10.50 -> NULL, "
        "active false -> NULL, avatar X'0007' -> NULL\n" in md
    )
    assert "  - missing id=3: email='a3@example.com', credit=4.50" in md


def test_a_table_without_a_key_is_compared_as_a_multiset_of_whole_rows(
    pg_servers: Servers, pg_source: MakeSource, make_pg_change: MakePgChange
) -> None:
    dsn = pg_source(ACCOUNTS)
    # One of two equal copies goes: SQLite's distinct-row comparison could not see it.
    change = make_pg_change(
        "DELETE FROM bag WHERE ctid = (SELECT min(ctid) FROM bag WHERE x = 1);\n"
        "INSERT INTO bag VALUES (4, E'line\\nbreak');\n",
        "SELECT 1;\n",
        surfaces='writes = ["bag"]\n',
    )
    result = rehearse(change, dsn, scratch=pg_servers.scratch, legs=[LegName.REVERT])
    leg = result.legs[0]
    [diff] = leg.differences
    assert diff.summary == (
        "table bag: 1 rows missing; 1 rows added; rows compared whole (no primary key)"
    )
    assert diff.detail["rows_missing"] == 1
    assert diff.detail["rows_added"] == 1
    assert diff.detail["examples"] == [
        {"change": "missing", "key": "x=1, y='a'", "values": []},
        {"change": "added", "key": "x=4, y='line' || char(10) || 'break'", "values": []},
    ]
    assert diff.detail["examples_omitted"] == 0


def test_a_key_that_changed_compares_whole_rows(
    pg_servers: Servers, pg_source: MakeSource, make_pg_change: MakePgChange
) -> None:
    dsn = pg_source(ACCOUNTS)
    change = make_pg_change(
        "ALTER TABLE accounts DROP CONSTRAINT accounts_pkey;\n"
        "UPDATE accounts SET email = 'x' WHERE id = 2;\n",
        "SELECT 1;\n",
        surfaces='writes = ["accounts", "accounts_pkey"]\n',
    )
    result = rehearse(change, dsn, scratch=pg_servers.scratch, legs=[LegName.REVERT])
    diff = next(d for d in result.legs[0].differences if d.component == "table:accounts")
    assert "rows compared whole (the primary key changed)" in diff.summary
    assert [(e["change"], e["key"].split(", ")[:2]) for e in diff.detail["examples"]] == [
        ("missing", ["id=2", "email='a2@example.com'"]),
        ("added", ["id=2", "email='x'"]),
    ]


@pytest.mark.parametrize(("max_examples", "shown"), [(0, 0), (2, 2)])
def test_max_examples_bounds_the_rows_shown(
    max_examples: int,
    shown: int,
    pg_servers: Servers,
    pg_source: MakeSource,
    make_pg_change: MakePgChange,
    tmp_path: Path,
) -> None:
    dsn = pg_source(ACCOUNTS)
    change = make_pg_change(
        "UPDATE accounts SET email = upper(email) WHERE id <= 5;\n",
        "SELECT 1;\n",
        surfaces='writes = ["accounts"]\n',
    )
    result = rehearse(
        change, dsn, scratch=pg_servers.scratch, legs=[LegName.REVERT], max_examples=max_examples
    )
    detail = _revert_detail(result, "table:accounts")
    assert [e["key"] for e in detail["examples"]] == ["id=1", "id=2"][:shown]
    assert detail["examples_omitted"] == 5 - shown
    packet = write_packet(result, tmp_path / "packet")
    md = (packet / "report.md").read_text()
    if shown:
        assert "  - changed id=1: email 'a1@example.com' -> 'A1@EXAMPLE.COM'\n" in md
        assert "  - 3 more rows differ\n" in md
    else:
        assert "  - changed id=" not in md
        assert "  - 5 more rows differ (not shown)\n" in md


def test_long_values_are_cut_and_say_their_length(
    pg_servers: Servers, pg_source: MakeSource, make_pg_change: MakePgChange
) -> None:
    dsn = pg_source(
        "CREATE TABLE docs (id integer PRIMARY KEY, body text, raw bytea, big numeric);"
        "INSERT INTO docs VALUES (1, repeat('x', 5000), decode(repeat('ab', 100), 'hex'), "
        "repeat('9', 300)::numeric);"
    )
    change = make_pg_change(
        "UPDATE docs SET body = 'short', raw = NULL, big = 1;\n",
        "SELECT 1;\n",
        surfaces='writes = ["docs"]\n',
    )
    result = rehearse(change, dsn, scratch=pg_servers.scratch, legs=[LegName.REVERT])
    [example] = _revert_detail(result, "table:docs")["examples"]
    assert example["values"] == [
        {"column": "body", "old": "'" + "x" * 120 + "'… (5,000 characters)", "new": "'short'"},
        {"column": "raw", "old": "X'" + "AB" * 60 + "'… (100 bytes)", "new": "NULL"},
        {"column": "big", "old": "9" * 120 + "… (300 characters)", "new": "1"},
    ]


def test_a_bytes_literal_cut_says_so() -> None:
    assert sql_literal(b"\xab" * 100) == "X'" + "AB" * 60 + "'… (100 bytes)"
    assert sql_literal(b"\xab" * 60) == "X'" + "AB" * 60 + "'"
    assert sql_literal("xy", length=500) == "'xy'… (500 characters)"


# --- secrets and forbidden tables, through the real command ------------------------------------

TOKEN, VAULT, CODE = "TOKEN-PLANTED-5d1c", "VAULT-PLANTED-a93e", "CODE-PLANTED-77f0"

PLANTED = f"""
CREATE TABLE accounts (id integer PRIMARY KEY, email text NOT NULL, token text);
INSERT INTO accounts SELECT i, 'a' || i || '@example.com', '{TOKEN}-' || i
FROM generate_series(1, 10) AS i;
CREATE TABLE vault (id integer PRIMARY KEY,
                    account_id integer REFERENCES accounts ON DELETE CASCADE, v text);
INSERT INTO vault VALUES (1, 3, '{VAULT}');
CREATE TABLE codes (code text PRIMARY KEY, holder text);
INSERT INTO codes VALUES ('{CODE}', 'h1'), ('other', 'h2');
"""


def _run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "src"), str(REPO), env.get("PYTHONPATH", "")) if p
    )
    env.pop("CI", None)
    return subprocess.run(
        [sys.executable, "-m", "rollproof", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        timeout=600,
        check=False,
    )


@pytest.mark.parametrize("with_policy", [True, False], ids=["policy", "no-policy-twin"])
def test_secret_columns_and_forbidden_tables_never_show_their_values(
    with_policy: bool,
    pg_servers: Servers,
    pg_source: MakeSource,
    make_pg_change: MakePgChange,
    tmp_path: Path,
) -> None:
    dsn = pg_source(PLANTED)
    # Deleting account 3 cascades into vault (as vault's owner); the token is rotated and a
    # code (a secret key column) deleted; the revert restores none of it.
    change = make_pg_change(
        "UPDATE accounts SET token = 'rotated', email = 'changed' WHERE id = 7;\n"
        "DELETE FROM accounts WHERE id = 3;\nDELETE FROM codes WHERE holder = 'h1';\n",
        "SELECT 1;\n",
        surfaces='writes = ["accounts", "codes"]\n',
    )
    policy = tmp_path / "rollproof.toml"
    policy.write_text(
        '[secrets]\ncolumns = ["accounts.token", "codes.code"]\n[forbidden]\nobjects = ["vault"]\n'
        if with_policy
        else "\n"
    )
    out = tmp_path / "packet"
    run = _run_cli(
        [
            "rehearse",
            str(change.directory),
            "--source",
            dsn,
            "--scratch",
            pg_servers.scratch,
            "--legs",
            "revert",
            "--out",
            str(out),
            "--policy",
            str(policy),
        ],
        tmp_path,
    )
    assert run.returncode == 1, run.stderr.decode()
    blobs = {str(f): f.read_bytes() for f in sorted(out.rglob("*")) if f.is_file()}
    blobs["stdout"], blobs["stderr"] = run.stdout, run.stderr
    assert str(out / "report.json") in blobs
    found = sorted(
        {p for p in (TOKEN, VAULT, CODE) for data in blobs.values() if p.encode() in data}
    )
    report = json.loads(blobs[str(out / "report.json")])
    details = {d["component"]: d["detail"] for d in report["legs"][0]["differences"]}
    if not with_policy:
        assert found == sorted([TOKEN, VAULT, CODE])  # the search can find them
        return
    assert found == []
    assert details["table:vault"]["examples"] == []
    assert details["table:vault"]["examples_omitted"] == 1
    assert details["table:vault"]["columns_redacted"] == ["account_id", "id", "v"]
    assert details["table:accounts"]["columns_redacted"] == ["token"]
    assert details["table:accounts"]["examples"][1] == {
        "change": "changed",
        "key": "id=7",
        "values": [{"column": "email", "old": "'a7@example.com'", "new": "'changed'"}],
    }
    assert details["table:codes"]["examples"] == [
        {
            "change": "missing",
            "key": "code=(redacted)",
            "values": [{"column": "holder", "old": "'h1'", "new": None}],
        }
    ]
    forbidden = [f for f in report["surfaces"]["forbidden"] if f["kind"] == "object"]
    assert [(f["name"], f["status"]) for f in forbidden] == [("vault", "TOUCHED")]
