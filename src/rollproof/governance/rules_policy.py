"""Policy rules: how a `policy.set` event folds, the bytes its signers sign, and its builder.

**The policy in force** is the newest `policy.set` the fold accepted. Its body is the canonical
policy document (`rollproof.core.policy.policy_document`), that document's sha256, the position
of the policy it replaces (`previous`: the seq of the `policy.set` in force, 0 for none), and the
operators' signatures over `PAE(POLICY_PAYLOAD_TYPE, canonical JSON of the body without
"signatures")`. Rules, each against a named failure:

* the document parses as strictly as a policy file (ladder rules, keys, gates) and its sha256 is
  the sha256 of its canonical JSON: a body cannot say one policy and hash another;
* the **first** policy (bootstrap, written by `rollproof init`) is event 1 and carries no
  signatures: a ledger's policy is fixed from its first event, so nobody can bootstrap a policy
  into a ledger that ran without one;
* every **later** policy names the one in force as `previous` (a signed policy cannot be
  replayed after another was adopted) and is signed by distinct operators **of the policy in
  force**, at least its quorum (`PolicyRecord.quorum`: the most signatures any lane's grant
  needs, capped at the number of operators); a signature by any other key, or one that does
  not verify, refuses the event: a key added to the file cannot sign itself in.

`POLICY_RULES` maps `policy.set` to its rule for the fold (`state.py`).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from rollproof.core.canonical import canonical_json
from rollproof.core.keys import PublicKey, SigningKey
from rollproof.core.policy import (
    PolicyError,
    policy_document_sha256,
    policy_from_document,
)
from rollproof.governance.events import Event, EventKind, NewEvent
from rollproof.governance.fold_state import FoldState
from rollproof.governance.records import LedgerRuleError, LedgerState, PolicyRecord
from rollproof.verify.attest import pae

POLICY_PAYLOAD_TYPE = "application/vnd.rollproof.policy+json"


def policy_signed_bytes(body: Mapping[str, Any]) -> bytes:
    """The bytes each operator signs for a `policy.set` body: the body without "signatures"."""
    unsigned = {k: v for k, v in body.items() if k != "signatures"}
    return pae(POLICY_PAYLOAD_TYPE, canonical_json(unsigned))


def _policy_set(f: FoldState, e: Event, b: dict[str, Any]) -> None:
    try:
        parsed = policy_from_document(b["policy"], ledger="", checkpoint=Path())
    except PolicyError as err:
        raise LedgerRuleError(e.seq, e.kind, f"the policy does not parse: {err}") from err
    if policy_document_sha256(b["policy"]) != b["sha256"]:
        raise LedgerRuleError(e.seq, e.kind, "sha256 is not the policy document's")
    current = f.policy
    expected_previous = 0 if current is None else current.seq
    if b["previous"] != expected_previous:
        # Stops replaying a policy signed to replace another one than the policy in force.
        raise LedgerRuleError(
            e.seq, e.kind, f"replaces the policy of event {b['previous']}, not {expected_previous}"
        )
    signatures = b.get("signatures", [])
    signers: list[str] = []
    if current is None:
        if e.seq != 1:
            # Stops a first policy appended to a ledger that ran without one (by anyone).
            raise LedgerRuleError(e.seq, e.kind, "the first policy must be the ledger's event 1")
        if signatures:
            raise LedgerRuleError(e.seq, e.kind, "the first policy carries no signatures")
    else:
        signed = policy_signed_bytes(b)
        operators = current.operator_ids
        for s in signatures:
            key = PublicKey(base64.b64decode(s["key"]))
            if key.key_id not in operators:
                raise LedgerRuleError(
                    e.seq,
                    e.kind,
                    f"signed by key {key.key_id[:16]}…, not an operator of the policy in force "
                    f"(event {current.seq})",
                )
            if key.key_id in signers:
                raise LedgerRuleError(e.seq, e.kind, "one key signed twice (one key counts once)")
            if not key.verify(base64.b64decode(s["signature"]), signed):
                raise LedgerRuleError(e.seq, e.kind, "an operator's signature does not verify")
            signers.append(key.key_id)
        if len(signers) < current.quorum:
            raise LedgerRuleError(
                e.seq,
                e.kind,
                f"needs {current.quorum} signature(s) by operators of the policy in force "
                f"(event {current.seq}), has {len(signers)}",
            )
    f.policy = PolicyRecord(
        seq=e.seq,
        sha256=b["sha256"],
        document=MappingProxyType(dict(b["policy"])),
        policy=parsed,
        signers=tuple(sorted(signers)),
    )


POLICY_RULES: dict[EventKind, Callable[[FoldState, Event, dict[str, Any]], None]] = {
    EventKind.POLICY_SET: _policy_set,
}


# --- builders -------------------------------------------------------------------------------


def set_policy(
    document: Mapping[str, Any],
    *,
    previous: int,
    keys: Sequence[SigningKey] = (),
) -> NewEvent:
    """A `policy.set` for `document`, replacing the policy of event `previous` (0: the first),
    signed by each of `keys` (the operators of the policy in force)."""
    body: dict[str, Any] = {
        "policy": dict(document),
        "sha256": policy_document_sha256(document),
        "previous": previous,
    }
    if keys:
        signed = policy_signed_bytes(body)
        body["signatures"] = sorted(
            (
                {
                    "key": base64.b64encode(k.public.raw).decode("ascii"),
                    "signature": base64.b64encode(k.sign(signed)).decode("ascii"),
                }
                for k in keys
            ),
            key=lambda s: s["key"],
        )
    return NewEvent(EventKind.POLICY_SET, body)


def adopt_policy(
    document: Mapping[str, Any], keys: Sequence[SigningKey]
) -> Callable[[LedgerState], list[NewEvent]]:
    """A builder for `append_events`: `document` replacing the policy in force, read in the
    append transaction (so `previous` names what is in force when it is appended)."""

    def build(state: LedgerState) -> list[NewEvent]:
        previous = 0 if state.policy is None else state.policy.seq
        return [set_policy(document, previous=previous, keys=keys)]

    return build
