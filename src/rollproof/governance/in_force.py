"""The policy in force: read from the folded ledger, never from the policy file alone.

    policy_in_force(file_policy, state) -> Policy          pure: the ledger's policy, located
    load_in_force(file_policy, store=None) -> InForce      the ledger read, verified and folded
    governance_in_force(gov) -> Governance                 the same for a file's `Governance`
    file_matches(file_policy, state) -> (bool, detail)     the `policy-in-force` comparison
    trusted_checkpoint(gov) -> Checkpoint | None           verified with the operators in force
    adopt_file(file_policy, keys, now=...) -> Event        the file made the policy in force

The policy file says only **where** the ledger and its signed checkpoint are; who the operators
and the executor are, the ladder, the gates, the CI scope, the production sources and the
forbidden surfaces are what the newest `policy.set` event says (`rules_policy.py`). Every
governance path (the governed flow, lane entry, grant issue and co-sign, decisions, status,
preflight, the ledger checkpoint's trusted keys) resolves its policy here. A ledger that records
no policy refuses every governed path (`NoPolicyInForceError`, exit 1): `rollproof init`
records the first one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from rollproof.core.errors import CheckFailedError, HeldError, UsageError
from rollproof.core.keys import SigningKey, short_key_id
from rollproof.core.policy import (
    Governance,
    Policy,
    policy_document,
    policy_document_sha256,
    policy_from_document,
)
from rollproof.governance.events import Event
from rollproof.governance.ledger import Checkpoint, load_checkpoint
from rollproof.governance.records import LedgerState
from rollproof.governance.rules_policy import adopt_policy
from rollproof.governance.state import fold
from rollproof.governance.store import LedgerStore, open_ledger


class NoPolicyInForceError(CheckFailedError):
    """The ledger records no `policy.set`: nothing says who the operators are."""


class PolicyAdoptionRefusedError(HeldError):
    """`adopt_file` refused: a key that is not an operator in force, or too few of them."""


@dataclass(frozen=True, slots=True)
class InForce:
    policy: Policy
    """The ledger's policy, with the file's path and the ledger's location."""
    state: LedgerState
    checkpoint: Checkpoint | None


def trusted_checkpoint(gov: Governance) -> Checkpoint | None:
    """The newest signed ledger checkpoint, verified with the keys of the operators **in force**
    (the ledger's policy, `in_force.py`), if one exists: a key added to the policy file cannot
    sign a checkpoint that is trusted. A ledger that records no policy yet is checked with the
    file's operators (no governed path runs on it anyway)."""
    if not gov.checkpoint.exists():
        return None
    state = fold(open_ledger(gov.ledger).read_verified().events)
    operators = gov.operators if state.policy is None else state.policy.policy.governed().operators
    return load_checkpoint(gov.checkpoint, list(operators.values()))


def policy_in_force(file_policy: Policy, state: LedgerState) -> Policy:
    """The policy the ledger folded into `state` says, located where `file_policy` says."""
    gov = file_policy.governed()
    if state.policy is None:
        raise NoPolicyInForceError(
            f"the ledger {gov.ledger} records no policy (no policy.set event): nothing says who "
            "the operators are; `rollproof init` records the first policy in a new ledger"
        )
    return policy_from_document(
        dict(state.policy.document), ledger=gov.ledger, checkpoint=gov.checkpoint, file=file_policy
    )


def load_in_force(file_policy: Policy, store: LedgerStore | None = None) -> InForce:
    """Read the ledger `file_policy` names, verified against its trusted signed checkpoint
    (verified with the operators in force), fold it, and return the policy in force."""
    gov = file_policy.governed()
    checkpoint = trusted_checkpoint(gov)
    ledger = store or open_ledger(gov.ledger)
    state = fold(ledger.read_verified(trusted_checkpoint=checkpoint).events)
    return InForce(policy_in_force(file_policy, state), state, checkpoint)


def governance_in_force(gov: Governance) -> Governance:
    """`gov` (a policy file's governance) replaced by the ledger's policy in force."""
    state = fold(open_ledger(gov.ledger).read_verified().events)
    holder = Policy(path=None, sha256=None, governance=gov)
    return policy_in_force(holder, state).governed()


def file_matches(file_policy: Policy, state: LedgerState) -> tuple[bool, str]:
    """Whether the file's policy is the policy in force, and a sentence saying so."""
    if state.policy is None:
        return False, "the ledger records no policy"
    sha = policy_document_sha256(policy_document(file_policy))
    if sha == state.policy.sha256:
        return True, f"the policy file is the policy in force (ledger event {state.policy.seq})"
    return False, (
        f"the policy file (sha256 {sha[:16]}…) differs from the policy in force (ledger event "
        f"{state.policy.seq}, sha256 {state.policy.sha256[:16]}…): the ledger's policy governs; "
        "adopt the file with `rollproof policy adopt --key OPKEY ...` (a quorum of the operators "
        "in force) or restore it"
    )


def adopt_file(file_policy: Policy, keys: Sequence[SigningKey], *, now: datetime) -> Event:
    """Append the policy file's content as the policy in force, signed by `keys`.

    `keys` must be distinct operators **of the policy in force**, at least its quorum
    (`PolicyRecord.quorum`); the fold checks all of it again in the append transaction, so this
    only refuses early with a clearer reason (exit 3). A file that already is the policy in
    force is a usage error (exit 2): there is nothing to adopt."""
    found = load_in_force(file_policy)
    record = found.state.policy
    assert record is not None  # load_in_force raised otherwise
    document = policy_document(file_policy)
    if policy_document_sha256(document) == record.sha256:
        raise UsageError(
            f"the policy file is already the policy in force (ledger event {record.seq})"
        )
    in_force = found.policy.governed()
    ids = [k.key_id for k in keys]
    if len(set(ids)) != len(ids):
        raise PolicyAdoptionRefusedError("one key given twice (one key counts once)")
    strangers = [k for k in keys if in_force.operator_name(k.key_id) is None]
    if strangers:
        shown = ", ".join(short_key_id(k.key_id) for k in strangers)
        raise PolicyAdoptionRefusedError(
            f"key(s) {shown} are not operators of the policy in force (ledger event "
            f"{record.seq}): only its operators can change it, whatever the file lists"
        )
    if len(keys) < record.quorum:
        names = ", ".join(sorted(in_force.operators))
        raise PolicyAdoptionRefusedError(
            f"adopting a policy needs {record.quorum} signature(s) by operators of the policy in "
            f"force ({names}); {len(keys)} given"
        )
    (event,) = open_ledger(in_force.ledger).append_events(
        adopt_policy(document, list(keys)), now=now
    )
    return event
