"""`transaction = false` is part of the content id: a grant for the transactional change does not
serve the same SQL marked non-transactional (whose transaction leg cannot fail).

Real keys, a real ledger and real SQLite files through the command line, as in
test_governance_bindings.py; the refusal has its exact line, and a positive twin.
"""

from __future__ import annotations

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


def test_a_grant_does_not_serve_the_change_marked_non_transactional(ws: Workspace) -> None:
    change = load_change(ws.dir / ws.change)
    assert "transaction" not in change.canonical_form()  # older ids stand
    grant = ws.issue("before.grant", change=ws.change)
    toml = ws.dir / ws.change / "change.toml"
    toml.write_text("transaction = false\n" + toml.read_text())
    edited = load_change(ws.dir / ws.change)
    assert edited.canonical_form()["transaction"] is False
    refused = ws.rehearse("--grant", str(grant), out="packets/edited")
    assert refused.code == 3
    assert refused.err.strip().splitlines() == [
        f"rollproof: grant refused (wrong-change): grant is for change {CHANGE_ID} with content "
        f"id {_short(change.content_id)}, not {_short(edited.content_id)} (the change was "
        "edited after the grant was issued)"
    ]
    assert ws.last()[1]["reason"] == "wrong-change"
    # The positive twin: a grant for the change as it is now is consumed.
    again = ws.issue("after.grant", change=ws.change)
    assert ws.rehearse("--grant", str(again), out="packets/edited").code == 0
