"""The governed flow through the command line, with real keys, real ledger files and real packets.

Every refusal is checked for its exit code *and* its ledger event; every figure of a checkpoint
is checked against the ledger and the packet it came from.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rollproof.assurance.selftest import SOUND_CHANGE, build_tiny_source, write_change
from rollproof.cli import main
from rollproof.core.canonical import canonical_json
from rollproof.governance import (
    EventKind,
    LedgerState,
    SigningKey,
    fold_ledger,
    load_signing_key,
    pin_validator,
    read_verified,
)
from rollproof.governance.envelope import encode_envelope, sign_envelope
from rollproof.governance.grants import GRANT_PAYLOAD_TYPE
from rollproof.governance.issuance import fingerprint_source
from rollproof.governance.ledger import append_events

CHANGE_ID = "add-item-note"


@dataclass(frozen=True, slots=True)
class Run:
    code: int
    out: str
    err: str


@dataclass
class Workspace:
    """A governed workspace: keys, policy, ledger, a source and a change, as `init` leaves it."""

    dir: Path
    source: Path
    capsys: pytest.CaptureFixture[str]

    @property
    def dsn(self) -> str:
        return f"sqlite:///{self.source}"

    @property
    def ledger(self) -> Path:
        return self.dir / ".rollproof" / "ledger.db"

    @property
    def change(self) -> str:
        return f"changes/{CHANGE_ID}"

    def run(self, *argv: str) -> Run:
        self.capsys.readouterr()
        code = main(list(argv))
        captured = self.capsys.readouterr()
        return Run(code, captured.out, captured.err)

    def ok(self, *argv: str) -> Run:
        result = self.run(*argv)
        assert result.code == 0, result.err
        return result

    def key(self, name: str) -> SigningKey:
        return load_signing_key(self.dir / "keys" / f"{name}.key")

    def state(self) -> LedgerState:
        return fold_ledger(self.ledger)

    def events(self) -> list[tuple[int, EventKind, dict[str, Any]]]:
        return [(e.seq, e.kind, json.loads(e.body)) for e in read_verified(self.ledger).events]

    def last(self) -> tuple[EventKind, dict[str, Any]]:
        _, kind, body = self.events()[-1]
        return kind, body

    def issue(
        self, name: str, *, lane: str = "rehearsal-clone", key: str = "alice", **extra: str
    ) -> Path:
        out = self.dir / "grants" / name
        args = ["grant", "issue", "--lane", lane, "--change", extra.pop("change", CHANGE_ID)]
        args += ["--source", self.dsn, "--expires", extra.pop("expires", "2h")]
        args += ["--key", f"keys/{key}.key", "--out", str(out)]
        for flag, value in extra.items():
            args += [f"--{flag}", value]
        self.ok(*args)
        return out

    def forge(self, name: str, keys: list[str], **fields: Any) -> Path:
        """A grant made with the library (times, issuer and signers chosen freely)."""
        now = datetime.now(UTC)
        payload: dict[str, Any] = {
            "schema": "rollproof/grant/v1",
            "grant_id": "1" * 32,
            "nonce": "2" * 32,
            "lane": "rehearsal-clone",
            "change_id": CHANGE_ID,
            "source_fingerprint": fingerprint_source(self.dsn).digest,
            "packet_tree_hash": None,
            "audience": self.key("executor").key_id,
            "issuer": self.key(keys[0]).key_id,
            "not_before": _utc(now - timedelta(minutes=5)),
            "expires": _utc(now + timedelta(hours=1)),
        } | fields
        envelope = sign_envelope(
            GRANT_PAYLOAD_TYPE, canonical_json(payload), [self.key(k) for k in keys]
        )
        path = self.dir / "grants" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(encode_envelope(envelope))
        return path

    def rehearse(self, *extra: str, out: str = "packets/p") -> Run:
        return self.run("rehearse", self.change, "--source", self.dsn, "--out", out, *extra)


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def make_workspace(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *,
    ci: bool = True,
    production: bool = True,
    ledger: str | None = None,
) -> Workspace:
    monkeypatch.chdir(tmp_path)
    source = build_tiny_source(tmp_path / "production.db")
    write_change(tmp_path / "changes" / CHANGE_ID, SOUND_CHANGE)
    ws = Workspace(tmp_path, source, capsys)
    for name in ("alice", "bob", "executor", "outsider"):
        ws.ok("key", "generate", "--out", "keys", "--name", name)
    argv = ["init", "--executor-key", "keys/executor.pub"]
    argv += ["--operator", "alice=keys/alice.pub", "--operator", "bob=keys/bob.pub"]
    if production:
        argv += ["--production", ws.dsn]
    if ci:
        argv += ["--ci-trigger", ".ci/deploy.sh"]
    if ledger is not None:
        argv += ["--ledger", ledger]
    ws.ok(*argv)
    return ws


@pytest.fixture
def ws(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Workspace:
    return make_workspace(tmp_path, monkeypatch, capsys)


# --- init -----------------------------------------------------------------------------------------


def test_init_writes_a_commented_governed_policy_and_pins_the_validator(ws: Workspace) -> None:
    from rollproof.core.policy import load_policy
    from rollproof.verify.pin import validator_sha256

    text = (ws.dir / "rollproof.toml").read_text()
    assert text.startswith("# rollproof.toml: written by `rollproof init`")
    gov = load_policy(ws.dir / "rollproof.toml").governed()
    assert [lane.name for lane in gov.lanes] == [
        "rehearsal-clone",
        "production-shaped-clone",
        "production-apply",
        "cutover",
    ]
    assert set(gov.operators) == {"alice", "bob"}
    assert gov.executor == ws.key("executor").public
    [(_, first, policy), (seq, kind, body)] = ws.events()
    assert (first, policy["previous"], policy["policy"]["operators"].keys()) == (
        EventKind.POLICY_SET,
        0,
        {"alice", "bob"},
    )  # the first policy in force, unsigned, at event 1 (tests/test_policy_ledger.py)
    assert (seq, kind, body) == (2, EventKind.VALIDATOR_PINNED, {"sha256": validator_sha256()})


def test_init_never_overwrites_a_policy(ws: Workspace) -> None:
    before = (ws.dir / "rollproof.toml").read_bytes()
    result = ws.run("init", "--operator", "alice=keys/alice.pub")
    assert result.code == 2
    assert "already exists; rollproof init never overwrites a policy" in result.err
    assert (ws.dir / "rollproof.toml").read_bytes() == before
    assert len(ws.events()) == 2


def test_init_with_a_missing_key_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", "--dir", str(tmp_path), "--executor-key", str(tmp_path / "no.pub")]) == 2
    assert "no such key file" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_governance_commands_need_a_governed_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["ledger", "verify"]) == 2
    assert "needs a governed policy" in capsys.readouterr().err


# --- tickets and blockers -------------------------------------------------------------------------


def test_tickets_and_blockers_move_only_by_events_and_evidence(ws: Workspace) -> None:
    ws.ok("ticket", "open", "T-1", "--title", "Add a note", "--change", CHANGE_ID)
    ws.ok("ticket", "update", "T-1", "--note", "rehearse first")
    ws.ok(
        "blocker", "open", "B-1", "--title", "Rollback proven", "--ticket", "T-1",
        "--change", CHANGE_ID, "--condition", "rehearsal-clone=clone leg proven",
        "--condition", "production-apply=production leg proven",
    )  # fmt: skip
    # No way to hand-set a state.
    assert ws.run("blocker", "update", "B-1", "--state", "CLOSED").code == 2
    before = len(ws.events())
    refused = ws.run("blocker", "close", "B-1", "--reason", "done")
    assert refused.code == 1
    assert "has open conditions: rehearsal-clone, production-apply" in refused.err
    assert ws.run("ticket", "close", "T-1", "--reason", "done").code == 1
    assert len(ws.events()) == before

    # A governed rehearsal discharges the condition named after its lane: PARTIALLY_DISCHARGED.
    assert ws.rehearse("--lane", "rehearsal-clone").code == 0
    blocker = ws.state().blockers["B-1"]
    assert str(blocker.state) == "PARTIALLY_DISCHARGED"
    tree = (ws.dir / "packets" / "p" / "TREE_HASH").read_text().strip()
    assert [(c.id, c.evidence) for c in blocker.conditions] == [
        ("rehearsal-clone", tree),
        ("production-apply", None),
    ]
    # Evidence for an unrecorded packet discharges nothing.
    ws.rehearse(out="packets/unrecorded")  # not governed: not in the ledger
    result = ws.run(
        "blocker", "update", "B-1", "--discharge", "production-apply",
        "--evidence", "packets/unrecorded",
    )  # fmt: skip
    assert result.code == 1
    assert "was never recorded" in result.err
    assert str(ws.state().blockers["B-1"].state) == "PARTIALLY_DISCHARGED"
    # An operator cites the recorded evidence: then it closes, and so does its ticket.
    ws.ok("blocker", "update", "B-1", "--discharge", "production-apply", "--evidence", "packets/p")
    ws.ok("blocker", "close", "B-1", "--reason", "both legs proven")
    ws.ok("ticket", "close", "T-1", "--reason", "shipped")
    state = ws.state()
    assert (str(state.blockers["B-1"].state), str(state.tickets["T-1"].state)) == (
        "CLOSED",
        "CLOSED",
    )


# --- grants: the positive path and every refusal --------------------------------------------------


def test_a_rehearsal_only_grant_is_consumed_before_any_leg_and_recorded(ws: Workspace) -> None:
    grant = ws.issue("rehearsal.grant")
    assert oct(grant.stat().st_mode & 0o777) == "0o600"
    result = ws.rehearse("--grant", str(grant))
    assert result.code == 0, result.err
    kinds = [kind for _, kind, _ in ws.events()]
    # preflight, then the consumption, then the rehearsal: the grant before any evidence
    assert kinds[-3:] == [
        EventKind.PREFLIGHT_RECORDED,
        EventKind.GRANT_CONSUMED,
        EventKind.REHEARSAL_RECORDED,
    ]
    state = ws.state()
    [consumed] = state.consumed_grants.values()
    [rehearsal] = state.rehearsals.values()
    assert (rehearsal.grant_id, rehearsal.lane) == (consumed.grant_id, "rehearsal-clone")
    assert consumed.seq < rehearsal.seq
    assert f"grant {consumed.grant_id} (lane rehearsal-clone) consumed" in result.out
    assert "status: ADD_ITEM_NOTE_REHEARSAL_ONLY_ROLLBACK_READY" in result.out


def _replay(ws: Workspace) -> Path:
    grant = ws.issue("g")
    assert ws.rehearse("--grant", str(grant), out="packets/first").code == 0
    return grant


def _reencoded(ws: Workspace) -> Path:
    grant = _replay(ws)
    doc = json.loads(grant.read_bytes())
    copy = ws.dir / "grants" / "reencoded"
    copy.write_text(json.dumps({k: doc[k] for k in reversed(list(doc))}, indent=2))
    return copy


def _resigned(ws: Workspace) -> Path:
    grant = _replay(ws)
    ws.ok("grant", "cosign", str(grant), "--key", "keys/bob.key")
    return grant


def _expired(ws: Workspace) -> Path:
    now = datetime.now(UTC)
    return ws.forge(
        "expired",
        ["alice"],
        not_before=_utc(now - timedelta(hours=3)),
        expires=_utc(now - timedelta(hours=1)),
    )


def _not_yet_valid(ws: Workspace) -> Path:
    now = datetime.now(UTC)
    return ws.forge(
        "early",
        ["alice"],
        not_before=_utc(now + timedelta(hours=1)),
        expires=_utc(now + timedelta(hours=2)),
    )


def _wrong_source(ws: Workspace) -> Path:
    grant = ws.issue("g")
    with sqlite3.connect(ws.source) as conn:  # production changed since the grant was signed
        conn.execute("INSERT INTO items (name, qty) VALUES ('spring', 1)")
    return grant


def _self_signed(ws: Workspace) -> Path:
    executor = ws.key("executor").key_id
    return ws.forge("self", ["executor"], issuer=executor)


def _flipped(ws: Workspace) -> Path:
    grant = ws.issue("g")
    doc = json.loads(grant.read_bytes())
    sig = doc["signatures"][0]["sig"]
    doc["signatures"][0]["sig"] = ("A" if sig[0] != "A" else "B") + sig[1:]
    grant.write_bytes(canonical_json(doc))
    return grant


REFUSALS = [
    pytest.param(_replay, "replay", id="replay"),
    pytest.param(_reencoded, "replay", id="replay-re-encoded"),
    pytest.param(_resigned, "replay", id="replay-re-signed"),
    pytest.param(_expired, "expired", id="expired"),
    pytest.param(_not_yet_valid, "not-yet-valid", id="not-yet-valid"),
    pytest.param(
        lambda ws: ws.forge("lane", ["alice"], lane="production-shaped-clone"),
        "wrong-lane",
        id="wrong-lane",
    ),
    pytest.param(
        lambda ws: ws.issue("g", change="another-change"), "wrong-change", id="wrong-change"
    ),
    pytest.param(_wrong_source, "wrong-source", id="wrong-source"),
    pytest.param(
        lambda ws: ws.forge("outsider", ["outsider"]), "unknown-key", id="key-not-in-policy"
    ),
    pytest.param(_self_signed, "self-signed", id="executor-signed-its-own"),
    pytest.param(_flipped, "bad-signature", id="bad-signature"),
]


@pytest.mark.parametrize(("make", "reason"), REFUSALS)
def test_every_grant_refusal_exits_3_with_its_ledger_event(
    ws: Workspace, make: Any, reason: str
) -> None:
    grant = make(ws)
    recorded_before = len(ws.state().rehearsals)
    result = ws.rehearse("--grant", str(grant), out="packets/refused")
    assert result.code == 3, result.err
    assert f"grant refused ({reason})" in result.err
    kind, body = ws.last()
    assert (kind, body["reason"]) == (EventKind.GRANT_REFUSED, reason)
    assert body["lane"] == "rehearsal-clone"
    assert len(ws.state().rehearsals) == recorded_before  # no evidence recorded
    assert not (ws.dir / "packets" / "refused").exists()  # nothing rehearsed


def test_the_executor_cannot_mint_its_own_grant(ws: Workspace) -> None:
    result = ws.run(
        "grant", "issue", "--lane", "rehearsal-clone", "--change", CHANGE_ID,
        "--source", ws.dsn, "--expires", "1h", "--key", "keys/executor.key", "--out", "mine",
    )  # fmt: skip
    assert result.code == 2
    assert "is the executor's key; only an operator signs grants" in result.err
    assert not (ws.dir / "mine").exists()
    # ...and a grant it signs anyway is refused when presented (exit 3, on the record).
    refused = ws.rehearse("--grant", str(_self_signed(ws)), out="packets/x")
    assert refused.code == 3
    assert ws.last()[1]["reason"] == "self-signed"
    assert ws.state().consumed_grants == {}


def test_an_outsider_key_cannot_issue(ws: Workspace) -> None:
    result = ws.run(
        "grant", "issue", "--lane", "rehearsal-clone", "--change", CHANGE_ID,
        "--source", ws.dsn, "--expires", "1h", "--key", "keys/outsider.key",
    )  # fmt: skip
    assert result.code == 2
    assert "is not an operator key in the policy" in result.err


@pytest.mark.parametrize(
    ("expires", "message"),
    [
        pytest.param("0m", "more than 0", id="zero"),
        pytest.param("31d", "at most 30 days", id="too-long"),
        pytest.param("soon", "not a duration", id="not-a-duration"),
    ],
)
def test_grant_expiry_must_be_a_bounded_duration(ws: Workspace, expires: str, message: str) -> None:
    result = ws.run(
        "grant", "issue", "--lane", "rehearsal-clone", "--change", CHANGE_ID,
        "--source", ws.dsn, "--expires", expires, "--key", "keys/alice.key",
    )  # fmt: skip
    assert result.code == 2
    assert message in result.err


def test_lanes_past_the_first_are_refused_without_their_own_grant(ws: Workspace) -> None:
    for argv, lane in (
        (("rehearse", ws.change, "--source", ws.dsn, "--lane", "production-shaped-clone"),
         "production-shaped-clone"),
        (("grant", "consume", "--lane", "production-apply", "--change", CHANGE_ID,
          "--source", ws.dsn), "production-apply"),
        (("grant", "consume", "--lane", "cutover", "--change", CHANGE_ID, "--source", ws.dsn),
         "cutover"),
    ):  # fmt: skip
        result = ws.run(*argv)
        assert result.code == 3, result.err
        assert f"lane {lane} refused: needs its own operator grant" in result.err
        kind, body = ws.last()
        assert (kind, body["lane"], body["change_id"]) == (EventKind.LANE_REFUSED, lane, CHANGE_ID)
    assert ws.state().is_held(CHANGE_ID)


def test_a_production_lane_is_never_rehearsed(ws: Workspace) -> None:
    grant = ws.forge("prod", ["alice", "bob"], lane="production-apply")
    result = ws.rehearse("--lane", "production-apply", "--grant", str(grant))
    assert result.code == 3
    assert "a production lane is never run by rollproof" in result.err
    assert ws.last()[0] is EventKind.LANE_REFUSED
    assert ws.state().consumed_grants == {}


# --- preflight -----------------------------------------------------------------------------------


def _preflight(ws: Workspace, *extra: str) -> tuple[Run, dict[str, Any]]:
    result = ws.run("preflight", ws.change, "--source", ws.dsn, "--json", *extra)
    return result, json.loads(result.out)


def test_preflight_passes_and_is_recorded_from_the_ledger_it_read(ws: Workspace) -> None:
    result, doc = _preflight(ws)
    assert result.code == 0
    assert doc["overall"] == "PASS"
    assert {c["check"]: c["verdict"] for c in doc["checks"]} == {
        "surface-scoping": "PASS",
        "no-production-execution": "PASS",
        "validator-pin": "PASS",
        "ledger": "PASS",
        "production-hold": "PASS",
        "ci-scope": "PASS",
        "policy-in-force": "PASS",
    }
    seq, kind, body = ws.events()[-1]
    assert (seq, kind) == (doc["recorded_at"], EventKind.PREFLIGHT_RECORDED)
    assert body["through"] == seq - 1
    assert body["head"] == read_verified(ws.ledger).events[seq - 2].hash


def test_an_allowed_unknown_opens_one_classified_blocker_and_triggers_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = make_workspace(tmp_path, monkeypatch, capsys, ci=False)
    result, doc = _preflight(ws)
    assert result.code == 0  # the first lane allows ci-scope UNKNOWN
    assert doc["overall"] == "UNKNOWN"
    ci = next(c for c in doc["checks"] if c["check"] == "ci-scope")
    assert ci["verdict"] == "UNKNOWN"
    assert "no CI or deploy is triggered" in ci["detail"]
    [blocker] = ws.state().blockers.values()
    assert (blocker.check, str(blocker.state)) == ("ci-scope", "CLASSIFIED")
    _preflight(ws)  # the same UNKNOWN again: the same blocker, classified again
    [again] = ws.state().blockers.values()
    assert again.id == blocker.id
    assert [k for _, k, _ in ws.events()].count(EventKind.BLOCKER_CLASSIFIED) == 2
    # For a lane that does not allow it, the same UNKNOWN holds the run: exit 3.
    held, _ = _preflight(ws, "--lane", "production-shaped-clone")
    assert held.code == 3


def test_no_registered_production_source_is_unknown_and_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = make_workspace(tmp_path, monkeypatch, capsys, production=False)
    result, doc = _preflight(ws)
    assert result.code == 3
    check = next(c for c in doc["checks"] if c["check"] == "no-production-execution")
    assert check["verdict"] == "UNKNOWN"
    # A governed rehearsal is held by it before its grant is consumed.
    grant = ws.issue("g")
    blocked = ws.rehearse("--grant", str(grant))
    assert blocked.code == 3
    assert "preflight blocks the run" in blocked.err
    assert ws.state().consumed_grants == {}


def test_a_validator_that_is_not_the_pinned_one_fails_preflight(ws: Workspace) -> None:
    # Pinned by an operator in force: an unsigned later pin is refused by the fold.
    append_events(ws.ledger, [pin_validator("0" * 64, key=ws.key("alice"))], now=datetime.now(UTC))
    result, doc = _preflight(ws)
    assert result.code == 1
    check = next(c for c in doc["checks"] if c["check"] == "validator-pin")
    assert check["verdict"] == "FAIL"
    grant = ws.issue("g")
    assert ws.rehearse("--grant", str(grant)).code == 3
    assert ws.state().consumed_grants == {}  # the grant was not spent on a blocked run


def test_an_undeclared_write_fails_surface_scoping(ws: Workspace) -> None:
    toml = ws.dir / ws.change / "change.toml"
    toml.write_text(toml.read_text().replace('writes = ["items"]', "writes = []"))
    result, doc = _preflight(ws)
    assert result.code == 1
    check = next(c for c in doc["checks"] if c["check"] == "surface-scoping")
    assert check["verdict"] == "FAIL"


def test_a_tampered_or_restored_ledger_fails_preflight_and_verify(ws: Workspace) -> None:
    ws.ok("ticket", "open", "T-1", "--title", "one")
    older = ws.ledger.read_bytes()
    ws.ok("ticket", "open", "T-2", "--title", "two")
    ws.ok("ledger", "checkpoint", "--key", "keys/alice.key")
    ws.ok("ledger", "verify")
    ws.ledger.write_bytes(older)  # an older copy restored
    result = ws.run("ledger", "verify")
    assert result.code == 1
    assert "the trusted checkpoint covers 4" in result.err
    preflight = ws.run("preflight", ws.change, "--source", ws.dsn)
    assert preflight.code == 1
    assert "NOT recorded" in preflight.out


def test_the_executor_cannot_sign_a_ledger_checkpoint(ws: Workspace) -> None:
    result = ws.run("ledger", "checkpoint", "--key", "keys/executor.key")
    assert result.code == 2
    assert not (ws.dir / ".rollproof" / "ledger.checkpoint").exists()


# --- decisions -----------------------------------------------------------------------------------


def test_decide_records_a_signed_operator_decision_and_selects_nothing(ws: Workspace) -> None:
    assert ws.run("decide", CHANGE_ID, "--reason", "x", "--key", "keys/bob.key").code == 2
    ws.ok("decide", CHANGE_ID, "--hold", "--reason", "read it", "--key", "keys/bob.key")
    [decision] = ws.state().decisions
    assert (str(decision.decision), decision.operator) == ("HOLD", ws.key("bob").key_id)
    for key in ("executor", "outsider"):
        refused = ws.run("decide", CHANGE_ID, "--hold", "--reason", "x", "--key", f"keys/{key}.key")
        assert refused.code == 3
    proceed = ws.run(
        "decide", CHANGE_ID, "--proceed", "production-apply", "--reason", "go",
        "--key", "keys/alice.key",
    )  # fmt: skip
    assert proceed.code == 3
    assert "has no consumed grant" in proceed.err
    assert len(ws.state().decisions) == 1


# --- the checkpoint, every figure against its source -----------------------------------------------


def test_every_checkpoint_figure_matches_the_ledger_and_the_packet(ws: Workspace) -> None:
    ws.ok("ticket", "open", "T-1", "--title", "Add a note", "--change", CHANGE_ID)
    ws.ok(
        "blocker", "open", "B-1", "--title", "Rollback proven", "--change", CHANGE_ID,
        "--condition", "rehearsal-clone=clone leg", "--condition", "production-apply=prod leg",
    )  # fmt: skip
    grant = ws.issue("g")
    run = ws.rehearse("--grant", str(grant), "--reproduce")
    assert run.code == 0, run.err
    ws.ok("decide", CHANGE_ID, "--hold", "--reason", "read it", "--key", "keys/bob.key")
    doc = json.loads(ws.ok("status", CHANGE_ID, "--json").out)

    state = ws.state()
    packet = ws.dir / "packets" / "p"
    manifest = json.loads((packet / "MANIFEST.json").read_text())
    exit_codes = json.loads((packet / "exit_codes.json").read_text())
    [rehearsal] = state.rehearsals.values()
    [consumed] = state.consumed_grants.values()
    checks = {c.check: c for c in state.packet_checks}

    assert doc["status"] == "ADD_ITEM_NOTE_REHEARSAL_ONLY_ROLLBACK_READY"
    assert doc["ledger"]["through"] == state.through
    assert doc["ledger"]["head"] == state.head
    assert doc["grant"]["grant_id"] == consumed.grant_id == rehearsal.grant_id
    assert doc["grant"]["seq"] == consumed.seq
    assert doc["grant"]["expires"] == consumed.expires
    assert doc["grant"]["issuer"] == "alice"
    ev = doc["evidence"]
    assert (
        ev["tree_hash"] == rehearsal.packet_tree_hash == (packet / "TREE_HASH").read_text().strip()
    )
    assert ev["files"] == len(manifest["files"])
    assert ev["recorded_at"] == rehearsal.seq
    assert ev["packet"] == "packets/p" == rehearsal.packet
    assert ev["commands_sh"] == checks["commands.sh"].outcome == "OVERALL PASS"
    assert ev["rerun_sh"] == checks["RERUN.sh"].outcome == "PASS/MATCH"
    assert ev["exit_codes"] == {
        "rehearse": exit_codes["commands"][0]["exit_code"],
        "commands.sh": checks["commands.sh"].exit_code,
        "RERUN.sh": checks["RERUN.sh"].exit_code,
    }
    assert {g: v["open"] for g, v in doc["gates"].items()} == dict.fromkeys(
        ["production_mutation", "real_run", "cutover", "ci_deploy_trigger", "secret_access"], "NO"
    )
    assert doc["apply_now"] == "NO"
    assert {b["id"]: b["state"] for b in doc["blockers"]} == {
        b.id: str(b.state) for b in state.open_blockers()
    }
    b1 = next(b for b in doc["blockers"] if b["id"] == "B-1")
    assert [c["discharged_by"] for c in b1["conditions"]] == [
        c.evidence for c in state.blockers["B-1"].conditions
    ]
    assert [t["id"] for t in doc["tickets"]] == ["T-1"]
    assert doc["addendum"]["tickets"] == {"range": "T-1", "ids": ["T-1"]}
    [preflight] = state.preflights
    assert any(line.startswith(f"Preflight (event {preflight.seq},") for line in doc["done"])
    [decision] = state.decisions
    assert any(f"Decision at event {decision.seq} (signed by bob): HOLD" in x for x in doc["done"])

    # The markdown says the same, and the packet carries the checkpoint written by the run.
    md = ws.ok("status", CHANGE_ID).out
    assert md.startswith(f"# Checkpoint — {CHANGE_ID} (")
    assert f"Final status: {doc['status']}" in md
    assert f"({ev['files']} files, tree {ev['tree_hash']}, commands.sh OVERALL PASS" in md
    assert "RERUN.sh PASS/MATCH, exit codes all zero" in md
    in_packet = (packet / "governance" / "checkpoint.md").read_text()
    assert f"Final status: {doc['status']}" in in_packet
    addendum = json.loads((packet / "governance" / "addendum.json").read_text())
    assert addendum["grant_id"] == consumed.grant_id
    assert addendum["apply_now"] == "NO"
    assert addendum["discharged"] == [
        {"blocker_id": "B-1", "condition_id": "rehearsal-clone",
         "seq": state.blockers["B-1"].conditions[0].discharged_at},
    ]  # fmt: skip
    decision_doc = json.loads((packet / "governance" / "decision.json").read_text())
    assert decision_doc["options"][0]["option"] == "HOLD"
    assert decision_doc["selected"] is None
    assert decision_doc["packet_tree_hash"] == rehearsal.packet_tree_hash


def test_a_packet_altered_after_recording_makes_the_change_blocked(ws: Workspace) -> None:
    assert ws.rehearse("--grant", str(ws.issue("g"))).code == 0
    report = ws.dir / "packets" / "p" / "report.md"
    report.write_text(report.read_text() + "\nall good, trust me\n")
    doc = json.loads(ws.ok("status", CHANGE_ID, "--json").out)
    assert doc["status"] == "ADD_ITEM_NOTE_BLOCKED"
    assert doc["evidence"]["valid"] is False
    assert "SIZE_MISMATCH report.md" in doc["blocked_by"][0]
    state = json.loads(ws.ok("status", "--json").out)
    assert [(c["change_id"], c["status"], c["hold"]) for c in state["changes"]] == [
        (CHANGE_ID, "ADD_ITEM_NOTE_BLOCKED", "HOLD")
    ]
    assert (ws.dir / ".rollproof" / "status" / "current-state.md").is_file()


# --- secrets -------------------------------------------------------------------------------------


def test_no_private_key_or_grant_signature_reaches_an_output_or_a_packet(ws: Workspace) -> None:
    import base64

    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        load_pem_private_key,
    )

    grant = ws.issue("g")
    needles: list[bytes] = []
    for name in ("alice", "bob", "executor"):
        pem = (ws.dir / "keys" / f"{name}.key").read_bytes()
        raw = load_pem_private_key(pem, None).private_bytes(  # type: ignore[union-attr]
            Encoding.Raw, PrivateFormat.Raw, NoEncryption()
        )
        needles += [
            raw,
            raw.hex().encode(),
            base64.b64encode(raw),
            b"".join(pem.splitlines()[1:-1]),
        ]
    sig_text = json.loads(grant.read_bytes())["signatures"][0]["sig"]
    sig = base64.b64decode(sig_text)
    needles += [sig_text.encode(), sig, sig.hex().encode()]

    outputs = [
        ws.rehearse("--grant", str(grant), "--sign", "keys/executor.key", "--reproduce"),
        ws.rehearse("--grant", str(grant), out="packets/replay"),  # refused: replay
        ws.ok("decide", CHANGE_ID, "--hold", "--reason", "r", "--key", "keys/bob.key"),
        ws.ok("status", CHANGE_ID),
        ws.ok("status"),
        ws.ok("ledger", "fold", "--json"),
    ]
    written = [p for p in (ws.dir / "packets").rglob("*") if p.is_file()]
    written += [p for p in (ws.dir / ".rollproof").rglob("*") if p.is_file()]
    assert any(p.name == "checkpoint.md" for p in written)
    for needle in needles:
        for out in outputs:
            assert needle not in (out.out + out.err).encode()
        for path in written:
            assert needle not in path.read_bytes(), path


# --- a failing rehearsal is evidence too, and blocks -------------------------------------------


def test_a_failing_rehearsal_is_recorded_and_blocks(ws: Workspace) -> None:
    from rollproof.assurance.selftest import LOSSY_CHANGE

    write_change(ws.dir / "changes" / "drop-item-qty", LOSSY_CHANGE)
    ws.ok(
        "blocker", "open", "B-1", "--title", "t", "--change", "drop-item-qty",
        "--condition", "rehearsal-clone=clone leg",
    )  # fmt: skip
    result = ws.run(
        "rehearse", "changes/drop-item-qty", "--source", ws.dsn, "--lane", "rehearsal-clone",
        "--out", "packets/lossy",
    )  # fmt: skip
    assert result.code == 1
    [record] = ws.state().rehearsals.values()
    assert (record.change_id, str(record.overall)) == ("drop-item-qty", "FAIL")
    assert ws.state().blockers["B-1"].open_conditions  # FAIL evidence discharges nothing
    assert check_packet_ok(ws.dir / "packets" / "lossy")
    doc = json.loads(ws.ok("status", "drop-item-qty", "--json").out)
    assert doc["status"] == "DROP_ITEM_QTY_BLOCKED"
    assert f"the rehearsal recorded at event {record.seq} is FAIL" in doc["blocked_by"]


def check_packet_ok(packet: Path) -> bool:
    from rollproof.verify.reader import check_packet

    report = check_packet(packet)
    return report.ok and report.packet is not None and report.packet.decision is not None


# --- eight executors racing for one production grant ------------------------------------------


def test_eight_processes_racing_to_consume_one_grant_through_the_cli(ws: Workspace) -> None:
    import subprocess
    import sys

    from tests.packet_fixtures import subprocess_env

    (ws.dir / "rollproof.toml").write_text(
        f'[production]\nsources = ["{ws.dsn}"]\n'
        '[governance]\nexecutor = "keys/executor.pub"\n'
        '[operators]\nalice = "keys/alice.pub"\n'
        '[[lanes]]\nname = "rehearsal-clone"\n'
        '[[lanes]]\nname = "production-apply"\nkind = "production"\n'
        "[ci]\ntriggers = []\n"
    )
    ws.ok("policy", "adopt", "--key", "keys/alice.key", "--key", "keys/bob.key")
    assert ws.rehearse("--lane", "rehearsal-clone", out="packets/clone").code == 0
    grant = ws.issue("prod.grant", lane="production-apply", evidence="packets/clone")
    argv = [
        sys.executable, "-m", "rollproof", "grant", "consume", "--grant", str(grant),
        "--lane", "production-apply", "--change", CHANGE_ID, "--source", ws.dsn,
    ]  # fmt: skip
    racers = [
        subprocess.Popen(
            argv,
            cwd=ws.dir,
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    errors = [p.communicate(timeout=300)[1] for p in racers]
    codes = sorted(p.returncode for p in racers)
    assert codes == [0, 3, 3, 3, 3, 3, 3, 3], errors
    assert sum("grant refused (replay)" in e for e in errors) == 7
    events = ws.events()
    consumed = [b for _, k, b in events if k is EventKind.GRANT_CONSUMED]
    refused = [b["reason"] for _, k, b in events if k is EventKind.GRANT_REFUSED]
    released = [b for _, k, b in events if k is EventKind.HOLD_RELEASED]
    assert len(consumed) == 1
    assert refused == ["replay"] * 7
    assert [r["grant_id"] for r in released] == [consumed[0]["grant_id"]]
