"""Impact limits on the lane ladder: a production lane is held (exit 3) while the measured impact
of the evidence it stands on is over a limit of the policy in force, and the decision packet,
the preflight and the refusal say which figure, against which limit."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rollproof.core.model import Verdict
from rollproof.core.policy import load_policy
from rollproof.governance.decision import decision_packet
from rollproof.governance.events import EventKind
from rollproof.governance.in_force import policy_in_force
from tests.test_governance_cli import CHANGE_ID, Workspace, make_workspace
from tests.test_governance_lanes import _to_production_shaped

OVER = re.compile(
    r"measured impact over a limit: max_write_lock_ms = 0: "
    r"the database write lock held [0-9.,]+ ms"
)


@pytest.fixture
def ws(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Workspace:
    return make_workspace(tmp_path, monkeypatch, capsys)


def _adopt_limit(ws: Workspace, value: int) -> None:
    policy = ws.dir / "rollproof.toml"
    text = re.sub(r"\n\[impact\]\n[^\n]*\n", "\n", policy.read_text())
    policy.write_text(text + f"\n[impact]\nmax_write_lock_ms = {value}\n")
    ws.ok("policy", "adopt", "--key", "keys/alice.key", "--key", "keys/bob.key")


def _preflight(ws: Workspace) -> tuple[int, dict[str, tuple[str, str]]]:
    run = ws.run("preflight", ws.change, "--source", ws.dsn, "--lane", "production-apply", "--json")
    doc = json.loads(run.out)
    return run.code, {c["check"]: (c["verdict"], c["detail"]) for c in doc["checks"]}


def test_a_production_lane_is_held_while_the_impact_is_over_a_limit(ws: Workspace) -> None:
    _to_production_shaped(ws)
    # The evidence records its measured impact in the ledger, figure by figure.
    [shaped] = [r for r in ws.state().rehearsals.values() if r.lane == "production-shaped-clone"]
    assert shaped.impact is not None
    assert shaped.impact["measured"] is True
    write_lock = shaped.impact["figures"]["max_write_lock_ms"]["value"]
    assert write_lock >= 1  # the change writes pages: the lock is held for some time

    # No limit anywhere: no impact check, the lane may be entered.
    code, checks = _preflight(ws)
    assert code == 0
    assert "impact-limits" not in checks

    # A limit the figure is within: PASS, with the limit named.
    _adopt_limit(ws, 3_600_000)
    code, checks = _preflight(ws)
    assert code == 0
    assert checks["impact-limits"] == (
        "PASS",
        "measured impact within the limits (max_write_lock_ms = 3,600,000)",
    )

    # A limit the figure is over: held (exit 3), not failed, with the figure and the limit.
    _adopt_limit(ws, 0)
    code, checks = _preflight(ws)
    assert code == 3
    verdict, detail = checks["impact-limits"]
    assert verdict == "FAIL"
    assert OVER.fullmatch(detail), detail

    # The decision packet an operator reads says the same, as an unmet need of the lane.
    state = ws.state()
    gov = policy_in_force(load_policy(ws.dir / "rollproof.toml"), state).governed()
    doc = decision_packet(
        gov,
        state,
        change_id=CHANGE_ID,
        lane="production-shaped-clone",
        packet_tree_hash=shaped.packet_tree_hash,
        overall=Verdict.PASS,
        now=datetime.now(UTC),
    )
    [apply] = [o for o in doc["options"] if o["lane"] == "production-apply"]
    assert apply["available_now"] is False
    [need] = [n for n in apply["needs"] if n["need"] == "impact"]
    assert need["met"] is False
    assert OVER.fullmatch(need["text"]), need["text"]
    assert need["refs"] == [shaped.packet_tree_hash]
    assert "not available now: measured impact over a limit" in apply["summary"]

    # Entering the lane is refused on the record, and production stays on HOLD.
    grant = ws.issue("apply.grant", lane="production-apply", evidence="packets/shaped")
    ws.ok("grant", "cosign", str(grant), "--key", "keys/bob.key")
    refused = ws.run(
        "grant", "consume", "--grant", str(grant), "--lane", "production-apply",
        "--change", CHANGE_ID, "--source", ws.dsn,
    )  # fmt: skip
    assert refused.code == 3
    kind, body = ws.last()
    assert kind == EventKind.LANE_REFUSED
    assert OVER.fullmatch(body["reason"]), body["reason"]
    assert ws.state().is_held(CHANGE_ID)
