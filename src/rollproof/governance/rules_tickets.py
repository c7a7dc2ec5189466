"""Ticket and blocker rules: how their events fold, and the builders that write them.

**Tickets**: OPEN -> CLOSED. A ticket closes only when every blocker filed against it is CLOSED;
a closed ticket takes no further events; ids are never reused.

**Blockers** have discharge conditions (id + text), each discharged at most once, and only by a
`blocker.discharged` event citing evidence: the tree hash of a packet that an earlier
`rehearsal.recorded` event recorded and that counts as evidence (`evidence.py`: overall PASS,
isolation PROVEN_ISOLATED_NOT_PRODUCTION, exit code 0, signed when the policy in force requires
it), for the blocker's change when the blocker names one. States:

    OPEN                   opened; no condition discharged, no UNKNOWN classified
    PARTIALLY_DISCHARGED   the latest progress was a discharge: at least one condition has
                           evidence; it stays here even when all of them do, until closed
    CLASSIFIED             an UNKNOWN check was recorded against it with its reason; still blocks
                           (a later discharge moves it to PARTIALLY_DISCHARGED)
    CLOSED                 terminal; only via `blocker.closed`, and only when every condition
                           has been discharged with evidence

There is no way to close a blocker with an open condition, nor to discharge without evidence.
Conditions may be added while a blocker is not CLOSED (`blocker.updated`); a CLOSED blocker takes
no events at all (a recurring UNKNOWN opens a new blocker: `record_unknown`).

`TICKET_RULES` maps each ticket.* and blocker.* kind to its rule; the fold (`state.py`) calls it
with the body already checked against its schema (`bodies.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from rollproof.governance.bodies import _body
from rollproof.governance.events import Event, EventKind, NewEvent
from rollproof.governance.evidence import judge_record
from rollproof.governance.fold_state import FoldState
from rollproof.governance.records import (
    Blocker,
    BlockerState,
    Condition,
    LedgerRuleError,
    LedgerState,
    Ticket,
    TicketState,
)


def _conditions(raw: list[dict[str, str]]) -> tuple[Condition, ...]:
    return tuple(Condition(id=c["id"], text=c["text"]) for c in raw)


def _ticket_opened(f: FoldState, e: Event, b: dict[str, Any]) -> None:
    if b["ticket_id"] in f.tickets:
        raise LedgerRuleError(e.seq, e.kind, f"ticket {b['ticket_id']} already exists")
    f.tickets[b["ticket_id"]] = Ticket(
        id=b["ticket_id"],
        title=b["title"],
        state=TicketState.OPEN,
        opened_at=e.seq,
        change_id=b.get("change_id"),
    )


def _ticket_updated(f: FoldState, e: Event, b: dict[str, Any]) -> None:
    ticket = f._ticket(e, b["ticket_id"])
    notes = (*ticket.notes, b["note"]) if "note" in b else ticket.notes
    f.tickets[ticket.id] = replace(
        ticket,
        title=b.get("title", ticket.title),
        notes=notes,
        updated_at=(*ticket.updated_at, e.seq),
    )


def _ticket_closed(f: FoldState, e: Event, b: dict[str, Any]) -> None:
    ticket = f._ticket(e, b["ticket_id"])
    still_open = sorted(
        x.id
        for x in f.blockers.values()
        if x.ticket_id == ticket.id and x.state is not BlockerState.CLOSED
    )
    if still_open:
        # Stops closing the ticket to make its blockers disappear from view.
        raise LedgerRuleError(
            e.seq, e.kind, f"ticket {ticket.id} has blockers not closed: {', '.join(still_open)}"
        )
    f.tickets[ticket.id] = replace(ticket, state=TicketState.CLOSED, closed_at=e.seq)


def _blocker_opened(f: FoldState, e: Event, b: dict[str, Any]) -> None:
    if b["blocker_id"] in f.blockers:
        raise LedgerRuleError(e.seq, e.kind, f"blocker {b['blocker_id']} already exists")
    ticket_id = b.get("ticket_id")
    if ticket_id is not None:
        f._ticket(e, ticket_id)
    f.blockers[b["blocker_id"]] = Blocker(
        id=b["blocker_id"],
        title=b["title"],
        state=BlockerState.OPEN,
        conditions=_conditions(b["conditions"]),
        opened_at=e.seq,
        ticket_id=ticket_id,
        change_id=b.get("change_id"),
        check=b.get("check"),
    )


def _blocker_updated(f: FoldState, e: Event, b: dict[str, Any]) -> None:
    blocker = f._blocker(e, b["blocker_id"])
    added = _conditions(b.get("add_conditions", []))
    clash = sorted({c.id for c in added} & {c.id for c in blocker.conditions})
    if clash:
        raise LedgerRuleError(e.seq, e.kind, f"blocker {blocker.id} already has {clash}")
    notes = (*blocker.notes, b["note"]) if "note" in b else blocker.notes
    f.blockers[blocker.id] = replace(
        blocker,
        title=b.get("title", blocker.title),
        conditions=blocker.conditions + added,
        notes=notes,
        updated_at=(*blocker.updated_at, e.seq),
    )


def _blocker_discharged(f: FoldState, e: Event, b: dict[str, Any]) -> None:
    blocker = f._blocker(e, b["blocker_id"])
    tree = b["evidence"]["packet_tree_hash"]
    record = f.rehearsals.get(tree)
    if record is None:
        # Stops a discharge that cites a hash of nothing: the evidence must be on the record.
        raise LedgerRuleError(e.seq, e.kind, f"evidence packet {tree} was never recorded")
    judgement = judge_record(record, required_signer=f.evidence_signer())
    if not judgement.counts:
        # Stops a FAIL, an UNKNOWN or a NOT_PROVEN rehearsal discharging anything.
        raise LedgerRuleError(
            e.seq, e.kind, f"evidence packet {tree} does not count: {judgement.why_not()}"
        )
    if blocker.change_id is not None and record.change_id != blocker.change_id:
        # Stops discharging one change's blocker with another change's passing evidence.
        raise LedgerRuleError(
            e.seq, e.kind, f"evidence packet {tree} is for change {record.change_id}"
        )
    conditions = list(blocker.conditions)
    for i, c in enumerate(conditions):
        if c.id == b["condition_id"]:
            if c.evidence is not None:
                raise LedgerRuleError(
                    e.seq, e.kind, f"condition {blocker.id}/{c.id} was already discharged"
                )
            conditions[i] = replace(c, evidence=tree, discharged_at=e.seq)
            break
    else:
        raise LedgerRuleError(
            e.seq, e.kind, f"blocker {blocker.id} has no condition {b['condition_id']}"
        )
    f.blockers[blocker.id] = replace(
        blocker,
        conditions=tuple(conditions),
        state=BlockerState.PARTIALLY_DISCHARGED,
        updated_at=(*blocker.updated_at, e.seq),
    )


def _blocker_classified(f: FoldState, e: Event, b: dict[str, Any]) -> None:
    blocker = f._blocker(e, b["blocker_id"])
    f.blockers[blocker.id] = replace(
        blocker,
        state=BlockerState.CLASSIFIED,
        classification=b["reason"],
        updated_at=(*blocker.updated_at, e.seq),
    )


def _blocker_closed(f: FoldState, e: Event, b: dict[str, Any]) -> None:
    blocker = f._blocker(e, b["blocker_id"])
    remaining = [c.id for c in blocker.open_conditions]
    if remaining:
        # Stops closing a blocker by decree while a condition still lacks evidence.
        raise LedgerRuleError(
            e.seq, e.kind, f"blocker {blocker.id} has open conditions: {', '.join(remaining)}"
        )
    f.blockers[blocker.id] = replace(blocker, state=BlockerState.CLOSED, closed_at=e.seq)


TICKET_RULES: dict[EventKind, Callable[[FoldState, Event, dict[str, Any]], None]] = {
    EventKind.TICKET_OPENED: _ticket_opened,
    EventKind.TICKET_UPDATED: _ticket_updated,
    EventKind.TICKET_CLOSED: _ticket_closed,
    EventKind.BLOCKER_OPENED: _blocker_opened,
    EventKind.BLOCKER_UPDATED: _blocker_updated,
    EventKind.BLOCKER_DISCHARGED: _blocker_discharged,
    EventKind.BLOCKER_CLASSIFIED: _blocker_classified,
    EventKind.BLOCKER_CLOSED: _blocker_closed,
}


# --- builders: one NewEvent per helper; rules are enforced when the ledger folds them in ------


def open_ticket(ticket_id: str, title: str, *, change_id: str | None = None) -> NewEvent:
    return NewEvent(
        EventKind.TICKET_OPENED, _body(ticket_id=ticket_id, title=title, change_id=change_id)
    )


def update_ticket(ticket_id: str, *, title: str | None = None, note: str | None = None) -> NewEvent:
    return NewEvent(EventKind.TICKET_UPDATED, _body(ticket_id=ticket_id, title=title, note=note))


def close_ticket(ticket_id: str, *, reason: str) -> NewEvent:
    return NewEvent(EventKind.TICKET_CLOSED, _body(ticket_id=ticket_id, reason=reason))


def _condition_list(conditions: Mapping[str, str]) -> list[dict[str, str]] | None:
    return [{"id": k, "text": v} for k, v in conditions.items()] or None


def open_blocker(
    blocker_id: str,
    title: str,
    conditions: Mapping[str, str],
    *,
    ticket_id: str | None = None,
    change_id: str | None = None,
    check: str | None = None,
) -> NewEvent:
    """A new OPEN blocker; `conditions` maps condition id to its text (at least one)."""
    return NewEvent(
        EventKind.BLOCKER_OPENED,
        _body(
            blocker_id=blocker_id,
            title=title,
            conditions=_condition_list(conditions) or [],
            ticket_id=ticket_id,
            change_id=change_id,
            check=check,
        ),
    )


def update_blocker(
    blocker_id: str,
    *,
    title: str | None = None,
    add_conditions: Mapping[str, str] | None = None,
    note: str | None = None,
) -> NewEvent:
    return NewEvent(
        EventKind.BLOCKER_UPDATED,
        _body(
            blocker_id=blocker_id,
            title=title,
            add_conditions=_condition_list(add_conditions or {}),
            note=note,
        ),
    )


def discharge_condition(blocker_id: str, condition_id: str, *, packet_tree_hash: str) -> NewEvent:
    return NewEvent(
        EventKind.BLOCKER_DISCHARGED,
        _body(
            blocker_id=blocker_id,
            condition_id=condition_id,
            evidence={"packet_tree_hash": packet_tree_hash},
        ),
    )


def classify_blocker(blocker_id: str, *, reason: str) -> NewEvent:
    return NewEvent(EventKind.BLOCKER_CLASSIFIED, _body(blocker_id=blocker_id, reason=reason))


def close_blocker(blocker_id: str, *, reason: str) -> NewEvent:
    return NewEvent(EventKind.BLOCKER_CLOSED, _body(blocker_id=blocker_id, reason=reason))


def record_unknown(
    state: LedgerState, *, change_id: str, check: str, reason: str
) -> tuple[NewEvent, ...]:
    """An UNKNOWN preflight check: classify its open blocker, or open one and classify it.

    Pass this to `append_events` as a builder (`lambda s: record_unknown(s, ...)`) so the
    lookup and the append happen in one transaction. The new blocker's id is
    `unknown/<change_id>/<check>/<seq>`, unique because `seq` is the position it is opened at.
    """
    for blocker in state.open_blockers(change_id):
        if blocker.check == check:
            return (classify_blocker(blocker.id, reason=reason),)
    blocker_id = f"unknown/{change_id}/{check}/{state.through + 1}"
    return (
        open_blocker(
            blocker_id,
            f"check {check} is UNKNOWN",
            {"resolved": f"check {check} passes on evidence"},
            change_id=change_id,
            check=check,
        ),
        classify_blocker(blocker_id, reason=reason),
    )
