"""The governed flow: preflight, a rehearsal under a consumed grant, validated evidence, the
decision packet and the checkpoint; and the gate an executor passes to enter a production lane.

    governed_rehearse(change, source, policy=..., out=..., grant=...) -> GovernedRehearsal

Both read the policy in force from the ledger the policy file names (`in_force.py`); the file's
own operators, ladder and surfaces govern nothing until adopted.
    enter_lane(policy, lane=..., change_id=..., source=..., grant=...) -> ConsumedGrant
    reproduce_packet(packet, policy) -> {"commands.sh": (outcome, exit code), "RERUN.sh": ...}

`governed_rehearse`, in order, and why:

1. the lane is checked before anything else, and a refusal is appended as `lane.refused`
   (exit 3): a production lane is never run by rollproof; a lane whose policy needs a grant is
   not entered without one; a lane above the first needs every lane below reached and no
   blocker in its way (`lanes.py`);
2. preflight runs and is recorded (`preflight.py`); a FAIL, or an UNKNOWN the lane does not
   allow, stops the run (exit 3) before the grant is consumed, so a grant is not spent on a run
   that cannot go ahead;
3. the rehearsal snapshots the source and, **before any leg runs**, consumes the grant against
   the snapshot's fingerprint (`rehearse(before_legs=...)`): a grant is checked against the very
   state that is rehearsed, and a refused grant stops everything (exit 3, `grant.refused`);
4. the evidence packet is written and validated from disk; only a valid packet is recorded
   (`rehearsal.recorded`, naming the lane and the grant, with its overall and isolation
   verdicts, exit code and verified signers), and in the same transaction, if it counts as
   evidence (`evidence.py`: PASS, isolation proven, exit 0, signed when the policy requires it;
   never a FAIL, UNKNOWN or NOT_PROVEN run), it discharges the conditions it is evidence for:
   a blocker condition named after this lane, and the "resolved" condition of an UNKNOWN
   blocker whose check PASSed in this run's preflight;
5. with `reproduce`, the packet's own `commands.sh` and `RERUN.sh` are run as a reviewer would
   (bash, in a private directory) and their outcomes recorded (`packet.checked`);
6. the decision packet, the checkpoint and the addendum are derived from the ledger as it now
   stands and the validated packet, written as the packet's governance layer, and the whole
   packet is validated again: what rollproof hands over is what its validator accepts.

Between 3 and 4, `rollproof probe --json` runs (a subprocess: the catalogue lives above this
layer, in `rollproof.assurance.probes`) and its document becomes the layer's `probes.json`; a
probe that did not fail closed, a leak, or a refused control makes the run FAIL on the record
(`rehearsal.recorded` overall FAIL, nothing discharged, decision.json overall FAIL), names the
probes that failed (progress, `GovernedRehearsal.probe_failures`) and exits 1 where the legs
alone would have exited 0. The result
is cached per process for the same rollproof code (the probes build their own private workspace,
so nothing else they depend on can change). A governed rehearsal started by a probe that gets
this far is refused (no recursion).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollproof.core.change import Change
from rollproof.core.dumps import dump_scheme, parse_dump_dsn
from rollproof.core.errors import EnvironmentProblemError, ExitCode, HeldError, UsageError
from rollproof.core.fingerprint import Fingerprint
from rollproof.core.impact import impact_record
from rollproof.core.model import LegName, Verdict
from rollproof.core.policy import Governance, Lane, LaneKind, Policy
from rollproof.core.redact import redact_dsn
from rollproof.engines.base import Progress
from rollproof.evidence.write import atomic_write_bytes
from rollproof.governance.checkpoint import Evidence, change_checkpoint, render_checkpoint
from rollproof.governance.decision import apply_now, decision_packet
from rollproof.governance.events import Event, NewEvent
from rollproof.governance.evidence import evidence_signer, judge_evidence, validate_evidence
from rollproof.governance.grants import ConsumedGrant, consume_grant
from rollproof.governance.in_force import load_in_force, trusted_checkpoint
from rollproof.governance.lanes import HOLDING_NEEDS, lane_status, required_evidence
from rollproof.governance.ledger import Checkpoint
from rollproof.governance.preflight import Preflight, run_preflight
from rollproof.governance.records import LedgerState
from rollproof.governance.rules_decisions import release_hold
from rollproof.governance.rules_lanes import record_packet_check, record_rehearsal, refuse_lane
from rollproof.governance.rules_tickets import discharge_condition
from rollproof.governance.state import fold
from rollproof.governance.store import LedgerStore, open_ledger
from rollproof.rehearse.flow import Clock, RehearsalResult, utc_now
from rollproof.verify.attest import Signer
from rollproof.verify.findings import VerifiedPacket
from rollproof.verify.governance_layer import layer_files

REPRODUCE_TIMEOUT_S = 3600.0
PROBES_TIMEOUT_S = 600.0
PROBE_NESTED_ENV = "ROLLPROOF_PROBE_NESTED"
_PROBES_CACHE: dict[str, dict[str, object]] = {}
_OUTCOMES = {
    "commands.sh": {0: "OVERALL PASS", 1: "OVERALL FAIL"},
    "RERUN.sh": {0: "PASS/MATCH", 1: "FAIL/MISMATCH"},
}


class LaneRefusedError(HeldError):
    """A lane was not entered: recorded in the ledger as `lane.refused`."""

    def __init__(self, lane: str, reason: str, *, seq: int | None) -> None:
        self.lane = lane
        self.reason = reason
        self.seq = seq
        where = f" (ledger event {seq})" if seq is not None else ""
        super().__init__(f"lane {lane} refused: {reason}{where}")


class PreflightBlockedError(HeldError):
    """Preflight did not let the run go ahead (a FAIL, or an UNKNOWN the lane does not allow)."""

    def __init__(self, preflight: Preflight) -> None:
        self.preflight = preflight
        failing = [
            f"{c.check} {c.verdict}: {c.detail}"
            for c in preflight.checks
            if c.verdict is Verdict.FAIL or c in preflight.disallowed_unknowns
        ]
        where = (
            f" (ledger event {preflight.recorded_at})" if preflight.recorded_at is not None else ""
        )
        super().__init__("preflight blocks the run" + where + ": " + "; ".join(failing))


@dataclass(frozen=True, slots=True)
class GovernedRehearsal:
    result: RehearsalResult
    packet: Path
    verified: VerifiedPacket
    preflight: Preflight
    grant: ConsumedGrant | None
    recorded: Event
    reproduced: dict[str, tuple[str, int]]
    checkpoint: dict[str, object]
    checkpoint_md: str
    probe_failures: tuple[str, ...] = ()
    """The probes of rollproof's own gates that did not fail closed (`probe_failures`): the
    run is FAIL on the record whatever its legs found."""

    @property
    def exit_code(self) -> ExitCode:
        """The run's exit code: the rehearsal's, or FAIL (1) where it would have been 0 but a
        probe of rollproof's own gates failed (the record says FAIL; exit 0 would say PASS)."""
        code = ExitCode(int(self.result.exit_code))
        return ExitCode.CHECK_FAILED if code is ExitCode.OK and self.probe_failures else code


def probe_failures(doc: Mapping[str, Any]) -> tuple[str, ...]:
    """Each probe of a `rollproof probe --json` document that did not pass, as
    `name (expected exit E, observed O[, leaked])`; the control's refusal included."""
    entries = [*doc.get("probes", ()), doc.get("control") or {}]
    failed = []
    for entry in entries:
        if not isinstance(entry, dict) or not entry or entry.get("passed") is True:
            continue
        expected = (entry.get("expected") or {}).get("exit")
        observed = (entry.get("observed") or {}).get("exit")
        leaked = ", leaked a canary" if entry.get("leaked") else ""
        name = entry.get("name")
        failed.append(f"{name} (expected exit {expected}, observed {observed}{leaked})")
    if doc.get("verdict") != "PASS" and not failed:
        failed.append(f"the catalogue's verdict is {doc.get('verdict')!r}")
    return tuple(failed)


def _state(store: LedgerStore, gov: Governance) -> tuple[LedgerState, Checkpoint | None]:
    checkpoint = trusted_checkpoint(gov)
    return fold(store.read_verified(trusted_checkpoint=checkpoint).events), checkpoint


def _refuse(store: LedgerStore, change_id: str, lane: str, reason: str, clock: Clock) -> None:
    (event,) = store.append_events([refuse_lane(change_id, lane, reason=reason)], now=clock())
    raise LaneRefusedError(lane, reason, seq=event.seq)


def check_lane_entry(
    gov: Governance,
    store: LedgerStore,
    change_id: str,
    lane: Lane,
    *,
    has_grant: bool,
    clock: Clock,
) -> LedgerState:
    """Refuse (on the record) a lane entry the policy does not allow yet; the state otherwise."""
    if lane.grant and not has_grant:
        _refuse(
            store,
            change_id,
            lane.name,
            f"needs its own operator grant ({lane.signatures} signature(s)); none was presented",
            clock,
        )
    state, _ = _state(store, gov)
    if lane.name != gov.first.name:
        status = lane_status(gov, state, change_id, lane)
        missing = [n.text for n in status.unmet if n.kind in HOLDING_NEEDS]
        if missing:
            _refuse(store, change_id, lane.name, "; ".join(missing), clock)
    return state


def _discharges(
    state: LedgerState, change_id: str, lane: str, tree: str, preflight: Preflight
) -> list[NewEvent]:
    passed = {str(c.check) for c in preflight.checks if c.verdict is Verdict.PASS}
    events = []
    for blocker in state.open_blockers(change_id):
        for condition in blocker.open_conditions:
            by_lane = condition.id == lane and blocker.check is None
            by_check = blocker.check in passed and condition.id == "resolved"
            if by_lane or by_check:
                events.append(discharge_condition(blocker.id, condition.id, packet_tree_hash=tree))
    return events


def _shown_path(policy: Policy, packet: Path) -> str:
    absolute = packet.absolute()
    try:
        return absolute.relative_to(policy.directory).as_posix()
    except ValueError:
        return str(absolute)


def packet_location(policy: Policy, recorded: str) -> Path:
    """A packet path as recorded in the ledger, resolved from the policy's folder."""
    path = Path(recorded)
    return path if path.is_absolute() else policy.directory / path


def reproduce_packet(packet: Path, policy: Policy) -> dict[str, tuple[str, int]]:
    """Run the packet's commands.sh and RERUN.sh as a reviewer would; outcome and exit code."""
    from rollproof.surfaces.forbidden import child_environment

    env = child_environment(policy)
    env["ROLLPROOF"] = f"{sys.executable} -m rollproof"
    env.pop("ROLLPROOF_SOURCE", None)
    out: dict[str, tuple[str, int]] = {}
    from rollproof.engines.workspace import owned_temp_dir

    with owned_temp_dir("rollproof-reproduce-") as tmp:
        runs = {
            "commands.sh": ["bash", str(packet / "commands.sh"), str(Path(tmp) / "commands")],
            "RERUN.sh": ["bash", str(packet / "RERUN.sh")],
        }
        for name, argv in runs.items():
            try:
                proc = subprocess.run(
                    argv,
                    cwd=tmp,
                    env=env,
                    capture_output=True,
                    timeout=REPRODUCE_TIMEOUT_S,
                    check=False,
                )
                code = proc.returncode
            except (OSError, subprocess.TimeoutExpired):
                code = 255
            out[name] = (_OUTCOMES[name].get(code, "ERROR"), code if 0 <= code <= 255 else 255)
    return out


def _code_digest() -> str:
    package = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for path in sorted(package.rglob("*")):
        if path.suffix in (".py", ".json") and path.is_file():
            h.update(path.relative_to(package).as_posix().encode() + b"\0")
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def run_probe_catalogue() -> dict[str, object]:
    """`rollproof probe --json` in a subprocess (cached per process for the same code)."""
    if os.environ.get(PROBE_NESTED_ENV):  # a probe never starts another catalogue
        raise UsageError("a governed rehearsal run by `rollproof probe` does not probe again")
    key = _code_digest()
    if key in _PROBES_CACHE:
        return _PROBES_CACHE[key]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLPROOF_")}
    from rollproof.engines.workspace import owned_temp_dir

    with owned_temp_dir("rollproof-probes-") as tmp:
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "rollproof", "probe", "--json"],
                cwd=tmp,
                env=env,
                capture_output=True,
                timeout=PROBES_TIMEOUT_S,
                check=False,
            )
            doc = json.loads(proc.stdout) if proc.returncode in (0, 1) else None
        except (OSError, subprocess.TimeoutExpired, ValueError):
            doc = None
    if not isinstance(doc, dict) or doc.get("verdict") not in ("PASS", "FAIL"):
        raise EnvironmentProblemError("`rollproof probe --json` gave no probe report")
    _PROBES_CACHE[key] = doc
    return doc


def governed_rehearse(
    change: Change,
    source: str,
    *,
    policy: Policy,
    out: Path | None = None,
    grant: bytes | None = None,
    lane: str | None = None,
    legs: tuple[LegName, ...] | None = None,
    workdir: Path | None = None,
    keep_clone: bool = False,
    allow_undeclared: bool = False,
    scratch: str | None = None,
    full_fingerprints: bool = False,
    max_examples: int | None = None,
    signing_key: Signer | None = None,
    invocation: list[str] | None = None,
    reproduce: bool = False,
    progress: Progress | None = None,
    clock: Clock = utc_now,
) -> GovernedRehearsal:
    """Rehearse `change` in a lane of the policy's ladder, on the record (module docstring)."""
    from rollproof.core.explain import DEFAULT_MAX_EXAMPLES
    from rollproof.core.model import DEFAULT_LEGS
    from rollproof.rehearse.flow import rehearse
    from rollproof.rehearse.packet import default_out_dir, write_report

    say = progress or (lambda _msg: None)
    file_policy = policy
    store = open_ledger(file_policy.governed().ledger)
    # Everything below reads the ledger's policy in force; the file only located the ledger.
    policy = load_in_force(file_policy, store).policy
    gov = policy.governed()
    chosen = gov.lane(lane) if lane is not None else gov.first
    if chosen.kind is LaneKind.PRODUCTION:
        _refuse(
            store,
            change.id,
            chosen.name,
            "a production lane is never run by rollproof; its grant is consumed by "
            "`rollproof grant consume`, and the deploy that follows is yours",
            clock,
        )
    if grant is not None and gov.executor is None:
        raise UsageError("the policy names no executor key ([governance] executor)")
    check_lane_entry(gov, store, change.id, chosen, has_grant=grant is not None, clock=clock)

    say("preflight")
    preflight = run_preflight(
        file_policy, change, source, lane=chosen.name, now=clock(), store=store
    )
    if not preflight.may_proceed:
        raise PreflightBlockedError(preflight)

    consumed: list[ConsumedGrant] = []
    # A dump is its bytes: the grant binds its sha256, hashed here, and the rehearsal is held to
    # that digest (`#sha256=`), so the dump cannot change between the two.
    from rollproof.governance.issuance import dump_sha256

    dump_digest = dump_sha256(source)
    if dump_digest is not None:
        source = parse_dump_dsn(source).dsn(dump_digest)

    def consume(snapshot: Fingerprint) -> None:
        if grant is None:
            return
        assert gov.executor is not None
        say(f"consuming the grant for lane {chosen.name}")
        state, _ = _state(store, gov)
        required = required_evidence(gov, state, change.id, chosen.name)
        consumed.append(
            consume_grant(
                store,
                grant,
                trusted_keys=list(gov.operators.values()),
                lane=chosen.name,
                change_id=change.id,
                source_fingerprint=(
                    snapshot.digest if dump_digest is None else f"sha256:{dump_digest}"
                ),
                executor_key_id=gov.executor.key_id,
                now=clock(),
                required_signatures=chosen.signatures,
                packet_tree_hash=None if required is None else required.packet_tree_hash,
                require_evidence=chosen.evidence,
                content_id=change.content_id,
                dump=dump_digest is not None,
            )
        )

    result = rehearse(
        change,
        source,
        legs=legs or DEFAULT_LEGS,
        workdir=workdir,
        keep_clone=keep_clone,
        progress=say,
        clock=clock,
        policy=policy,
        allow_undeclared=allow_undeclared,
        scratch=scratch,
        full_fingerprints=full_fingerprints,
        max_examples=DEFAULT_MAX_EXAMPLES if max_examples is None else max_examples,
        before_legs=consume,
    )
    packet = write_report(
        result,
        out or default_out_dir(result, Path(".rollproof/packets")),
        invocation=invocation,
        signing_key=signing_key,
    )
    say("validating the packet")
    verified = validate_evidence(packet, gov)
    say("probing rollproof's own gates: rollproof probe")
    probes = run_probe_catalogue()
    failures = probe_failures(probes)
    probes_pass = probes["verdict"] == "PASS" and not failures
    if failures:
        say(f"rollproof probe: {len(failures)} gate(s) did not fail closed: " + "; ".join(failures))
    grant_id = consumed[0].grant.grant_id if consumed else None
    tree = verified.tree_hash

    def record(state: LedgerState) -> list[NewEvent]:
        events = [
            record_rehearsal(
                change.id,
                tree,
                verified.overall if probes_pass else Verdict.FAIL,
                isolation=verified.isolation,
                exit_code=verified.exit_code,
                signed_by=verified.signed_by,
                lane=chosen.name,
                grant_id=grant_id,
                packet=_shown_path(policy, packet),
                impact=impact_record(verified.report["impact"]),
            )
        ]
        # Only evidence discharges anything: not a FAIL, an UNKNOWN or a NOT_PROVEN run.
        if probes_pass and judge_evidence(verified, required_signer=evidence_signer(gov)).counts:
            events += _discharges(state, change.id, chosen.name, tree, preflight)
        return events

    (recorded, *_discharged) = store.append_events(record, now=clock())
    reproduced: dict[str, tuple[str, int]] = {}
    if reproduce:
        say("reproducing: commands.sh and RERUN.sh")
        reproduced = reproduce_packet(packet, policy)
        store.append_events(
            [
                record_packet_check(change.id, tree, check=name, outcome=outcome, exit_code=code)
                for name, (outcome, code) in reproduced.items()
            ],
            now=clock(),
        )
    doc, markdown = write_governance_layer(
        policy,
        store,
        change_id=change.id,
        lane=chosen.name,
        packet=packet,
        verified=verified,
        record=recorded,
        clock=clock,
        probes=probes,
    )
    final = validate_evidence(packet, gov)
    return GovernedRehearsal(
        result=result,
        packet=packet,
        verified=final,
        preflight=preflight,
        grant=consumed[0] if consumed else None,
        recorded=recorded,
        reproduced=reproduced,
        checkpoint=doc,
        checkpoint_md=markdown,
        probe_failures=failures,
    )


def write_governance_layer(
    policy: Policy,
    store: LedgerStore,
    *,
    change_id: str,
    lane: str,
    packet: Path,
    verified: VerifiedPacket,
    record: Event,
    clock: Clock,
    probes: Mapping[str, Any],
) -> tuple[dict[str, object], str]:
    """Derive the decision packet, checkpoint and addendum; write them into `packet`, sealed."""
    gov = policy.governed()
    state, ledger_checkpoint = _state(store, gov)
    now = clock()
    rehearsal = state.rehearsals[verified.tree_hash]
    evidence = Evidence(rehearsal, Path(_shown_path(policy, packet)), verified, probes=probes)
    doc = change_checkpoint(
        gov, state, change_id, evidence, now=now, ledger_checkpoint=ledger_checkpoint
    )
    markdown = render_checkpoint(doc)
    decision = decision_packet(
        gov,
        state,
        change_id=change_id,
        lane=lane,
        packet_tree_hash=verified.tree_hash,
        overall=verified.overall if probes["verdict"] == "PASS" else Verdict.FAIL,
        now=now,
    )
    addendum_doc = doc["addendum"]
    assert isinstance(addendum_doc, dict)
    start = addendum_doc["ledger"]["from"]
    discharged = [
        {"blocker_id": b.id, "condition_id": c.id, "seq": c.discharged_at}
        for b in state.blockers.values()
        for c in b.conditions
        if c.evidence == verified.tree_hash and c.discharged_at is not None
    ]
    granted = apply_now(gov, state, change_id, now)
    addendum = {
        "schema": "rollproof/governance-addendum/v1",
        "change_id": change_id,
        "lane": lane,
        "packet_tree_hash": verified.tree_hash,
        "ledger": {"from": min(start, record.seq), "through": state.through, "head": state.head},
        "grant_id": rehearsal.grant_id,
        "tickets": addendum_doc["tickets"],
        "discharged": sorted(discharged, key=lambda d: (d["seq"], d["blocker_id"])),
        "apply_now": "NO" if granted is None else "YES",
    }
    files = layer_files(decision, addendum, markdown, verified.tree_hash, probes)
    seal = files.pop("GOVERNANCE.json")
    for rel, data in sorted(files.items()):
        target = packet / rel
        if target.exists():
            raise UsageError(f"{target} exists: a packet's governance layer is written once")
        atomic_write_bytes(target, data)
    atomic_write_bytes(packet / "GOVERNANCE.json", seal)  # last: an unsealed layer is invalid
    return doc, markdown


def enter_lane(
    policy: Policy,
    *,
    lane: str,
    change_id: str,
    source: str,
    grant: bytes | None,
    clock: Clock = utc_now,
    fingerprint: Callable[[str], Fingerprint] | None = None,
) -> ConsumedGrant:
    """Consume a production lane's grant and lift HOLD for the change (module docstring)."""
    from rollproof.governance.issuance import fingerprint_source

    if dump_scheme(source) is not None:
        # Stops a copy standing in for the target: a production lane's source is production.
        raise UsageError(
            f"source {redact_dsn(source)} is a dump: a production lane is entered against the "
            "production source itself"
        )
    store = open_ledger(policy.governed().ledger)
    gov = load_in_force(policy, store).policy.governed()
    chosen = gov.lane(lane)
    if chosen.kind is not LaneKind.PRODUCTION:
        raise UsageError(
            f"lane {chosen.name} is a clone lane: its grant is consumed by "
            f"`rollproof rehearse CHANGE --lane {chosen.name} --grant FILE`"
        )
    if gov.executor is None:
        raise UsageError("the policy names no executor key ([governance] executor)")
    state = check_lane_entry(
        gov, store, change_id, chosen, has_grant=grant is not None, clock=clock
    )
    assert grant is not None  # check_lane_entry refused it otherwise: production needs a grant
    required = required_evidence(gov, state, change_id, chosen.name)
    digest = (fingerprint or fingerprint_source)(source).digest
    consumed = consume_grant(
        store,
        grant,
        trusted_keys=list(gov.operators.values()),
        lane=chosen.name,
        change_id=change_id,
        source_fingerprint=digest,
        executor_key_id=gov.executor.key_id,
        now=clock(),
        required_signatures=chosen.signatures,
        packet_tree_hash=None if required is None else required.packet_tree_hash,
        require_evidence=chosen.evidence,
    )
    store.append_events([release_hold(change_id, grant_id=consumed.grant.grant_id)], now=clock())
    return consumed
