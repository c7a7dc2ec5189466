"""Grant consumption rules: how `grant.consumed` and `grant.refused` events fold.

**Grants**: a `grant.consumed` event's grant id, nonce and payload digest are each new, for
ever; a repeat of any one raises `AlreadyConsumedError` naming which. The consumed record is what
later hold releases, PROCEED decisions and rehearsals cite (`FoldState._consumed_for` checks that a
cited grant was consumed, for that change). A `grant.refused` event only records the refusal;
it consumes nothing.

The events themselves are built by `grants.py` (`consume_grant`), which checks the grant first;
`GRANT_RULES` maps each grant.* kind to its rule for the fold (`state.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rollproof.governance.events import Event, EventKind
from rollproof.governance.fold_state import FoldState
from rollproof.governance.records import ConsumedGrantRecord, LedgerRuleError, RefusalRecord


class AlreadyConsumedError(LedgerRuleError):
    """A grant id, nonce or payload digest was consumed before; `field` says which."""

    def __init__(self, seq: int, field: str, value: str) -> None:
        self.field = field
        super().__init__(seq, EventKind.GRANT_CONSUMED, f"{field} {value} was already consumed")


def _grant_consumed(f: FoldState, e: Event, b: dict[str, Any]) -> None:
    # The database's UNIQUE index refuses these first; the fold refuses them again so that a
    # ledger written around the index still cannot show one grant consumed twice.
    if b["grant_id"] in f.consumed:
        raise AlreadyConsumedError(e.seq, "grant_id", b["grant_id"])
    if b["nonce"] in f.nonces:
        raise AlreadyConsumedError(e.seq, "nonce", b["nonce"])
    if b["payload_sha256"] in f.payloads:
        raise AlreadyConsumedError(e.seq, "payload_sha256", b["payload_sha256"])
    _under_policy(f, e, b)
    f.consumed[b["grant_id"]] = ConsumedGrantRecord(
        grant_id=b["grant_id"],
        nonce=b["nonce"],
        payload_sha256=b["payload_sha256"],
        lane=b["lane"],
        change_id=b["change_id"],
        seq=e.seq,
        source_fingerprint=b["source_fingerprint"],
        issuer=b["issuer"],
        signers=tuple(b["signers"]),
        not_before=b["not_before"],
        expires=b["expires"],
        packet_tree_hash=b.get("packet_tree_hash"),
    )
    f.nonces.add(b["nonce"])
    f.payloads.add(b["payload_sha256"])


def _under_policy(f: FoldState, e: Event, b: dict[str, Any]) -> None:
    """Once a policy is in force, a consumed grant is one its operators signed, for a lane of
    its ladder, with that lane's number of signatures, addressed to its executor: the fold
    holds `consume_grant`'s checks against the policy in the ledger, not the one it was given."""
    if f.policy is None:
        return
    gov = f.policy.policy.governed()
    lane = next((x for x in gov.lanes if x.name == b["lane"]), None)
    if lane is None:
        raise LedgerRuleError(e.seq, e.kind, f"lane {b['lane']} is not in the policy in force")
    for signer in b["signers"]:
        f._operator(e, signer, "the grant")
    if len(b["signers"]) < lane.signatures:
        raise LedgerRuleError(
            e.seq, e.kind, f"lane {lane.name} needs {lane.signatures} operator signature(s)"
        )
    if gov.executor is not None and b["audience"] != gov.executor.key_id:
        raise LedgerRuleError(e.seq, e.kind, "the grant is not addressed to the executor")


def _grant_refused(f: FoldState, e: Event, b: dict[str, Any]) -> None:
    f.refusals.append(
        RefusalRecord(
            seq=e.seq,
            reason=b["reason"],
            grant_id=b.get("grant_id"),
            lane=b["lane"],
            change_id=b["change_id"],
            detail=b["detail"],
        )
    )


GRANT_RULES: dict[EventKind, Callable[[FoldState, Event, dict[str, Any]], None]] = {
    EventKind.GRANT_CONSUMED: _grant_consumed,
    EventKind.GRANT_REFUSED: _grant_refused,
}
