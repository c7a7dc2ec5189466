"""Lane rules: how rehearsal, preflight, packet-check and lane-refusal events fold, and their
builders.

**Rehearsals**: a packet tree hash is recorded once; one that cites a grant cites a grant
consumed for that change (and lane), and each grant backs one rehearsal.
**Preflights** record the ledger position they verified, which must be the position they are
appended at: a preflight cannot claim to have read a ledger it did not (it is appended by a
builder in the same transaction that read the state).
**Packet checks** (commands.sh, RERUN.sh) cite a packet recorded earlier for the same change.
**Lane refusals** only record that a lane was not entered, and why.

`LANE_RULES` maps each of these kinds to its rule for the fold (`state.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rollproof.core.model import IsolationVerdict, Verdict
from rollproof.governance.bodies import _body
from rollproof.governance.events import Event, EventKind, NewEvent
from rollproof.governance.fold_state import FoldState
from rollproof.governance.records import (
    CheckRecord,
    LaneRefusalRecord,
    LedgerRuleError,
    LedgerState,
    PacketCheckRecord,
    PreflightRecord,
    RehearsalRecord,
)


def _rehearsal_recorded(f: FoldState, e: Event, b: dict[str, Any]) -> None:
    tree = b["packet_tree_hash"]
    if tree in f.rehearsals:
        raise LedgerRuleError(e.seq, e.kind, f"packet {tree} is already recorded")
    grant_id, lane = b.get("grant_id"), b.get("lane")
    if grant_id is not None:
        grant = f._consumed_for(e, grant_id, b["change_id"])
        if lane is not None and grant.lane != lane:
            raise LedgerRuleError(e.seq, e.kind, f"grant {grant_id} is for lane {grant.lane}")
        if grant_id in f.backed:
            # Stops one single-use grant from standing behind two rehearsals.
            raise LedgerRuleError(e.seq, e.kind, f"grant {grant_id} already backs a rehearsal")
        f.backed.add(grant_id)
    f.rehearsals[tree] = RehearsalRecord(
        packet_tree_hash=tree,
        change_id=b["change_id"],
        overall=Verdict(b["overall"]),
        seq=e.seq,
        lane=lane,
        grant_id=grant_id,
        packet=b.get("packet"),
        isolation=IsolationVerdict(b["isolation"]),
        exit_code=b["exit_code"],
        signed_by=tuple(b.get("signed_by", ())),
        impact=b.get("impact"),
    )


def _preflight_recorded(f: FoldState, e: Event, b: dict[str, Any]) -> None:
    if b["through"] != f.through or b["head"] != f.head:
        # Stops a preflight claiming to have verified a ledger position it was not appended at.
        raise LedgerRuleError(
            e.seq, e.kind, f"claims to have read the ledger through {b['through']}, not {f.through}"
        )
    checks = tuple(CheckRecord(c["check"], Verdict(c["verdict"]), c["detail"]) for c in b["checks"])
    f.preflights.append(
        PreflightRecord(
            seq=e.seq,
            change_id=b["change_id"],
            lane=b["lane"],
            source=b["source"],
            checks=checks,
            overall=Verdict(b["overall"]),
            through=b["through"],
            head=b["head"],
        )
    )


def _packet_checked(f: FoldState, e: Event, b: dict[str, Any]) -> None:
    record = f.rehearsals.get(b["packet_tree_hash"])
    if record is None or record.change_id != b["change_id"]:
        raise LedgerRuleError(
            e.seq, e.kind, f"packet {b['packet_tree_hash']} was never recorded for this change"
        )
    f.packet_checks.append(
        PacketCheckRecord(
            seq=e.seq,
            change_id=b["change_id"],
            packet_tree_hash=b["packet_tree_hash"],
            check=b["check"],
            outcome=b["outcome"],
            exit_code=b["exit_code"],
        )
    )


def _lane_refused(f: FoldState, e: Event, b: dict[str, Any]) -> None:
    f.lane_refusals.append(
        LaneRefusalRecord(seq=e.seq, change_id=b["change_id"], lane=b["lane"], reason=b["reason"])
    )


LANE_RULES: dict[EventKind, Callable[[FoldState, Event, dict[str, Any]], None]] = {
    EventKind.REHEARSAL_RECORDED: _rehearsal_recorded,
    EventKind.PREFLIGHT_RECORDED: _preflight_recorded,
    EventKind.PACKET_CHECKED: _packet_checked,
    EventKind.LANE_REFUSED: _lane_refused,
}


# --- builders: one NewEvent per helper; rules are enforced when the ledger folds them in ------


def record_rehearsal(
    change_id: str,
    packet_tree_hash: str,
    overall: Verdict,
    *,
    isolation: IsolationVerdict,
    exit_code: int,
    signed_by: Sequence[str] = (),
    lane: str | None = None,
    grant_id: str | None = None,
    packet: str | None = None,
    impact: Mapping[str, Any] | None = None,
) -> NewEvent:
    """A validated packet's facts: the evidence predicate (`evidence.py`) is applied to them
    from the ledger alone, so each is recorded as the validator found it, never assumed; so is
    its measured impact (`core.impact.impact_record`), which a production lane is judged on."""
    return NewEvent(
        EventKind.REHEARSAL_RECORDED,
        _body(
            change_id=change_id,
            packet_tree_hash=packet_tree_hash,
            overall=str(overall),
            isolation=str(isolation),
            exit_code=exit_code,
            signed_by=sorted(set(signed_by)) or None,
            lane=lane,
            grant_id=grant_id,
            packet=packet,
            impact=None if impact is None else dict(impact),
        ),
    )


def record_preflight(
    state: LedgerState,
    *,
    change_id: str,
    lane: str,
    source: str,
    checks: Sequence[CheckRecord],
    overall: Verdict,
) -> NewEvent:
    """A preflight's results, citing the ledger position `state` was folded through."""
    return NewEvent(
        EventKind.PREFLIGHT_RECORDED,
        _body(
            change_id=change_id,
            lane=lane,
            source=source,
            checks=[
                {"check": c.check, "verdict": str(c.verdict), "detail": c.detail} for c in checks
            ],
            overall=str(overall),
            through=state.through,
            head=state.head,
        ),
    )


def record_packet_check(
    change_id: str, packet_tree_hash: str, *, check: str, outcome: str, exit_code: int
) -> NewEvent:
    return NewEvent(
        EventKind.PACKET_CHECKED,
        _body(
            change_id=change_id,
            packet_tree_hash=packet_tree_hash,
            check=check,
            outcome=outcome,
            exit_code=exit_code,
        ),
    )


def refuse_lane(change_id: str, lane: str, *, reason: str) -> NewEvent:
    return NewEvent(EventKind.LANE_REFUSED, _body(change_id=change_id, lane=lane, reason=reason))
