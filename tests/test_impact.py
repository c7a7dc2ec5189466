"""Measured impact on real SQLite files, impact limits in change.toml and rollproof.toml, and the
validator's check of the impact section's arithmetic (PostgreSQL: tests/test_impact_postgres.py).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rollproof.core.change import load_change
from rollproof.core.errors import ChangeError
from rollproof.core.impact import (
    Figure,
    Limit,
    blocks,
    impact_record,
    is_impact_record,
    over_limits,
    recomputed_impact,
    record_over_limits,
    stronger,
)
from rollproof.core.model import LegName
from rollproof.core.policy import PolicyError, load_policy, policy_document, policy_from_document
from rollproof.rehearse.flow import RehearsalResult
from rollproof.rehearse.packet import write_report
from rollproof.rehearse.report import report_json, report_markdown
from rollproof.verify.findings import FindingCode
from rollproof.verify.reader import check_packet
from tests.conftest import assert_valid_report, rehearse_checked
from tests.packet_fixtures import read_tree, subprocess_env

ROWS = 20_000

REBUILD = """
CREATE TABLE items_new (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER NOT NULL);
INSERT INTO items_new SELECT id, name, qty FROM items;
DROP TABLE items;
ALTER TABLE items_new RENAME TO items;
CREATE INDEX items_qty ON items (qty);
"""
UNREBUILD = """
DROP INDEX items_qty;
CREATE TABLE items_old (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER);
INSERT INTO items_old SELECT id, name, qty FROM items;
DROP TABLE items;
ALTER TABLE items_old RENAME TO items;
"""
REBUILD_SURFACES = '[surfaces]\nwrites = ["items", "items_new", "items_old", "items_qty"]\n'


@pytest.fixture(scope="module")
def items_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("prod") / "prod.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER)")
        conn.executemany(
            "INSERT INTO items VALUES (?, ?, ?)",
            ((i, f"item number {i:08d}", i % 97) for i in range(1, ROWS + 1)),
        )
    return path


def _change(tmp_path: Path, apply: str, revert: str, *, extra: str = "") -> Path:
    cdir = tmp_path / "change"
    cdir.mkdir()
    (cdir / "change.toml").write_text(
        f'apply_sql = """{apply}"""\nrevert_sql = """{revert}"""\n{extra}\n{REBUILD_SURFACES}'
    )
    return cdir


def _rehearse(cdir: Path, source: Path, **kwargs: Any) -> RehearsalResult:
    result = rehearse_checked(load_change(cdir), f"sqlite:///{source}", **kwargs)
    assert_valid_report(report_json(result))
    return result


def test_a_table_rebuild_is_measured_statement_by_statement(tmp_path: Path, items_db: Path) -> None:
    result = _rehearse(_change(tmp_path, REBUILD, UNREBUILD), items_db)
    impact = report_json(result)["impact"]
    assert (impact["engine"], impact["measured"], impact["reason"]) == ("sqlite", True, None)
    statements = impact["statements"]
    assert [s["statement"] for s in statements] == [
        "CREATE TABLE items_new (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER NOT NU...",
        "INSERT INTO items_new SELECT id, name, qty FROM items;",
        "DROP TABLE items;",
        "ALTER TABLE items_new RENAME TO items;",
        "CREATE INDEX items_qty ON items (qty);",
    ]
    # The copy changed every row; the rename put a new root page under the old name.
    assert [s["rows_changed"] for s in statements] == [0, ROWS, 0, 0, 0]
    assert [[w["relation"] for w in s["rewritten"]] for s in statements] == [
        [],
        [],
        [],
        ["items"],
        [],
    ]
    assert [w["relation"] for w in statements[4]["indexes_built"]] == ["items_qty"]
    [rebuilt] = impact["rewrites"]
    assert (rebuilt["relation"], rebuilt["kind"], rebuilt["statement"]) == ("items", "table", 4)
    assert rebuilt["rows_before"] == ROWS  # from the snapshot's fingerprint
    assert rebuilt["bytes"] > 4096 * 100  # 20,000 rows do not fit in a hundred pages
    # Pages: the copy wrote the new table's pages; the whole change wrote at least the old
    # and the new table once each.
    assert statements[1]["pages_written"] > 100
    assert impact["pages_written"] == sum(s["pages_written"] for s in statements)
    assert impact["pages_written"] > 2 * 100
    # The write lock is held from the first statement that wrote a page until commit.
    first = next(s["index"] for s in statements if s["pages_written"])
    held = sum(s["duration_us"] for s in statements if s["index"] >= first)
    assert impact["write_lock_us"] == held > 0
    assert impact["duration_us"] == sum(s["duration_us"] for s in statements)
    assert (impact["locks"], impact["wal_bytes"]) == ([], None)  # PostgreSQL's figures
    md = report_markdown(result)
    assert "- rebuilt by statement 4: items (table, " in md
    assert f", {ROWS:,} rows before" in md
    assert "| 2 | `INSERT INTO items_new SELECT id, name, qty FROM items;` |" in md


def test_adding_a_column_rebuilds_nothing(tmp_path: Path, items_db: Path) -> None:
    cdir = _change(
        tmp_path,
        "ALTER TABLE items ADD COLUMN note TEXT DEFAULT 'n/a';",
        "ALTER TABLE items DROP COLUMN note;",
    )
    impact = report_json(_rehearse(cdir, items_db))["impact"]
    assert impact["measured"] is True
    assert impact["rewrites"] == []
    assert impact["indexes_built"] == []
    [statement] = impact["statements"]
    # Only the schema table's page: SQLite records a constant default without touching rows.
    assert (statement["rows_changed"], statement["pages_written"]) == (0, 1)


def test_without_the_transaction_leg_nothing_is_measured(tmp_path: Path, items_db: Path) -> None:
    cdir = _change(
        tmp_path,
        "ALTER TABLE items ADD COLUMN note TEXT;",
        "ALTER TABLE items DROP COLUMN note;",
        extra="[impact]\nmax_duration_ms = 60000",
    )
    result = _rehearse(cdir, items_db, legs=(LegName.REVERT,))
    impact = report_json(result)["impact"]
    assert (impact["measured"], impact["reason"]) == (
        False,
        "the transaction leg was not run; impact is measured inside its transaction",
    )
    assert impact["statements"] == []
    assert impact["duration_us"] is None
    # A limit with nothing measured to check it against is over: unknown is never within.
    assert impact["over_limits"] == [
        "max_duration_ms = 60,000: the impact was not measured, so it cannot be checked"
    ]
    assert "- not measured: the transaction leg was not run" in report_markdown(result)


@pytest.mark.parametrize(
    ("limit", "over"),
    [
        pytest.param(ROWS - 1, True, id="a-limit-below-the-table-holds-it"),
        pytest.param(ROWS, False, id="a-limit-at-the-table-lets-it-through"),
    ],
)
def test_a_rewrite_limit_is_checked_against_the_rows_before(
    tmp_path: Path, items_db: Path, limit: int, over: bool
) -> None:
    cdir = _change(
        tmp_path, REBUILD, UNREBUILD, extra=f"[impact]\nforbid_rewrite_over_rows = {limit}"
    )
    result = _rehearse(cdir, items_db, legs=(LegName.TRANSACTION,))
    impact = report_json(result)["impact"]
    assert impact["limits"] == {"change": {"forbid_rewrite_over_rows": limit}, "policy": {}}
    expected = [
        f"forbid_rewrite_over_rows = {limit:,}: items rewritten ({ROWS:,} rows) by statement 4"
    ]
    assert impact["over_limits"] == (expected if over else [])
    assert ("**over a limit**" in report_markdown(result)) is over


def test_policy_limits_join_the_changes_and_the_stricter_counts(
    tmp_path: Path, items_db: Path
) -> None:
    cdir = _change(tmp_path, REBUILD, UNREBUILD, extra="[impact]\nmax_write_lock_ms = 3600000")
    policy_file = tmp_path / "rollproof.toml"
    policy_file.write_text("[impact]\nmax_write_lock_ms = 0\n")
    result = _rehearse(cdir, items_db, legs=(LegName.TRANSACTION,), policy=load_policy(policy_file))
    impact = report_json(result)["impact"]
    assert impact["limits"] == {
        "change": {"max_write_lock_ms": 3600000},
        "policy": {"max_write_lock_ms": 0},
    }
    [line] = impact["over_limits"]
    assert line.startswith("max_write_lock_ms = 0: the database write lock held ")


NON_NEGATIVE = "impact.max_wal_bytes: must be a non-negative integer"


@pytest.mark.parametrize(
    ("table", "message", "in_policy"),
    [
        pytest.param("[impact]\nmax_wal_bytes = -1", NON_NEGATIVE, NON_NEGATIVE, id="negative"),
        pytest.param("[impact]\nmax_wal_bytes = true", NON_NEGATIVE, NON_NEGATIVE, id="boolean"),
        pytest.param(
            "[impact]\nmax_lock_ms = 5",
            "impact.max_lock_ms: unknown key; limits are: max_duration_ms, "
            "max_access_exclusive_ms, forbid_rewrite_over_rows, max_wal_bytes, max_write_lock_ms",
            "impact.max_lock_ms: unknown key",
            id="unknown-key",
        ),
        pytest.param(
            "impact = 5", "impact: must be a table", "impact: must be a table", id="not-a-table"
        ),
    ],
)
def test_a_malformed_impact_table_is_refused_with_the_key(
    tmp_path: Path, table: str, message: str, in_policy: str
) -> None:
    cdir = tmp_path / "c"
    cdir.mkdir()
    (cdir / "change.toml").write_text(f'apply_sql = "SELECT 1;"\n{table}\n')
    with pytest.raises(ChangeError) as e:
        load_change(cdir)
    assert str(e.value) == f"{cdir / 'change.toml'}: {message}"
    policy = tmp_path / "rollproof.toml"
    policy.write_text(f"{table}\n")
    with pytest.raises(PolicyError) as p:
        load_policy(policy)
    assert str(p.value) == f"{policy}: {in_policy}"


def test_a_malformed_limit_is_one_line_and_exit_2_from_the_command_line(
    tmp_path: Path, items_db: Path
) -> None:
    cdir = _change(tmp_path, "SELECT 1;", "SELECT 1;", extra="[impact]\nmax_wal_bytes = 1.5")
    run = subprocess.run(
        [sys.executable, "-m", "rollproof", "rehearse", str(cdir), "--source", str(items_db)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        check=False,
    )
    assert run.returncode == 2
    assert run.stderr == (
        f"rollproof: {cdir / 'change.toml'}: impact.max_wal_bytes: must be a non-negative integer\n"
    )


def test_the_policy_document_carries_limits_only_when_set(tmp_path: Path) -> None:
    base = '[governance]\nledger = "l.db"\n'
    plain = tmp_path / "plain.toml"
    plain.write_text(base)
    limited = tmp_path / "limited.toml"
    limited.write_text(base + "[impact]\nmax_access_exclusive_ms = 250\n")
    assert "impact_limits" not in policy_document(load_policy(plain))
    doc = policy_document(load_policy(limited))
    assert doc["impact_limits"] == {"max_access_exclusive_ms": 250}
    again = policy_from_document(doc, ledger="l.db", checkpoint=tmp_path / "c")
    assert again.governed().impact_limits == {Limit.MAX_ACCESS_EXCLUSIVE_MS: 250}
    with pytest.raises(PolicyError, match=r"impact_limits\.max_wal_bytes: must be a non-negative"):
        policy_from_document(
            {**doc, "impact_limits": {"max_wal_bytes": "1"}}, ledger="l.db", checkpoint=tmp_path
        )


def test_the_validator_refuses_an_impact_section_its_own_figures_do_not_give(
    tmp_path: Path, items_db: Path
) -> None:
    cdir = _change(tmp_path, REBUILD, UNREBUILD, extra="[impact]\nforbid_rewrite_over_rows = 1")
    packet = write_report(_rehearse(cdir, items_db), tmp_path / "packet")
    assert check_packet(packet).ok
    report = json.loads((packet / "report.json").read_bytes())
    assert recomputed_impact(report["impact"], {"items": ROWS}) == report["impact"]

    from rollproof.assurance.selftest import edit_report

    def forged(change: Any) -> list[FindingCode]:
        files = edit_report(read_tree(packet), change)
        out = tmp_path / f"forged-{len(list(tmp_path.iterdir()))}"
        for rel, data in files.items():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_bytes(data)
        return list(check_packet(out).codes)

    # An over-limit line dropped, a lock time shortened, a row count halved: each refused.
    assert forged(lambda r: r["impact"].update(over_limits=[])) == [FindingCode.IMPACT_CONTRADICTS]
    assert forged(lambda r: r["impact"].update(write_lock_us=1)) == [FindingCode.IMPACT_CONTRADICTS]
    assert forged(lambda r: r["impact"]["rewrites"][0].update(rows_before=ROWS // 2)) == [
        FindingCode.IMPACT_CONTRADICTS
    ]


# --- the pure rules ----------------------------------------------------------------------------


def test_lock_modes_order_and_what_they_block() -> None:
    assert stronger("SHARE", "ROW EXCLUSIVE") == "SHARE"
    assert stronger("ACCESS SHARE", "ACCESS EXCLUSIVE") == "ACCESS EXCLUSIVE"
    assert stronger(None, "ROW SHARE") == "ROW SHARE"
    assert blocks("ACCESS EXCLUSIVE") == "blocks reads and writes"
    assert blocks("SHARE ROW EXCLUSIVE") == "blocks writes"
    assert blocks("SHARE") == "blocks writes"
    assert blocks("SHARE UPDATE EXCLUSIVE") == "blocks VACUUM, index builds and schema changes"
    assert blocks("ACCESS SHARE") == "blocks only exclusive schema changes"


def test_over_limits_counts_unknown_as_over_and_skips_figures_an_engine_lacks() -> None:
    figures = {
        Limit.MAX_DURATION_MS: Figure(12, "the apply's statements ran 11.2 ms"),
        Limit.FORBID_REWRITE_OVER_ROWS: Figure(
            None, "t rewritten, its row count before is not recorded"
        ),
    }
    limits = {
        Limit.MAX_DURATION_MS: 12,
        Limit.FORBID_REWRITE_OVER_ROWS: 10,
        Limit.MAX_WAL_BYTES: 0,  # a SQLite change has no WAL figure: the limit does not apply
    }
    assert over_limits(figures, limits) == [
        "forbid_rewrite_over_rows = 10: t rewritten, its row count before is not recorded"
    ]
    assert over_limits(figures, {Limit.MAX_DURATION_MS: 11}) == [
        "max_duration_ms = 11: the apply's statements ran 11.2 ms"
    ]
    assert over_limits({}, {}) == []


def test_the_ledger_record_keeps_the_figures_and_is_judged_on_limits_in_force(
    tmp_path: Path, items_db: Path
) -> None:
    result = _rehearse(
        _change(tmp_path, REBUILD, UNREBUILD, extra="[impact]\nmax_duration_ms = 3600000"),
        items_db,
        legs=(LegName.TRANSACTION,),
    )
    record = impact_record(report_json(result)["impact"])
    assert is_impact_record(record)
    assert record["change_limits"] == {"max_duration_ms": 3600000}
    assert set(record["figures"]) == {
        "max_duration_ms",
        "forbid_rewrite_over_rows",
        "max_write_lock_ms",
    }
    assert record_over_limits(record, {}) == []
    assert record_over_limits(record, {Limit.FORBID_REWRITE_OVER_ROWS: ROWS}) == []
    assert record_over_limits(record, {Limit.FORBID_REWRITE_OVER_ROWS: 100}) == [
        f"forbid_rewrite_over_rows = 100: items rewritten ({ROWS:,} rows) by statement 4"
    ]
    # A rehearsal recorded without a measurement cannot be within a limit.
    assert record_over_limits(None, {Limit.MAX_DURATION_MS: 5}) == [
        "max_duration_ms = 5: the impact was not measured, so it cannot be checked"
    ]
    assert not is_impact_record(
        {**record, "figures": {"max_lock_ms": record["figures"]["max_duration_ms"]}}
    )
