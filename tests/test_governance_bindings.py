"""What a grant binds (issue 17): the change's content, impact limits included, and, for a
dump source, the dump's sha256.

Real keys, a real ledger and real SQLite files, through the command line; every refusal is
checked for its exit code, its exact line and its ledger event, and has a positive twin.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

import pytest

from rollproof.core.change import load_change
from tests.test_governance_cli import CHANGE_ID, Workspace, make_workspace


@pytest.fixture
def ws(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Workspace:
    return make_workspace(tmp_path, monkeypatch, capsys)


def _short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:16] + "…"


def _add_limit(ws: Workspace, value: int) -> None:
    toml = ws.dir / ws.change / "change.toml"
    toml.write_text(toml.read_text() + f"\n[impact]\nmax_duration_ms = {value}\n")


def test_an_impact_limit_is_part_of_the_content_id(ws: Workspace) -> None:
    before = load_change(ws.dir / ws.change)
    _add_limit(ws, 60000)
    limited = load_change(ws.dir / ws.change)
    assert limited.content_id != before.content_id
    assert limited.canonical_form()["impact"] == {"max_duration_ms": 60000}
    toml = ws.dir / ws.change / "change.toml"
    toml.write_text(toml.read_text().replace("60000", "59999"))
    assert load_change(ws.dir / ws.change).content_id not in {before.content_id, limited.content_id}
    # A change without limits keeps the id it had before limits were part of it.
    assert "impact" not in before.canonical_form()


def test_a_grant_for_a_change_does_not_serve_it_once_a_limit_is_edited(ws: Workspace) -> None:
    change = load_change(ws.dir / ws.change)
    grant = ws.issue("before.grant", change=ws.change)
    _add_limit(ws, 60000)
    edited = load_change(ws.dir / ws.change)
    refused = ws.rehearse("--grant", str(grant), out="packets/edited")
    assert refused.code == 3
    assert refused.err.strip().splitlines() == [
        f"rollproof: grant refused (wrong-change): grant is for change {CHANGE_ID} with content "
        f"id {_short(change.content_id)}, not {_short(edited.content_id)} (the change was "
        "edited after the grant was issued)"
    ]
    kind, body = ws.last()
    assert (str(kind), body["reason"]) == ("grant.refused", "wrong-change")
    # The positive twin: a grant issued for the change as it is now is consumed.
    again = ws.issue("after.grant", change=ws.change)
    assert ws.rehearse("--grant", str(again), out="packets/edited").code == 0


def test_a_grant_standing_on_evidence_binds_the_evidence_changes_content(ws: Workspace) -> None:
    assert ws.rehearse("--grant", str(ws.issue("clone.grant")), out="packets/clone").code == 0
    shaped = ws.issue("shaped.grant", lane="production-shaped-clone", evidence="packets/clone")
    _add_limit(ws, 60000)
    refused = ws.rehearse("--lane", "production-shaped-clone", "--grant", str(shaped))
    assert refused.code == 3
    assert "(the change was edited after the grant was issued)" in refused.err
    assert ws.last()[1]["reason"] == "wrong-change"


def test_grant_issue_refuses_a_change_directory_the_evidence_is_not_about(ws: Workspace) -> None:
    assert ws.rehearse("--grant", str(ws.issue("clone.grant")), out="packets/clone").code == 0
    _add_limit(ws, 60000)
    edited = load_change(ws.dir / ws.change)
    run = ws.run(
        "grant", "issue", "--lane", "production-shaped-clone", "--change", ws.change,
        "--source", ws.dsn, "--expires", "1h", "--key", "keys/alice.key",
        "--evidence", "packets/clone", "--out", "grants/x.grant",
    )  # fmt: skip
    assert run.code == 2
    assert run.err.strip().startswith(
        f"rollproof: evidence packets/clone is about change {CHANGE_ID} with content id "
    )
    assert f"not the one of {ws.change} now ({_short(edited.content_id)})" in run.err
    assert not (ws.dir / "grants" / "x.grant").exists()


# -- a dump as the production-shaped-clone lane's source ------------------------------------


def _dump(ws: Workspace, name: str, *, extra_row: bool = False) -> Path:
    """An operator's file copy of production (as `sqlite3 prod.db .backup` leaves one)."""
    copy = ws.dir / "dumps" / name
    copy.parent.mkdir(exist_ok=True)
    shutil.copyfile(ws.source, copy)
    if extra_row:
        with sqlite3.connect(copy) as conn:
            conn.execute("INSERT INTO items (name, qty) VALUES ('later', 1)")
        conn.close()
    return copy


def test_a_dump_is_rehearsed_in_the_production_shaped_lane_bound_to_its_sha256(
    ws: Workspace,
) -> None:
    assert ws.rehearse("--grant", str(ws.issue("clone.grant")), out="packets/clone").code == 0
    dump = _dump(ws, "prod.db")
    digest = hashlib.sha256(dump.read_bytes()).hexdigest()
    source = f"sqlitedump:{dump}"
    grant = ws.issue(
        "shaped.grant", lane="production-shaped-clone", evidence="packets/clone", source=source
    )
    other = _dump(ws, "other.db", extra_row=True)
    other_digest = hashlib.sha256(other.read_bytes()).hexdigest()
    lane = ("--lane", "production-shaped-clone", "--grant", str(grant))

    refused = ws.run("rehearse", ws.change, "--source", f"sqlitedump:{other}", *lane)
    assert refused.code == 3
    assert refused.err.strip().splitlines() == [
        f"rollproof: grant refused (wrong-source): grant is for the dump with sha256 "
        f"{digest[:16]}…, not this one ({other_digest[:16]}…): another dump, or it changed "
        "since the grant was issued"
    ]
    assert ws.last()[1]["reason"] == "wrong-source"

    run = ws.run("rehearse", ws.change, "--source", source, "--out", "packets/shaped", *lane)
    assert run.code == 0, run.err
    state = ws.state()
    assert [(r.lane, str(r.overall)) for r in state.rehearsals.values()][-1] == (
        "production-shaped-clone",
        "PASS",
    )
    report = (ws.dir / "packets" / "shaped" / "report.json").read_text()
    assert f'"sha256": "{digest}"' in report


def test_a_production_lane_is_not_entered_against_a_dump(ws: Workspace) -> None:
    dump = _dump(ws, "prod.db")
    grant = ws.dir / "grants" / "any.grant"
    grant.parent.mkdir(exist_ok=True)
    grant.write_bytes(b"{}")
    run = ws.run(
        "grant", "consume", "--grant", str(grant), "--lane", "production-apply",
        "--change", CHANGE_ID, "--source", f"sqlitedump:{dump}",
    )  # fmt: skip
    assert run.code == 2
    assert run.err.strip().splitlines() == [
        f"rollproof: source sqlitedump:{dump} is a dump: a production lane is entered against "
        "the production source itself"
    ]
    # Nothing was recorded: the refusal comes before the ledger is asked about the lane.
    assert str(ws.last()[0]) != "grant.refused"
