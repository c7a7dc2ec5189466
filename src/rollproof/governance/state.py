"""Governance state: the pure fold of ledger events 1..N into a `LedgerState`.

Pure: events in, `LedgerState` out, or `LedgerRuleError` naming the first event that breaks a
rule. The ledger runs this same fold inside its append transaction before it commits, so an
event that breaks a rule is refused at the door and a stored ledger always folds; a ledger that
does not fold was written by something other than rollproof.

Owns the fold (`Folder`, which is `FoldState` plus `apply`; `fold_events`; `fold`) and the
table of which rule each kind obeys. Invariants: events are folded in order from 1 with no gap;
each body is checked against its schema (`bodies.py`) before its kind's rule runs; every
`EventKind` has exactly one schema and one rule (asserted at import). The rules live with their
events:

    records.py          the folded state's types (`LedgerState`, its records, `LedgerRuleError`)
    fold_state.py       the working state the rules read and write, and their shared lookups
    bodies.py           every kind's body schema, checked first
    rules_tickets.py    tickets and blockers, their conditions and evidence
    rules_grants.py     grants consumed once, for ever; refusals recorded
    rules_decisions.py  decisions, holds, validator pins, and the operator signatures on them
    rules_lanes.py      rehearsals, preflights, packet checks, lane refusals
    rules_policy.py     the policy in force: the first at event 1, each later one signed by a
                        quorum of the operators in force
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rollproof.core.errors import UsageError
from rollproof.governance.bodies import _SCHEMAS, _parse_body
from rollproof.governance.events import Event, EventKind
from rollproof.governance.fold_state import FoldState
from rollproof.governance.records import LedgerState
from rollproof.governance.rules_decisions import DECISION_RULES
from rollproof.governance.rules_grants import GRANT_RULES
from rollproof.governance.rules_lanes import LANE_RULES
from rollproof.governance.rules_policy import POLICY_RULES
from rollproof.governance.rules_tickets import TICKET_RULES


class LedgerRangeError(UsageError):
    """A fold asked for a position the ledger does not have."""


@dataclass(slots=True)
class Folder(FoldState):
    """The incremental fold: `apply` enforces every rule of the modules in the module docstring.

    `fold` uses it over stored events; the ledger uses it inside its append transaction to
    refuse a new event before it is committed.
    """

    def apply(self, event: Event) -> None:
        if event.seq != self.through + 1:
            raise ValueError(f"fold expects event {self.through + 1}, got {event.seq}")
        body = _parse_body(event)
        handler = _HANDLERS[event.kind]
        handler(self, event, body)
        self.through = event.seq
        self.head = event.hash


_HANDLERS: dict[EventKind, Callable[[FoldState, Event, dict[str, Any]], None]] = {
    **TICKET_RULES,
    **GRANT_RULES,
    **DECISION_RULES,
    **LANE_RULES,
    **POLICY_RULES,
}
assert set(_HANDLERS) == set(EventKind) == set(_SCHEMAS)  # every kind has its rules


def fold_events(events: Iterable[Event]) -> Folder:
    """The fold after every event in `events` (which must start at 1, with no gaps)."""
    folder = Folder()
    for event in events:
        folder.apply(event)
    return folder


def fold(events: Sequence[Event], *, through: int | None = None) -> LedgerState:
    """The state after events 1..`through` (all of them when None).

    `events` are verified events in order (`ledger.read_verified`); the first event that breaks
    a rule raises `LedgerRuleError`, even if `through` would stop before a later bad one.
    """
    size = len(events)
    if through is None:
        through = size
    if not 0 <= through <= size:
        raise LedgerRangeError(f"cannot fold through {through}: the ledger has {size} events")
    return fold_events(events[:through]).state()
