"""`verify_expect`: what fails a change's verify script, on real SQLite files and PostgreSQL.

Under the default ("no-error", sqitch's rule) a verify query that returns rows passes; under
"no-rows" the same query fails the read-only leg, naming the statement and its row count (never
a value), and an empty result passes. The validator holds a packet to what its change.toml
says: a no-rows change whose report calls a verify with rows a PASS is refused.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rollproof.assurance.selftest import build_tiny_source, forge, leg, reseal, write_change
from rollproof.core.change import Change, load_change
from rollproof.core.errors import ChangeError
from rollproof.core.model import LegName, Verdict
from rollproof.rehearse.flow import LegResult, RehearsalResult, rehearse
from rollproof.rehearse.packet import build_packet
from rollproof.verify.findings import FindingCode
from rollproof.verify.recompute import summary_text
from rollproof.verify.validate import PacketTree, check_tree
from tests.pg_fixtures import (
    MakeSource,
    Servers,
    pg_servers_fixture,  # noqa: F401  (fixture)
    pg_source_fixture,  # noqa: F401  (fixture)
)

ROWS_VERIFY = "SELECT count(*) FROM items;\nSELECT id FROM items WHERE note = 'x';\n"
EMPTY_VERIFY = "SELECT id FROM items WHERE note IS NOT NULL AND note <> 'x';\n"
NO_ROWS_REASON = (
    "verify (read-only) failed: statement 1 `SELECT count(*) FROM items;` returned 1 row; "
    "statement 2 `SELECT id FROM items WHERE note = 'x';` returned 3 rows "
    '(verify_expect = "no-rows")'
)
PG_NO_ROWS_REASON = NO_ROWS_REASON.replace(";`", "`")
"""PostgreSQL's statements are shown without their terminating semicolon."""


def change_files(verify: str, expect: str | None) -> dict[str, str]:
    toml = 'apply = "apply.sql"\nrevert = "revert.sql"\nverify = "verify.sql"\n'
    if expect is not None:
        toml += f'verify_expect = "{expect}"\n'
    return {
        "change.toml": toml + '\n[surfaces]\nreads = []\nwrites = ["items"]\n',
        "apply.sql": "ALTER TABLE items ADD COLUMN note TEXT;\nUPDATE items SET note = 'x';\n",
        "revert.sql": "ALTER TABLE items DROP COLUMN note;\n",
        "verify.sql": verify,
    }


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rollproof", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# -- change.toml -----------------------------------------------------------------------------


def test_the_default_keeps_existing_content_ids(tmp_path: Path) -> None:
    def load(where: str, expect: str | None) -> Change:
        return load_change(write_change(tmp_path / where / "c", change_files(ROWS_VERIFY, expect)))

    plain, explicit, no_rows = load("a", None), load("b", "no-error"), load("c", "no-rows")
    assert plain.verify_expect == explicit.verify_expect == "no-error"
    assert "verify_expect" not in plain.canonical_form()
    assert plain.content_id == explicit.content_id
    assert no_rows.verify_expect == "no-rows"
    assert no_rows.canonical_form()["verify_expect"] == "no-rows"
    assert no_rows.content_id != plain.content_id


def test_an_unknown_value_is_refused_with_exit_2(tmp_path: Path) -> None:
    cdir = write_change(tmp_path / "c", change_files(ROWS_VERIFY, "rows"))
    with pytest.raises(ChangeError) as e:
        load_change(cdir)
    expected = (
        f'{cdir / "change.toml"}: verify_expect: must be "no-error" or "no-rows", not \'rows\''
    )
    assert str(e.value) == expected
    source = build_tiny_source(tmp_path / "source.db")
    proc = run_cli("rehearse", str(cdir), "--source", f"sqlite:///{source}", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"rollproof: {expected}"]
    assert "Traceback" not in proc.stderr


def test_no_rows_without_a_verify_script_is_refused(tmp_path: Path) -> None:
    files = change_files(ROWS_VERIFY, "no-rows")
    files["change.toml"] = files["change.toml"].replace('verify = "verify.sql"\n', "")
    cdir = write_change(tmp_path / "c", files)
    with pytest.raises(ChangeError) as e:
        load_change(cdir)
    assert str(e.value) == (
        f'{cdir / "change.toml"}: verify_expect: is "no-rows" but the change has no verify '
        "script (verify or verify_sql)"
    )


def test_a_wrong_type_is_refused(tmp_path: Path) -> None:
    files = change_files(ROWS_VERIFY, None)
    files["change.toml"] = files["change.toml"].replace(
        'verify = "verify.sql"\n', 'verify = "verify.sql"\nverify_expect = 1\n'
    )
    with pytest.raises(ChangeError, match=r'verify_expect: must be "no-error" or "no-rows"$'):
        load_change(write_change(tmp_path / "c", files))


# -- SQLite ----------------------------------------------------------------------------------


def rehearse_sqlite(tmp_path: Path, name: str, verify: str, expect: str | None) -> RehearsalResult:
    source = tmp_path / "source.db"
    if not source.exists():
        build_tiny_source(source)
    change = load_change(write_change(tmp_path / name, change_files(verify, expect)))
    return rehearse(change, f"sqlite:///{source}", legs=(LegName.READ_ONLY, LegName.RESTORE))


def test_sqlite_rows_pass_by_default_and_fail_under_no_rows(tmp_path: Path) -> None:
    default = rehearse_sqlite(tmp_path, "default", ROWS_VERIFY, None)
    ro = default.legs[0]
    assert ro.name is LegName.READ_ONLY
    assert ro.verdict is Verdict.PASS
    assert [(r.statement, r.rows) for r in ro.verify_rows] == [(1, 1), (2, 3)]

    strict = rehearse_sqlite(tmp_path, "strict", ROWS_VERIFY, "no-rows")
    ro = strict.legs[0]
    assert ro.verdict is Verdict.FAIL
    assert ro.reason == NO_ROWS_REASON
    assert int(strict.exit_code) == 1
    assert strict.legs[1].verdict is Verdict.PASS


def test_sqlite_an_empty_result_passes_under_no_rows(tmp_path: Path) -> None:
    result = rehearse_sqlite(tmp_path, "empty", EMPTY_VERIFY, "no-rows")
    ro = result.legs[0]
    assert ro.verdict is Verdict.PASS
    assert ro.verify_rows == ()
    assert int(result.exit_code) == 0


def test_sqlite_an_error_in_a_later_row_fails_the_verify(tmp_path: Path) -> None:
    """Rows are read to the end: a check that errors on its second row is not a pass."""
    verify = "SELECT CASE WHEN id > 1 THEN json('not json') ELSE 1 END FROM items ORDER BY id;\n"
    result = rehearse_sqlite(tmp_path, "late-error", verify, None)
    ro = result.legs[0]
    assert ro.verdict is Verdict.FAIL
    assert ro.reason.startswith("verify (read-only) failed: statement 1 ")


# -- the packet and the validator ------------------------------------------------------------


def packet(tmp_path: Path, name: str, verify: str, expect: str | None) -> dict[str, bytes]:
    result = rehearse_sqlite(tmp_path, name, verify, expect)
    argv = ["rollproof", "rehearse", name, "--legs", "read-only,restore"]
    return build_packet(result, invocation=argv)


def test_the_report_records_rows_and_the_validator_accepts_both(tmp_path: Path) -> None:
    for name, expect, verdict in (("d", None, "PASS"), ("s", "no-rows", "FAIL")):
        files = packet(tmp_path, name, ROWS_VERIFY, expect)
        report = json.loads(files["report.json"])
        assert report["change"]["verify_expect"] == (expect or "no-error")
        ro = leg(report, "read-only")
        assert ro["verdict"] == verdict
        assert ro["verify_rows"] == [{"rows": 1, "statement": 1}, {"rows": 3, "statement": 2}]
        assert "- verify statement 2 returned 3 rows" in files["report.md"].decode()
        assert check_tree(PacketTree.from_files(files)).ok


def _pass_read_only(report: dict[str, Any]) -> None:
    """What a forger writes: the read-only leg, the overall verdict and the summary as PASS."""
    ro = leg(report, "read-only")
    ro.update(verdict="PASS", reason=None, invariants=[{"check": "exit == entry", "holds": True}])
    report["overall"] = "PASS"
    legs = [(x["name"], x["verdict"]) for x in report["legs"]]
    report["summary"] = summary_text(
        report["change"]["id"], "PASS", legs, report["isolation"]["verdict"]
    )


def _exit_zero(exit_codes: dict[str, object]) -> None:
    for command in exit_codes["commands"]:
        if command["name"] == "rehearse":
            command["exit_code"] = 0


def test_a_no_rows_verify_with_rows_forged_to_pass_is_refused(tmp_path: Path) -> None:
    files = packet(tmp_path, "s", ROWS_VERIFY, "no-rows")
    forged = forge(files, _pass_read_only, _exit_zero)
    report = check_tree(PacketTree.from_files(forged))
    assert [(f.code, f.message) for f in report.findings] == [
        (
            FindingCode.LEG_VERDICT_CONTRADICTS,
            "read-only: PASS recorded, but verify statement 1 returned 1 row(s) and the change "
            'says verify_expect = "no-rows"',
        )
    ]
    assert check_tree(PacketTree.from_files(files)).ok  # the packet as written: a valid FAIL


def test_change_toml_and_report_must_agree_on_verify_expect(tmp_path: Path) -> None:
    files = packet(tmp_path, "s", EMPTY_VERIFY, "no-rows")
    assert check_tree(PacketTree.from_files(files)).ok
    toml = files["change/change.toml"].replace(b'verify_expect = "no-rows"\n', b"")
    report = check_tree(PacketTree.from_files(reseal({**files, "change/change.toml": toml})))
    assert [(f.code, f.message) for f in report.findings] == [
        (
            FindingCode.CHANGE_COPY_MISMATCH,
            "verify_expect is 'no-error', the report says 'no-rows'",
        )
    ]
    # The report rewritten to the default instead: its content id no longer adds up.
    relaxed = forge(files, lambda r: r["change"].update(verify_expect="no-error"))
    codes = {f.code for f in check_tree(PacketTree.from_files(relaxed)).findings}
    assert FindingCode.CONTENT_ID_MISMATCH in codes


# -- PostgreSQL ------------------------------------------------------------------------------

PG_SOURCE = """
CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, qty integer);
INSERT INTO items (name, qty) VALUES ('bolt', 10), ('nut', 20), ('washer', 30);
"""


def test_postgres_rows_pass_by_default_fail_under_no_rows_and_empty_passes(
    pg_servers: Servers, pg_source: MakeSource, tmp_path: Path
) -> None:
    dsn = pg_source(PG_SOURCE)
    verdicts: dict[str, LegResult] = {}
    for name, verify, expect in (
        ("default", ROWS_VERIFY, None),
        ("strict", ROWS_VERIFY, "no-rows"),
        ("empty", EMPTY_VERIFY, "no-rows"),
    ):
        change = load_change(write_change(tmp_path / name, change_files(verify, expect)))
        result = rehearse(change, dsn, legs=(LegName.READ_ONLY,), scratch=pg_servers.scratch)
        verdicts[name] = result.legs[0]
    assert verdicts["default"].verdict is Verdict.PASS
    assert [(r.statement, r.rows) for r in verdicts["default"].verify_rows or ()] == [
        (1, 1),
        (2, 3),
    ]
    assert verdicts["strict"].verdict is Verdict.FAIL
    assert verdicts["strict"].reason == PG_NO_ROWS_REASON
    assert verdicts["empty"].verdict is Verdict.PASS
    assert verdicts["empty"].verify_rows == ()
