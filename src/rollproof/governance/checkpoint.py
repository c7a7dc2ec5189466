"""The checkpoint: where a change stands, in a page a person reads in a minute (and as JSON).

    change_checkpoint(gov, state, change_id, evidence, now) -> checkpoint.json's content
    render_checkpoint(doc) -> checkpoint.md
    current_state(gov, state, evidences, now) -> current-state.json's content (every change)
    render_current_state(doc) -> current-state.md

Pure: a folded, verified ledger state, the evidence packet as the validator found it *now*
(`Evidence`), the policy and a clock in; documents out. Nothing in a checkpoint is typed in:
every figure is a field of an event (named by its seq) or of the validated packet, so a test
can hold each one against its source. (Not to be confused with a *ledger* checkpoint: the
signed size and head hash in `ledger.py`.)

The final status token is, for a change id C (upper-cased, non-alphanumerics as `_`):

    C_REHEARSAL_ONLY_ROLLBACK_READY   the newest rehearsal counts as evidence (`evidence.py`:
                                      PASS, isolation proven, exit 0, signed if required), both
                                      as recorded and as its packet validates now with the tree
                                      hash the ledger recorded; its preflight let it proceed; no
                                      recorded re-run of it failed; HOLD in force
    C_<LANE>_GRANTED                  the same, and HOLD is lifted by a production-lane grant
                                      still inside its window (APPLY_NOW=YES)
    C_BLOCKED                         anything else; `blocked_by` says why
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rollproof.core.keys import short_key_id
from rollproof.core.model import Verdict
from rollproof.core.policy import Gate, Governance
from rollproof.governance.decision import apply_now
from rollproof.governance.events import format_utc
from rollproof.governance.evidence import evidence_signer, judge_evidence, judge_record
from rollproof.governance.lanes import (
    changes_in,
    gates,
    hold_status,
    lane_reached,
    lane_status,
    rehearsals_of,
)
from rollproof.governance.ledger import Checkpoint
from rollproof.governance.records import (
    Blocker,
    BlockerState,
    LedgerState,
    PreflightRecord,
    RehearsalRecord,
    TicketState,
)
from rollproof.verify.findings import VerifiedPacket
from rollproof.verify.governance_layer import checkpoint_title, probe_line
from rollproof.verify.layout import PROBES_JSON

CHECKPOINT_SCHEMA = "rollproof/checkpoint/v1"
CURRENT_STATE_SCHEMA = "rollproof/current-state/v1"
READY = "REHEARSAL_ONLY_ROLLBACK_READY"
BLOCKED = "BLOCKED"
GATE_LABELS = {
    Gate.PRODUCTION_MUTATION: "Production mutation",
    Gate.REAL_RUN: "Real run",
    Gate.CUTOVER: "Cutover",
    Gate.CI_DEPLOY_TRIGGER: "CI/deploy trigger",
    Gate.SECRET_ACCESS: "Secret access",
}
REPRODUCTIONS = ("commands.sh", "RERUN.sh")
_PASSING = {"commands.sh": "OVERALL PASS", "RERUN.sh": "PASS/MATCH"}


@dataclass(frozen=True, slots=True)
class Evidence:
    """A recorded rehearsal's packet as the validator found it now."""

    record: RehearsalRecord
    path: Path | None
    packet: VerifiedPacket | None
    problem: str | None = None
    """Why there is no validated packet: not found, invalid (first finding), another tree."""
    probes: Mapping[str, Any] | None = None
    """probes.json as it is being written (otherwise read from the packet's governance layer)."""


def _probes_of(evidence: Evidence) -> Mapping[str, Any] | None:
    if evidence.probes is not None:
        return evidence.probes
    data = evidence.packet.governance_files.get(PROBES_JSON) if evidence.packet else None
    if data is None:
        return None
    doc = json.loads(data)  # validated with the packet: canonical JSON of its schema
    return doc if isinstance(doc, dict) else None


def status_token(change_id: str, status: str) -> str:
    def norm(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").upper()

    return f"{norm(change_id)}_{norm(status)}"


def _who(gov: Governance, key_id: str) -> str:
    return gov.operator_name(key_id) or f"key {short_key_id(key_id)} (not in the policy)"


def _run_preflight(state: LedgerState, record: RehearsalRecord) -> PreflightRecord | None:
    found = [p for p in state.preflights if p.change_id == record.change_id and p.seq < record.seq]
    return found[-1] if found else None


def _run_window(state: LedgerState, record: RehearsalRecord) -> tuple[int, int]:
    """The events of the run that recorded `record`: after the change's previous rehearsal (or
    the start), through the event before its next rehearsal (or the head)."""
    seqs = [r.seq for r in rehearsals_of(state, record.change_id)]
    at = seqs.index(record.seq)
    start = seqs[at - 1] + 1 if at > 0 else 1
    end = seqs[at + 1] - 1 if at + 1 < len(seqs) else state.through
    return start, end


def tickets_touched(state: LedgerState, start: int, end: int) -> list[str]:
    """Ticket ids opened, updated or closed within events start..end, by first touch."""
    touched = [
        (min(s for s in t.touched_at if start <= s <= end), t.id)
        for t in state.tickets.values()
        if any(start <= s <= end for s in t.touched_at)
    ]
    return [tid for _, tid in sorted(touched)]


def id_range(ids: Sequence[str]) -> str | None:
    if not ids:
        return None
    return ids[0] if len(ids) == 1 else f"{ids[0]}..{ids[-1]}"


def _checks(state: LedgerState, record: RehearsalRecord) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for c in state.packet_checks:
        if c.packet_tree_hash == record.packet_tree_hash:
            out[c.check] = {"outcome": c.outcome, "exit_code": c.exit_code, "seq": c.seq}
    return out


def _blocked_by(gov: Governance, state: LedgerState, evidence: Evidence | None) -> list[str]:
    if evidence is None:
        return ["no rehearsal of this change is on the record"]
    why: list[str] = []
    record = evidence.record
    signer = evidence_signer(gov)
    if evidence.packet is None:
        why.append(f"its packet does not validate now: {evidence.problem}")
    else:
        now_judged = judge_evidence(evidence.packet, required_signer=signer)
        if not now_judged.counts:
            why.append(f"its packet does not count as evidence: {now_judged.why_not()}")
    if record.overall is not Verdict.PASS:
        why.append(f"the rehearsal recorded at event {record.seq} is {record.overall}")
    recorded = judge_record(record, required_signer=signer)
    if not recorded.counts:
        why.append(
            f"the rehearsal recorded at event {record.seq} does not count as evidence: "
            f"{recorded.why_not()}"
        )
    pre = _run_preflight(state, record)
    if pre is not None:
        allowed = set(gov.lane(pre.lane).allow_unknown) if pre.lane in _lane_names(gov) else set()
        for c in pre.checks:
            if c.verdict is Verdict.FAIL or (
                c.verdict is Verdict.UNKNOWN and c.check not in allowed
            ):
                why.append(f"preflight (event {pre.seq}) {c.check} {c.verdict}")
    for name, check in _checks(state, record).items():
        if check["outcome"] != _PASSING[name]:
            why.append(f"{name} {check['outcome']} (event {check['seq']})")
    return why


def _lane_names(gov: Governance) -> set[str]:
    return {lane.name for lane in gov.lanes}


def _blocker_json(b: Blocker, state: LedgerState) -> dict[str, Any]:
    return {
        "id": b.id,
        "state": str(b.state),
        "title": b.title,
        "check": b.check,
        "classification": b.classification,
        "conditions": [
            {
                "id": c.id,
                "text": c.text,
                "discharged_by": c.evidence,
                "discharged_at": c.discharged_at,
            }
            for c in b.conditions
        ],
    }


def _done(
    gov: Governance,
    state: LedgerState,
    evidence: Evidence,
    grant: dict[str, Any] | None,
    doc_apply_now: str,
) -> list[str]:
    record = evidence.record
    lines: list[str] = []
    pre = _run_preflight(state, record)
    if pre is not None:
        summary = ", ".join(f"{c.check} {c.verdict}" for c in pre.checks)
        lines.append(
            f"Preflight (event {pre.seq}, lane {pre.lane}, source {pre.source}): {summary}; "
            f"verified from the ledger's bytes, folded through {pre.through}."
        )
    if grant is not None:
        lines.append(
            f"Grant {grant['grant_id']} for lane {grant['lane']} consumed at event "
            f"{grant['seq']} before any leg ran (issued by {grant['issuer']}; "
            f"expires {grant['expires']})."
        )
    packet = evidence.packet
    if packet is not None:
        report = packet.report
        checks = report["isolation"]["checks"]
        held = sum(1 for c in checks if c["holds"])
        lines.append(f"Isolated clone: {packet.isolation} ({held}/{len(checks)} checks hold).")
        legs = "; ".join(
            f"{leg['name']} {leg['verdict']}"
            + (
                " (" + ", ".join(i["check"] for i in leg["invariants"]) + ")"
                if leg["invariants"]
                else ""
            )
            for leg in report["legs"]
        )
        lines.append(f"Legs on the clone: {legs}.")
        pinned = report["validator_sha256"] == state.validator_pin
        probes = _probes_of(evidence)
        if probes is not None:
            lines.append(
                probe_line(probes) + f" (governance/probes.json, verdict {probes['verdict']})."
            )
        lines.append(
            f"Validator: packet VALID now; overall {packet.overall}, rehearse exit code "
            f"{packet.exit_code}; written under validator {report['validator_sha256'][:16]}… "
            f"({'the pinned one' if pinned else 'NOT the pinned one'})."
        )
        forbidden = report["surfaces"]["forbidden"]
        spared = sum(1 for f in forbidden if f["status"] != "TOUCHED")
        lines.append(
            f"Surfaces: scoping {report['surfaces']['scoping']['status']}; forbidden surfaces "
            f"{spared}/{len(forbidden)} untouched/not-requested."
        )
    for b in state.blockers.values():
        if (
            b.change_id == record.change_id
            and b.check is not None
            and b.state in (BlockerState.CLASSIFIED,)
        ):
            lines.append(
                f"{b.check} UNKNOWN classified: blocker {b.id} {b.state} ({b.classification}); "
                "nothing triggered by it."
            )
        for c in b.conditions:
            if c.evidence == record.packet_tree_hash:
                lines.append(
                    f"Blocker {b.id}: condition {c.id} discharged by this packet "
                    f"(event {c.discharged_at})."
                )
    lines.append(f"Decision packet: default HOLD; no option selected; APPLY_NOW={doc_apply_now}.")
    for d in state.decisions:
        if d.change_id == record.change_id and d.seq > record.seq:
            by = "unsigned" if d.operator is None else f"signed by {_who(gov, d.operator)}"
            target = f" {d.lane}" if d.lane else ""
            lines.append(f"Decision at event {d.seq} ({by}): {d.decision}{target}: {d.reason}")
    refusals = [r.seq for r in state.refusals if r.change_id == record.change_id] + [
        r.seq for r in state.lane_refusals if r.change_id == record.change_id
    ]
    if refusals:
        shown = ", ".join(str(s) for s in sorted(refusals))
        word = "event" if len(refusals) == 1 else "events"
        lines.append(f"Refusals on the record for this change: {len(refusals)} ({word} {shown}).")
    return lines


def _next(
    gov: Governance,
    state: LedgerState,
    change_id: str,
    blocked_by: Sequence[str],
    now: datetime,
) -> list[str]:
    if blocked_by:
        return [
            "Blocked: " + "; ".join(blocked_by) + ". Fix that, then rehearse again "
            "(rollproof rehearse … --grant FILE)."
        ]
    hold = hold_status(gov, state, change_id, now)
    reached = lane_reached(gov, state, change_id)
    lines = [
        f"Operator decision, default HOLD ({hold.reason}): "
        f"rollproof decide {change_id} --hold | --proceed LANE."
    ]
    above = gov.above(reached.name) if reached is not None else gov.lanes
    if above:
        nxt = lane_status(gov, state, change_id, above[0])
        needs = "; ".join(n.text for n in nxt.needs if not n.met)
        lines.append(
            f"If not HOLD: lane {above[0].name} ({above[0].kind}), "
            + ("available once an operator signs its grant" if nxt.available_now else "not yet")
            + (f" — needs {needs}" if needs else "")
            + "."
        )
        if len(above) > 1:
            lines.append(
                "Then, each separately granted: " + " → ".join(x.name for x in above[1:]) + "."
            )
    return lines


def change_checkpoint(
    gov: Governance,
    state: LedgerState,
    change_id: str,
    evidence: Evidence | None,
    *,
    now: datetime,
    ledger_checkpoint: Checkpoint | None = None,
) -> dict[str, Any]:
    """checkpoint.json's content for `change_id` (see the module docstring)."""
    blocked_by = _blocked_by(gov, state, evidence)
    granted = apply_now(gov, state, change_id, now)
    hold = hold_status(gov, state, change_id, now)
    if blocked_by:
        status = status_token(change_id, BLOCKED)
    elif granted is not None and hold.grant is not None:
        status = status_token(change_id, f"{hold.grant.lane}_GRANTED")
    else:
        status = status_token(change_id, READY)
    grant: dict[str, Any] | None = None
    record = None if evidence is None else evidence.record
    if record is not None and record.grant_id is not None:
        g = state.consumed_grants[record.grant_id]
        grant = {
            "grant_id": g.grant_id,
            "lane": g.lane,
            "seq": g.seq,
            "issuer": _who(gov, g.issuer),
            "signers": [_who(gov, s) for s in g.signers],
            "not_before": g.not_before,
            "expires": g.expires,
        }
    gate_grants = gates(gov, state, change_id, now)
    blockers = state.blockers.values()
    apply_text = "NO" if granted is None else "YES"
    out: dict[str, Any] = {
        "schema": CHECKPOINT_SCHEMA,
        "change_id": change_id,
        "date": format_utc(now)[:10],
        "status": status,
        "blocked_by": blocked_by,
        "ledger": {
            "through": state.through,
            "head": state.head,
            "checkpoint": None
            if ledger_checkpoint is None
            else {"size": ledger_checkpoint.size, "head": ledger_checkpoint.head},
        },
        "lane": None if record is None else (record.lane or gov.first.name),
        "grant": grant,
        "gates": {
            str(gate): {
                "open": "NO" if g is None else "YES",
                "lane": gov.gates[gate],
                "grant_id": None if g is None else g.grant_id,
            }
            for gate, g in gate_grants.items()
        },
        "apply_now": apply_text,
        "hold": hold.reason,
        "done": [],
        "evidence": None,
        "blockers": [
            _blocker_json(b, state)
            for b in state.open_blockers()
            if b.change_id in (None, change_id)
        ],
        "tickets": [
            {"id": t.id, "title": t.title, "state": str(t.state)}
            for t in state.tickets.values()
            if t.change_id == change_id
            or any(b.ticket_id == t.id and b.change_id == change_id for b in blockers)
        ],
        "addendum": None,
        "next": _next(gov, state, change_id, blocked_by, now),
    }
    if evidence is not None and record is not None:
        out["done"] = _done(gov, state, evidence, grant, apply_text)
        checks = _checks(state, record)
        exit_codes: dict[str, int] = {}
        if evidence.packet is not None:
            exit_codes["rehearse"] = evidence.packet.exit_code
        for name in REPRODUCTIONS:
            if name in checks:
                exit_codes[name] = checks[name]["exit_code"]
        out["evidence"] = {
            "packet": None if evidence.path is None else str(evidence.path),
            "recorded_at": record.seq,
            "valid": evidence.packet is not None,
            "problem": evidence.problem,
            "files": None if evidence.packet is None else len(evidence.packet.files),
            "tree_hash": record.packet_tree_hash,
            "overall": str(record.overall),
            "commands_sh": checks.get("commands.sh", {}).get("outcome"),
            "rerun_sh": checks.get("RERUN.sh", {}).get("outcome"),
            "exit_codes": exit_codes,
        }
        start, end = _run_window(state, record)
        ids = tickets_touched(state, start, end)
        out["addendum"] = {
            "ledger": {"from": start, "through": end},
            "tickets": {"range": id_range(ids), "ids": ids},
            "apply_now": apply_text,
        }
    return out


def _evidence_line(ev: Mapping[str, Any], addendum: Mapping[str, Any] | None) -> str:
    def ran(name: str, outcome: str | None) -> str:
        return f"{name} {outcome}" if outcome else f"{name} not run (rehearse --reproduce runs it)"

    codes = ev["exit_codes"]
    codes_text = (
        "exit codes all zero"
        if codes and all(v == 0 for v in codes.values())
        else "exit codes " + ", ".join(f"{k} {v}" for k, v in codes.items())
    )
    files = "not valid now" if ev["files"] is None else f"{ev['files']} files"
    line = (
        f"Packet {ev['packet']} ({files}, tree {ev['tree_hash']}, "
        f"{ran('commands.sh', ev['commands_sh'])}, {ran('RERUN.sh', ev['rerun_sh'])}, "
        f"{codes_text}; recorded at event {ev['recorded_at']})."
    )
    if ev["problem"]:
        line += f" NOT VALID NOW: {ev['problem']}."
    if addendum is not None:
        tickets = addendum["tickets"]["range"] or "none"
        line += (
            " Report md+json; decision packet; this checkpoint; governance addendum "
            f"(tickets {tickets}, APPLY_NOW={addendum['apply_now']})."
        )
    return line


def _blocker_line(b: Mapping[str, Any]) -> str:
    parts = []
    for c in b["conditions"]:
        if c["discharged_by"]:
            parts.append(
                f"{c['id']} discharged by tree {c['discharged_by'][:16]}… "
                f"(event {c['discharged_at']})"
            )
        else:
            parts.append(f"{c['id']} OPEN ({c['text']})")
    why = f"; {b['classification']}" if b["classification"] else ""
    return f"- {b['id']} {b['state']}: {b['title']}{why} — " + "; ".join(parts)


def render_checkpoint(doc: Mapping[str, Any]) -> str:
    """checkpoint.md from checkpoint.json."""
    grant = doc["grant"]
    gates_line = " · ".join(
        f"{GATE_LABELS[Gate(name)]}: {g['open']}" for name, g in doc["gates"].items()
    )
    lines = [
        checkpoint_title(doc["change_id"], doc["date"]),
        "",
        f"Final status: {doc['status']}",
        "Grant consumed: "
        + (
            f"{grant['grant_id']} (lane {grant['lane']}, issued by {grant['issuer']}, "
            f"event {grant['seq']}, expires {grant['expires']})"
            if grant
            else "none"
        ),
        f"{gates_line} · APPLY_NOW={doc['apply_now']}",
        "",
        "## Done",
        "",
        *(f"- {line}" for line in doc["done"] or ["Nothing on the record yet."]),
        "",
        "## Evidence",
        "",
        _evidence_line(doc["evidence"], doc["addendum"])
        if doc["evidence"]
        else "No rehearsal on the record.",
        "",
        f"## Blockers ({len(doc['blockers'])} not closed)",
        "",
        *([_blocker_line(b) for b in doc["blockers"]] or ["None."]),
        "",
        "## Tickets",
        "",
        *([f"- {t['id']} {t['state']}: {t['title']}" for t in doc["tickets"]] or ["None."]),
        "",
        "## Next",
        "",
        *(f"- {line}" for line in doc["next"]),
        "",
        f"Derived from ledger events 1..{doc['ledger']['through']} (head "
        f"{doc['ledger']['head']}) and the packet validated above; production stays separately "
        "gated.",
    ]
    return "\n".join(lines) + "\n"


def current_state(
    gov: Governance,
    state: LedgerState,
    evidences: Mapping[str, Evidence | None],
    *,
    now: datetime,
) -> dict[str, Any]:
    """current-state.json: every change in the ledger, where it stands."""
    changes = []
    for change_id in changes_in(state):
        cp = change_checkpoint(gov, state, change_id, evidences.get(change_id), now=now)
        reached = lane_reached(gov, state, change_id)
        changes.append(
            {
                "change_id": change_id,
                "status": cp["status"],
                "lane_reached": None if reached is None else reached.name,
                "hold": "HOLD" if cp["apply_now"] == "NO" else "GRANTED",
                "hold_detail": cp["hold"],
                "open_blockers": [
                    {"id": b["id"], "state": b["state"]}
                    for b in cp["blockers"]
                    if b["state"] != str(BlockerState.CLOSED)
                ],
                "open_tickets": [
                    t["id"] for t in cp["tickets"] if t["state"] == str(TicketState.OPEN)
                ],
                "latest_rehearsal": None
                if cp["evidence"] is None
                else {
                    "tree_hash": cp["evidence"]["tree_hash"],
                    "overall": cp["evidence"]["overall"],
                    "recorded_at": cp["evidence"]["recorded_at"],
                },
            }
        )
    return {
        "schema": CURRENT_STATE_SCHEMA,
        "date": format_utc(now)[:10],
        "ledger": {"through": state.through, "head": state.head},
        "changes": changes,
    }


def render_current_state(doc: Mapping[str, Any]) -> str:
    lines = [
        f"# Current state ({doc['date']})",
        "",
        f"Ledger events 1..{doc['ledger']['through']} (head {doc['ledger']['head']}).",
        "",
        "| change | status | lane reached | production | open blockers |",
        "|---|---|---|---|---|",
    ]
    for c in doc["changes"]:
        blockers = ", ".join(f"{b['id']} ({b['state']})" for b in c["open_blockers"]) or "none"
        lines.append(
            f"| {c['change_id']} | {c['status']} | {c['lane_reached'] or 'none'} | "
            f"{c['hold']} | {blockers} |"
        )
    if not doc["changes"]:
        lines.append("| (no change on the record) | | | | |")
    return "\n".join(lines) + "\n"
