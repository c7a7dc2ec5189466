"""Where a change stands on the policy's lane ladder: evidence, blockers, grants, gates, HOLD.

Pure: a policy's `Governance`, a folded `LedgerState`, a change id and a clock reading in;
values out. The decision packet, the checkpoint and the governed flow all ask these questions
here, so what the operator is shown and what the executor is allowed cannot disagree.

Rules, each against a named failure:

* **Evidence of a clone lane** is a `rehearsal.recorded` event for the change in that lane that
  counts as evidence (`evidence.py`: overall PASS, isolation PROVEN_ISOLATED_NOT_PRODUCTION,
  exit code 0, signed when the policy requires it; it is only recorded after the packet
  validated). A production lane is reached
  when a grant for it was consumed. A lane that needs evidence needs every lane below reached,
  and its grant must cite the newest PASS packet of the highest clone lane below it: a grant
  written against older evidence does not open the lane (the evidence may have been superseded
  by a FAIL).
* **Blockers** (not CLOSED, filed for the change or for no change) block a lane:
  - an UNKNOWN blocker (one opened by a preflight check) blocks every lane that does not list
    that check in `allow_unknown`: UNKNOWN is never PASS unless the policy says so for the lane;
  - an open condition named after a lane blocks every lane above it (its evidence is needed
    first); a condition named after the lane itself does not block it: entering the lane is how
    it gets discharged;
  - an open condition named after no lane blocks every lane past the first (only evidence an
    operator cites can discharge it).
* **Impact**: a production lane, when an `[impact]` limit applies (the policy in force's, or the
  change's own as its evidence recorded them), needs the measured impact of the evidence it
  stands on within every limit (`impact_need`); over one, or not measured, it is not entered.
  The limits are read when the lane is asked about, so a stricter policy holds older evidence.
* **Gates** are NO unless a grant for the gate's lane was consumed for the change and the clock
  is inside the grant's window (and, for a production lane, HOLD is not in force).
* **HOLD** is in force unless a `hold.released` cites a grant of a production lane whose window
  is still open: an expired grant does not keep production open, and an operator's later
  `hold.set` (a HOLD decision) closes it at once. **APPLY_NOW** is YES only when HOLD is lifted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType

from rollproof.core.impact import parse_limits, record_over_limits, strictest
from rollproof.core.policy import Gate, Governance, Lane, LaneKind
from rollproof.governance.events import format_utc
from rollproof.governance.evidence import evidence_signer, judge_record
from rollproof.governance.records import Blocker, ConsumedGrantRecord, LedgerState, RehearsalRecord


class NeedKind(StrEnum):
    GRANT = "grant"
    SIGNATURES = "signatures"
    EVIDENCE = "evidence"
    BLOCKERS = "blockers"
    IMPACT = "impact"


HOLDING_NEEDS = frozenset({NeedKind.EVIDENCE, NeedKind.BLOCKERS, NeedKind.IMPACT})
"""Needs that keep a lane from being entered (and chosen) until they are met."""


OPERATOR_SUPPLIED = frozenset({NeedKind.GRANT, NeedKind.SIGNATURES})
"""Needs an operator meets by signing: they do not make a lane unavailable to choose."""


@dataclass(frozen=True, slots=True)
class Need:
    kind: NeedKind
    text: str
    met: bool
    refs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LaneStatus:
    lane: Lane
    reached: bool
    evidence: RehearsalRecord | None
    """The newest PASS evidence of this (clone) lane for the change."""
    grant: ConsumedGrantRecord | None
    """The newest grant consumed for this lane and change."""
    needs: tuple[Need, ...]
    blockers: tuple[Blocker, ...]

    @property
    def available_now(self) -> bool:
        """Everything but the operator's own signature(s) is in place."""
        return all(n.met for n in self.needs if n.kind not in OPERATOR_SUPPLIED)

    @property
    def unmet(self) -> tuple[Need, ...]:
        return tuple(n for n in self.needs if not n.met)


def rehearsals_of(state: LedgerState, change_id: str) -> tuple[RehearsalRecord, ...]:
    """Every recorded rehearsal of the change, oldest first."""
    return tuple(
        sorted((r for r in state.rehearsals.values() if r.change_id == change_id), key=_seq)
    )


def _seq(record: RehearsalRecord | ConsumedGrantRecord) -> int:
    return record.seq


def _lane_of(record: RehearsalRecord, gov: Governance) -> str:
    # A rehearsal recorded without a lane (by the library, before lanes) is first-rung evidence.
    return record.lane or gov.first.name


def latest_rehearsal(
    gov: Governance, state: LedgerState, change_id: str, lane: str | None = None
) -> RehearsalRecord | None:
    found = [r for r in rehearsals_of(state, change_id) if lane is None or _lane_of(r, gov) == lane]
    return found[-1] if found else None


def latest_evidence(
    gov: Governance, state: LedgerState, change_id: str, lane: str
) -> RehearsalRecord | None:
    """The newest rehearsal of the change in `lane`, if it counts as evidence (`evidence.py`:
    PASS, isolation proven, exit 0, signed when required); a newer one that does not (a FAIL, an
    UNKNOWN, a NOT_PROVEN) supersedes it."""
    record = latest_rehearsal(gov, state, change_id, lane)
    judgement = judge_record(record, required_signer=evidence_signer(gov))
    return record if judgement.counts else None


def latest_grant(state: LedgerState, change_id: str, lane: str) -> ConsumedGrantRecord | None:
    found = sorted(
        (g for g in state.consumed_grants.values() if g.change_id == change_id and g.lane == lane),
        key=_seq,
    )
    return found[-1] if found else None


def in_window(grant: ConsumedGrantRecord, now: datetime) -> bool:
    moment = format_utc(now)
    return grant.not_before <= moment < grant.expires


def is_reached(gov: Governance, state: LedgerState, change_id: str, lane: Lane) -> bool:
    if lane.kind is LaneKind.CLONE:
        return latest_evidence(gov, state, change_id, lane.name) is not None
    return latest_grant(state, change_id, lane.name) is not None


def lane_reached(gov: Governance, state: LedgerState, change_id: str) -> Lane | None:
    """The highest lane reached with every lane below it reached too."""
    reached = None
    for lane in gov.lanes:
        if not is_reached(gov, state, change_id, lane):
            break
        reached = lane
    return reached


def required_evidence(
    gov: Governance, state: LedgerState, change_id: str, lane: str
) -> RehearsalRecord | None:
    """The packet a grant for `lane` must cite: the newest PASS of the highest clone lane below."""
    clones = [x for x in gov.below(lane) if x.kind is LaneKind.CLONE]
    if not clones:
        return None
    return latest_evidence(gov, state, change_id, clones[-1].name)


def _condition_lanes(gov: Governance) -> dict[str, int]:
    return {lane.name: i for i, lane in enumerate(gov.lanes)}


def blocks(gov: Governance, blocker: Blocker, lane: Lane) -> bool:
    """Whether `blocker` (not CLOSED) stands in the way of `lane` (module docstring)."""
    index = _condition_lanes(gov)
    here = index[lane.name]
    if blocker.check is not None:
        return blocker.check not in lane.allow_unknown
    for condition in blocker.open_conditions:
        at = index.get(condition.id)
        if at is None:
            if here > 0:
                return True
        elif at < here:
            return True
    return False


def blockers_for(
    gov: Governance, state: LedgerState, change_id: str, lane: Lane
) -> tuple[Blocker, ...]:
    return tuple(
        b
        for b in state.open_blockers()
        if b.change_id in (None, change_id) and blocks(gov, b, lane)
    )


def lane_status(gov: Governance, state: LedgerState, change_id: str, lane: Lane) -> LaneStatus:
    needs: list[Need] = []
    if lane.grant:
        needs.append(
            Need(
                NeedKind.GRANT,
                f"an operator's grant for lane {lane.name}, addressed to this executor",
                met=False,
            )
        )
        operators = len(gov.operators)
        needs.append(
            Need(
                NeedKind.SIGNATURES,
                f"{lane.signatures} distinct operator signature(s) on it "
                f"(the policy lists {operators} operator(s))",
                met=False,
            )
        )
    if lane.evidence:
        for below in gov.below(lane.name):
            if below.kind is LaneKind.CLONE:
                ev = latest_evidence(gov, state, change_id, below.name)
                needs.append(
                    Need(
                        NeedKind.EVIDENCE,
                        f"validated PASS evidence of lane {below.name}",
                        met=ev is not None,
                        refs=() if ev is None else (ev.packet_tree_hash,),
                    )
                )
            else:
                g = latest_grant(state, change_id, below.name)
                needs.append(
                    Need(
                        NeedKind.EVIDENCE,
                        f"lane {below.name} entered under its own consumed grant",
                        met=g is not None,
                        refs=() if g is None else (g.grant_id,),
                    )
                )
    impact = impact_need(gov, state, change_id, lane)
    if impact is not None:
        needs.append(impact)
    blocking = blockers_for(gov, state, change_id, lane)
    needs.append(
        Need(
            NeedKind.BLOCKERS,
            "no open blocker in the way"
            if not blocking
            else "blockers in the way: " + ", ".join(b.id for b in blocking),
            met=not blocking,
            refs=tuple(b.id for b in blocking),
        )
    )
    grant = latest_grant(state, change_id, lane.name)
    evidence = (
        latest_evidence(gov, state, change_id, lane.name) if lane.kind is LaneKind.CLONE else None
    )
    return LaneStatus(
        lane=lane,
        reached=is_reached(gov, state, change_id, lane),
        evidence=evidence,
        grant=grant,
        needs=tuple(needs),
        blockers=blocking,
    )


def impact_need(gov: Governance, state: LedgerState, change_id: str, lane: Lane) -> Need | None:
    """A production lane's impact need: the measured impact of the evidence it stands on (the
    newest that counts of the highest clone lane below) within every limit, the policy in
    force's and the change's own (core.impact). None when the lane is a clone lane, or when no
    limit applies."""
    if lane.kind is not LaneKind.PRODUCTION:
        return None
    record = required_evidence(gov, state, change_id, lane.name)
    impact = None if record is None else record.impact
    own = {} if impact is None else parse_limits(impact["change_limits"])
    if not gov.impact_limits and not own:
        return None
    if record is None:
        return Need(
            NeedKind.IMPACT,
            "measured impact within the limits: no evidence measured it yet",
            met=False,
        )
    over = record_over_limits(impact, gov.impact_limits)
    refs = (record.packet_tree_hash,)
    if over:
        text = "measured impact over a limit: " + "; ".join(over)
        # A need's text is one field of a ledger event and of decision.json: at most 4000.
        return Need(NeedKind.IMPACT, text[:4000], met=False, refs=refs)
    limits = strictest(own, gov.impact_limits)
    shown = ", ".join(f"{k} = {v:,}" for k, v in limits.items())
    return Need(NeedKind.IMPACT, f"measured impact within the limits ({shown})", True, refs)


@dataclass(frozen=True, slots=True)
class HoldStatus:
    held: bool
    grant: ConsumedGrantRecord | None
    """The production-lane grant that lifted HOLD, while its window is open."""
    reason: str


def hold_status(gov: Governance, state: LedgerState, change_id: str, now: datetime) -> HoldStatus:
    record = state.holds.get(change_id)
    if record is None or record.held or record.grant_id is None:
        why = "HOLD in force, the default" if record is None else "HOLD in force"
        if record is not None and record.held and record.reason:
            why = f"HOLD in force: {record.reason}"
        return HoldStatus(True, None, why)
    grant = state.consumed_grants[record.grant_id]
    lane_kinds = {lane.name: lane.kind for lane in gov.lanes}
    if lane_kinds.get(grant.lane) is not LaneKind.PRODUCTION:
        return HoldStatus(True, None, f"HOLD in force (grant {grant.grant_id} is not production)")
    if not in_window(grant, now):
        return HoldStatus(
            True, None, f"HOLD in force again: grant {grant.grant_id} expired {grant.expires}"
        )
    return HoldStatus(
        False,
        grant,
        f"HOLD lifted for lane {grant.lane} by grant {grant.grant_id} until {grant.expires}",
    )


def gates(
    gov: Governance, state: LedgerState, change_id: str, now: datetime
) -> Mapping[Gate, ConsumedGrantRecord | None]:
    """Each gate and the in-window consumed grant that opens it (None: the gate is NO).

    A gate on a production lane is also NO while HOLD is in force (an operator's later HOLD
    closes it again)."""
    held = hold_status(gov, state, change_id, now).held
    kinds = {lane.name: lane.kind for lane in gov.lanes}
    out: dict[Gate, ConsumedGrantRecord | None] = {}
    for gate in Gate:
        lane = gov.gates[gate]
        grant = latest_grant(state, change_id, lane)
        open_ = grant is not None and in_window(grant, now)
        if kinds.get(lane) is LaneKind.PRODUCTION and held:
            open_ = False
        out[gate] = grant if open_ else None
    return MappingProxyType(out)


def changes_in(state: LedgerState) -> tuple[str, ...]:
    """Every change id the ledger mentions, sorted."""
    ids: set[str] = set()
    ids |= {t.change_id for t in state.tickets.values() if t.change_id}
    ids |= {b.change_id for b in state.blockers.values() if b.change_id}
    ids |= {r.change_id for r in state.rehearsals.values()}
    ids |= {g.change_id for g in state.consumed_grants.values()}
    ids |= {d.change_id for d in state.decisions}
    ids |= set(state.holds)
    ids |= {p.change_id for p in state.preflights}
    return tuple(sorted(ids))
