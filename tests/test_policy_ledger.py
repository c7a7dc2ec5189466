"""The policy in force is the ledger's (governance/rules_policy.py, governance/in_force.py).

Attack 6: an operator line added to rollproof.toml let a new key issue grants and record
decisions, and `ledger verify` still passed. Now the file governs nothing until a quorum of the
operators in force adopts it with a signed `policy.set`; preflight reports the difference as
UNKNOWN (a blocker); the fold refuses a policy, a decision or a pin signed by anyone else.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from rollproof.core.policy import load_policy, policy_document
from rollproof.governance import LedgerRuleError, append_events, pin_validator, record_decision
from rollproof.governance.events import EventKind
from rollproof.governance.records import Decision
from rollproof.governance.rules_policy import set_policy
from tests.test_governance_cli import CHANGE_ID, Workspace, make_workspace


@pytest.fixture
def ws(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Workspace:
    return make_workspace(tmp_path, monkeypatch, capsys)


def _add_outsider_to_the_file(ws: Workspace) -> None:
    path = ws.dir / "rollproof.toml"
    text = path.read_text()
    assert 'bob = "keys/bob.pub"\n' in text
    path.write_text(
        text.replace(
            'bob = "keys/bob.pub"\n', 'bob = "keys/bob.pub"\nmallory = "keys/outsider.pub"\n'
        )
    )


def _issue(ws: Workspace, key: str, name: str) -> int:
    return ws.run(
        "grant", "issue", "--lane", "rehearsal-clone", "--change", CHANGE_ID, "--source", ws.dsn,
        "--expires", "1h", "--key", f"keys/{key}.key", "--out", f"grants/{name}",
    ).code  # fmt: skip


def _decide(ws: Workspace, key: str) -> int:
    return ws.run(
        "decide", CHANGE_ID, "--hold", "--reason", "read it", "--key", f"keys/{key}.key"
    ).code


def _preflight_policy_check(ws: Workspace) -> tuple[int, str, str]:
    import json

    result = ws.run("preflight", ws.change, "--source", ws.dsn, "--json")
    doc = json.loads(result.out)
    check = next(c for c in doc["checks"] if c["check"] == "policy-in-force")
    return result.code, check["verdict"], check["detail"]


def test_init_records_the_first_policy_and_the_file_is_it(ws: Workspace) -> None:
    (seq, kind, body), *_ = ws.events()
    assert (seq, kind, body["previous"]) == (1, EventKind.POLICY_SET, 0)
    assert "signatures" not in body
    assert body["policy"] == policy_document(load_policy(ws.dir / "rollproof.toml"))
    assert ws.ok("policy", "status").out.startswith("policy in force: ledger event 1")
    assert _preflight_policy_check(ws)[:2] == (0, "PASS")


def test_an_operator_line_added_to_the_file_governs_nothing(ws: Workspace) -> None:
    _add_outsider_to_the_file(ws)
    # The file loads (it is a well-formed policy) and lists mallory ...
    assert "mallory" in load_policy(ws.dir / "rollproof.toml").governed().operators
    # ... but the ledger's operators are alice and bob: mallory can neither grant nor decide.
    assert _issue(ws, "outsider", "mallory.grant") == 2
    assert not (ws.dir / "grants" / "mallory.grant").exists()
    assert _decide(ws, "outsider") == 3
    assert ws.state().decisions == ()
    # Nor sign a ledger checkpoint or a validator pin that anything trusts.
    assert ws.run("ledger", "checkpoint", "--key", "keys/outsider.key").code == 2
    with pytest.raises(LedgerRuleError, match="not an operator of the policy in force"):
        append_events(
            ws.ledger,
            [record_decision(CHANGE_ID, Decision.HOLD, reason="x", key=ws.key("outsider"))],
            now=datetime.now(UTC),
        )
    with pytest.raises(LedgerRuleError, match="not an operator of the policy in force"):
        append_events(
            ws.ledger, [pin_validator("0" * 64, key=ws.key("outsider"))], now=datetime.now(UTC)
        )
    # The ledger verifies (nothing was written to it by the edit), and says what governs.
    ws.ok("ledger", "verify")
    status = ws.run("policy", "status")
    assert status.code == 3
    assert "DIFFERS" in status.out
    # Preflight reports the difference as UNKNOWN, which opens a blocker and holds the run.
    code, verdict, detail = _preflight_policy_check(ws)
    assert (code, verdict) == (3, "UNKNOWN")
    assert "differs from the policy in force (ledger event 1" in detail
    [blocker] = [b for b in ws.state().blockers.values() if b.check == "policy-in-force"]
    assert str(blocker.state) == "CLASSIFIED"
    # The operators in force still act (positive twin).
    assert _issue(ws, "alice", "alice.grant") == 0
    assert _decide(ws, "bob") == 0


def test_after_adoption_by_a_quorum_of_operators_in_force_the_new_operator_can(
    ws: Workspace,
) -> None:
    _add_outsider_to_the_file(ws)
    adopt = ("policy", "adopt", "--policy", "rollproof.toml")
    # mallory cannot sign herself in; one operator is below the quorum (production needs 2).
    refused = ws.run(*adopt, "--key", "keys/outsider.key", "--key", "keys/alice.key")
    assert refused.code == 3
    assert "not operators of the policy in force" in refused.err
    short = ws.run(*adopt, "--key", "keys/alice.key")
    assert short.code == 3
    assert "needs 2 signature(s)" in short.err
    assert [k for _, k, _ in ws.events()].count(EventKind.POLICY_SET) == 1
    assert ws.run(*adopt, "--key", "keys/alice.key", "--key", "keys/alice.key").code == 3

    adopted = ws.ok(*adopt, "--key", "keys/alice.key", "--key", "keys/bob.key")
    assert "policy.set" in adopted.out
    seq, kind, body = ws.events()[-1]
    assert (kind, body["previous"], len(body["signatures"])) == (EventKind.POLICY_SET, 1, 2)
    state = ws.state()
    assert state.policy is not None
    assert state.policy.seq == seq
    assert state.policy.signers == tuple(sorted([ws.key("alice").key_id, ws.key("bob").key_id]))
    # Now mallory is an operator in force: she can grant and decide, and preflight PASSes.
    assert _issue(ws, "outsider", "mallory.grant") == 0
    assert _decide(ws, "outsider") == 0
    assert ws.state().decisions[-1].operator == ws.key("outsider").key_id
    assert _preflight_policy_check(ws)[1] == "PASS"
    assert ws.ok("policy", "status").out.count("SAME") == 1
    assert ws.run(*adopt, "--key", "keys/alice.key", "--key", "keys/bob.key").code == 2  # same


def test_a_swapped_key_file_is_a_different_policy(ws: Workspace) -> None:
    # The document holds key bytes, not paths: replacing keys/alice.pub changes nothing either.
    (ws.dir / "keys" / "alice.pub").write_bytes((ws.dir / "keys" / "outsider.pub").read_bytes())
    assert _issue(ws, "outsider", "swap.grant") == 2
    assert _preflight_policy_check(ws)[1] == "UNKNOWN"


def _now() -> datetime:
    return datetime.now(UTC)


def test_the_fold_refuses_a_policy_signed_by_a_non_operator(ws: Workspace) -> None:
    _add_outsider_to_the_file(ws)
    doc = policy_document(load_policy(ws.dir / "rollproof.toml"))
    alice, bob, outsider = ws.key("alice"), ws.key("bob"), ws.key("outsider")
    cases = [
        ([alice, outsider], "not an operator of the policy in force"),
        ([outsider], "not an operator of the policy in force"),
        ([], r"needs 2 signature\(s\)"),
        ([alice], r"needs 2 signature\(s\)"),
        ([ws.key("executor"), alice], "not an operator of the policy in force"),
    ]
    for keys, message in cases:
        with pytest.raises(LedgerRuleError, match=message):
            append_events(ws.ledger, [set_policy(doc, previous=1, keys=keys)], now=_now())
    with pytest.raises(LedgerRuleError, match="replaces the policy of event 0, not 1"):
        append_events(ws.ledger, [set_policy(doc, previous=0)], now=_now())
    # A signed body whose policy was edited after signing does not verify.
    event = set_policy(doc, previous=1, keys=[alice, bob])
    edited = dict(event.body)
    edited["policy"] = dict(doc, forbidden_env=["X"])
    from rollproof.core.policy import policy_document_sha256
    from rollproof.governance.events import NewEvent

    edited["sha256"] = policy_document_sha256(edited["policy"])
    with pytest.raises(LedgerRuleError, match="signature does not verify"):
        append_events(ws.ledger, [NewEvent(EventKind.POLICY_SET, edited)], now=_now())
    wrong_hash = dict(event.body, sha256="0" * 64)
    with pytest.raises(LedgerRuleError, match="sha256 is not the policy document's"):
        append_events(ws.ledger, [NewEvent(EventKind.POLICY_SET, wrong_hash)], now=_now())
    assert [k for _, k, _ in ws.events()].count(EventKind.POLICY_SET) == 1
    # Positive twin: the same document signed by the operators in force is accepted.
    append_events(ws.ledger, [event], now=_now())
    # And it cannot be replayed: it replaces event 1, and the policy in force is now its own.
    with pytest.raises(LedgerRuleError, match="replaces the policy of event 1"):
        append_events(ws.ledger, [event], now=_now())


def test_a_first_policy_later_than_event_1_is_refused(tmp_path: Path, ws: Workspace) -> None:
    other = tmp_path / "other.db"
    append_events(other, [pin_validator("d" * 64)], now=_now())
    doc = policy_document(load_policy(ws.dir / "rollproof.toml"))
    with pytest.raises(LedgerRuleError, match="the first policy must be the ledger's event 1"):
        append_events(other, [set_policy(doc, previous=0)], now=_now())
    # Governed paths refuse a ledger that records no policy.
    path = ws.dir / "rollproof.toml"
    path.write_text(
        path.read_text().replace('ledger = ".rollproof/ledger.db"', f'ledger = "{other}"')
    )
    result = ws.run("grant", "issue", "--lane", "rehearsal-clone", "--change", CHANGE_ID,
                    "--source", ws.dsn, "--expires", "1h", "--key", "keys/alice.key",
                    "--out", "grants/x")  # fmt: skip
    assert result.code == 1
    assert "records no policy" in result.err
