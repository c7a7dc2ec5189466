"""What counts as evidence: the one predicate every governance path asks.

    judge_evidence(verified, required_signer=...) -> EvidenceJudgement   a packet validated now
    judge_record(record, required_signer=...) -> EvidenceJudgement       a rehearsal.recorded
    evidence_signer(gov) -> key id | None                                whose signature is needed
    validate_evidence(path, gov) -> VerifiedPacket                       validated for judging

A packet **counts as evidence** (a PASS a lane stands on, a blocker is discharged with, a grant
for the next lane cites, a checkpoint calls ROLLBACK_READY) only when **all** of these hold:

1. it validated (a `VerifiedPacket` exists only at the end of the validator's success path; a
   ledger record exists only for a packet that validated when it was recorded);
2. its overall verdict is PASS;
3. its isolation verdict is PROVEN_ISOLATED_NOT_PRODUCTION: a rehearsal whose clone was not
   proven to be a clone (NOT_PROVEN, `rehearse` exit 3) proves nothing about rollback, however
   its legs came out;
4. the exit code recorded in its exit_codes.json is 0;
5. when the policy in force sets `signed_evidence`, it is signed by the executor's key (the
   validator verified that signature against that key).

Anything else (FAIL, UNKNOWN, NOT_APPLICABLE, NOT_PROVEN, a non-zero exit, a missing signature,
a ledger record that does not say its isolation or exit code) does not count, and the
judgement says every reason. Pure, except `validate_evidence` (which reads the packet).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rollproof.core.keys import short_key_id
from rollproof.core.model import IsolationVerdict, Verdict
from rollproof.core.policy import Governance
from rollproof.governance.records import RehearsalRecord
from rollproof.verify.findings import VerifiedPacket


@dataclass(frozen=True, slots=True)
class EvidenceJudgement:
    """Whether a packet (or its ledger record) counts as evidence, and every reason it does not."""

    reasons: tuple[str, ...]
    """Empty when it counts."""

    @property
    def counts(self) -> bool:
        return not self.reasons

    def why_not(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "it counts"


def judge(
    *,
    overall: Verdict | None,
    isolation: IsolationVerdict | None,
    exit_code: int | None,
    signed_by: Sequence[str] = (),
    required_signer: str | None = None,
) -> EvidenceJudgement:
    """The predicate itself (module docstring), on the facts a packet or its record carries.

    A fact that is None was not recorded: it does not count (never assumed)."""
    reasons: list[str] = []
    if overall is None:
        reasons.append("no overall verdict is recorded")
    elif overall is not Verdict.PASS:
        reasons.append(f"overall is {overall}, not PASS")
    if isolation is None:
        reasons.append("no isolation verdict is recorded")
    elif isolation is not IsolationVerdict.PROVEN:
        reasons.append(f"isolation is {isolation}, not {IsolationVerdict.PROVEN}")
    if exit_code is None:
        reasons.append("no exit code is recorded")
    elif exit_code != 0:
        reasons.append(f"the recorded exit code is {exit_code}, not 0")
    if required_signer is not None and required_signer not in signed_by:
        reasons.append(
            f"not signed by the executor's key {short_key_id(required_signer)} "
            "(the policy requires signed evidence)"
        )
    return EvidenceJudgement(tuple(reasons))


def judge_evidence(
    verified: VerifiedPacket | None, *, required_signer: str | None = None
) -> EvidenceJudgement:
    """Whether a packet the validator accepted counts as evidence; None (not validated) never."""
    if verified is None:
        return EvidenceJudgement(("the packet did not validate",))
    return judge(
        overall=verified.overall,
        isolation=verified.isolation,
        exit_code=verified.exit_code,
        signed_by=verified.signed_by,
        required_signer=required_signer,
    )


def judge_record(
    record: RehearsalRecord | None, *, required_signer: str | None = None
) -> EvidenceJudgement:
    """Whether a recorded rehearsal counts as evidence, from the ledger alone."""
    if record is None:
        return EvidenceJudgement(("no rehearsal is recorded",))
    return judge(
        overall=record.overall,
        isolation=record.isolation,
        exit_code=record.exit_code,
        signed_by=record.signed_by,
        required_signer=required_signer,
    )


def evidence_signer(gov: Governance) -> str | None:
    """The key id whose signature evidence needs under `gov`: the executor's, when the policy
    sets `signed_evidence`; None when no signature is required."""
    if not gov.signed_evidence:
        return None
    if gov.executor is None:
        # signed_evidence without an executor: nothing can satisfy it, so nothing counts.
        return "0" * 64
    return gov.executor.key_id


def validate_evidence(path: Path, gov: Governance) -> VerifiedPacket:
    """Validate the packet at `path` as evidence under `gov` (`PacketInvalidError` otherwise):
    with the executor's key trusted and a signature required when the policy requires one, so
    that `signed_by` says who signed it."""
    from rollproof.verify.attest import TrustedKey
    from rollproof.verify.reader import validate_packet

    if gov.signed_evidence and gov.executor is not None:
        return validate_packet(
            path, trusted_keys=[TrustedKey(gov.executor.raw)], require_signature=True
        )
    return validate_packet(path)
