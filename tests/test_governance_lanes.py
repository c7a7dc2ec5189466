"""The lane ladder: each lane entered only under its own grant, on the evidence of the lanes below;
blockers by lane; gates, HOLD and APPLY_NOW from consumed grants and their windows."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rollproof.core.model import Verdict
from rollproof.core.policy import DEFAULT_GATES, DEFAULT_LANES, Check, Governance, load_policy
from rollproof.governance import (
    Blocker,
    BlockerState,
    Condition,
    append_events,
    fold_ledger,
)
from rollproof.governance.decision import decision_packet
from rollproof.governance.flow import enter_lane
from rollproof.governance.lanes import blocks, hold_status
from tests.test_governance_cli import CHANGE_ID, Workspace, make_workspace

GOV = Governance("", Path(), None, {}, DEFAULT_LANES, DEFAULT_GATES)
FIRST, SHAPED, APPLY, CUTOVER = DEFAULT_LANES


def _blocker(*conditions: str, check: str | None = None, done: tuple[str, ...] = ()) -> Blocker:
    return Blocker(
        id="B",
        title="b",
        state=BlockerState.OPEN,
        conditions=tuple(Condition(c, c, "a" * 64 if c in done else None) for c in conditions),
        opened_at=1,
        check=check,
    )


@pytest.mark.parametrize(
    ("blocker", "blocked"),
    [
        pytest.param(
            _blocker("rehearsal-clone", "production-apply"),
            {SHAPED.name, APPLY.name, CUTOVER.name},
            id="open-first-lane-condition-blocks-every-lane-above-it",
        ),
        pytest.param(
            _blocker("rehearsal-clone", "production-apply", done=("rehearsal-clone",)),
            {CUTOVER.name},
            id="a-lane-condition-blocks-only-lanes-above-that-lane",
        ),
        pytest.param(
            _blocker("window"), {SHAPED.name, APPLY.name, CUTOVER.name}, id="a-non-lane-condition"
        ),
        pytest.param(
            _blocker("resolved", check=str(Check.CI_SCOPE)),
            {SHAPED.name, APPLY.name, CUTOVER.name},
            id="an-unknown-blocks-lanes-that-do-not-allow-it",
        ),
        pytest.param(
            _blocker("resolved", check=str(Check.LEDGER)),
            {FIRST.name, SHAPED.name, APPLY.name, CUTOVER.name},
            id="an-unknown-no-lane-allows",
        ),
    ],
)
def test_which_lanes_a_blocker_blocks(blocker: Blocker, blocked: set[str]) -> None:
    assert {lane.name for lane in DEFAULT_LANES if blocks(GOV, blocker, lane)} == blocked


def test_the_decision_packet_lists_hold_first_and_selects_nothing(tmp_path: Path) -> None:
    from rollproof.governance import fold

    doc = decision_packet(
        GOV,
        fold(()),
        change_id="c",
        lane=FIRST.name,
        packet_tree_hash="a" * 64,
        overall=Verdict.PASS,
        now=datetime.now(UTC),
    )
    assert (doc["default"], doc["selected"], doc["apply_now"]) == ("HOLD", None, "NO")
    assert [(o["option"], o["lane"], o["default"]) for o in doc["options"]] == [
        ("HOLD", None, True),
        ("PROCEED", SHAPED.name, False),
        ("PROCEED", APPLY.name, False),
        ("PROCEED", CUTOVER.name, False),
    ]
    # Nothing recorded yet: no lane above the first is available; each says what it needs.
    assert [o["available_now"] for o in doc["options"]] == [True, False, False, False]
    needs = {n["need"] for n in doc["options"][2]["needs"]}
    assert needs == {"grant", "signatures", "evidence", "blockers"}


@pytest.fixture
def ws(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Workspace:
    return make_workspace(tmp_path, monkeypatch, capsys)


def _to_production_shaped(ws: Workspace) -> None:
    assert ws.rehearse("--grant", str(ws.issue("clone.grant")), out="packets/clone").code == 0
    shaped = ws.issue("shaped.grant", lane="production-shaped-clone", evidence="packets/clone")
    run = ws.rehearse(
        "--lane", "production-shaped-clone", "--grant", str(shaped), out="packets/shaped"
    )
    assert run.code == 0, run.err


def test_the_whole_ladder_to_apply_now_yes(ws: Workspace) -> None:
    # A lane above the first needs the operator to name the evidence the grant stands on.
    refused = ws.run(
        "grant", "issue", "--lane", "production-shaped-clone", "--change", CHANGE_ID,
        "--source", ws.dsn, "--expires", "1h", "--key", "keys/alice.key",
    )  # fmt: skip
    assert refused.code == 2
    assert "name the validated packet you read with --evidence PACKET" in refused.err
    _to_production_shaped(ws)
    state = ws.state()
    assert [(r.lane, str(r.overall)) for r in state.rehearsals.values()] == [
        ("rehearsal-clone", "PASS"),
        ("production-shaped-clone", "PASS"),
    ]

    # production-apply needs two operators: one signature is refused, on the record.
    grant = ws.issue("apply.grant", lane="production-apply", evidence="packets/shaped")
    consume = ("grant", "consume", "--grant", str(grant), "--lane", "production-apply",
               "--change", CHANGE_ID, "--source", ws.dsn)  # fmt: skip
    one = ws.run(*consume)
    assert one.code == 3
    assert "needs 2 signatures by distinct trusted operator keys, has 1" in one.err
    assert ws.last()[1]["reason"] == "bad-signature"
    assert ws.state().is_held(CHANGE_ID)

    ws.ok("grant", "cosign", str(grant), "--key", "keys/bob.key")
    assert ws.run("grant", "cosign", str(grant), "--key", "keys/bob.key").code == 2  # once
    ws.ok(*consume)
    state = ws.state()
    assert not state.is_held(CHANGE_ID)
    [applied] = [g for g in state.consumed_grants.values() if g.lane == "production-apply"]
    assert len(applied.signers) == 2

    doc = json.loads(ws.ok("status", CHANGE_ID, "--json").out)
    assert doc["status"] == "ADD_ITEM_NOTE_PRODUCTION_APPLY_GRANTED"
    assert doc["apply_now"] == "YES"
    assert {g: v["open"] for g, v in doc["gates"].items()} == {
        "production_mutation": "YES",
        "real_run": "YES",
        "secret_access": "YES",
        "cutover": "NO",
        "ci_deploy_trigger": "NO",
    }
    assert doc["gates"]["production_mutation"]["grant_id"] == applied.grant_id

    # Now an operator can record PROCEED for that lane, citing the consumed grant.
    ws.ok(
        "decide", CHANGE_ID, "--proceed", "production-apply", "--reason", "window agreed",
        "--key", "keys/alice.key",
    )  # fmt: skip
    decision = ws.state().decisions[-1]
    assert (str(decision.decision), decision.lane, decision.grant_id) == (
        "PROCEED",
        "production-apply",
        applied.grant_id,
    )
    # The same grant cannot lift HOLD twice.
    again = ws.run(*consume)
    assert again.code == 3
    assert ws.last()[1]["reason"] == "replay"
    # An operator's HOLD takes effect at once: production is held again, every gate NO.
    ws.ok("decide", CHANGE_ID, "--hold", "--reason", "wait", "--key", "keys/bob.key")
    assert ws.state().is_held(CHANGE_ID)
    held = json.loads(ws.ok("status", CHANGE_ID, "--json").out)
    assert held["apply_now"] == "NO"
    assert held["status"] == "ADD_ITEM_NOTE_REHEARSAL_ONLY_ROLLBACK_READY"
    assert {v["open"] for v in held["gates"].values()} == {"NO"}


def test_a_grant_citing_superseded_evidence_is_refused(ws: Workspace) -> None:
    assert ws.rehearse("--grant", str(ws.issue("a.grant")), out="packets/old").code == 0
    stale = ws.issue("stale.grant", lane="production-shaped-clone", evidence="packets/old")
    assert ws.rehearse("--grant", str(ws.issue("b.grant")), out="packets/new").code == 0
    result = ws.rehearse(
        "--lane", "production-shaped-clone", "--grant", str(stale), out="packets/shaped"
    )
    assert result.code == 3
    assert ws.last()[1]["reason"] == "wrong-evidence"


def test_a_grant_naming_no_evidence_does_not_open_a_lane_that_needs_it(ws: Workspace) -> None:
    assert ws.rehearse("--grant", str(ws.issue("a.grant")), out="packets/clone").code == 0
    bare = ws.forge("bare", ["alice"], lane="production-shaped-clone")
    result = ws.rehearse("--lane", "production-shaped-clone", "--grant", str(bare))
    assert result.code == 3
    assert ws.last()[1]["reason"] == "wrong-evidence"


def test_hold_returns_when_the_lifting_grant_expires(ws: Workspace) -> None:
    _to_production_shaped(ws)
    grant = ws.issue("apply.grant", lane="production-apply", evidence="packets/shaped",
                     expires="1h")  # fmt: skip
    ws.ok("grant", "cosign", str(grant), "--key", "keys/bob.key")
    policy = load_policy(ws.dir / "rollproof.toml")
    enter_lane(
        policy,
        lane="production-apply",
        change_id=CHANGE_ID,
        source=ws.dsn,
        grant=grant.read_bytes(),
    )
    gov = policy.governed()
    state = ws.state()
    now = datetime.now(UTC)
    assert not hold_status(gov, state, CHANGE_ID, now).held
    later = hold_status(gov, state, CHANGE_ID, now + timedelta(hours=2))
    assert later.held
    assert "expired" in later.reason


def test_a_signed_decision_that_does_not_verify_is_refused(ws: Workspace) -> None:
    from rollproof.governance import Decision, LedgerRuleError, NewEvent, record_decision

    signed = record_decision(CHANGE_ID, Decision.HOLD, reason="hold", key=ws.key("bob"))
    forged = NewEvent(signed.kind, {**signed.body, "reason": "proceed quietly"})
    with pytest.raises(LedgerRuleError, match="the operator's signature does not verify"):
        append_events(ws.ledger, [forged], now=datetime.now(UTC))
    append_events(ws.ledger, [signed], now=datetime.now(UTC))  # the positive twin
    assert fold_ledger(ws.ledger).decisions[-1].operator == ws.key("bob").key_id
