"""Forbidden means unreachable: no view, function, rule or trigger reads a forbidden table for
a change, and no error text carries a row's values out.

Each negative test asserts the exact denial and how the report states the forbidden object;
each has a positive twin that takes the same path over declared objects only and succeeds.
The canary tests plant unique values in a forbidden table, run the real `rollproof rehearse`
over every path that tries to reach them, and search every byte it wrote and printed.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rollproof.core.guard import script_error, without_values
from rollproof.core.model import LegName, Verdict
from rollproof.core.policy import Policy, load_policy
from rollproof.engines.postgres.source import fingerprint_source
from rollproof.engines.sqlite.source import fingerprint_file
from rollproof.rehearse.flow import RehearsalResult
from rollproof.rehearse.flow import rehearse as _rehearse
from rollproof.rehearse.report import report_json
from rollproof.surfaces.scope import ForbiddenStatus
from tests.conftest import assert_valid_report
from tests.pg_fixtures import (
    MakePgChange,
    MakeSource,
    Servers,
    make_pg_change_fixture,  # noqa: F401  (fixture)
    pg_servers_fixture,  # noqa: F401  (fixture)
    pg_source_fixture,  # noqa: F401  (fixture)
    write_change,
)

REPO = Path(__file__).resolve().parent.parent
TXN_REVERT = [LegName.TRANSACTION, LegName.REVERT]


def rehearse(*args: Any, **kwargs: Any) -> RehearsalResult:
    result = _rehearse(*args, **kwargs)
    assert_valid_report(report_json(result))
    return result


def policy_file(tmp_path: Path, patterns: str = '"staff"') -> Policy:
    path = tmp_path / "rollproof.toml"
    path.write_text(f"[forbidden]\nobjects = [{patterns}]\n")
    return load_policy(path)


def events(result: RehearsalResult) -> list[tuple[str, int, str, str, str | None, str, str]]:
    return [
        (e.script, e.statement, str(e.kind), e.object, e.via, str(e.decision), e.reason)
        for e in result.surfaces.events
    ]


def staff_status(result: RehearsalResult) -> tuple[str, str]:
    [surface] = [f for f in result.surfaces.forbidden if f.kind == "object"]
    return str(surface.status), surface.evidence


# --- the one function script errors go through ---------------------------------------------------


@pytest.mark.parametrize(
    ("message", "kept"),
    [
        pytest.param(
            'invalid input syntax for type integer: "Ada Lovelace"',
            'invalid input syntax for type integer: "…"',
            id="pg-cast",
        ),
        pytest.param(
            'duplicate key value violates unique constraint "staff_pkey"\n'
            "DETAIL:  Key (id)=(7) already exists.",
            'duplicate key value violates unique constraint "…"',
            id="pg-detail-dropped",
        ),
        pytest.param(
            'invalid byte sequence for encoding "UTF8": 0xe9 0x20',
            'invalid byte sequence for encoding "…": # #',
            id="pg-bytes",
        ),
        pytest.param(
            'setval: value 0 is out of bounds for sequence "s" (1..9)',
            'setval: value # is out of bounds for sequence "…" (#..#)',
            id="pg-numbers",
        ),
        pytest.param("near \"'555-0100'\": syntax error", 'near "…": syntax error', id="sqlite"),
        pytest.param("no such table: t1", "no such table: t1", id="identifier-kept"),
    ],
)
def test_without_values_keeps_the_template_only(message: str, kept: str) -> None:
    assert without_values(message) == kept


def test_script_error_keeps_code_index_and_template() -> None:
    assert script_error(
        3,
        "SELECT name::int FROM t",
        "SQLSTATE 22P02",
        'invalid input syntax for type integer: "Ada"',
        names=["column name"],
    ) == (
        "statement 3 `SELECT name::int FROM t` (SQLSTATE 22P02) failed: "
        'invalid input syntax for type integer: "…" (column name)'
    )
    assert script_error(1, "SELECT f()", "SQLSTATE P0001", None).endswith(
        "(SQLSTATE P0001) failed: message withheld: written by code in the database, it may "
        "quote any value"
    )


# --- SQLite -------------------------------------------------------------------------------------

SQLITE_CANARIES = ("CANARY-SQ-NAME-7f3a91", "CANARY-SQ-PHONE-52c0e8")

SQLITE_SCHEMA = f"""
CREATE TABLE staff (id INTEGER PRIMARY KEY, name TEXT NOT NULL, phone TEXT NOT NULL);
INSERT INTO staff VALUES (1, '{SQLITE_CANARIES[0]}', '{SQLITE_CANARIES[1]}');
CREATE TABLE items (id INTEGER PRIMARY KEY, label TEXT NOT NULL);
INSERT INTO items VALUES (1, 'spoon'), (2, 'fork');
CREATE TABLE copied (name TEXT, phone TEXT);
CREATE VIEW staff_list AS SELECT name, phone FROM staff;
CREATE VIEW staff_names AS SELECT name FROM staff_list;
CREATE VIEW item_labels AS SELECT id, label FROM items;
CREATE TABLE visits (id INTEGER PRIMARY KEY, who TEXT);
CREATE TRIGGER visits_copy AFTER INSERT ON visits BEGIN
    INSERT INTO copied SELECT name, phone FROM staff;
END;
CREATE TABLE badges (id INTEGER PRIMARY KEY, who TEXT);
CREATE TRIGGER badges_touch AFTER INSERT ON badges BEGIN
    INSERT INTO staff (name, phone) VALUES (NEW.who, 'planted');
END;
CREATE TABLE shifts (id INTEGER PRIMARY KEY, who TEXT);
CREATE TRIGGER shifts_copy AFTER INSERT ON shifts BEGIN
    INSERT INTO copied SELECT label, NULL FROM items;
END;
"""


@pytest.fixture
def sqlite_source(tmp_path: Path) -> Path:
    path = tmp_path / "prod" / "prod.db"
    path.parent.mkdir()
    conn = sqlite3.connect(path)
    conn.executescript(SQLITE_SCHEMA)
    conn.commit()
    conn.close()
    return path


def sqlite_change(
    tmp_path: Path, name: str, apply: str, surfaces: str, revert: str = "DELETE FROM copied;\n"
) -> Any:
    return write_change(
        tmp_path / "changes" / name,
        {
            "apply.sql": apply,
            "revert.sql": revert,
            "change.toml": 'apply = "apply.sql"\nrevert = "revert.sql"\n\n[surfaces]\n' + surfaces,
        },
    )


SQLITE_DENIED = {
    "declared-view": (
        "INSERT INTO copied SELECT name, phone FROM staff_list;",
        'reads = ["staff_list"]\nwrites = ["copied"]\n',
        ("READ", "staff", "staff_list", "read of forbidden object staff (via staff_list)"),
    ),
    "view-over-view": (
        "INSERT INTO copied (name) SELECT name FROM staff_names;",
        'reads = ["staff_names"]\nwrites = ["copied"]\n',
        ("READ", "staff", "staff_list", "read of forbidden object staff (via staff_list)"),
    ),
    "trigger-reads": (
        "INSERT INTO visits (who) VALUES ('door');",
        'writes = ["visits", "copied"]\n',
        ("READ", "staff", "visits_copy", "read of forbidden object staff (via visits_copy)"),
    ),
    "trigger-writes": (
        "INSERT INTO badges (who) VALUES ('door');",
        'writes = ["badges", "copied"]\n',
        ("WRITE", "staff", "badges_touch", "write of forbidden object staff (via badges_touch)"),
    ),
}


@pytest.mark.parametrize("path", sorted(SQLITE_DENIED))
def test_sqlite_reach_through_view_or_trigger_is_denied_as_the_forbidden_object(
    sqlite_source: Path, tmp_path: Path, path: str
) -> None:
    apply, surfaces, (kind, obj, via, reason) = SQLITE_DENIED[path]
    before = fingerprint_file(sqlite_source).digest
    change = sqlite_change(tmp_path, path, apply, surfaces)
    result = rehearse(change, str(sqlite_source), legs=TXN_REVERT, policy=policy_file(tmp_path))
    assert [str(leg.verdict) for leg in result.legs] == ["FAIL", "FAIL"]
    for leg in result.legs:
        assert leg.reason == f"apply failed: statement 1 `{apply}` was denied: {reason}"
    assert ("apply", 1, kind, obj, via, "denied", reason) in events(result)
    assert {e.object for e in result.surfaces.events} == {"staff"}
    status, evidence = staff_status(result)
    assert status == str(ForbiddenStatus.UNTOUCHED)
    assert evidence.startswith(f"denied at apply statement 1: {reason}")
    assert result.overall is Verdict.FAIL
    assert fingerprint_file(sqlite_source).digest == before


SQLITE_ALLOWED = {
    "declared-view": (
        "INSERT INTO copied (name) SELECT label FROM item_labels;",
        'reads = ["item_labels"]\nwrites = ["copied"]\n',
        "DELETE FROM copied;\n",
    ),
    "trigger-reads": (
        "INSERT INTO shifts (who) VALUES ('door');",
        'reads = ["items"]\nwrites = ["shifts", "copied"]\n',
        "DELETE FROM copied;\nDELETE FROM shifts;\n",
    ),
}


@pytest.mark.parametrize("path", sorted(SQLITE_ALLOWED))
def test_sqlite_twin_over_declared_objects_only_passes(
    sqlite_source: Path, tmp_path: Path, path: str
) -> None:
    apply, surfaces, revert = SQLITE_ALLOWED[path]
    change = sqlite_change(tmp_path, path, apply, surfaces, revert)
    result = rehearse(change, str(sqlite_source), legs=TXN_REVERT, policy=policy_file(tmp_path))
    assert [str(leg.verdict) for leg in result.legs] == ["PASS", "PASS"], [
        leg.reason for leg in result.legs
    ]
    assert events(result) == []
    assert staff_status(result)[0] == str(ForbiddenStatus.NOT_REQUESTED)


def test_sqlite_error_text_is_stored_without_values(sqlite_source: Path, tmp_path: Path) -> None:
    change = sqlite_change(
        tmp_path,
        "syntax",
        "INSERT INTO copied VALUES ('a', 'b');\nINSERT INTO copied VALUES ('CANARY-IN-SQL', 7, 8);",
        'writes = ["copied"]\n',
    )
    # A syntax error never reaches a leg (it is the change's error, exit 1); a run-time error
    # keeps its code and loses its values.
    result = rehearse(change, str(sqlite_source), legs=[LegName.REVERT], allow_undeclared=True)
    [leg] = result.legs
    assert leg.reason == (
        "apply failed: statement 2 `INSERT INTO copied VALUES ('CANARY-IN-SQL', 7, 8);` "
        "(SQLITE_ERROR) failed: table copied has # columns but # values were supplied"
    )


# --- canaries: the real command, every byte written and printed --------------------------------


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
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


def assert_no_canary(
    canaries: tuple[str, ...], out_dirs: list[Path], runs: list[subprocess.CompletedProcess[bytes]]
) -> None:
    blobs: dict[str, bytes] = {}
    for out in out_dirs:
        for f in sorted(out.rglob("*")):
            if f.is_file():
                blobs[str(f)] = f.read_bytes()
    for i, run in enumerate(runs):
        blobs[f"run {i} stdout"] = run.stdout
        blobs[f"run {i} stderr"] = run.stderr
    assert any(b"report.json" in name.encode() for name in blobs), "no packet was written"
    leaks = [
        (name, canary)
        for name, data in blobs.items()
        for canary in canaries
        if canary.encode() in data or canary.lower().encode() in data.lower()
    ]
    assert leaks == []


def test_sqlite_canaries_never_leave_the_forbidden_table(
    sqlite_source: Path, tmp_path: Path
) -> None:
    (tmp_path / "rollproof.toml").write_text('[forbidden]\nobjects = ["staff"]\n')
    before = sqlite_source.read_bytes()
    outs: list[Path] = []
    runs = []
    for path, (apply, surfaces, _expected) in sorted(SQLITE_DENIED.items()):
        change = sqlite_change(tmp_path, f"canary-{path}", apply, surfaces)
        out = tmp_path / "packets" / path
        run = run_cli(
            [
                "rehearse",
                str(change.directory),
                "--source",
                str(sqlite_source),
                "--out",
                str(out),
                "--policy",
                str(tmp_path / "rollproof.toml"),
            ],
            tmp_path,
        )
        assert run.returncode == 1, run.stderr.decode()
        outs.append(out)
        runs.append(run)
    assert_no_canary(SQLITE_CANARIES, outs, runs)
    assert sqlite_source.read_bytes() == before


# --- PostgreSQL ---------------------------------------------------------------------------------

PG_CANARIES = ("CANARY-PG-NAME-c41d07", "CANARY-PG-PHONE-9be2f5")
PG_ALLOWED_CANARY = "CANARY-PG-CONTACT-e17a63"

PG_SCHEMA = f"""
CREATE TABLE staff (id integer PRIMARY KEY, name text NOT NULL, phone text NOT NULL);
INSERT INTO staff VALUES (1, '{PG_CANARIES[0]}', '{PG_CANARIES[1]}');
CREATE TABLE items (id integer PRIMARY KEY, label text NOT NULL);
INSERT INTO items VALUES (1, 'spoon'), (2, 'fork');
CREATE TABLE contacts (handle text PRIMARY KEY, phone text NOT NULL);
INSERT INTO contacts VALUES ('{PG_ALLOWED_CANARY}', '{PG_ALLOWED_CANARY}');
CREATE TABLE copied (name text, phone text);
CREATE VIEW staff_list AS SELECT name, phone FROM staff;
CREATE VIEW staff_names AS SELECT name FROM staff_list;
CREATE MATERIALIZED VIEW staff_snapshot AS SELECT name, phone FROM staff;
CREATE VIEW staff_invoker WITH (security_invoker = true) AS SELECT name, phone FROM staff;
CREATE VIEW item_labels AS SELECT id, label FROM items;
CREATE MATERIALIZED VIEW item_snapshot AS SELECT id, label FROM items;
CREATE FUNCTION staff_sql() RETURNS SETOF text LANGUAGE sql SECURITY DEFINER
    AS $$ SELECT name FROM staff $$;
CREATE FUNCTION staff_plpgsql() RETURNS SETOF text LANGUAGE plpgsql SECURITY DEFINER
    AS $$ BEGIN RETURN QUERY SELECT phone FROM staff; END $$;
CREATE FUNCTION staff_dynamic() RETURNS SETOF text LANGUAGE plpgsql SECURITY DEFINER
    AS $$ BEGIN RETURN QUERY EXECUTE 'SELECT name FROM ' || 'sta' || 'ff'; END $$;
CREATE FUNCTION item_names() RETURNS SETOF text LANGUAGE sql
    AS $$ SELECT label FROM items $$;
CREATE FUNCTION shout() RETURNS text LANGUAGE plpgsql
    AS $$ BEGIN RAISE EXCEPTION 'phone %', (SELECT phone FROM contacts LIMIT 1); END $$;
CREATE TABLE signups (name text);
CREATE RULE signups_copy AS ON INSERT TO signups
    DO ALSO INSERT INTO copied SELECT name, phone FROM staff;
CREATE TABLE item_signups (name text);
CREATE RULE item_signups_copy AS ON INSERT TO item_signups
    DO ALSO INSERT INTO copied SELECT label, label FROM items;
CREATE TABLE visits (id serial PRIMARY KEY, who text);
CREATE FUNCTION visits_fill() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
    AS $$ BEGIN NEW.who := (SELECT name FROM staff LIMIT 1); RETURN NEW; END $$;
CREATE TRIGGER visits_fill BEFORE INSERT ON visits FOR EACH ROW EXECUTE FUNCTION visits_fill();
"""

# path -> (apply, [surfaces] body, expected event (kind, object, via), reason)
PG_DENIED = {
    "view": (
        "INSERT INTO copied SELECT name, phone FROM staff_list",
        'reads = ["staff_list"]\nwrites = ["copied"]\n',
        ("READ", "staff", "staff_list"),
    ),
    "view-over-view": (
        "INSERT INTO copied (name) SELECT name FROM staff_names",
        'reads = ["staff_names"]\nwrites = ["copied"]\n',
        ("READ", "staff", "staff_names"),
    ),
    "materialized-view": (
        "INSERT INTO copied SELECT name, phone FROM staff_snapshot",
        'reads = ["staff_snapshot"]\nwrites = ["copied"]\n',
        ("READ", "staff", "staff_snapshot"),
    ),
    "security-invoker-view": (
        "INSERT INTO copied SELECT name, phone FROM staff_invoker",
        'reads = ["staff_invoker"]\nwrites = ["copied"]\n',
        ("READ", "staff", None),
    ),
    "definer-sql-function": (
        "INSERT INTO copied (name) SELECT staff_sql()",
        'writes = ["copied"]\n',
        ("READ", "staff", "staff_sql"),
    ),
    "definer-plpgsql-function": (
        "INSERT INTO copied (phone) SELECT staff_plpgsql()",
        'writes = ["copied"]\n',
        ("READ", "staff", "staff_plpgsql"),
    ),
    "definer-dynamic-function": (
        "INSERT INTO copied (name) SELECT staff_dynamic()",
        'writes = ["copied"]\n',
        ("READ", "staff", "staff_dynamic"),
    ),
    "rule": (
        "INSERT INTO signups VALUES ('door')",
        'writes = ["signups", "copied"]\n',
        ("WRITE", "staff", "signups"),
    ),
    "definer-trigger": (
        "INSERT INTO visits (who) VALUES ('door')",
        'writes = ["visits"]\n',
        ("WRITE", "staff", "visits"),
    ),
    "cast-error-on-forbidden-value": (
        "INSERT INTO copied (name) SELECT (name::integer)::text FROM staff_list",
        'reads = ["staff_list"]\nwrites = ["copied"]\n',
        ("READ", "staff", "staff_list"),
    ),
}


def pg_reason(kind: str, obj: str, via: str | None) -> str:
    return f"{kind.lower()} of forbidden object {obj}" + (f" (via {via})" if via else "")


def pg_change(make: MakePgChange, apply: str, surfaces: str) -> Any:
    return make(apply + ";\n", "DELETE FROM copied;\n", surfaces=surfaces)


@pytest.mark.parametrize("path", sorted(PG_DENIED))
def test_postgres_reach_through_another_object_is_denied_as_the_forbidden_object(
    pg_servers: Servers,
    pg_source: MakeSource,
    make_pg_change: MakePgChange,
    tmp_path: Path,
    path: str,
) -> None:
    dsn = pg_source(PG_SCHEMA)
    apply, surfaces, (kind, obj, via) = PG_DENIED[path]
    change = pg_change(make_pg_change, apply, surfaces)
    result = rehearse(
        change,
        dsn,
        scratch=pg_servers.scratch,
        legs=TXN_REVERT,
        policy=policy_file(tmp_path),
        allow_undeclared=True,
    )
    reason = pg_reason(kind, obj, via)
    assert [str(leg.verdict) for leg in result.legs] == ["FAIL", "FAIL"]
    for leg in result.legs:
        assert leg.reason == (
            f"apply failed: statement 1 `{apply}` was denied by the server: {reason}"
        )
    assert events(result) == [("apply", 1, kind, obj, via, "denied", reason)]
    status, evidence = staff_status(result)
    assert status == str(ForbiddenStatus.UNTOUCHED)
    assert evidence.startswith(f"denied at apply statement 1: {reason}")
    assert result.overall is Verdict.FAIL


PG_ALLOWED = {
    "view": (
        "INSERT INTO copied (name) SELECT label FROM item_labels",
        'reads = ["item_labels"]\nwrites = ["copied"]\n',
    ),
    "materialized-view": (
        "INSERT INTO copied (name) SELECT label FROM item_snapshot",
        'reads = ["item_snapshot"]\nwrites = ["copied"]\n',
    ),
    "invoker-function": (
        "INSERT INTO copied (name) SELECT item_names()",
        'reads = ["items"]\nwrites = ["copied"]\n',
    ),
    "rule": (
        "INSERT INTO item_signups VALUES ('door')",
        'reads = ["items"]\nwrites = ["item_signups", "copied"]\n',
    ),
}


@pytest.mark.parametrize("path", sorted(PG_ALLOWED))
def test_postgres_twin_over_declared_objects_only_passes(
    pg_servers: Servers,
    pg_source: MakeSource,
    make_pg_change: MakePgChange,
    tmp_path: Path,
    path: str,
) -> None:
    dsn = pg_source(PG_SCHEMA)
    apply, surfaces = PG_ALLOWED[path]
    revert = "DELETE FROM copied;\n" + (
        "DELETE FROM item_signups;\n" if "item_signups" in apply else ""
    )
    change = make_pg_change(apply + ";\n", revert, surfaces=surfaces)
    result = rehearse(
        change, dsn, scratch=pg_servers.scratch, legs=TXN_REVERT, policy=policy_file(tmp_path)
    )
    assert [str(leg.verdict) for leg in result.legs] == ["PASS", "PASS"], [
        leg.reason for leg in result.legs
    ]
    assert events(result) == []
    assert staff_status(result)[0] == str(ForbiddenStatus.NOT_REQUESTED)


def test_postgres_change_role_cannot_borrow_read_all_data(
    pg_servers: Servers, pg_source: MakeSource, make_pg_change: MakePgChange, tmp_path: Path
) -> None:
    # rollproof's own read inside the open transaction needs pg_read_all_data; a change that
    # could SET ROLE to it would read the forbidden table.
    dsn = pg_source(PG_SCHEMA)
    change = make_pg_change(
        "SET ROLE pg_read_all_data;\nSELECT name FROM staff;\n",
        "SELECT 1;\n",
        surfaces='writes = ["copied"]\n',
    )
    result = rehearse(
        change,
        dsn,
        scratch=pg_servers.scratch,
        legs=TXN_REVERT,
        policy=policy_file(tmp_path),
        allow_undeclared=True,
    )
    for leg in result.legs:
        assert leg.reason == (
            "apply failed: statement 1 `SET ROLE pg_read_all_data` (SQLSTATE 42501) failed: "
            'permission denied to set role "…"'
        )


def test_postgres_twin_fingerprint_inside_the_transaction_still_works(
    pg_servers: Servers, pg_source: MakeSource, make_pg_change: MakePgChange, tmp_path: Path
) -> None:
    dsn = pg_source(PG_SCHEMA)
    change = make_pg_change(
        "INSERT INTO copied VALUES ('a', 'b');\n",
        "DELETE FROM copied;\n",
        surfaces='writes = ["copied"]\n',
    )
    result = rehearse(
        change, dsn, scratch=pg_servers.scratch, legs=TXN_REVERT, policy=policy_file(tmp_path)
    )
    assert [str(leg.verdict) for leg in result.legs] == ["PASS", "PASS"]


PG_ERRORS = {
    "cast": (
        "INSERT INTO copied (name) SELECT (phone::integer)::text FROM contacts",
        'reads = ["contacts"]\nwrites = ["copied"]\n',
        '(SQLSTATE 22P02) failed: invalid input syntax for type integer: "…"',
    ),
    "unique-detail": (
        "INSERT INTO contacts SELECT handle, phone FROM contacts",
        'writes = ["contacts"]\n',
        '(SQLSTATE 23505) failed: duplicate key value violates unique constraint "…" '
        "(table contacts, constraint contacts_pkey)",
    ),
    "raise": (
        "INSERT INTO copied (name) SELECT shout()",
        'reads = ["contacts"]\nwrites = ["copied"]\n',
        "(SQLSTATE P0001) failed: message withheld: written by code in the database, it may "
        "quote any value",
    ),
}


@pytest.mark.parametrize("path", sorted(PG_ERRORS))
def test_postgres_error_text_is_stored_without_values(
    pg_servers: Servers,
    pg_source: MakeSource,
    make_pg_change: MakePgChange,
    tmp_path: Path,
    path: str,
) -> None:
    dsn = pg_source(PG_SCHEMA)
    apply, surfaces, told = PG_ERRORS[path]
    change = make_pg_change(apply + ";\n", "SELECT 1;\n", surfaces=surfaces)
    result = rehearse(
        change, dsn, scratch=pg_servers.scratch, legs=TXN_REVERT, policy=policy_file(tmp_path)
    )
    for leg in result.legs:
        assert leg.reason == f"apply failed: statement 1 `{apply}` {told}"
        assert PG_ALLOWED_CANARY not in leg.reason


def test_postgres_canaries_never_leave_the_forbidden_table(
    pg_servers: Servers, pg_source: MakeSource, tmp_path: Path
) -> None:
    dsn = pg_source(PG_SCHEMA)  # the fixture also proves the source unchanged at teardown
    before = fingerprint_source(dsn).digest
    (tmp_path / "rollproof.toml").write_text('[forbidden]\nobjects = ["staff"]\n')
    attempts = {name: (apply, surfaces) for name, (apply, surfaces, _e) in PG_DENIED.items()}
    attempts |= {f"error-{n}": (apply, surfaces) for n, (apply, surfaces, _t) in PG_ERRORS.items()}
    attempts["set-role"] = ("SET ROLE pg_read_all_data;\nSELECT name::integer FROM staff", "")
    outs: list[Path] = []
    runs = []
    for name, (apply, surfaces) in sorted(attempts.items()):
        change = write_change(
            tmp_path / "changes" / name,
            {
                "apply.sql": apply + ";\n",
                "revert.sql": "SELECT 1;\n",
                "change.toml": 'apply = "apply.sql"\nrevert = "revert.sql"\n\n[surfaces]\n'
                + (surfaces or 'writes = ["copied"]\n'),
            },
        )
        out = tmp_path / "packets" / name
        run = run_cli(
            [
                "rehearse",
                str(change.directory),
                "--source",
                dsn,
                "--scratch",
                pg_servers.scratch,
                "--out",
                str(out),
                "--policy",
                str(tmp_path / "rollproof.toml"),
                "--legs",
                "transaction,revert",
                "--allow-undeclared",
            ],
            tmp_path,
        )
        assert run.returncode == 1, (name, run.stderr.decode())
        outs.append(out)
        runs.append(run)
    assert_no_canary((*PG_CANARIES, PG_ALLOWED_CANARY), outs, runs)
    assert fingerprint_source(dsn).digest == before
