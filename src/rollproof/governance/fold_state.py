"""The fold's working state: what events 1..N have established so far, while the fold runs.

Owns `FoldState`, the mutable accumulator every rule module reads and writes (the fold in
`state.py` adds `apply` on top of it), and the lookups the rule families share:
`_ticket` and `_blocker` refuse an event for a ticket or blocker that does not exist or is
CLOSED (a closed one is an audit record, and takes no further events), and `_consumed_for`
refuses a grant that was not consumed, or was consumed for another change.

Invariants: pure; only the fold mutates a `FoldState`, one event at a time, after that event's
body has passed its schema; `state()` copies it into a frozen `LedgerState` (read-only
mappings), so nothing a reader holds changes when the fold goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

from rollproof.governance.events import GENESIS, Event
from rollproof.governance.evidence import evidence_signer
from rollproof.governance.records import (
    Blocker,
    BlockerState,
    ConsumedGrantRecord,
    DecisionRecord,
    HoldRecord,
    LaneRefusalRecord,
    LedgerRuleError,
    LedgerState,
    PacketCheckRecord,
    PolicyRecord,
    PreflightRecord,
    RefusalRecord,
    RehearsalRecord,
    Ticket,
    TicketState,
)


@dataclass(slots=True)
class FoldState:
    """What events 1..`through` have established so far, mutable while the fold runs.

    The rule modules read and write it; `state()` freezes it into a `LedgerState`.
    """

    through: int = 0
    head: str = GENESIS
    tickets: dict[str, Ticket] = field(default_factory=dict)
    blockers: dict[str, Blocker] = field(default_factory=dict)
    rehearsals: dict[str, RehearsalRecord] = field(default_factory=dict)
    consumed: dict[str, ConsumedGrantRecord] = field(default_factory=dict)
    nonces: set[str] = field(default_factory=set)
    payloads: set[str] = field(default_factory=set)
    releases: set[str] = field(default_factory=set)
    refusals: list[RefusalRecord] = field(default_factory=list)
    decisions: list[DecisionRecord] = field(default_factory=list)
    holds: dict[str, HoldRecord] = field(default_factory=dict)
    validator_pin: str | None = None
    validator_pin_by: str | None = None
    backed: set[str] = field(default_factory=set)
    """Grant ids already cited by a rehearsal.recorded."""
    preflights: list[PreflightRecord] = field(default_factory=list)
    packet_checks: list[PacketCheckRecord] = field(default_factory=list)
    lane_refusals: list[LaneRefusalRecord] = field(default_factory=list)
    policy: PolicyRecord | None = None

    def state(self) -> LedgerState:
        return LedgerState(
            through=self.through,
            head=self.head,
            tickets=MappingProxyType(dict(self.tickets)),
            blockers=MappingProxyType(dict(self.blockers)),
            rehearsals=MappingProxyType(dict(self.rehearsals)),
            consumed_grants=MappingProxyType(dict(self.consumed)),
            consumed_nonces=frozenset(self.nonces),
            refusals=tuple(self.refusals),
            decisions=tuple(self.decisions),
            holds=MappingProxyType(dict(self.holds)),
            validator_pin=self.validator_pin,
            validator_pin_by=self.validator_pin_by,
            preflights=tuple(self.preflights),
            packet_checks=tuple(self.packet_checks),
            lane_refusals=tuple(self.lane_refusals),
            policy=self.policy,
        )

    # helpers

    def evidence_signer(self) -> str | None:
        """Whose signature evidence needs under the policy in force (`evidence.evidence_signer`)."""
        return None if self.policy is None else evidence_signer(self.policy.policy.governed())

    def _operator(self, e: Event, key_id: str | None, what: str) -> None:
        """Refuse `what` signed by a key that is not an operator's in the policy in force (or
        not signed at all), once a policy is in force."""
        if self.policy is None:
            return
        if key_id is None:
            raise LedgerRuleError(e.seq, e.kind, f"{what} must be signed by an operator")
        if key_id not in self.policy.operator_ids:
            # Stops a key added to the policy file (and nowhere else) acting as an operator.
            raise LedgerRuleError(
                e.seq,
                e.kind,
                f"{what} is signed by key {key_id[:16]}…, not an operator of the policy in "
                f"force (event {self.policy.seq})",
            )

    def _ticket(self, e: Event, ticket_id: str) -> Ticket:
        ticket = self.tickets.get(ticket_id)
        if ticket is None:
            raise LedgerRuleError(e.seq, e.kind, f"no ticket {ticket_id}")
        if ticket.state is TicketState.CLOSED:
            # A closed ticket is an audit record; editing it afterwards would rewrite history.
            raise LedgerRuleError(e.seq, e.kind, f"ticket {ticket_id} is closed")
        return ticket

    def _blocker(self, e: Event, blocker_id: str) -> Blocker:
        blocker = self.blockers.get(blocker_id)
        if blocker is None:
            raise LedgerRuleError(e.seq, e.kind, f"no blocker {blocker_id}")
        if blocker.state is BlockerState.CLOSED:
            raise LedgerRuleError(e.seq, e.kind, f"blocker {blocker_id} is closed")
        return blocker

    def _consumed_for(self, e: Event, grant_id: str, change_id: str) -> ConsumedGrantRecord:
        grant = self.consumed.get(grant_id)
        if grant is None:
            # Stops a hold release or PROCEED backed by a grant nobody consumed.
            raise LedgerRuleError(e.seq, e.kind, f"grant {grant_id} was not consumed")
        if grant.change_id != change_id:
            raise LedgerRuleError(
                e.seq, e.kind, f"grant {grant_id} is for change {grant.change_id}"
            )
        return grant
