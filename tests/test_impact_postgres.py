"""Measured impact on real PostgreSQL servers, and the same SQL read by squawk (PyPI squawk-cli).

The rehearsals here measure what each statement did inside the transaction leg's open
transaction (locks from its own backend's pg_locks, relfilenode changes, WAL). The squawk
comparison runs the linter on each statement's SQL file and the engine on the same SQL, and
renders the table docs/impact.md shows; the test fails if the docs' table is not the one the
two tools give now. Tables are 20,000 rows: a rewrite shows at any size (bench/impact.py gives
the one-million-row figures).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from rollproof.core.canonical import sha256_hex
from rollproof.core.change import Script
from rollproof.core.guard import SurfaceGuard
from rollproof.core.impact import Limit, impact_json
from rollproof.engines.postgres.session import PostgresSession
from rollproof.engines.postgres.source import fingerprint_source
from rollproof.verify.report_md import impact_lines
from tests.pg_fixtures import Servers, admin, pg_servers_fixture  # noqa: F401  (fixture)

ROWS = 20_000
DOCS = Path(__file__).resolve().parent.parent / "docs" / "impact.md"
SCHEMA = f"""
CREATE TABLE customers (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (id integer PRIMARY KEY, customer_id integer NOT NULL, total integer);
CREATE TABLE items (id integer PRIMARY KEY, name varchar(100) NOT NULL, qty integer NOT NULL);
CREATE TABLE invoices (id integer PRIMARY KEY,
                       customer_id integer NOT NULL REFERENCES customers (id));
INSERT INTO customers SELECT i, 'customer ' || i FROM generate_series(1, 1000) AS i;
INSERT INTO orders SELECT i, 1 + i % 1000, i FROM generate_series(1, {ROWS}) AS i;
INSERT INTO items SELECT i, 'item ' || i, i % 97 FROM generate_series(1, {ROWS}) AS i;
INSERT INTO invoices SELECT i, 1 + i % 1000 FROM generate_series(1, 1000) AS i;
"""
EVERY_TABLE = ("customers", "orders", "items", "invoices", "items_n_seq")


@pytest.fixture(scope="module")
def impact_source(pg_servers: Servers) -> Iterator[str]:
    """One source database for the module; its fingerprint must not change by teardown."""
    name = f"rp_impact_{secrets.token_hex(4)}"
    with admin(pg_servers.source) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = pg_servers.source_db(name)
    with admin(dsn) as conn:
        conn.execute(SCHEMA.encode())
    before = fingerprint_source(dsn).digest
    yield dsn
    assert fingerprint_source(dsn).digest == before, "the source database changed"
    with admin(pg_servers.source) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE {} WITH (FORCE)").format(
                sql.Identifier(conninfo_to_dict(dsn)["dbname"])
            )
        )


@pytest.fixture(scope="module")
def session(impact_source: str, pg_servers: Servers) -> Iterator[PostgresSession]:
    """One clone of the source, under a change role that may write every table; each
    measurement starts from a fresh copy of the snapshot."""
    guard = SurfaceGuard(reads=(), writes=EVERY_TABLE)
    made = PostgresSession(impact_source, scratch=pg_servers.scratch, guard=guard)
    try:
        made.fresh_clone()
        yield made
    finally:
        made.close(keep=False)


def measured(
    session: PostgresSession, text: str, *, limits: dict[Limit, int] | None = None
) -> dict[str, Any]:
    """report.json's impact section for `text`, run as the transaction leg runs it. Its
    ROLLBACK leaves the clone as the snapshot was, which the next measurement starts from."""
    outcome = session.run_in_transaction(Script(text, sha256_hex(text.encode()), None), {}, None)
    assert outcome.script.ok, outcome.script.error
    assert outcome.impact is not None
    rows = {name: t.rows for name, t in session.snapshot_fingerprint().tables.items()}
    impact = impact_json(outcome.impact, rows_before=rows, change_limits=limits)
    assert impact["engine"] == "postgresql"
    assert impact["measured"] is True
    return impact


def _locks(impact: dict[str, Any]) -> dict[str, str]:
    return {lk["relation"]: lk["mode"] for lk in impact["locks"]}


def test_a_volatile_default_rewrites_the_table_under_access_exclusive(
    session: PostgresSession,
) -> None:
    impact = measured(
        session,
        "ALTER TABLE items ADD COLUMN seen_at timestamptz DEFAULT clock_timestamp();",
        limits={Limit.MAX_ACCESS_EXCLUSIVE_MS: 0},
    )
    assert _locks(impact)["items"] == "ACCESS EXCLUSIVE"
    [held] = [lk for lk in impact["locks"] if lk["relation"] == "items"]
    assert held["held_us"] == impact["duration_us"] > 0  # taken by the only statement
    rewrites = {w["relation"]: w for w in impact["rewrites"]}
    assert set(rewrites) == {"items", "items_pkey"}  # the table, and its index rebuilt with it
    table = rewrites["items"]
    assert (table["kind"], table["rows_before"]) == ("table", ROWS)
    assert table["bytes"] > 100 * 8192  # 20,000 rows of a new heap
    # wal_level replica: the new heap is written to WAL in full.
    assert impact["settings"]["wal_level"] in ("replica", "logical")
    assert impact["wal_bytes"] >= table["bytes"]
    assert [b["relation"] for b in impact["indexes_built"]] == ["items_pkey"]
    [over] = impact["over_limits"]
    assert over.startswith("max_access_exclusive_ms = 0: ACCESS EXCLUSIVE on items held ")
    md = "\n".join(impact_lines(impact))
    assert "- ACCESS EXCLUSIVE on items (table): blocks reads and writes, from statement 1" in md
    assert f"- rewritten by statement 1: items (table, {table['bytes']:,} bytes), " in md
    assert f"{impact['wal_bytes']:,} bytes of WAL (wal_level " in md
    assert "- **over a limit**: max_access_exclusive_ms = 0: ACCESS EXCLUSIVE on items" in md


def test_a_non_volatile_default_rewrites_nothing(session: PostgresSession) -> None:
    impact = measured(session, "ALTER TABLE items ADD COLUMN note text DEFAULT 'n/a';")
    assert _locks(impact)["items"] == "ACCESS EXCLUSIVE"  # the lock is the same...
    assert impact["rewrites"] == []
    assert impact["indexes_built"] == []
    assert impact["wal_bytes"] < 64 * 1024  # catalog rows only


def test_a_foreign_key_locks_the_referenced_table(session: PostgresSession) -> None:
    impact = measured(
        session,
        "ALTER TABLE orders ADD CONSTRAINT orders_customer_fk "
        "FOREIGN KEY (customer_id) REFERENCES customers (id);",
    )
    locks = _locks(impact)
    assert locks["orders"] == "SHARE ROW EXCLUSIVE"
    assert locks["customers"] == "SHARE ROW EXCLUSIVE"  # the table the key points at
    assert impact["rewrites"] == []


def test_each_statement_lists_only_the_locks_it_added(session: PostgresSession) -> None:
    impact = measured(
        session,
        "CREATE INDEX items_qty ON items (qty);\n"
        "ALTER TABLE items ALTER COLUMN qty TYPE bigint;\n"
        "CREATE TABLE audit (id integer);",
    )
    first, second, third = impact["statements"]
    assert {lk["relation"]: lk["mode"] for lk in first["locks"]}["items"] == "SHARE"
    assert [w["relation"] for w in first["indexes_built"]] == ["items_qty"]
    assert {lk["relation"]: lk["mode"] for lk in second["locks"]}["items"] == "ACCESS EXCLUSIVE"
    assert [w["relation"] for w in second["rewritten"] if w["kind"] == "table"] == ["items"]
    assert third["locks"] == []  # a table the change creates is nobody else's to wait on
    # ACCESS EXCLUSIVE is held from statement 2 until commit.
    [items] = [lk for lk in impact["locks"] if lk["relation"] == "items"]
    assert (items["statement"], items["held_us"]) == (
        2,
        second["duration_us"] + third["duration_us"],
    )


# --- side by side with squawk -----------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    sql: str
    target: str
    """The table the statement names (what a linter reads)."""


CASES = (
    Case(
        "volatile-default",
        "ALTER TABLE items ADD COLUMN seen_at timestamptz DEFAULT clock_timestamp();",
        "items",
    ),
    Case("constant-default", "ALTER TABLE items ADD COLUMN note text DEFAULT 'n/a';", "items"),
    Case("serial-column", "ALTER TABLE items ADD COLUMN n serial;", "items"),
    Case("widen-varchar", "ALTER TABLE items ALTER COLUMN name TYPE varchar(200);", "items"),
    Case("int-to-bigint", "ALTER TABLE items ALTER COLUMN qty TYPE bigint;", "items"),
    Case("set-not-null", "ALTER TABLE items ALTER COLUMN name SET NOT NULL;", "items"),
    Case("create-index", "CREATE INDEX items_qty ON items (qty);", "items"),
    Case(
        "add-foreign-key",
        "ALTER TABLE orders ADD CONSTRAINT orders_customer_fk "
        "FOREIGN KEY (customer_id) REFERENCES customers (id);",
        "orders",
    ),
    Case("drop-referencing-table", "DROP TABLE invoices;", "invoices"),
)
REWRITE_RULES = frozenset({"adding-field-with-default", "changing-column-type"})
LOCK_WORDS = re.compile(r"Missing `set lock_timeout` before potentially slow ([A-Z ]+) lock")


def squawk_binary() -> str:
    """squawk as pip installed it beside this interpreter (its scripts directory need not be
    on PATH), or on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "squawk"
    found = str(beside) if beside.is_file() else shutil.which("squawk")
    if found is None:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("squawk (PyPI squawk-cli, a dev dependency) is not installed in CI")
        pytest.skip("squawk is not installed: pip install -e '.[dev]' installs squawk-cli")
    return found


def squawk_says(binary: str, path: Path) -> tuple[str, bool, bool]:
    """What squawk reads from the file: the lock mode it names for the statement, whether it
    warns of a rewrite, and whether it says the lock is taken on both tables of a key."""
    run = subprocess.run(
        [binary, "--reporter", "json", "--pg-version", "15", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode in (0, 1), run.stderr
    violations = json.loads(run.stdout)
    rules = {v["rule_name"] for v in violations}
    modes = [m.group(1) for v in violations if (m := LOCK_WORDS.search(v["message"]))]
    both = any("on both tables" in v["message"] for v in violations)
    return (modes[0] if modes else "-"), bool(rules & REWRITE_RULES), both


def comparison_table(rows: list[tuple[Case, tuple[str, bool, bool], dict[str, Any]]]) -> str:
    """The docs' table: what squawk says, what was measured (tables only), and whether they
    agree. No times or sizes: they vary from run to run, the modes and rewrites do not."""
    lines = [
        "| statement | squawk: lock | squawk: rewrite | measured: strongest lock per table | "
        "measured: rewritten | agree |",
        "|---|---|---|---|---|---|",
    ]
    for case, (mode, rewrite, both), impact in rows:
        locks = {lk["relation"]: lk["mode"] for lk in impact["locks"] if lk["kind"] == "table"}
        tables = sorted(w["relation"] for w in impact["rewrites"] if w["kind"] == "table")
        others = sorted(
            t for t, m in locks.items() if t != case.target and not (both and m == mode)
        )
        reasons = [
            why
            for why, bad in (
                ("squawk warns of a rewrite that does not happen", rewrite and not tables),
                ("a rewrite squawk does not warn of", bool(tables) and not rewrite),
                (
                    f"squawk names {mode}, measured {locks.get(case.target, '-')}",
                    locks.get(case.target, "-") != mode,
                ),
                (f"a lock on {', '.join(others)} squawk does not name", bool(others)),
            )
            if bad
        ]
        shown = ", ".join(f"{t} {m}" for t, m in sorted(locks.items()))
        lint = f"{mode} (both tables)" if both else mode
        lines.append(
            f"| `{case.sql}` | {lint} | {'yes' if rewrite else 'no'} | {shown} | "
            f"{', '.join(tables) or 'none'} | {'**no**: ' + '; '.join(reasons) if reasons else 'yes'} |"
        )
    return "\n".join(lines) + "\n"


def test_squawk_and_the_measurement_side_by_side(tmp_path: Path, session: PostgresSession) -> None:
    binary = squawk_binary()
    rows = []
    for case in CASES:
        path = tmp_path / f"{case.name}.sql"
        path.write_text(case.sql + "\n")
        rows.append((case, squawk_says(binary, path), measured(session, case.sql)))
    by_name = {case.name: (lint, impact) for case, lint, impact in rows}

    def rewritten(name: str) -> list[str]:
        return [w["relation"] for w in by_name[name][1]["rewrites"] if w["kind"] == "table"]

    # Where they agree: a volatile default rewrites, a constant one does not, both under
    # ACCESS EXCLUSIVE; a foreign key takes SHARE ROW EXCLUSIVE on both tables.
    assert by_name["volatile-default"][0][:2] == ("ACCESS EXCLUSIVE", True)
    assert rewritten("volatile-default") == ["items"]
    assert by_name["constant-default"][0][:2] == ("ACCESS EXCLUSIVE", False)
    assert rewritten("constant-default") == []
    assert by_name["add-foreign-key"][0] == ("SHARE ROW EXCLUSIVE", False, True)
    fk_locks = _locks(by_name["add-foreign-key"][1])
    assert (fk_locks["orders"], fk_locks["customers"]) == ("SHARE ROW EXCLUSIVE",) * 2
    # Where they differ: a serial column's default (nextval) is volatile and rewrites the table,
    # which squawk does not warn of; widening a varchar rewrites nothing, which it warns of;
    # dropping a table that references another takes ACCESS EXCLUSIVE on the other table too.
    assert by_name["serial-column"][0][1] is False
    assert rewritten("serial-column") == ["items"]
    assert by_name["widen-varchar"][0][1] is True
    assert rewritten("widen-varchar") == []
    dropped = by_name["drop-referencing-table"]
    assert dropped[0] == ("ACCESS EXCLUSIVE", False, False)  # nothing said of customers
    assert _locks(dropped[1])["customers"] == "ACCESS EXCLUSIVE"

    table = comparison_table(rows)
    (tmp_path / "comparison.md").write_text(table)
    assert table in DOCS.read_text(), (
        "docs/impact.md's squawk table is not what the two tools give now:\n" + table
    )
