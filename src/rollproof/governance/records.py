"""The folded governance state as values: `LedgerState` and every record in it.

Owns the types the fold (`state.py`) produces and the rule modules build: the ticket, blocker
and decision enums, one frozen record per kind of fact the ledger can establish, `LedgerState`
itself, and `LedgerRuleError`, the one error every governance rule raises.

Invariants: pure (no IO, no clock); every record and `LedgerState` is frozen, and the mappings
`FoldState.state()` puts in a `LedgerState` are read-only views, so a state cannot be edited after
the fold has checked it. Only the fold creates a `LedgerState`; a state's `through` and `head`
name the last event folded into it. HOLD is the default: a change with no hold record is held
(`LedgerState.is_held`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from rollproof.core.errors import CheckFailedError
from rollproof.core.model import IsolationVerdict, Verdict
from rollproof.core.policy import Policy


class LedgerRuleError(CheckFailedError):
    """An event breaks a governance rule; `seq` and `kind` name it."""

    def __init__(self, seq: int, kind: str, message: str) -> None:
        self.seq = seq
        self.kind = kind
        self.reason = message
        super().__init__(f"ledger event {seq} ({kind}): {message}")


class TicketState(StrEnum):
    OPEN = "OPEN"
    CLOSED = "CLOSED"


class BlockerState(StrEnum):
    OPEN = "OPEN"
    PARTIALLY_DISCHARGED = "PARTIALLY_DISCHARGED"
    CLASSIFIED = "CLASSIFIED"
    CLOSED = "CLOSED"


class Decision(StrEnum):
    HOLD = "HOLD"
    PROCEED = "PROCEED"


@dataclass(frozen=True, slots=True)
class Condition:
    id: str
    text: str
    evidence: str | None = None
    """The packet tree hash that discharged it, or None while open."""
    discharged_at: int | None = None


@dataclass(frozen=True, slots=True)
class Ticket:
    id: str
    title: str
    state: TicketState
    opened_at: int
    change_id: str | None = None
    notes: tuple[str, ...] = ()
    closed_at: int | None = None
    updated_at: tuple[int, ...] = ()

    @property
    def touched_at(self) -> tuple[int, ...]:
        """Every event seq that opened, updated or closed it."""
        closed = () if self.closed_at is None else (self.closed_at,)
        return (self.opened_at, *self.updated_at, *closed)


@dataclass(frozen=True, slots=True)
class Blocker:
    id: str
    title: str
    state: BlockerState
    conditions: tuple[Condition, ...]
    opened_at: int
    ticket_id: str | None = None
    change_id: str | None = None
    check: str | None = None
    """The preflight check whose UNKNOWN opened it, if one did."""
    classification: str | None = None
    """The reason recorded by the latest `blocker.classified`."""
    notes: tuple[str, ...] = ()
    closed_at: int | None = None
    updated_at: tuple[int, ...] = ()

    @property
    def open_conditions(self) -> tuple[Condition, ...]:
        return tuple(c for c in self.conditions if c.evidence is None)


@dataclass(frozen=True, slots=True)
class RehearsalRecord:
    packet_tree_hash: str
    change_id: str
    overall: Verdict
    seq: int
    lane: str | None = None
    grant_id: str | None = None
    packet: str | None = None
    """Where the packet was written, as recorded (a hint for readers; the hash is the identity)."""
    isolation: IsolationVerdict | None = None
    """The packet's isolation verdict (None: not recorded, so it never counts as evidence)."""
    exit_code: int | None = None
    """The exit code its exit_codes.json records (None: not recorded)."""
    signed_by: tuple[str, ...] = ()
    """Key ids whose signature on the packet the validator verified when it was recorded."""
    impact: Mapping[str, Any] | None = None
    """The packet's measured impact as the ledger keeps it (core.impact.impact_record); None
    for a rehearsal recorded without it."""


@dataclass(frozen=True, slots=True)
class ConsumedGrantRecord:
    grant_id: str
    nonce: str
    payload_sha256: str
    lane: str
    change_id: str
    seq: int
    source_fingerprint: str = ""
    issuer: str = ""
    signers: tuple[str, ...] = ()
    not_before: str = ""
    expires: str = ""
    packet_tree_hash: str | None = None


@dataclass(frozen=True, slots=True)
class RefusalRecord:
    seq: int
    reason: str
    grant_id: str | None
    lane: str = ""
    change_id: str = ""
    detail: str = ""


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    seq: int
    change_id: str
    decision: Decision
    reason: str
    lane: str | None = None
    grant_id: str | None = None
    operator: str | None = None
    """The key id whose signature the fold verified, when the decision was signed."""
    packet_tree_hash: str | None = None


@dataclass(frozen=True, slots=True)
class CheckRecord:
    check: str
    verdict: Verdict
    detail: str


@dataclass(frozen=True, slots=True)
class PreflightRecord:
    seq: int
    change_id: str
    lane: str
    source: str
    checks: tuple[CheckRecord, ...]
    overall: Verdict
    through: int
    head: str


@dataclass(frozen=True, slots=True)
class PacketCheckRecord:
    seq: int
    change_id: str
    packet_tree_hash: str
    check: str
    outcome: str
    exit_code: int


@dataclass(frozen=True, slots=True)
class LaneRefusalRecord:
    seq: int
    change_id: str
    lane: str
    reason: str


@dataclass(frozen=True, slots=True)
class HoldRecord:
    change_id: str
    held: bool
    seq: int
    reason: str | None = None
    grant_id: str | None = None


@dataclass(frozen=True, slots=True)
class PolicyRecord:
    """The policy in force: the newest `policy.set` the fold accepted."""

    seq: int
    sha256: str
    """sha256 of the canonical JSON of `document`."""
    document: Mapping[str, Any] = field(repr=False)
    """The canonical policy document (`rollproof.core.policy.policy_document`)."""
    policy: Policy = field(repr=False)
    """`document` parsed (no file, no ledger location: `in_force.py` adds those)."""
    signers: tuple[str, ...] = ()
    """Key ids of the operators in force before it who signed it (none for the first)."""

    @property
    def operator_ids(self) -> frozenset[str]:
        gov = self.policy.governed()
        return frozenset(k.key_id for k in gov.operators.values())

    @property
    def quorum(self) -> int:
        """Signatures a `policy.set` needs from these operators: the most any lane's grant
        needs, and all of them when there are fewer (docs/governance.md)."""
        gov = self.policy.governed()
        return max(1, min(max(lane.signatures for lane in gov.lanes), len(gov.operators)))


@dataclass(frozen=True, slots=True)
class LedgerState:
    """The state after folding events 1..`through`."""

    through: int
    head: str
    tickets: Mapping[str, Ticket]
    blockers: Mapping[str, Blocker]
    rehearsals: Mapping[str, RehearsalRecord]
    consumed_grants: Mapping[str, ConsumedGrantRecord]
    consumed_nonces: frozenset[str]
    refusals: tuple[RefusalRecord, ...]
    decisions: tuple[DecisionRecord, ...]
    holds: Mapping[str, HoldRecord]
    validator_pin: str | None
    validator_pin_by: str | None = None
    """The operator key id that signed the current pin (None: unsigned, e.g. by init)."""
    preflights: tuple[PreflightRecord, ...] = ()
    packet_checks: tuple[PacketCheckRecord, ...] = ()
    lane_refusals: tuple[LaneRefusalRecord, ...] = ()
    policy: PolicyRecord | None = None
    """The policy in force (None: the ledger records none, and no governed path runs)."""

    def is_held(self, change_id: str) -> bool:
        """HOLD is the default: a change is held unless a hold.released says otherwise."""
        record = self.holds.get(change_id)
        return record is None or record.held

    def open_blockers(self, change_id: str | None = None) -> tuple[Blocker, ...]:
        return tuple(
            b
            for b in self.blockers.values()
            if b.state is not BlockerState.CLOSED
            and (change_id is None or b.change_id == change_id)
        )
