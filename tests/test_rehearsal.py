"""Rehearsals on real SQLite files: every leg's PASS and FAIL, with the reason and what differs."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from rollproof.core.errors import ExitCode, IsolationError, SourceError, UsageError
from rollproof.core.model import LegName, Point, Verdict
from rollproof.engines.sqlite.session import SqliteSession
from rollproof.rehearse.flow import RehearsalResult, parse_legs
from rollproof.rehearse.flow import rehearse as _rehearse
from rollproof.rehearse.report import report_json, report_markdown
from tests.conftest import MakeChange, assert_valid_report, rehearse_checked, sha256_file

ALL_LEGS = list(LegName)


def rehearse(*args: Any, source_may_change: bool = False, **kwargs: Any) -> RehearsalResult:
    """Every report a test produces must validate against the report schema, and (unless the
    test itself writes the source) the source's bytes must be unchanged."""
    result = _rehearse(*args, **kwargs) if source_may_change else rehearse_checked(*args, **kwargs)
    assert_valid_report(report_json(result))
    assert report_markdown(result).startswith(
        f"# Rehearsal of `{result.change.id}`: {result.overall}"
    )
    return result


def verdicts(result: RehearsalResult) -> dict[str, Verdict]:
    return {str(leg.name): leg.verdict for leg in result.legs}


def leg(result: RehearsalResult, name: str):  # type: ignore[no-untyped-def]
    return next(x for x in result.legs if x.name == name)


def test_reversible_change_passes_every_leg(source_db: Path, make_change: MakeChange) -> None:
    change = make_change(
        "ALTER TABLE customers ADD COLUMN email TEXT DEFAULT 'x';\n"
        "UPDATE customers SET email = name || '@example.com' WHERE id % 2 = 0;\n"
        "CREATE INDEX idx_email ON customers(email);\n",
        "DROP INDEX idx_email;\nALTER TABLE customers DROP COLUMN email;\n",
        "SELECT count(*) FROM customers WHERE email IS NOT NULL;",
    )
    result = rehearse(change, str(source_db), legs=ALL_LEGS)
    assert verdicts(result) == {
        "read-only": Verdict.PASS,
        "transaction": Verdict.PASS,
        "revert": Verdict.PASS,
        "restore": Verdict.PASS,
        "reapply": Verdict.PASS,
    }
    assert result.overall is Verdict.PASS
    assert result.exit_code == ExitCode.OK
    assert str(result.isolation.verdict) == "PROVEN_ISOLATED_NOT_PRODUCTION"
    txn = leg(result, "transaction")
    before = txn.fingerprints[Point.BEFORE]
    assert before == result.source_fingerprint
    assert txn.fingerprints[Point.AFTER_APPLY].digest != before.digest
    assert txn.fingerprints[Point.AFTER_ROLLBACK].digest == before.digest
    assert leg(result, "revert").fingerprints[Point.AFTER_REVERT].digest == before.digest
    assert leg(result, "restore").fingerprints[Point.AFTER_RESTORE].digest == before.digest
    reapply = leg(result, "reapply")
    assert (
        reapply.fingerprints[Point.AFTER_REAPPLY].digest
        == reapply.fingerprints[Point.AFTER_APPLY].digest
    )
    assert [str(r.invariant) for r in txn.invariants] == [
        "after_apply != before",
        "after_rollback == before",
    ]
    assert all(r.holds for r in txn.invariants)


def test_legs_run_and_are_reported_in_rollproofs_order_however_they_are_listed(
    source_db: Path, make_change: MakeChange, tmp_path: Path
) -> None:
    """A library caller listing legs out of order, or twice, once got a packet with its legs in
    that order, which the validator refuses (LEGS_MALFORMED)."""
    from rollproof.cli import main
    from rollproof.rehearse.packet import write_report

    change = make_change(
        "UPDATE customers SET name = name || '!';",
        "UPDATE customers SET name = substr(name, 1, length(name) - 1);",
    )
    given = [LegName.RESTORE, LegName.REVERT, LegName.TRANSACTION, LegName.REVERT]
    result = rehearse(change, str(source_db), legs=given)
    assert [x.name for x in result.legs] == [LegName.TRANSACTION, LegName.REVERT, LegName.RESTORE]
    assert result.overall is Verdict.PASS
    packet = write_report(result, tmp_path / "packet")
    assert main(["validate", str(packet)]) == 0


def test_lossy_revert_fails_and_says_what_was_lost(
    source_db: Path, make_change: MakeChange
) -> None:
    change = make_change(
        "ALTER TABLE customers DROP COLUMN fax;", "ALTER TABLE customers ADD COLUMN fax TEXT;"
    )
    result = rehearse(change, str(source_db))
    assert verdicts(result) == {
        "read-only": Verdict.NOT_APPLICABLE,
        "transaction": Verdict.PASS,
        "revert": Verdict.FAIL,
        "restore": Verdict.PASS,
    }
    assert result.overall is Verdict.FAIL
    assert result.exit_code == ExitCode.CHECK_FAILED
    revert = leg(result, "revert")
    [diff] = revert.differences
    assert diff.component == "table:customers"
    assert (
        diff.summary
        == "table customers: 100 rows differ; fax: 100 values lost (set before, NULL now)"
    )
    assert diff.detail["values_now_null"] == {"fax": 100}
    assert revert.reason is not None
    assert revert.reason.startswith("after_revert == before does not hold: table customers")


def test_revert_that_loses_rows_counts_them(source_db: Path, make_change: MakeChange) -> None:
    change = make_change(
        "DELETE FROM orders WHERE status = 'paid';",
        "UPDATE orders SET status = 'paid' WHERE id % 3 = 2;",
    )
    result = rehearse(change, str(source_db), legs=[LegName.REVERT])
    [diff] = leg(result, "revert").differences
    assert diff.detail["rows_missing"] == 167
    assert diff.detail["rows_changed"] == 167
    assert diff.detail["columns_changed"] == {"status": 167}
    assert "167 rows missing" in diff.summary


@pytest.mark.parametrize(
    "apply",
    [
        pytest.param("UPDATE customers SET name = name || '' WHERE 0;", id="update-nothing"),
        pytest.param("SELECT count(*) FROM customers;", id="select-only"),
    ],
)
def test_apply_that_changes_nothing_fails_the_integrity_invariant(
    source_db: Path, make_change: MakeChange, apply: str
) -> None:
    result = rehearse(make_change(apply, "SELECT 1;"), str(source_db))
    for name in ("transaction", "revert", "restore"):
        x = leg(result, name)
        assert x.verdict is Verdict.FAIL
        assert x.reason is not None
        assert x.reason.startswith(
            "apply changed nothing, so this leg proves nothing about rollback"
        )
        assert next(r.holds for r in x.invariants) is False
    assert result.overall is Verdict.FAIL


def test_declared_no_mutation_change_passes_when_nothing_changes(
    source_db: Path, make_change: MakeChange
) -> None:
    change = make_change("SELECT count(*) FROM customers;", "", extra="no_mutation = true\n")
    result = rehearse(change, str(source_db))
    assert verdicts(result)["transaction"] is Verdict.PASS
    assert verdicts(result)["revert"] is Verdict.PASS
    assert (
        next(str(r.invariant) for r in leg(result, "revert").invariants) == "after_apply == before"
    )
    assert result.overall is Verdict.PASS


def test_declared_no_mutation_change_that_mutates_fails(
    source_db: Path, make_change: MakeChange
) -> None:
    change = make_change(
        "DELETE FROM tags WHERE label = 'c';",
        "INSERT INTO tags VALUES ('c', NULL);",
        extra="no_mutation = true\n",
    )
    result = rehearse(change, str(source_db), legs=[LegName.TRANSACTION])
    x = leg(result, "transaction")
    assert x.verdict is Verdict.FAIL
    assert x.reason == "the change is declared no_mutation but apply changed the database"


def test_script_with_its_own_transaction_is_not_applicable_in_the_transaction_leg(
    source_db: Path, make_change: MakeChange
) -> None:
    change = make_change(
        "BEGIN;\nINSERT INTO tags VALUES ('d', 4);\nCOMMIT;\n",
        "BEGIN;\nDELETE FROM tags WHERE label = 'd';\nCOMMIT;\n",
    )
    result = rehearse(change, str(source_db))
    txn = leg(result, "transaction")
    assert txn.verdict is Verdict.NOT_APPLICABLE
    assert txn.reason == (
        "apply: the script manages its own transaction (statement 1: `BEGIN;`); "
        "a BEGIN..ROLLBACK around it would not be the transaction it runs in"
    )
    assert verdicts(result)["revert"] is Verdict.PASS
    assert verdicts(result)["restore"] is Verdict.PASS
    assert result.overall is Verdict.PASS  # the rollback paths that could run were proven


def test_vacuum_cannot_be_rehearsed_inside_a_transaction(
    source_db: Path, make_change: MakeChange
) -> None:
    change = make_change(
        "DELETE FROM tags WHERE label = 'c';\nVACUUM;", "INSERT INTO tags VALUES ('c', NULL);"
    )
    # sqlglot cannot read VACUUM's scope, so the rehearsal needs --allow-undeclared here.
    result = rehearse(change, str(source_db), legs=[LegName.TRANSACTION], allow_undeclared=True)
    txn = leg(result, "transaction")
    assert txn.verdict is Verdict.NOT_APPLICABLE
    assert txn.reason == (
        "apply: statement 2 `VACUUM;` cannot run, or does nothing, inside a transaction"
    )


def test_apply_error_fails_the_leg_with_the_statement(
    source_db: Path, make_change: MakeChange
) -> None:
    change = make_change("INSERT INTO tags VALUES ('x', 1);\nDELETE FROM nowhere;", "SELECT 1;")
    result = rehearse(change, str(source_db), legs=[LegName.TRANSACTION, LegName.REVERT])
    for name in ("transaction", "revert"):
        assert leg(result, name).verdict is Verdict.FAIL
        assert leg(result, name).reason == (
            "apply failed: statement 2 `DELETE FROM nowhere;` (SQLITE_ERROR) failed: "
            "no such table: nowhere"
        )
    assert result.exit_code == ExitCode.CHECK_FAILED


def test_revert_runs_on_a_new_connection(source_db: Path, make_change: MakeChange) -> None:
    # A revert tested on the applying connection could see the TEMP table; a real rollback
    # runs later, on another connection, where it is gone.
    change = make_change(
        "CREATE TEMP TABLE scratch (x);\nCREATE TABLE t2 (x);",
        "DROP TABLE t2;\nDROP TABLE scratch;",
    )
    revert = leg(rehearse(change, str(source_db), legs=[LegName.REVERT]), "revert")
    assert revert.verdict is Verdict.FAIL
    assert revert.reason == (
        "revert failed: statement 2 `DROP TABLE scratch;` (SQLITE_ERROR) failed: "
        "no such table: scratch"
    )


def test_duplicate_rows_in_a_table_without_primary_key_count(
    source_db: Path, make_change: MakeChange
) -> None:
    # tags holds ('a', 1) twice; this revert leaves it once.
    change = make_change(
        "INSERT INTO tags VALUES ('z', 9);",
        "DELETE FROM tags WHERE label IN ('z', 'a');\nINSERT INTO tags VALUES ('a', 1);",
    )
    revert = leg(rehearse(change, str(source_db), legs=[LegName.REVERT]), "revert")
    assert revert.verdict is Verdict.FAIL
    [diff] = revert.differences
    assert diff.component == "table:tags"
    assert diff.summary == "table tags: same distinct rows, different duplicates or value types"


@pytest.mark.parametrize(
    ("apply", "revert"),
    [
        pytest.param(
            "UPDATE tags SET weight = 7 WHERE label = 'b';",
            "UPDATE tags SET weight = 1 WHERE label = 'b';",
            id="real-1.0-back-as-int-1",
        ),
        pytest.param(
            "UPDATE customers SET fax = NULL WHERE id = 2;",
            "UPDATE customers SET fax = 'FAX1' WHERE id = 2;",
            id="text-back-in-other-case",
        ),
        pytest.param(
            "UPDATE customers SET name = 'x' WHERE id = 3;",
            "UPDATE customers SET name = CAST('c2' AS BLOB) WHERE id = 3;",
            id="text-back-as-blob",
        ),
    ],
)
def test_typed_value_differences_fail_the_revert(
    source_db: Path, make_change: MakeChange, apply: str, revert: str
) -> None:
    result = rehearse(make_change(apply, revert), str(source_db), legs=[LegName.REVERT])
    assert leg(result, "revert").verdict is Verdict.FAIL


def test_typed_difference_is_explained_per_column(source_db: Path, make_change: MakeChange) -> None:
    change = make_change(
        "UPDATE customers SET fax = 'changed' WHERE id = 2;",
        "UPDATE customers SET fax = 1 WHERE id = 2;",  # was the text 'fax1'... and now integer 1
    )
    [diff] = leg(rehearse(change, str(source_db), legs=[LegName.REVERT]), "revert").differences
    assert diff.detail["columns_changed"] == {"fax": 1}
    assert diff.summary == "table customers: 1 rows differ; fax: 1 values differ"


def test_sequence_advance_is_tolerated_by_name(source_db: Path, make_change: MakeChange) -> None:
    change = make_change(
        "INSERT INTO orders (customer_id, status, total) VALUES (1, 'new', 1.0);",
        "DELETE FROM orders WHERE id = (SELECT max(id) FROM orders);",
    )
    result = rehearse(change, str(source_db), legs=[LegName.TRANSACTION, LegName.REVERT])
    revert = leg(result, "revert")
    assert revert.verdict is Verdict.PASS
    assert [d.summary for d in revert.tolerated] == ["sequence orders advanced from 500 to 501"]
    assert leg(result, "transaction").tolerated == ()  # SQLite rolls the counter back too
    assert result.source_fingerprint.sequences == {"orders": 500}


def test_strict_sequences_count_an_advance(source_db: Path, make_change: MakeChange) -> None:
    change = make_change(
        "INSERT INTO orders (customer_id, status, total) VALUES (1, 'new', 1.0);",
        "DELETE FROM orders WHERE id = (SELECT max(id) FROM orders);",
        extra="strict_sequences = true\n",
    )
    revert = leg(rehearse(change, str(source_db), legs=[LegName.REVERT]), "revert")
    assert revert.verdict is Verdict.FAIL
    assert [d.summary for d in revert.differences] == ["sequence orders advanced from 500 to 501"]


def _fk_source(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE parent (id INTEGER PRIMARY KEY);"
        "CREATE TABLE child (id INTEGER PRIMARY KEY,"
        " parent_id INTEGER REFERENCES parent(id) ON DELETE CASCADE);"
        "INSERT INTO parent VALUES (1), (2);"
        "INSERT INTO child VALUES (10, 1), (11, 1), (12, 2);"
    )
    conn.commit()
    conn.close()
    return path


@pytest.mark.parametrize(
    ("foreign_keys", "expected"),
    [
        pytest.param(True, Verdict.FAIL, id="fk-on-cascade-loses-children"),
        pytest.param(False, Verdict.PASS, id="fk-off-no-cascade"),
    ],
)
def test_connection_settings_are_applied_and_recorded(
    tmp_path: Path, make_change: MakeChange, foreign_keys: bool, expected: Verdict
) -> None:
    src = _fk_source(tmp_path / "fk.db")
    before = sha256_file(src)
    change = make_change(
        "DELETE FROM parent WHERE id = 1;",
        "INSERT INTO parent VALUES (1);",
        extra=f"[connection]\nforeign_keys = {str(foreign_keys).lower()}\n",
        surfaces='writes = ["parent", "child"]\n',  # the cascade writes child
    )
    revert = leg(rehearse(change, str(src), legs=[LegName.REVERT]), "revert")
    assert revert.verdict is expected
    assert revert.settings == {"foreign_keys": foreign_keys, "recursive_triggers": False}
    if expected is Verdict.FAIL:
        assert [d.summary for d in revert.differences] == ["table child: 2 rows missing"]
    assert sha256_file(src) == before


@pytest.mark.parametrize(
    "legs",
    [
        pytest.param([LegName.READ_ONLY], id="alone"),
        # read-only and restore share one apply: a failing verify leaves restore to pass
        pytest.param([LegName.READ_ONLY, LegName.RESTORE], id="with-restore"),
    ],
)
def test_verify_that_writes_fails_the_read_only_leg(
    source_db: Path, make_change: MakeChange, legs: list[LegName]
) -> None:
    change = make_change(
        "INSERT INTO tags VALUES ('v', 1);",
        "DELETE FROM tags WHERE label = 'v';",
        "DELETE FROM tags;",
    )
    result = rehearse(change, str(source_db), legs=legs)
    ro = leg(result, "read-only")
    assert ro.verdict is Verdict.FAIL
    assert ro.reason == (
        "verify (read-only) failed: statement 1 `DELETE FROM tags;` (SQLITE_READONLY) failed: "
        "attempt to write a readonly database"
    )
    if LegName.RESTORE in legs:
        restore = leg(result, "restore")
        assert restore.verdict is Verdict.PASS
        assert restore.fingerprints[Point.AFTER_RESTORE].digest == result.source_fingerprint.digest


def test_attach_in_a_script_is_denied(source_db: Path, make_change: MakeChange) -> None:
    # ATTACHing the source from inside the clone would let a script write production.
    change = make_change(
        f"ATTACH DATABASE '{source_db}' AS prod;\nDELETE FROM prod.tags;", "SELECT 1;"
    )
    # ATTACH's scope is unknown statically; the run-time authorizer is what must stop it.
    result = rehearse(change, str(source_db), legs=[LegName.REVERT], allow_undeclared=True)
    revert = leg(result, "revert")
    assert revert.verdict is Verdict.FAIL
    assert revert.reason is not None
    assert revert.reason.endswith("failed: not authorized")


def test_non_deterministic_apply_fails_reapply(source_db: Path, make_change: MakeChange) -> None:
    change = make_change(
        "INSERT INTO tags VALUES ('r', random());", "DELETE FROM tags WHERE label = 'r';"
    )
    result = rehearse(change, str(source_db), legs=[LegName.REVERT, LegName.REAPPLY])
    assert verdicts(result) == {"revert": Verdict.PASS, "reapply": Verdict.FAIL}
    assert leg(result, "reapply").reason == (
        "after_reapply == after_apply does not hold: table tags: content differs "
        "(5 rows before, 5 after)"
    )


def test_workspace_inside_the_source_directory_is_refused(
    source_db: Path, make_change: MakeChange
) -> None:
    change = make_change("INSERT INTO tags VALUES ('q', 1);", "DELETE FROM tags WHERE label='q';")
    with pytest.raises(IsolationError) as info:
        rehearse(change, str(source_db), workdir=source_db.parent / "work")
    assert info.value.exit_code == ExitCode.HELD
    assert [f.split(" (")[0] for f in info.value.failed] == ["clone-outside-source-dir"]
    assert not (source_db.parent / "work").exists()  # refused before anything was made there


def test_clone_that_is_the_source_is_refused_before_anything_is_written(
    source_db: Path, tmp_path: Path
) -> None:
    session = SqliteSession(str(source_db), workdir=tmp_path / "work")
    try:
        os.link(source_db, session.clone)  # the "clone" is now the production file itself
        with pytest.raises(IsolationError) as info:
            session.fresh_clone()
        assert [f.split(" (")[0] for f in info.value.failed] == ["clone-distinct-file"]
    finally:
        session.clone.unlink()
        session.close(keep=False)
    # the source_db fixture asserts the production bytes are unchanged


def test_source_written_during_the_rehearsal_is_proven_and_moved_on(
    tmp_path: Path, make_change: MakeChange
) -> None:
    src = tmp_path / "busy.db"
    conn = sqlite3.connect(src)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()

    def concurrent_writer(message: str) -> None:
        if message.startswith("leg 1/"):
            conn.execute("INSERT INTO t VALUES (1)")
            conn.commit()

    change = make_change("INSERT INTO t VALUES (2);", "DELETE FROM t WHERE x = 2;")
    result = rehearse(
        change, str(src), legs=[LegName.REVERT], progress=concurrent_writer, source_may_change=True
    )
    conn.close()
    assert verdicts(result) == {"revert": Verdict.PASS}
    # Someone else's write says nothing about what rollproof did: still proven, and recorded.
    assert str(result.isolation.verdict) == "PROVEN_ISOLATED_NOT_PRODUCTION"
    assert result.exit_code == ExitCode.OK
    assert result.source["after"]["moved_on"] is True
    assert result.source["after"]["evidence"].startswith(
        "source moved on since the snapshot (written by others during or after the rehearsal)"
    )
    assert result.source_fingerprint.digest in result.source["after"]["evidence"]
    assert result.source_fingerprint.tables["t"].rows == 0  # the verdicts are the snapshot's


def test_clone_is_removed_unless_kept(
    source_db: Path, make_change: MakeChange, tmp_path: Path
) -> None:
    change = make_change("INSERT INTO tags VALUES ('k', 1);", "DELETE FROM tags WHERE label='k';")
    work = tmp_path / "work"
    result = rehearse(change, str(source_db), legs=[LegName.REVERT], workdir=work)
    assert result.clone_kept is None
    assert list(work.iterdir()) == []
    kept = rehearse(change, str(source_db), legs=[LegName.REVERT], workdir=work, keep_clone=True)
    assert kept.clone_kept is not None
    # KEPT marks it for `rollproof gc`, which never removes a kept clone.
    assert sorted(p.name for p in kept.clone_kept.iterdir()) == ["KEPT", "clone.db", "snapshot.db"]
    assert oct(kept.clone_kept.stat().st_mode & 0o777) == "0o700"


def test_every_isolation_item_is_recorded(source_db: Path, make_change: MakeChange) -> None:
    change = make_change("INSERT INTO tags VALUES ('k', 1);", "DELETE FROM tags WHERE label='k';")
    result = rehearse(change, str(source_db), legs=[LegName.REVERT])
    assert [(c.name, c.holds) for c in result.isolation.checks] == [
        ("clone-distinct-file", True),
        ("clone-outside-source-dir", True),
        ("workspace-private", True),
        ("source-opened-read-only", True),
        ("clone-matches-source", True),
    ]
    assert result.source["after"]["moved_on"] is False


@pytest.mark.parametrize(
    ("dsn", "message"),
    [
        pytest.param("postgresql://u@h/db?bogus=1", "not a valid PostgreSQL DSN", id="postgres"),
        pytest.param("sqlite://x.db", "a SQLite DSN is sqlite:///relative.db", id="two-slashes"),
        pytest.param("sqlite:///:memory:", "names no database file", id="memory"),
        pytest.param("mysql://h/db", "unsupported scheme", id="mysql"),
    ],
)
def test_bad_source_dsn(make_change: MakeChange, dsn: str, message: str) -> None:
    change = make_change("SELECT 1;", "SELECT 1;")
    with pytest.raises(SourceError, match=message):
        rehearse(change, dsn)


def test_source_that_is_not_sqlite(tmp_path: Path, make_change: MakeChange) -> None:
    bogus = tmp_path / "notes.db"
    bogus.write_text("hello")
    with pytest.raises(SourceError, match=r"not a SQLite database \(bad header\)$"):
        rehearse(make_change("SELECT 1;", "SELECT 1;"), str(bogus))


def test_parse_legs() -> None:
    assert parse_legs(["restore,revert"]) == (LegName.REVERT, LegName.RESTORE)
    assert parse_legs(None) == (
        LegName.READ_ONLY,
        LegName.TRANSACTION,
        LegName.REVERT,
        LegName.RESTORE,
    )
    with pytest.raises(UsageError, match="unknown leg 'rollback'"):
        parse_legs(["rollback"])


def test_trigger_bodies_and_strings_with_semicolons_are_one_statement(
    source_db: Path, make_change: MakeChange
) -> None:
    change = make_change(
        "CREATE TRIGGER trg_tags AFTER INSERT ON tags BEGIN\n"
        "  UPDATE tags SET weight = 0 WHERE label = 'x;y';\n"
        "  SELECT 'still; inside';\n"
        "END;\n"
        "INSERT INTO tags VALUES ('semi;colon', 2);\n",
        "DELETE FROM tags WHERE label = 'semi;colon';\nDROP TRIGGER trg_tags;\n",
    )
    result = rehearse(change, str(source_db), legs=[LegName.TRANSACTION, LegName.REVERT])
    assert verdicts(result) == {"transaction": Verdict.PASS, "revert": Verdict.PASS}
    assert dict(leg(result, "revert").statements) == {"apply": 2, "revert": 2}


def test_wal_mode_source_with_an_open_writer(tmp_path: Path, make_change: MakeChange) -> None:
    src = tmp_path / "wal.db"
    writer = sqlite3.connect(src)
    writer.execute("PRAGMA journal_mode = WAL")
    writer.execute("CREATE TABLE t (x)")
    writer.execute("INSERT INTO t VALUES (1)")
    writer.commit()  # the -wal file now holds the committed frames; the writer stays open
    before = {p.name: sha256_file(p) for p in (src, tmp_path / "wal.db-wal")}
    change = make_change("INSERT INTO t VALUES (2);", "DELETE FROM t WHERE x = 2;")
    result = rehearse(change, str(src))
    writer.close()
    assert result.overall is Verdict.PASS
    assert result.source_fingerprint.tables["t"].rows == 1
    assert result.source["bytes_sha256_before"] == before


def _trigger_source(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, status TEXT);"
        "CREATE TABLE audit (what TEXT);"
        "CREATE TABLE untouched (x);"
        "CREATE TRIGGER trg_audit AFTER UPDATE ON orders BEGIN"
        " INSERT INTO audit VALUES (NEW.status); END;"
        "INSERT INTO orders VALUES (1, 'new'), (2, 'new');"
        "INSERT INTO untouched VALUES (1);"
    )
    conn.commit()
    conn.close()
    return path


@pytest.mark.parametrize(
    "full", [pytest.param(False, id="incremental"), pytest.param(True, id="full")]
)
def test_incremental_after_fingerprints_still_catch_trigger_writes(
    tmp_path: Path, make_change: MakeChange, full: bool
) -> None:
    # The revert puts orders back but leaves the rows the trigger wrote into audit; audit is
    # named by no statement, so only the engine's record of trigger writes can make the
    # incremental after-fingerprint re-read it.
    src = _trigger_source(tmp_path / "trg.db")
    change = make_change(
        "UPDATE orders SET status = 'paid' WHERE id = 1;",
        "UPDATE orders SET status = 'new' WHERE id = 1;",
        surfaces='writes = ["orders", "audit"]\n',
    )
    result = rehearse(
        change, str(src), legs=[LegName.REVERT, LegName.RESTORE], full_fingerprints=full
    )
    revert = leg(result, "revert")
    assert revert.verdict is Verdict.FAIL
    # two trigger firings: one by the apply, one by the revert
    assert [d.summary for d in revert.differences] == ["table audit: 2 distinct rows added"]
    assert leg(result, "restore").verdict is Verdict.PASS


def test_incremental_and_full_fingerprints_agree(source_db: Path, make_change: MakeChange) -> None:
    change = make_change(
        "INSERT INTO orders (customer_id, status, total) VALUES (1, 'new', 2.0);\n"
        "UPDATE customers SET fax = NULL WHERE id < 10;",
        "DELETE FROM orders WHERE id > 500;",
    )
    quick = rehearse(change, str(source_db), legs=ALL_LEGS)
    full = rehearse(change, str(source_db), legs=ALL_LEGS, full_fingerprints=True)
    for a, b in zip(quick.legs, full.legs, strict=True):
        assert {p: fp.digest for p, fp in a.fingerprints.items()} == {
            p: fp.digest for p, fp in b.fingerprints.items()
        }
        assert a.verdict == b.verdict
    assert verdicts(quick)["revert"] is Verdict.FAIL  # the fax values do not come back


def test_a_password_in_a_bad_dsn_is_not_echoed(make_change: MakeChange) -> None:
    change = make_change("SELECT 1;", "SELECT 1;")
    with pytest.raises(SourceError) as info:
        rehearse(change, "sqlite://admin:hunter2@host/x.db")
    assert "hunter2" not in str(info.value)
    assert str(info.value).startswith("source 'sqlite://admin@host/x.db': a SQLite DSN is")


# -- legs grouped on shared clones ---------------------------------------------------------------


def test_legs_run_in_three_groups_that_share_applies(
    source_db: Path, make_change: MakeChange
) -> None:
    change = make_change(
        "UPDATE orders SET total = total + 1 WHERE status = 'paid';",
        "UPDATE orders SET total = total - 1 WHERE status = 'paid';",
        "SELECT count(*) FROM orders;",
    )
    said: list[str] = []
    result = rehearse(change, str(source_db), legs=ALL_LEGS, progress=said.append)
    assert [m for m in said if m.startswith("leg")] == [
        "leg 1/5: transaction",
        "legs 2-3/5: read-only, restore",
        "legs 4-5/5: revert, reapply",
    ]
    assert set(verdicts(result).values()) == {Verdict.PASS}
    ro, restore = leg(result, "read-only"), leg(result, "restore")
    revert, reapply = leg(result, "revert"), leg(result, "reapply")
    # read-only starts in the state restore's apply produced; reapply continues from revert.
    assert ro.fingerprints[Point.ENTRY] == restore.fingerprints[Point.AFTER_APPLY]
    assert reapply.fingerprints[Point.AFTER_REVERT] == revert.fingerprints[Point.AFTER_REVERT]
    assert reapply.fingerprints[Point.AFTER_APPLY] == revert.fingerprints[Point.AFTER_APPLY]
    assert ro.statements == {"apply": 1, "verify": 1}
    assert restore.statements == {"apply": 1}
    assert reapply.statements == {"apply": 1, "revert": 1, "reapply": 1}


def test_a_failing_revert_fails_revert_and_reapply_with_its_error(
    source_db: Path, make_change: MakeChange
) -> None:
    change = make_change(
        "INSERT INTO tags VALUES ('v', 1);", "DELETE FROM no_such_table;", extra=""
    )
    result = rehearse(
        change, str(source_db), legs=[LegName.REVERT, LegName.REAPPLY], allow_undeclared=True
    )
    assert verdicts(result) == {"revert": Verdict.FAIL, "reapply": Verdict.FAIL}
    for name in ("revert", "reapply"):
        assert leg(result, name).reason == (
            "revert failed: statement 1 `DELETE FROM no_such_table;` (SQLITE_ERROR) failed: "
            "no such table: no_such_table"
        )


def test_a_change_without_verify_still_restores(source_db: Path, make_change: MakeChange) -> None:
    change = make_change("INSERT INTO tags VALUES ('v', 1);", "DELETE FROM tags WHERE label = 'v';")
    result = rehearse(change, str(source_db), legs=[LegName.READ_ONLY, LegName.RESTORE])
    assert verdicts(result) == {"read-only": Verdict.NOT_APPLICABLE, "restore": Verdict.PASS}
    assert leg(result, "read-only").reason == "the change has no verify script"
