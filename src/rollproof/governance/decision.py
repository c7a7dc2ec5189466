"""The decision packet an operator reads after a rehearsal, and the decision the operator records.

    decision_packet(gov, state, change_id, lane, tree, overall, now) -> decision.json's content
    decide(policy, change_id, Decision.HOLD | PROCEED, key=..., reason=..., now=...) -> Event

The packet is pure (policy, folded ledger state and clock in, a JSON document out; schema
`rollproof/decision/v1`, rendered to Markdown by `rollproof.verify.governance_layer`). Invariants:

* HOLD is always the first option and the default, and `selected` is null: the packet lists
  choices, it never makes one;
* every lane above the evidence's lane is an option, with what it needs (its grant, the
  operator signatures, the evidence of the lanes below, the blockers in its way) and whether it
  is available now, meaning nothing but the operator's own signature is missing;
* `apply_now` is YES only while HOLD is lifted by a consumed production-lane grant inside its
  window, and then names that grant (`lanes.hold_status`).

`decide` appends a `decision.recorded` event signed with the operator's key (the fold verifies
the signature); a HOLD decided while a grant has lifted HOLD also appends `hold.set`, so the
operator's HOLD takes effect at once (APPLY_NOW=NO). It refuses, with exit 3 and no event, a
key that is not one of the policy's operators (the executor's included) and a PROCEED for a lane
without a consumed grant for it; it never picks an option itself.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rollproof.core.errors import HeldError
from rollproof.core.keys import SigningKey, short_key_id
from rollproof.core.model import Verdict
from rollproof.core.policy import Governance, Policy
from rollproof.governance.events import Event
from rollproof.governance.in_force import load_in_force
from rollproof.governance.lanes import HOLDING_NEEDS, hold_status, lane_status, latest_grant
from rollproof.governance.records import Decision, LedgerState
from rollproof.governance.rules_decisions import record_decision, set_hold
from rollproof.governance.store import LedgerStore, open_ledger
from rollproof.verify.governance_layer import DECISION_SCHEMA


class DecisionRefusedError(HeldError):
    """A decision rollproof will not record: not an operator's key, or no grant behind it."""


def apply_now(gov: Governance, state: LedgerState, change_id: str, now: datetime) -> str | None:
    """The grant id that makes APPLY_NOW=YES, or None (APPLY_NOW=NO)."""
    hold = hold_status(gov, state, change_id, now)
    return None if hold.held or hold.grant is None else hold.grant.grant_id


def decision_packet(
    gov: Governance,
    state: LedgerState,
    *,
    change_id: str,
    lane: str,
    packet_tree_hash: str,
    overall: Verdict,
    now: datetime,
) -> dict[str, Any]:
    """decision.json for evidence of `lane` (see the module docstring)."""
    hold = hold_status(gov, state, change_id, now)
    options: list[dict[str, Any]] = [
        {
            "option": "HOLD",
            "lane": None,
            "default": True,
            "available_now": True,
            "needs": [],
            "summary": f"Keep production untouched. {hold.reason}.",
        }
    ]
    for above in gov.above(lane):
        status = lane_status(gov, state, change_id, above)
        missing = [n.text for n in status.unmet if n.kind in HOLDING_NEEDS]
        summary = f"Enter lane {above.name} ({above.kind}): " + (
            "available as soon as an operator signs its grant."
            if status.available_now
            else "not available now: " + "; ".join(missing) + "."
        )
        options.append(
            {
                "option": "PROCEED",
                "lane": above.name,
                "default": False,
                "available_now": status.available_now,
                "needs": [
                    {"need": str(n.kind), "text": n.text, "met": n.met, "refs": list(n.refs)}
                    for n in status.needs
                ],
                "summary": summary,
            }
        )
    grant = apply_now(gov, state, change_id, now)
    return {
        "schema": DECISION_SCHEMA,
        "change_id": change_id,
        "lane": lane,
        "packet_tree_hash": packet_tree_hash,
        "overall": str(overall),
        "ledger": {"through": state.through, "head": state.head},
        "default": "HOLD",
        "selected": None,
        "apply_now": "NO" if grant is None else "YES",
        "apply_now_grant": grant,
        "options": options,
    }


def decide(
    policy: Policy,
    change_id: str,
    decision: Decision,
    *,
    key: SigningKey,
    reason: str,
    now: datetime,
    lane: str | None = None,
    store: LedgerStore | None = None,
) -> Event:
    """Record an operator's signed decision (see the module docstring): the key must be an
    operator's of the policy in force (the ledger's), and the fold checks that again."""
    ledger = store or open_ledger(policy.governed().ledger)
    gov = load_in_force(policy, ledger).policy.governed()
    if gov.executor is not None and key.key_id == gov.executor.key_id:
        raise DecisionRefusedError("the executor cannot decide for an operator")
    if gov.operator_name(key.key_id) is None:
        raise DecisionRefusedError(
            f"key {short_key_id(key.key_id)} is not an operator key in the policy"
        )
    state_lane = None if decision is Decision.HOLD else gov.lane(lane or "").name
    if decision is Decision.PROCEED and lane is None:
        raise ValueError("PROCEED names a lane")

    def build(state: LedgerState) -> list[Any]:
        grant_id = None
        if state_lane is not None:
            grant = latest_grant(state, change_id, state_lane)
            if grant is None:
                raise DecisionRefusedError(
                    f"lane {state_lane} has no consumed grant for change {change_id}: "
                    "an operator issues one and the executor consumes it first"
                )
            grant_id = grant.grant_id
        rehearsals = sorted(
            (r for r in state.rehearsals.values() if r.change_id == change_id),
            key=lambda r: r.seq,
        )
        events = [
            record_decision(
                change_id,
                decision,
                reason=reason,
                lane=state_lane,
                grant_id=grant_id,
                packet_tree_hash=rehearsals[-1].packet_tree_hash if rehearsals else None,
                key=key,
            )
        ]
        if decision is Decision.HOLD and not state.is_held(change_id):
            # HOLD decided after a grant lifted it: production is held again, at once.
            events.append(set_hold(change_id, reason=f"operator decided HOLD: {reason}"))
        return events

    (event, *_held) = ledger.append_events(build, now=now)
    return event
