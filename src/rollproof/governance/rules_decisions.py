"""Decision, hold and validator-pin rules: how those events fold, and their builders.

**Holds**: every change is on HOLD unless its latest hold event is `hold.released`, which must
cite a grant consumed earlier for that change and not used to release a hold before.
**Decisions**: PROCEED must cite a consumed grant for that change and lane; HOLD cites none. A
signed decision (or validator pin) carries the operator's public key and an Ed25519 signature
over `PAE(<its payload type>, canonical JSON of the body without "signature")`, and the fold
refuses one whose signature does not verify (an edited reason or option is caught even before
the chain is checked). Once the ledger has a policy in force (`rules_policy.py`), that key must
be one of its operators: a decision signed by any other key, or unsigned, is refused, and so is
a validator pin (only `init`'s first pin, before any other, is unsigned).

`signed_bytes` is the one spelling of those signed bytes, for signing (`_signed`) and checking
(`_signer`) alike. `DECISION_RULES` maps each decision, hold and pin kind to its rule for the
fold (`state.py`).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Any

from rollproof.core.canonical import canonical_json
from rollproof.core.keys import PublicKey, SigningKey
from rollproof.governance.bodies import _body
from rollproof.governance.events import Event, EventKind, NewEvent
from rollproof.governance.fold_state import FoldState
from rollproof.governance.records import Decision, DecisionRecord, HoldRecord, LedgerRuleError
from rollproof.verify.attest import pae

DECISION_PAYLOAD_TYPE = "application/vnd.rollproof.decision+json"
PIN_PAYLOAD_TYPE = "application/vnd.rollproof.validator-pin+json"


_SIGNED_TYPES = {
    EventKind.DECISION_RECORDED: DECISION_PAYLOAD_TYPE,
    EventKind.VALIDATOR_PINNED: PIN_PAYLOAD_TYPE,
}


def signed_bytes(kind: EventKind, body: Mapping[str, Any]) -> bytes:
    """The bytes an operator signs for an event body: the body without "signature", in PAE."""
    unsigned = {k: v for k, v in body.items() if k != "signature"}
    return pae(_SIGNED_TYPES[kind], canonical_json(unsigned))


def _signer(e: Event, b: dict[str, Any]) -> str | None:
    """The key id that signed this body (verified), or None for an unsigned one."""
    key, signature = b.get("operator_key"), b.get("signature")
    if key is None and signature is None:
        return None
    if key is None or signature is None:
        raise LedgerRuleError(e.seq, e.kind, "a signed event needs operator_key and signature")
    public = PublicKey(base64.b64decode(key))
    if not public.verify(base64.b64decode(signature), signed_bytes(e.kind, b)):
        # Stops an edited decision or pin (another option, reason or hash) passing as signed.
        raise LedgerRuleError(e.seq, e.kind, "the operator's signature does not verify")
    return public.key_id


def _signed(kind: EventKind, body: dict[str, Any], key: SigningKey | None) -> NewEvent:
    if key is not None:
        body["operator_key"] = base64.b64encode(key.public.raw).decode("ascii")
        body["signature"] = base64.b64encode(key.sign(signed_bytes(kind, body))).decode("ascii")
    return NewEvent(kind, body)


def _decision_recorded(f: FoldState, e: Event, b: dict[str, Any]) -> None:
    operator = _signer(e, b)
    f._operator(e, operator, "a decision")
    decision = Decision(b["decision"])
    lane, grant_id = b.get("lane"), b.get("grant_id")
    if decision is Decision.PROCEED:
        if grant_id is None or lane is None:
            raise LedgerRuleError(e.seq, e.kind, "PROCEED must cite a lane and a consumed grant")
        grant = f._consumed_for(e, grant_id, b["change_id"])
        if grant.lane != lane:
            raise LedgerRuleError(e.seq, e.kind, f"grant {grant_id} is for lane {grant.lane}")
    elif grant_id is not None:
        raise LedgerRuleError(e.seq, e.kind, "HOLD cites no grant")
    f.decisions.append(
        DecisionRecord(
            seq=e.seq,
            change_id=b["change_id"],
            decision=decision,
            reason=b["reason"],
            lane=lane,
            grant_id=grant_id,
            operator=operator,
            packet_tree_hash=b.get("packet_tree_hash"),
        )
    )


def _hold_set(f: FoldState, e: Event, b: dict[str, Any]) -> None:
    f.holds[b["change_id"]] = HoldRecord(
        change_id=b["change_id"], held=True, seq=e.seq, reason=b["reason"]
    )


def _hold_released(f: FoldState, e: Event, b: dict[str, Any]) -> None:
    grant = f._consumed_for(e, b["grant_id"], b["change_id"])
    if grant.grant_id in f.releases:
        # Stops one grant from lifting HOLD again after an operator set it back.
        raise LedgerRuleError(e.seq, e.kind, f"grant {grant.grant_id} already released a hold")
    f.releases.add(grant.grant_id)
    f.holds[b["change_id"]] = HoldRecord(
        change_id=b["change_id"], held=False, seq=e.seq, grant_id=grant.grant_id
    )


def _validator_pinned(f: FoldState, e: Event, b: dict[str, Any]) -> None:
    signer = _signer(e, b)
    if signer is not None or f.validator_pin is not None:
        # Only `init`'s first pin is unsigned; every later one is an operator's in force.
        f._operator(e, signer, "a validator pin")
    f.validator_pin_by = signer
    f.validator_pin = b["sha256"]


DECISION_RULES: dict[EventKind, Callable[[FoldState, Event, dict[str, Any]], None]] = {
    EventKind.DECISION_RECORDED: _decision_recorded,
    EventKind.HOLD_SET: _hold_set,
    EventKind.HOLD_RELEASED: _hold_released,
    EventKind.VALIDATOR_PINNED: _validator_pinned,
}


# --- builders: one NewEvent per helper; rules are enforced when the ledger folds them in ------


def pin_validator(sha256: str, *, key: SigningKey | None = None) -> NewEvent:
    """Pin the validator's hash; signed by `key` (an operator's) when given."""
    return _signed(EventKind.VALIDATOR_PINNED, _body(sha256=sha256), key)


def set_hold(change_id: str, *, reason: str) -> NewEvent:
    return NewEvent(EventKind.HOLD_SET, _body(change_id=change_id, reason=reason))


def release_hold(change_id: str, *, grant_id: str) -> NewEvent:
    return NewEvent(EventKind.HOLD_RELEASED, _body(change_id=change_id, grant_id=grant_id))


def record_decision(
    change_id: str,
    decision: Decision,
    *,
    reason: str,
    lane: str | None = None,
    grant_id: str | None = None,
    packet_tree_hash: str | None = None,
    key: SigningKey | None = None,
) -> NewEvent:
    """A decision; signed by `key` (an operator's) when given (see the module docstring)."""
    body = _body(
        change_id=change_id,
        decision=str(decision),
        reason=reason,
        lane=lane,
        grant_id=grant_id,
        packet_tree_hash=packet_tree_hash,
    )
    return _signed(EventKind.DECISION_RECORDED, body, key)
