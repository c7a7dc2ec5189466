"""One predicate for "counts as evidence" (governance/evidence.py), asked by every governance path.

Attack 5: a rehearsal whose isolation was NOT_PROVEN (exit 3) but whose legs all PASSed was
counted as PASS evidence: ROLLBACK_READY, a blocker discharged, a grant for the next lane issued
on it. Every packet here is made by a real rehearsal (the NOT_PROVEN one by opening its private
workspace to everyone while it runs), validated by the real validator; each refusal has its
positive twin.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rollproof.assurance.selftest import LOSSY_CHANGE, write_change
from rollproof.core.change import load_change
from rollproof.core.model import IsolationVerdict, LegName, Verdict
from rollproof.core.policy import load_policy
from rollproof.governance.checkpoint import READY, status_token
from rollproof.governance.evidence import judge_evidence
from rollproof.governance.flow import governed_rehearse
from rollproof.governance.grants import GrantIssueError
from rollproof.governance.issuance import issue_grant_file
from rollproof.governance.lanes import latest_evidence
from rollproof.governance.status import change_status
from rollproof.rehearse.flow import rehearse
from rollproof.rehearse.packet import write_report
from rollproof.verify.findings import VerifiedPacket
from rollproof.verify.reader import validate_packet
from tests.test_governance_cli import CHANGE_ID, Workspace, make_workspace

KINDS = ("PASS", "NOT_PROVEN", "FAIL", "UNKNOWN")
REFUSED = ("NOT_PROVEN", "FAIL", "UNKNOWN")


@pytest.fixture
def ws(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Workspace:
    return make_workspace(tmp_path, monkeypatch, capsys)


def _workdir(ws: Workspace) -> Path:
    """Where the NOT_PROVEN rehearsal makes its workspace: outside the source's directory."""
    work = ws.dir.parent / f"{ws.dir.name}-work"
    work.mkdir(exist_ok=True)
    return work


def _loosener(workdir: Path) -> tuple[Callable[[str], None], Callable[[], None]]:
    """A progress callback that opens the rehearsal's private workspace to everyone once the
    legs have run: the clone was not kept private, so its isolation is NOT_PROVEN. (Another
    client writing the source no longer does that: what others do to a live source says
    nothing about rollproof, tests/test_live_source.py.)"""

    def loosen(message: str) -> None:
        if message.startswith("looking at the source again"):
            for workspace in workdir.iterdir():
                workspace.chmod(0o755)

    return loosen, lambda: None


def _change_dir(ws: Workspace, kind: str) -> Path:
    """The workspace's change, or (for FAIL) a lossy change under the same id."""
    if kind != "FAIL":
        return ws.dir / ws.change
    files = dict(LOSSY_CHANGE)
    files["change.toml"] = files["change.toml"].replace("drop-item-qty", CHANGE_ID)
    return write_change(ws.dir / "lossy" / CHANGE_ID, files)


def _packet(ws: Workspace, kind: str, out: str) -> VerifiedPacket:
    """A real packet of `kind`, written outside the ledger (an operator reads it)."""
    change = load_change(_change_dir(ws, kind))
    legs = (LegName.READ_ONLY,) if kind == "UNKNOWN" else None
    close = None
    progress = None
    kwargs: dict[str, object] = {} if legs is None else {"legs": legs}
    if kind == "NOT_PROVEN":
        kwargs["workdir"] = _workdir(ws)
        progress, close = _loosener(_workdir(ws))
    try:
        result = rehearse(change, ws.dsn, progress=progress, **kwargs)  # type: ignore[arg-type]
    finally:
        if close is not None:
            close()
    return validate_packet(write_report(result, ws.dir / out))


def _governed(ws: Workspace, kind: str, out: str) -> VerifiedPacket:
    """A governed rehearsal of `kind` in the first lane, through the library flow."""
    change = load_change(_change_dir(ws, kind))
    legs = (LegName.READ_ONLY,) if kind == "UNKNOWN" else None
    progress, close = _loosener(_workdir(ws)) if kind == "NOT_PROVEN" else (None, None)
    try:
        run = governed_rehearse(
            change,
            ws.dsn,
            policy=load_policy(ws.dir / "rollproof.toml"),
            out=ws.dir / out,
            legs=legs,
            progress=progress,
            workdir=_workdir(ws) if kind == "NOT_PROVEN" else None,
        )
    finally:
        if close is not None:
            close()
    return run.verified


def _expected(verified: VerifiedPacket, kind: str) -> None:
    """The packet is what its kind says: real verdicts, not mocked ones."""
    isolation, overall = verified.isolation, verified.overall
    assert {
        "PASS": (isolation, overall) == (IsolationVerdict.PROVEN, Verdict.PASS),
        "NOT_PROVEN": isolation is IsolationVerdict.NOT_PROVEN,
        "FAIL": (isolation, overall) == (IsolationVerdict.PROVEN, Verdict.FAIL),
        "UNKNOWN": (isolation, overall) == (IsolationVerdict.PROVEN, Verdict.UNKNOWN),
    }[kind], (isolation, overall)


# --- the predicate --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_the_predicate_on_real_packets(ws: Workspace, kind: str) -> None:
    verified = _packet(ws, kind, f"packets/{kind}")
    _expected(verified, kind)
    judgement = judge_evidence(verified)
    assert judgement.counts is (kind == "PASS")
    if kind == "NOT_PROVEN":
        # The attack: every leg PASSed and overall says PASS, but isolation was not proven.
        assert verified.overall is Verdict.PASS
        assert f"isolation is {IsolationVerdict.NOT_PROVEN}" in judgement.why_not()
        assert "the recorded exit code is 3, not 0" in judgement.why_not()
    assert judge_evidence(None).why_not() == "the packet did not validate"


# --- grant issue --evidence (issuance.py) ----------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_grant_issue_refuses_evidence_that_does_not_count(ws: Workspace, kind: str) -> None:
    verified = _packet(ws, kind, f"packets/{kind}")
    _expected(verified, kind)

    def issue() -> object:
        return issue_grant_file(
            load_policy(ws.dir / "rollproof.toml"),
            key_path=ws.dir / "keys" / "alice.key",
            lane="production-shaped-clone",
            change_id=CHANGE_ID,
            source=ws.dsn,
            expires=timedelta(hours=1),
            out=ws.dir / "grants" / f"{kind}.grant",
            now=datetime.now(UTC),
            evidence=ws.dir / f"packets/{kind}",
        )

    if kind in REFUSED:
        with pytest.raises(GrantIssueError, match="does not count as evidence"):
            issue()
        assert not (ws.dir / "grants" / f"{kind}.grant").exists()
    else:
        issue()  # the positive twin
        assert (ws.dir / "grants" / f"{kind}.grant").exists()


def test_grant_issue_through_the_cli_refuses_a_not_proven_packet(ws: Workspace) -> None:
    _packet(ws, "NOT_PROVEN", "packets/np")
    args = ("grant", "issue", "--lane", "production-shaped-clone", "--change", CHANGE_ID,
            "--source", ws.dsn, "--expires", "1h", "--key", "keys/alice.key")  # fmt: skip
    refused = ws.run(*args, "--evidence", "packets/np", "--out", "grants/np.grant")
    assert refused.code == 2
    assert "isolation is NOT_PROVEN" in refused.err
    _packet(ws, "PASS", "packets/ok")
    ws.ok(*args, "--evidence", "packets/ok", "--out", "grants/ok.grant")


# --- the governed flow, lanes and the checkpoint ------------------------------------------------


def _open_blocker(ws: Workspace) -> None:
    ws.ok("blocker", "open", "ROLLBACK-1", "--title", "rollback proven", "--change", CHANGE_ID,
          "--condition", "rehearsal-clone=clone leg proven")  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_the_governed_flow_records_the_facts_and_discharges_only_on_evidence(
    ws: Workspace, kind: str
) -> None:
    _open_blocker(ws)
    verified = _governed(ws, kind, f"packets/{kind}")
    _expected(verified, kind)
    [record] = ws.state().rehearsals.values()
    # The ledger records what the validator found: the predicate can be asked of it alone.
    assert (record.overall, record.isolation, record.exit_code) == (
        verified.overall,
        verified.isolation,
        verified.exit_code,
    )
    [condition] = ws.state().blockers["ROLLBACK-1"].conditions
    assert (condition.evidence is not None) is (kind == "PASS")


@pytest.mark.parametrize("kind", KINDS)
def test_lanes_count_only_evidence(ws: Workspace, kind: str) -> None:
    from rollproof.governance.in_force import load_in_force

    _governed(ws, kind, f"packets/{kind}")
    found = load_in_force(load_policy(ws.dir / "rollproof.toml"))
    gov, state = found.policy.governed(), found.state
    evidence = latest_evidence(gov, state, CHANGE_ID, "rehearsal-clone")
    assert (evidence is not None) is (kind == "PASS")
    # The next lane's entry needs it: a grant for production-shaped-clone cites nothing else.
    from rollproof.governance.lanes import required_evidence

    required = required_evidence(gov, state, CHANGE_ID, "production-shaped-clone")
    assert (required is not None) is (kind == "PASS")


@pytest.mark.parametrize("kind", KINDS)
def test_the_checkpoint_is_rollback_ready_only_on_evidence(ws: Workspace, kind: str) -> None:
    _governed(ws, kind, f"packets/{kind}")
    doc = change_status(load_policy(ws.dir / "rollproof.toml"), CHANGE_ID, now=datetime.now(UTC))
    ready = status_token(CHANGE_ID, READY)
    if kind == "PASS":
        assert doc.doc["status"] == ready, doc.doc["blocked_by"]
    else:
        assert doc.doc["status"] == status_token(CHANGE_ID, "BLOCKED")
        assert any("does not count as evidence" in why for why in doc.doc["blocked_by"])


def test_an_operator_cannot_discharge_with_a_recorded_not_proven_packet(ws: Workspace) -> None:
    ws.ok("blocker", "open", "WINDOW-1", "--title", "window", "--change", CHANGE_ID,
          "--condition", "window=agreed")  # fmt: skip
    _governed(ws, "NOT_PROVEN", "packets/np")
    refused = ws.run("blocker", "update", "WINDOW-1", "--discharge", "window",
                     "--evidence", "packets/np")  # fmt: skip
    assert refused.code == 1
    assert "does not count" in refused.err
    assert "isolation is NOT_PROVEN" in refused.err
    _governed(ws, "PASS", "packets/ok")  # the positive twin
    ws.ok("blocker", "update", "WINDOW-1", "--discharge", "window", "--evidence", "packets/ok")
