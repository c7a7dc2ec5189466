"""A table covers what the database makes for it; READY means nothing will be denied; every
denial of a run is reported together, with console, exit code and report agreeing; a syntax
error is the change's error; forward-only changes rehearse.

Each false FAIL of the issue is rehearsed here with an honest verdict, and what was covered
implicitly is named.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rollproof.core.change import NO_REVERT, load_change
from rollproof.core.errors import CheckFailedError, ExitCode
from rollproof.core.model import LegName, Verdict
from rollproof.core.surface import AccessKind, Implicit
from rollproof.engines import read_catalog
from rollproof.engines.sqlglot_scope import static_scope as sqlglot_scope
from rollproof.rehearse.flow import rehearse as _rehearse
from rollproof.rehearse.report import report_json
from rollproof.surfaces.scope import ScopingStatus, check_scoping
from rollproof.verify.recompute import _check_forward_only
from tests.conftest import assert_valid_report
from tests.pg_fixtures import (
    MakePgChange,
    MakeSource,
    Servers,
    make_pg_change_fixture,  # noqa: F401  (fixture)
    pg_servers_fixture,  # noqa: F401  (fixture)
    pg_source_fixture,  # noqa: F401  (fixture)
)


def _db(path: Path, sql: str) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(sql)
    conn.commit()
    conn.close()
    return path


def _change(root: Path, toml: str, files: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True)
    (root / "change.toml").write_text(toml)
    for name, text in (files or {}).items():
        (root / name).write_text(text)
    return root


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rollproof", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def _implicit(result: Any) -> set[tuple[str, str]]:
    return {(i.object, i.owner) for i in result.surfaces.implicit}


SCHEMA = (
    "CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT);"
    "INSERT INTO parent VALUES (1, 'a');"
    "CREATE TABLE t (a); CREATE TABLE audit (x);"
    "CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO audit VALUES (new.a); END;"
)


# -- false FAILs, SQLite -------------------------------------------------------------------


def test_automatic_index_is_covered_by_its_table(tmp_path: Path) -> None:
    src = _db(tmp_path / "prod.db", SCHEMA)
    cdir = _change(
        tmp_path / "country",
        'apply_sql = "CREATE TABLE country (code TEXT PRIMARY KEY, name TEXT UNIQUE);'
        " INSERT INTO country VALUES ('fr', 'France');\"\n"
        'revert_sql = "DROP TABLE country;"\n[surfaces]\nwrites = ["country"]\n',
    )
    result = _rehearse(load_change(cdir), str(src))
    assert [leg.verdict for leg in result.legs] == [Verdict.NOT_APPLICABLE] + [Verdict.PASS] * 3
    assert result.overall is Verdict.PASS
    assert result.exit_code == ExitCode.OK
    assert _implicit(result) == {
        ("sqlite_autoindex_country_1", "country"),
        ("sqlite_autoindex_country_2", "country"),
    }
    assert result.surfaces.events == ()
    assert_valid_report(report_json(result))


def test_foreign_key_parent_read_is_implicit_and_not_denied(tmp_path: Path) -> None:
    src = _db(tmp_path / "prod.db", SCHEMA)
    cdir = _change(
        tmp_path / "child",
        'apply_sql = "CREATE TABLE child (id INTEGER PRIMARY KEY,'
        ' pid INTEGER REFERENCES parent(id)); INSERT INTO child VALUES (1, 1);"\n'
        'revert_sql = "DROP TABLE child;"\n'
        '[surfaces]\nwrites = ["child"]\n[connection]\nforeign_keys = true\n',
    )
    change = load_change(cdir)
    scoping = check_scoping(change, catalog=read_catalog(str(src)))
    # The REFERENCES clause reads parent: listed, and it does not hold scoping.
    assert scoping.status is ScopingStatus.READY
    assert [(i.object, i.owner) for i in scoping.implicit] == [("parent", "child")]
    result = _rehearse(change, str(src))
    assert result.overall is Verdict.PASS, [leg.reason for leg in result.legs]
    assert ("parent", "child") in _implicit(result)
    assert result.surfaces.events == ()


def test_existing_foreign_key_parent_comes_from_the_catalog(tmp_path: Path) -> None:
    src = _db(
        tmp_path / "prod.db",
        SCHEMA + "CREATE TABLE child (id INTEGER PRIMARY KEY, pid INTEGER REFERENCES parent(id));",
    )
    cdir = _change(
        tmp_path / "c",
        'apply_sql = "INSERT INTO child VALUES (7, 1);"\n'
        'revert_sql = "DELETE FROM child WHERE id = 7;"\n'
        '[surfaces]\nwrites = ["child"]\n[connection]\nforeign_keys = true\n',
    )
    catalog = read_catalog(str(src))
    assert Implicit(
        "parent", "child", AccessKind.READ, "foreign-key parent of child, read by its check"
    ) in catalog.of("parent")
    result = _rehearse(load_change(cdir), str(src))
    assert result.overall is Verdict.PASS, [leg.reason for leg in result.legs]
    assert ("parent", "child") in _implicit(result)


def test_static_ready_implies_no_denial_of_an_implicit_object(tmp_path: Path) -> None:
    """Property over a small corpus: whenever static scoping (with the catalog) is READY, the
    rehearsal denies nothing that the database made or read for a declared object."""
    src = _db(
        tmp_path / "prod.db",
        SCHEMA + "CREATE TABLE kid (id INTEGER PRIMARY KEY, pid INTEGER REFERENCES parent(id));",
    )
    tables = [
        "CREATE TABLE n{i} (a TEXT PRIMARY KEY, b TEXT UNIQUE, c INTEGER UNIQUE)",
        "CREATE TABLE n{i} (a INTEGER PRIMARY KEY, p INTEGER REFERENCES parent(id))",
        "CREATE TABLE n{i} (a TEXT PRIMARY KEY, b INT) WITHOUT ROWID",
        "CREATE TABLE n{i} (a INT, b INT GENERATED ALWAYS AS (a * 2) STORED, UNIQUE (a, b))",
    ]
    inserts = [
        "INSERT INTO n{i} VALUES ('k', 'v', 1)",
        "INSERT INTO n{i} VALUES (1, 1)",
        "INSERT INTO n{i} VALUES ('k', 1)",
        "INSERT INTO n{i} (a) VALUES (3)",
    ]
    for i, (create, insert) in enumerate(zip(tables, inserts, strict=True)):
        for fk in (False, True):
            apply = f"{create.format(i=i)}; {insert.format(i=i)}; INSERT INTO kid VALUES ({i}, 1);"
            cdir = _change(
                tmp_path / f"p{i}-{fk}",
                f'apply_sql = "{apply}"\nrevert_sql = "DROP TABLE n{i}; DELETE FROM kid;"\n'
                f'[surfaces]\nwrites = ["n{i}", "kid"]\n'
                f"[connection]\nforeign_keys = {str(fk).lower()}\n",
            )
            change = load_change(cdir)
            scoping = check_scoping(change, catalog=read_catalog(str(src)))
            assert scoping.status is ScopingStatus.READY, scoping.problems()
            result = _rehearse(change, str(src), legs=[LegName.TRANSACTION, LegName.RESTORE])
            assert result.surfaces.events == (), (apply, result.surfaces.events)
            assert result.overall is Verdict.PASS, [leg.reason for leg in result.legs]


# -- every denial, one run; console, exit code and report agree ---------------------------


def test_every_denial_is_reported_and_console_exit_code_and_report_agree(tmp_path: Path) -> None:
    src = _db(tmp_path / "prod.db", SCHEMA)
    _change(
        tmp_path / "d",
        'apply_sql = """\nINSERT INTO t VALUES (1);\nUPDATE parent SET name = \'b\' '
        'WHERE id = 1;\nINSERT INTO t VALUES (2);\n"""\n'
        'revert_sql = "DELETE FROM t WHERE a IN (1, 2);"\n'
        '[surfaces]\nwrites = ["t"]\nreads = ["parent"]\n',
    )
    run = _cli(
        "rehearse", "d", "--source", f"sqlite:///{src}", "--out", "pk", "--allow-undeclared",
        cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == ExitCode.HELD, run.stderr
    report = json.loads((tmp_path / "pk" / "report.json").read_text())
    reasons = [(e["statement"], e["reason"]) for e in report["surfaces"]["enforcement"]]
    assert reasons == [
        (1, "write of undeclared object audit (via tr)"),
        (2, "write of undeclared object parent"),
        (3, "write of undeclared object audit (via tr)"),
    ]
    assert report["surfaces"]["verdict"] == "FAIL"
    assert report["overall"] == "FAIL"
    exit_codes = json.loads((tmp_path / "pk" / "exit_codes.json").read_text())
    assert {c["name"]: c["exit_code"] for c in exit_codes["commands"]}["rehearse"] == 3
    # Every statement that was denied is in the leg's reason, in one run.
    [revert] = [leg for leg in report["legs"] if leg["name"] == "revert"]
    for statement in (1, 2, 3):
        assert f"statement {statement} `" in revert["reason"]
    console = " ".join(run.stdout.split())
    assert "surfaces: FAIL" in console
    assert "scoping READY" not in console
    assert "denied at apply statement 2: write of undeclared object parent" in console
    md = (tmp_path / "pk" / "report.md").read_text()
    assert "- verdict: **FAIL**" in md
    valid = _cli("validate", "pk", cwd=tmp_path)
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert "exit code 3" in valid.stdout


# -- syntax errors, parser warnings ---------------------------------------------------------


def test_syntax_error_is_the_databases_own_error_exit_1(tmp_path: Path) -> None:
    src = _db(tmp_path / "prod.db", SCHEMA)
    _change(
        tmp_path / "bad",
        'apply_sql = "CREATE TABEL x (a);"\nrevert_sql = "DROP TABLE x;"\n'
        '[surfaces]\nwrites = ["x"]\n',
    )
    with pytest.raises(CheckFailedError, match='near "TABEL": syntax error'):
        _rehearse(load_change(tmp_path / "bad"), str(src))
    run = _cli("rehearse", "bad", "--source", f"sqlite:///{src}", cwd=tmp_path)
    assert run.returncode == ExitCode.CHECK_FAILED
    assert "apply statement 1 `CREATE TABEL x (a)`" in run.stderr
    assert "scope UNKNOWN" not in run.stderr + run.stdout
    assert _cli("surfaces", "bad", cwd=tmp_path).returncode == ExitCode.CHECK_FAILED


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE w (a INT PRIMARY KEY) WITHOUT ROWID",
        "CREATE TABLE s (a INT) STRICT",
        "EXPLAIN QUERY PLAN SELECT 1",
        "CREATE VIRTUAL TABLE v USING fts5(a)",
        "SELECT 'never closed",
        "PRAGMA table_info(t)",
    ],
)
def test_no_parser_warning_reaches_stderr(sql: str, capfd: pytest.CaptureFixture[str]) -> None:
    sqlglot_scope(sql)
    captured = capfd.readouterr()
    assert captured.err == ""
    assert captured.out == ""


# -- forward-only ---------------------------------------------------------------------------


def test_forward_only_change_rehearses_and_validates(tmp_path: Path) -> None:
    src = _db(tmp_path / "prod.db", SCHEMA)
    _change(
        tmp_path / "fwd",
        'apply_sql = "ALTER TABLE parent ADD COLUMN note TEXT;"\n[surfaces]\nwrites = ["parent"]\n',
    )
    change = load_change(tmp_path / "fwd")
    assert change.revert is None
    result = _rehearse(change, str(src), legs=list(LegName))
    by = {leg.name: leg for leg in result.legs}
    assert by[LegName.REVERT].verdict is Verdict.NOT_APPLICABLE
    assert by[LegName.REVERT].reason == NO_REVERT
    assert by[LegName.REAPPLY].verdict is Verdict.NOT_APPLICABLE
    assert by[LegName.TRANSACTION].verdict is Verdict.PASS
    assert by[LegName.RESTORE].verdict is Verdict.PASS
    assert result.overall is Verdict.PASS
    run = _cli(
        "rehearse", "fwd", "--source", f"sqlite:///{src}", "--legs", "transaction,restore,revert",
        "--out", "pk", cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    valid = _cli("validate", "pk", cwd=tmp_path)
    assert valid.returncode == 0, valid.stdout + valid.stderr
    report = json.loads((tmp_path / "pk" / "report.json").read_text())
    assert report["change"]["scripts"]["revert"] is None
    assert "without a snapshot it is irreversible" in (tmp_path / "pk" / "report.md").read_text()
    assert _check_forward_only(report) == []
    # A forged packet: a revert leg that claims PASS for a change with no revert script.
    forged = json.loads(json.dumps(report))
    [leg] = [leg for leg in forged["legs"] if leg["name"] == "revert"]
    leg["verdict"], leg["reason"] = "PASS", None
    assert _check_forward_only(forged)
    # And one that claims "no revert script" for a change that has one.
    claimed = json.loads(json.dumps(report))
    claimed["change"]["scripts"]["revert"] = {"path": None, "sha256": "0" * 64}
    assert _check_forward_only(claimed)


# -- --suggest ------------------------------------------------------------------------------


def test_suggest_prints_a_block_that_makes_the_change_ready(tmp_path: Path) -> None:
    src = _db(
        tmp_path / "prod.db",
        SCHEMA + "CREATE TABLE kid (id INTEGER PRIMARY KEY, pid INTEGER REFERENCES parent(id));",
    )
    apply = (
        "CREATE TABLE country (code TEXT PRIMARY KEY, name TEXT UNIQUE);"
        " INSERT INTO kid SELECT id, id FROM parent; INSERT INTO t SELECT name FROM parent;"
    )
    _change(tmp_path / "s", f'apply_sql = "{apply}"\nrevert_sql = "DROP TABLE country;"\n')
    run = _cli("surfaces", "s", "--suggest", "--source", f"sqlite:///{src}", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(
        '[surfaces]\nreads = ["parent"]\nwrites = ["country", "kid", "t"]\n'
    )
    toml = (tmp_path / "s" / "change.toml").read_text() + run.stdout
    (tmp_path / "s" / "change.toml").write_text(toml)
    assert _cli("surfaces", "s", "--source", f"sqlite:///{src}", cwd=tmp_path).returncode == 0


# -- false FAILs, PostgreSQL ----------------------------------------------------------------

PG_SCHEMA = """
CREATE TABLE payment (id bigint NOT NULL, paid date NOT NULL, amount numeric,
                      PRIMARY KEY (id, paid)) PARTITION BY RANGE (paid);
CREATE TABLE payment_p2022_07 PARTITION OF payment
    FOR VALUES FROM ('2022-07-01') TO ('2022-08-01');
INSERT INTO payment VALUES (1, '2022-07-02', 10);
CREATE SEQUENCE ticket_seq;
CREATE TABLE ticket (id bigint DEFAULT nextval('ticket_seq') PRIMARY KEY, title text);
INSERT INTO ticket (title) VALUES ('first');
"""


def test_pg_new_partition_index_and_nextval_default_are_covered(
    pg_servers: Servers, pg_source: MakeSource, make_pg_change: MakePgChange
) -> None:
    dsn = pg_source(PG_SCHEMA)
    change = make_pg_change(
        "CREATE TABLE payment_p2022_08 PARTITION OF payment\n"
        "    FOR VALUES FROM ('2022-08-01') TO ('2022-09-01');\n"
        "INSERT INTO payment VALUES (2, '2022-08-03', 20);\n"
        "INSERT INTO ticket (title) VALUES ('second');\n",
        "DELETE FROM ticket WHERE title = 'second';\nDROP TABLE payment_p2022_08;\n",
        surfaces='writes = ["payment", "ticket"]\n',
    )
    catalog = read_catalog(dsn)
    assert any(i.owner == "ticket" for i in catalog.of("ticket_seq"))
    scoping = check_scoping(change, dialect="postgresql", catalog=catalog)
    assert scoping.status is ScopingStatus.READY, scoping.problems()
    result = _rehearse(change, dsn, scratch=pg_servers.scratch)
    assert result.surfaces.events == (), result.surfaces.events
    assert result.surfaces.observed_undeclared == ()
    assert result.overall is Verdict.PASS, [leg.reason for leg in result.legs]
    covered = _implicit(result)
    assert ("payment_p2022_08", "payment") in covered
    assert ("payment_p2022_08_pkey", "payment_p2022_08") in covered
    assert ("ticket_seq", "ticket") in covered
    assert_valid_report(report_json(result))
