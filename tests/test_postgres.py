"""Rehearsals against real PostgreSQL servers: a source and a scratch server that is not it.

Each test makes its own source database (tests.pg_fixtures.pg_source), which is fingerprinted
when made and again at teardown, so every test also proves the source was not changed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from rollproof.core.errors import EnvironmentProblemError, ExitCode, IsolationError, UsageError
from rollproof.core.model import LegName, Point, Verdict
from rollproof.engines.postgres.conn import connect_source, parse_pg_dsn
from rollproof.engines.postgres.session import PostgresSession
from rollproof.engines.postgres.source import fingerprint_source
from rollproof.rehearse.demo import CHANGES as SQLITE_CHANGES
from rollproof.rehearse.demo import build_sample_database
from rollproof.rehearse.flow import RehearsalResult
from rollproof.rehearse.flow import rehearse as _rehearse
from rollproof.rehearse.packet import write_packet
from rollproof.rehearse.report import report_json, report_markdown
from rollproof.verify.reader import check_packet
from tests.conftest import assert_valid_report
from tests.pg_fixtures import (
    DEMO_CHANGES,
    DEMO_SCHEMA,
    MakePgChange,
    MakeSource,
    Servers,
    admin,
    database_names,
    make_pg_change_fixture,  # noqa: F401  (fixture)
    pg_servers_fixture,  # noqa: F401  (fixture)
    pg_source_fixture,  # noqa: F401  (fixture)
    role_names,
    tcp_dsn,
    write_change,
)

ALL_LEGS = list(LegName)


def rehearse(*args: Any, **kwargs: Any) -> RehearsalResult:
    """Every report must validate against the report schema."""
    result = _rehearse(*args, **kwargs)
    assert_valid_report(report_json(result))
    assert report_markdown(result).startswith(f"# Rehearsal of `{result.change.id}`")
    return result


def verdicts(result: RehearsalResult) -> dict[str, Verdict]:
    return {str(leg.name): leg.verdict for leg in result.legs}


def leg(result: RehearsalResult, name: str) -> Any:
    return next(x for x in result.legs if x.name == name)


SMALL = """
CREATE TABLE items (id serial PRIMARY KEY, label text NOT NULL, qty integer);
INSERT INTO items (label, qty) SELECT 'item ' || i, i FROM generate_series(1, 50) AS i;
CREATE TABLE notes (body text);
INSERT INTO notes VALUES ('a'), ('b'), ('a');
"""


@pytest.fixture(scope="module")
def sqlite_demo_verdicts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """The SQLite demo's verdicts, to hold the PostgreSQL port to."""
    root = tmp_path_factory.mktemp("sqlite-demo")
    db = root / "production.db"
    build_sample_database(db)
    out = {}
    for change_id, files in SQLITE_CHANGES.items():
        change = write_change(root / change_id, files)
        result = _rehearse(change, f"sqlite:///{db}", legs=ALL_LEGS[:4])
        out[change_id] = {str(k): str(v) for k, v in verdicts(result).items()}
    return out


def test_demo_changes_give_the_sqlite_verdicts(
    pg_servers: Servers,
    pg_source: MakeSource,
    tmp_path: Path,
    sqlite_demo_verdicts: dict[str, dict[str, str]],
) -> None:
    dsn = pg_source(DEMO_SCHEMA)
    results = {}
    for change_id, files in DEMO_CHANGES.items():
        change = write_change(tmp_path / change_id, files)
        results[change_id] = rehearse(change, dsn, scratch=pg_servers.scratch)
    for change_id, result in results.items():
        got = {k: str(v) for k, v in verdicts(result).items()}
        assert got == sqlite_demo_verdicts[change_id], change_id
        assert str(result.isolation.verdict) == "PROVEN_ISOLATED_NOT_PRODUCTION"
        assert result.source["engine"] == "postgresql"
    sound, lossy = results["add-order-priority"], results["drop-customer-fax"]
    assert sound.overall is Verdict.PASS
    assert sound.exit_code == ExitCode.OK
    # The identity sequence behind audit_log moved and stays moved: tolerated, by name.
    tolerated = {d.component for leg_ in sound.legs for d in leg_.tolerated}
    assert tolerated == {"sequence:audit_log"}
    assert lossy.overall is Verdict.FAIL
    assert lossy.exit_code == ExitCode.CHECK_FAILED
    [diff] = leg(lossy, "revert").differences
    assert diff.component == "table:customers"
    assert (
        diff.summary
        == "table customers: 800 rows differ; fax: 800 values lost (set before, NULL now)"
    )
    assert diff.detail["values_now_null"] == {"fax": 800}
    assert [c.name for c in sound.isolation.checks] == [
        "scratch-server-distinct",
        "clone-database-fresh",
        "source-session-read-only",
        "clone-matches-source",
        "source-wrote-nothing",
    ]


def test_create_index_concurrently_is_not_applicable_in_a_transaction(
    pg_servers: Servers, pg_source: MakeSource, make_pg_change: MakePgChange
) -> None:
    dsn = pg_source(SMALL)
    change = make_pg_change(
        "CREATE INDEX CONCURRENTLY idx_items_qty ON items (qty);",
        "DROP INDEX CONCURRENTLY idx_items_qty;",
        surfaces='reads = ["items"]\nwrites = ["idx_items_qty"]\n',
    )
    result = rehearse(change, dsn, scratch=pg_servers.scratch, legs=ALL_LEGS)
    txn = leg(result, "transaction")
    assert txn.verdict is Verdict.NOT_APPLICABLE
    assert txn.reason == (
        "apply: statement 1 `CREATE INDEX CONCURRENTLY idx_items_qty ON items (qty)`: "
        "CREATE INDEX CONCURRENTLY cannot run inside a transaction block"
    )
    assert verdicts(result) == {
        "read-only": Verdict.NOT_APPLICABLE,
        "transaction": Verdict.NOT_APPLICABLE,
        "revert": Verdict.PASS,
        "restore": Verdict.PASS,
        "reapply": Verdict.PASS,
    }
    assert result.overall is Verdict.PASS


@pytest.mark.parametrize(
    ("apply", "reason"),
    [
        pytest.param(
            "BEGIN; UPDATE items SET qty = 0; COMMIT;",
            "the script manages its own transaction (statement 1: `BEGIN`)",
            id="own-transaction",
        ),
        pytest.param(
            "UPDATE items SET qty = 0; VACUUM items;",
            "statement 2 `VACUUM items`: VACUUM cannot run inside a transaction block",
            id="vacuum",
        ),
    ],
)
def test_statements_that_refuse_a_transaction(
    pg_servers: Servers,
    pg_source: MakeSource,
    make_pg_change: MakePgChange,
    apply: str,
    reason: str,
) -> None:
    dsn = pg_source(SMALL)
    change = make_pg_change(
        apply,
        "UPDATE items SET qty = id;",
        surfaces='writes = ["items"]\n',
    )
    result = rehearse(change, dsn, scratch=pg_servers.scratch, legs=[LegName.TRANSACTION])
    txn = leg(result, "transaction")
    assert txn.verdict is Verdict.NOT_APPLICABLE
    assert reason in txn.reason


def test_scratch_on_the_source_server_is_refused_before_anything_is_restored(
    pg_servers: Servers, pg_source: MakeSource, make_pg_change: MakePgChange
) -> None:
    dsn = pg_source(SMALL)
    change = make_pg_change(
        "UPDATE items SET qty = 0;", "UPDATE items SET qty = id;", surfaces='writes = ["items"]\n'
    )
    before = database_names(pg_servers.source)
    for scratch in (dsn, pg_servers.source):
        with pytest.raises(IsolationError, match="scratch-server-distinct") as info:
            _rehearse(change, dsn, scratch=scratch)
        assert info.value.exit_code == ExitCode.HELD
        assert "system_identifier" in str(info.value)
    assert database_names(pg_servers.source) == before


def test_undeclared_write_is_denied_by_the_server(
    pg_servers: Servers, pg_source: MakeSource, make_pg_change: MakePgChange
) -> None:
    dsn = pg_source(DEMO_SCHEMA)
    # Declared: orders. The trigger on orders.status writes audit_log, which is not declared:
    # no text in the change names it, so only the server can stop it.
    change = make_pg_change(
        "UPDATE orders SET status = 'paid' WHERE id = 1;",
        "UPDATE orders SET status = 'new' WHERE id = 1;",
        surfaces='writes = ["orders"]\n',
    )
    result = rehearse(change, dsn, scratch=pg_servers.scratch, legs=[LegName.REVERT])
    revert = leg(result, "revert")
    assert revert.verdict is Verdict.FAIL
    assert revert.reason == (
        "apply failed: statement 1 `UPDATE orders SET status = 'paid' WHERE id = 1` was denied "
        "by the server: write of undeclared object audit_log (via audit_orders_status)"
    )
    [event] = result.surfaces.events
    assert (event.script, event.statement, str(event.kind), event.object, str(event.decision)) == (
        "apply",
        1,
        "WRITE",
        "audit_log",
        "denied",
    )
    assert result.overall is Verdict.FAIL


def test_undeclared_write_named_in_the_sql_is_denied_when_rehearsed_anyway(
    pg_servers: Servers, pg_source: MakeSource, make_pg_change: MakePgChange
) -> None:
    dsn = pg_source(SMALL)
    change = make_pg_change(
        "UPDATE items SET qty = 0;\nDELETE FROM notes;",
        "UPDATE items SET qty = id;",
        surfaces='writes = ["items"]\n',
    )
    result = rehearse(
        change, dsn, scratch=pg_servers.scratch, legs=[LegName.TRANSACTION], allow_undeclared=True
    )
    assert str(result.surfaces.scoping.status) == "NOT_READY"
    txn = leg(result, "transaction")
    assert txn.verdict is Verdict.FAIL
    assert "was denied by the server: write of undeclared object notes" in txn.reason
    assert [e.object for e in result.surfaces.events] == ["notes"]


def test_lost_rows_are_counted(
    pg_servers: Servers, pg_source: MakeSource, make_pg_change: MakePgChange
) -> None:
    dsn = pg_source(SMALL)
    change = make_pg_change(
        "DELETE FROM items WHERE id % 5 = 0;",
        "INSERT INTO items (label, qty) VALUES ('back', 0);",
        surfaces='writes = ["items"]\n',
    )
    result = rehearse(change, dsn, scratch=pg_servers.scratch, legs=[LegName.REVERT])
    [diff] = leg(result, "revert").differences
    assert diff.detail["rows_missing"] == 10
    assert diff.detail["rows_added"] == 1
    assert "10 rows missing" in diff.summary
    assert [d.component for d in leg(result, "revert").tolerated] == ["sequence:items"]


def test_sequence_advance_is_tolerated_unless_strict(
    pg_servers: Servers, pg_source: MakeSource, make_pg_change: MakePgChange
) -> None:
    dsn = pg_source(SMALL)
    apply, revert = "INSERT INTO items (label) VALUES ('new');", "DELETE FROM items WHERE id > 50;"
    loose = make_pg_change(apply, revert, surfaces='writes = ["items"]\n')
    strict = make_pg_change(
        apply, revert, surfaces='writes = ["items"]\n', extra="strict_sequences = true\n"
    )
    legs = [LegName.TRANSACTION, LegName.REVERT]
    result = rehearse(loose, dsn, scratch=pg_servers.scratch, legs=legs)
    assert verdicts(result) == {"transaction": Verdict.PASS, "revert": Verdict.PASS}
    [tolerated] = leg(result, "transaction").tolerated
    assert tolerated.summary == "sequence items advanced from 50 to 51"
    result = rehearse(strict, dsn, scratch=pg_servers.scratch, legs=legs)
    assert verdicts(result) == {"transaction": Verdict.FAIL, "revert": Verdict.FAIL}


def test_source_written_by_others_is_proven_and_moved_on(
    pg_servers: Servers, pg_source: MakeSource, make_pg_change: MakePgChange
) -> None:
    dsn = pg_source(SMALL)
    change = make_pg_change(
        "UPDATE items SET qty = 0;", "UPDATE items SET qty = id;", surfaces='writes = ["items"]\n'
    )

    def someone_else_writes(message: str) -> None:
        if message.startswith("leg 1/"):
            with admin(dsn) as conn:
                conn.execute("INSERT INTO notes VALUES ('written by someone else')")

    try:
        result = rehearse(
            change,
            dsn,
            scratch=pg_servers.scratch,
            legs=[LegName.REVERT],
            progress=someone_else_writes,
        )
    finally:
        with admin(dsn) as conn:
            conn.execute("DELETE FROM notes WHERE body = 'written by someone else'")
    assert leg(result, "revert").verdict is Verdict.PASS
    # What others write says nothing about what rollproof did: proven, and recorded as such.
    assert str(result.isolation.verdict) == "PROVEN_ISOLATED_NOT_PRODUCTION"
    assert result.exit_code == ExitCode.OK
    check = result.isolation.checks[-1]
    assert (check.name, check.holds) == ("source-wrote-nothing", True)
    assert result.source["after"]["moved_on"] is True
    assert result.source["after"]["evidence"].startswith("source moved on since the snapshot")
    assert result.source_fingerprint.tables["notes"].rows == 3  # the snapshot's, not now


def test_source_session_is_read_only(pg_servers: Servers, pg_source: MakeSource) -> None:
    dsn = pg_source(SMALL)
    with (
        contextlib.closing(connect_source(parse_pg_dsn(dsn))) as conn,
        pytest.raises(psycopg.errors.ReadOnlySqlTransaction),
    ):
        conn.execute("INSERT INTO notes VALUES ('x')")


def test_fingerprint_is_typed_order_independent_and_cell_sensitive(
    pg_servers: Servers, pg_source: MakeSource
) -> None:
    a = pg_source(
        "CREATE TABLE t (k integer PRIMARY KEY, v text); CREATE TABLE bag (x integer);"
        "INSERT INTO t VALUES (1, 'a'), (2, NULL), (3, '');"
        "INSERT INTO bag VALUES (1), (2), (2), (NULL);"
    )
    b = pg_source(
        "CREATE TABLE t (k integer PRIMARY KEY, v text); CREATE TABLE bag (x integer);"
        "INSERT INTO t VALUES (3, ''), (1, 'a'), (2, NULL);"
        "INSERT INTO bag VALUES (NULL), (2), (1), (2);"
    )
    typed = pg_source(
        "CREATE TABLE t (k integer PRIMARY KEY, v varchar); CREATE TABLE bag (x integer);"
        "INSERT INTO t VALUES (1, 'a'), (2, NULL), (3, '');"
        "INSERT INTO bag VALUES (1), (2), (2), (NULL);"
    )
    cell = pg_source(
        "CREATE TABLE t (k integer PRIMARY KEY, v text); CREATE TABLE bag (x integer);"
        "INSERT INTO t VALUES (1, 'a'), (2, ''), (3, '');"
        "INSERT INTO bag VALUES (1), (2), (NULL);"
    )
    fa, fb, ft, fc = (fingerprint_source(d) for d in (a, b, typed, cell))
    assert fa.digest == fb.digest
    assert fa.tables["t"].order == "primary-key"
    assert fa.tables["bag"].order == "row-digests"
    assert ft.tables["t"].digest != fa.tables["t"].digest  # same text, another column type
    assert fc.tables["t"].digest != fa.tables["t"].digest  # NULL is not ''
    assert fc.tables["bag"].digest != fa.tables["bag"].digest  # duplicates count


def test_fingerprint_covers_schema_objects_and_sequences(
    pg_servers: Servers, pg_source: MakeSource
) -> None:
    dsn = pg_source(
        DEMO_SCHEMA + "SELECT setval('orders_id_seq', 9000, false);"
        "CREATE SEQUENCE invoice_numbers START 100; SELECT nextval('invoice_numbers');"
    )
    fp = fingerprint_source(dsn)
    assert fingerprint_source(dsn, jobs=1) == fp  # parallel sessions, one snapshot: same result
    kinds = {key.split(":", 1)[0] for key in fp.schema_objects}
    assert kinds == {
        "table",
        "index",
        "trigger",
        "view",
        "sequence",
        "function",
        "type",
        "extension",
        "schema",
    }
    assert "function:audit_orders_status" in fp.schema_objects
    assert "sequence:invoice_numbers" in fp.schema_objects
    assert "sequence:orders_id_seq" not in fp.schema_objects  # part of table:orders
    assert fp.sequences["invoice_numbers"] == 100
    assert "type:event_kind" in fp.schema_objects
    # is_called false: the next value is 9000, so the counter stands one step before it.
    assert fp.sequences["orders"] == 8999
    assert fp.to_json()["engine"] == "postgresql"


# Values that compare equal but print differently. A table without a primary key holding both
# must digest the same whatever their physical order (its order is that of the rows' digests,
# not SQL equality), and differently from one holding either value twice. (The documented
# algorithm itself is checked in tests/test_pg_fingerprint_forms.py.)
EQUAL_BUT_PRINTED_DIFFERENTLY = [
    ("numeric", "1.0", "1.00"),
    ("double precision", "'-0'", "'0'"),
    ("real", "'0'", "'-0'"),
    ("interval", "'1 day'", "'24 hours'"),
    ("numeric[]", "'{1.0}'", "'{1.00}'"),
    ("jsonb", "'1.0'", "'1.00'"),
    ("bpchar", "'a'", "'a  '"),
    ("text COLLATE ci", "'a'", "'A'"),  # a nondeterministic (case-insensitive) collation
]


def test_row_digests_order_is_total_on_the_stored_values(
    pg_servers: Servers, pg_source: MakeSource
) -> None:
    def source(pairs: list[tuple[str, str]]) -> str:
        script = [
            "CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', "
            "deterministic = false);"
        ]
        for i, ((type_, _a, _b), (first, second)) in enumerate(
            zip(EQUAL_BUT_PRINTED_DIFFERENTLY, pairs, strict=True)
        ):
            script.append(f"CREATE TABLE t{i} (g integer, v {type_});")
            script.append(f"INSERT INTO t{i} VALUES (1, NULL), (1, {first}), (1, {second});")
        return pg_source("".join(script))

    forward = fingerprint_source(source([(a, b) for _t, a, b in EQUAL_BUT_PRINTED_DIFFERENTLY]))
    backward = fingerprint_source(source([(b, a) for _t, a, b in EQUAL_BUT_PRINTED_DIFFERENTLY]))
    twice = fingerprint_source(source([(a, a) for _t, a, _b in EQUAL_BUT_PRINTED_DIFFERENTLY]))
    for i, (type_, a, b) in enumerate(EQUAL_BUT_PRINTED_DIFFERENTLY):
        name = f"t{i}"
        assert forward.tables[name].order == "row-digests"
        assert forward.tables[name] == backward.tables[name], f"{type_}: {a} and {b}"
        assert forward.tables[name].digest != twice.tables[name].digest, f"{type_}: {a} {b}"


@pytest.fixture(name="owner_role")
def owner_role_fixture(pg_servers: Servers) -> Iterator[str]:
    """A role on the source cluster, dropped (on both servers) only after the source databases
    that use it: requested before `pg_source`, it is torn down after it."""
    role = f"rp_owner_{secrets.token_hex(3)}"
    with admin(pg_servers.source) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN CREATEDB").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT pg_read_all_stats TO {}").format(sql.Identifier(role)))
    yield role
    for server in (pg_servers.source, pg_servers.scratch):
        with admin(server) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_roles_the_source_uses_come_across(
    pg_servers: Servers, owner_role: str, pg_source: MakeSource, make_pg_change: MakePgChange
) -> None:
    role = owner_role
    dsn = pg_source(SMALL + f"ALTER TABLE notes OWNER TO {role};")
    change = make_pg_change(
        "INSERT INTO notes VALUES ('c');",
        "DELETE FROM notes WHERE body = 'c';",
        surfaces='writes = ["notes"]\n',
    )
    result = rehearse(change, dsn, scratch=pg_servers.scratch, legs=[LegName.REVERT])
    assert result.overall is Verdict.PASS
    check = next(c for c in result.isolation.checks if c.name == "clone-matches-source")
    assert check.holds is True
    assert "roles created on the scratch server as NOLOGIN" in check.evidence
    assert role in check.evidence
    # Attributes and memberships come across; LOGIN and passwords never do.
    with admin(pg_servers.scratch) as conn:
        row = conn.execute(
            "SELECT rolcanlogin, rolcreatedb, pg_has_role(rolname, 'pg_read_all_stats', "
            "'MEMBER') FROM pg_roles WHERE rolname = %s",
            (role,),
        ).fetchone()
    assert row == (False, True, True)


def test_planted_password_appears_nowhere(
    pg_servers: Servers, pg_source: MakeSource, make_pg_change: MakePgChange, tmp_path: Path
) -> None:
    dsn = pg_source(SMALL)
    user, password = f"rp_reader_{secrets.token_hex(3)}", f"Planted-{secrets.token_hex(12)}"
    with admin(dsn) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(user), sql.Literal(password)
            )
        )
        conn.execute(sql.SQL("GRANT pg_read_all_data TO {}").format(sql.Identifier(user)))
    secret_dsn = tcp_dsn(dsn, user, password)
    seen: list[str] = []
    stop = threading.Event()

    def watch_command_lines() -> None:
        # What `ps` shows: every process's command line, sampled while the rehearsal runs.
        while not stop.is_set():
            for proc in Path("/proc").iterdir():
                with contextlib.suppress(OSError):
                    if proc.name.isdigit():
                        seen.append((proc / "cmdline").read_bytes().decode(errors="replace"))
            time.sleep(0.005)

    messages: list[str] = []
    watcher = threading.Thread(target=watch_command_lines)
    watcher.start()
    try:
        change = make_pg_change(
            "UPDATE items SET qty = 0;",
            "UPDATE items SET qty = id;",
            surfaces='writes = ["items"]\n',
        )
        result = rehearse(change, secret_dsn, scratch=pg_servers.scratch, progress=messages.append)
    finally:
        stop.set()
        watcher.join()
    assert result.overall is Verdict.PASS
    assert any("pg_dump" in line for line in seen), "the watcher never saw pg_dump run"
    assert not [line for line in seen if password in line]
    assert not [m for m in messages if password in m]
    packet = write_packet(result, tmp_path / "packet")
    for path in packet.rglob("*"):
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path
    assert result.source["dsn"] == secret_dsn.replace(f":{password}", "")
    assert check_packet(packet).findings == ()
    with admin(dsn) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(user)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(user)))


def test_ephemeral_scratch(pg_source: MakeSource, make_pg_change: MakePgChange) -> None:
    dsn = pg_source(SMALL)
    change = make_pg_change(
        "UPDATE items SET qty = 0;", "UPDATE items SET qty = id;", surfaces='writes = ["items"]\n'
    )
    if os.geteuid() == 0:
        with pytest.raises(EnvironmentProblemError, match="refuses to run as root") as info:
            _rehearse(change, dsn, scratch="ephemeral")
        assert "--scratch postgresql://" in str(info.value)
        assert info.value.exit_code == ExitCode.ENVIRONMENT
        return
    result = rehearse(change, dsn, scratch="ephemeral", legs=[LegName.REVERT])
    assert result.overall is Verdict.PASS


def test_a_sqlite_source_takes_no_scratch_server(
    source_db: Path, make_pg_change: MakePgChange
) -> None:
    change = make_pg_change("SELECT 1;", "SELECT 1;", surfaces="")
    with pytest.raises(UsageError, match="applies only to a PostgreSQL source"):
        _rehearse(change, str(source_db), scratch="ephemeral")


def test_kept_clone_stays_until_removed(
    pg_servers: Servers, pg_source: MakeSource, make_pg_change: MakePgChange
) -> None:
    dsn = pg_source(SMALL)
    session = PostgresSession(dsn, scratch=pg_servers.scratch)
    try:
        session.fresh_clone()
        kept = session.close(keep=True)
        assert kept is not None
        assert session.clone_db in (kept / "CLONE.txt").read_text()
        assert {session.snapshot_db, session.clone_db} <= database_names(pg_servers.scratch)
    finally:
        session.close(keep=False)
    assert session.clone_db not in database_names(pg_servers.scratch)
    assert not session.workspace.exists()


def test_fresh_clone_equals_the_snapshot_and_points_are_recorded(
    pg_servers: Servers, pg_source: MakeSource, make_pg_change: MakePgChange
) -> None:
    dsn = pg_source(SMALL)
    change = make_pg_change(
        "ALTER TABLE items ADD COLUMN note text DEFAULT 'x';\n"
        "UPDATE items SET note = label WHERE id % 2 = 0;\n"
        "CREATE INDEX idx_note ON items (note);",
        "DROP INDEX idx_note;\nALTER TABLE items DROP COLUMN note;",
        surfaces='writes = ["items", "idx_note"]\n',
    )
    result = rehearse(change, dsn, scratch=pg_servers.scratch, legs=ALL_LEGS)
    assert result.overall is Verdict.PASS
    txn = leg(result, "transaction")
    before = txn.fingerprints[Point.BEFORE]
    assert before == result.source_fingerprint
    assert txn.fingerprints[Point.AFTER_APPLY].digest != before.digest
    assert txn.fingerprints[Point.AFTER_ROLLBACK].digest == before.digest
    assert leg(result, "restore").fingerprints[Point.AFTER_RESTORE].digest == before.digest
    assert not {r for r in role_names(pg_servers.scratch) if r.startswith("rollproof_")}


def test_row_level_security_never_gives_a_filtered_fingerprint(
    pg_servers: Servers, pg_source: MakeSource, make_pg_change: MakePgChange
) -> None:
    dsn = pg_source(
        SMALL + "ALTER TABLE notes ENABLE ROW LEVEL SECURITY;"
        "CREATE POLICY only_a ON notes USING (body = 'a');"
    )
    change = make_pg_change(
        "UPDATE items SET qty = 0;", "UPDATE items SET qty = id;", surfaces='writes = ["items"]\n'
    )
    result = rehearse(
        change, dsn, scratch=pg_servers.scratch, legs=[LegName.TRANSACTION, LegName.REVERT]
    )
    txn = leg(result, "transaction")
    assert txn.verdict is Verdict.NOT_APPLICABLE
    assert "row-level security" in txn.reason
    assert leg(result, "revert").verdict is Verdict.PASS
    assert result.source_fingerprint.tables["notes"].rows == 3


def test_extensions_and_their_types_come_across(
    pg_servers: Servers, pg_source: MakeSource, make_pg_change: MakePgChange
) -> None:
    dsn = pg_source(
        "CREATE EXTENSION citext;"
        "CREATE TABLE users (id integer PRIMARY KEY, email citext NOT NULL UNIQUE);"
        "INSERT INTO users VALUES (1, 'A@x.org'), (2, 'b@x.org');"
    )
    change = make_pg_change(
        "UPDATE users SET email = lower(email::text);",
        "UPDATE users SET email = 'A@x.org' WHERE id = 1;",
        surfaces='writes = ["users"]\n',
    )
    messages: list[str] = []
    result = rehearse(
        change, dsn, scratch=pg_servers.scratch, legs=[LegName.REVERT], progress=messages.append
    )
    assert result.overall is Verdict.PASS
    assert "extension:citext" in result.source_fingerprint.schema_objects
    check = next(c for c in result.isolation.checks if c.name == "clone-matches-source")
    assert check.holds is True
    assert any(m.startswith("dumping the source (") for m in messages)
    assert any('pg_restore: processing data for table "public.users"' in m for m in messages)


@pytest.mark.parametrize(
    ("scratch", "error", "message"),
    [
        pytest.param(
            "postgresql://postgres@/postgres?host=/nonexistent-socket-dir&port=1",
            EnvironmentProblemError,
            "scratch postgresql://postgres@/postgres.*: cannot connect",
            id="unreachable",
        ),
        pytest.param("mysql://h/db", UsageError, "name a PostgreSQL server", id="not-postgres"),
    ],
)
def test_bad_scratch_server(
    pg_source: MakeSource,
    make_pg_change: MakePgChange,
    scratch: str,
    error: type[Exception],
    message: str,
) -> None:
    dsn = pg_source(SMALL)
    change = make_pg_change(
        "UPDATE items SET qty = 0;", "UPDATE items SET qty = id;", surfaces='writes = ["items"]\n'
    )
    with pytest.raises(error, match=message):
        _rehearse(change, dsn, scratch=scratch)


def test_a_serial_column_and_a_function_are_declared_by_their_names(
    pg_servers: Servers, pg_source: MakeSource, make_pg_change: MakePgChange
) -> None:
    dsn = pg_source(SMALL)
    change = make_pg_change(
        "ALTER TABLE items ADD COLUMN ticket serial;\n"
        "CREATE FUNCTION item_count() RETURNS bigint LANGUAGE sql AS $$ SELECT count(*) FROM items $$;",
        "DROP FUNCTION item_count();\nALTER TABLE items DROP COLUMN ticket;",
        surfaces='reads = ["items"]\nwrites = ["items", "items.ticket", "item_count"]\n',
    )
    result = rehearse(change, dsn, scratch=pg_servers.scratch, legs=[LegName.REVERT])
    assert str(result.surfaces.scoping.status) == "READY"
    # The table's first counter keeps its name; the new column's counter is named by column.
    assert set(result.surfaces.observed_changed) == {"items", "items.ticket", "item_count"}
    assert result.surfaces.observed_undeclared == ()
    assert result.overall is Verdict.PASS


# -- incremental after-fingerprints: only what the change's role can have altered ---------------

CASCADE_SCHEMA = """
CREATE TABLE parent (id int PRIMARY KEY, label text);
CREATE TABLE child (id int PRIMARY KEY,
                    parent_id int REFERENCES parent (id) ON DELETE CASCADE, note text);
CREATE TABLE other (id int PRIMARY KEY, v text);
INSERT INTO parent SELECT g, 'p' || g FROM generate_series(1, 20) g;
INSERT INTO child SELECT g, g, 'c' || g FROM generate_series(1, 20) g;
INSERT INTO other SELECT g, 'o' || g FROM generate_series(1, 20) g;
"""


@pytest.mark.parametrize(
    "full", [pytest.param(False, id="incremental"), pytest.param(True, id="full")]
)
def test_a_cascade_into_a_table_the_role_cannot_write_is_still_caught(
    pg_servers: Servers, pg_source: MakeSource, make_pg_change: MakePgChange, full: bool
) -> None:
    # The role may write only parent; ON DELETE CASCADE deletes child rows as child's owner.
    # The revert puts parent back but not child: the foreign-key closure must re-read child.
    dsn = pg_source(CASCADE_SCHEMA)
    change = make_pg_change(
        "DELETE FROM parent WHERE id <= 5;",
        "INSERT INTO parent SELECT g, 'p' || g FROM generate_series(1, 5) g;",
        surfaces='writes = ["parent"]\n',
    )
    said: list[str] = []
    result = rehearse(
        change,
        dsn,
        scratch=pg_servers.scratch,
        legs=[LegName.REVERT, LegName.RESTORE],
        full_fingerprints=full,
        progress=said.append,
    )
    assert verdicts(result) == {"revert": Verdict.FAIL, "restore": Verdict.PASS}
    assert [d.summary for d in leg(result, "revert").differences] == ["table child: 5 rows missing"]
    reads_of_other = sum("fingerprinted table other " in m for m in said)
    # `other` is read three times for the clone's own proofs (the source, the restored
    # snapshot, the source again at the end: a clone is a server copy of the sealed snapshot
    # and carries its fingerprint); with every table read, the working clone is read against
    # the snapshot too, and `other` again at the four points after a script.
    assert reads_of_other == (8 if full else 3)


def test_a_security_definer_trigger_means_every_table_is_read(
    pg_servers: Servers, pg_source: MakeSource, make_pg_change: MakePgChange
) -> None:
    dsn = pg_source(
        "CREATE TABLE items (id int PRIMARY KEY, qty int); CREATE TABLE audit (n int);"
        "INSERT INTO items VALUES (1, 10), (2, 20);"
        "CREATE FUNCTION log_it() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
        "AS $$ BEGIN INSERT INTO audit VALUES (1); RETURN NEW; END $$;"
        "CREATE TRIGGER log_items AFTER UPDATE ON items FOR EACH ROW EXECUTE FUNCTION log_it();"
    )
    # The trigger's function runs as its owner and writes audit, which the role cannot:
    # no privilege closure can see that, so nothing is taken from before.
    change = make_pg_change(
        "UPDATE items SET qty = qty + 1 WHERE id = 1;",
        "UPDATE items SET qty = qty - 1 WHERE id = 1;",
        surfaces='writes = ["items"]\n',
    )
    result = rehearse(change, dsn, scratch=pg_servers.scratch, legs=[LegName.REVERT])
    revert = leg(result, "revert")
    assert revert.verdict is Verdict.FAIL
    assert [d.component for d in revert.differences] == ["table:audit"]
