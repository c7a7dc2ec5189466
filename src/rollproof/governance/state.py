"""Governance state: the pure fold of ledger events 1..N, and the rules every event must obey.

Pure: events in, `LedgerState` out, or `LedgerRuleError` naming the first event that breaks a
rule. The ledger runs this same fold inside its append transaction before it commits, so an
event that breaks a rule is refused at the door and a stored ledger always folds; a ledger that
does not fold was written by something other than rollproof.

Body rules (every kind): the body is a JSON object with exactly the fields listed in `_SCHEMAS`,
each of the stated form; an unknown field is refused, so a state cannot be set by hand
(`{"blocker_id": "B1", "state": "CLOSED"}` in a `blocker.updated` is refused, not ignored).

**Tickets**: OPEN -> CLOSED. A ticket closes only when every blocker filed against it is CLOSED;
a closed ticket takes no further events; ids are never reused.

**Blockers** have discharge conditions (id + text), each discharged at most once, and only by a
`blocker.discharged` event citing evidence: the tree hash of a packet that an earlier
`rehearsal.recorded` event recorded with overall PASS, for the blocker's change when the blocker
names one. States:

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

**Grants**: a `grant.consumed` event's grant id, nonce and payload digest are each new, for
ever. **Holds**: every change is on HOLD unless its latest hold event is `hold.released`, which
must cite a grant consumed earlier for that change and not used to release a hold before.
**Decisions**: PROCEED must cite a consumed grant for that change and lane; HOLD cites none. A
signed decision (or validator pin) carries the operator's public key and an Ed25519 signature
over `PAE(<its payload type>, canonical JSON of the body without "signature")`, and the fold
refuses one whose signature does not verify (an edited reason or option is caught even before
the chain is checked); whether that key is an operator's is the policy's question, asked by
whoever reads the state.
**Rehearsals**: a packet tree hash is recorded once; one that cites a grant cites a grant
consumed for that change (and lane), and each grant backs one rehearsal.
**Preflights** record the ledger position they verified, which must be the position they are
appended at: a preflight cannot claim to have read a ledger it did not (it is appended by a
builder in the same transaction that read the state).
**Packet checks** (commands.sh, RERUN.sh) cite a packet recorded earlier for the same change.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from rollproof.core.canonical import canonical_json
from rollproof.core.errors import CheckFailedError, UsageError
from rollproof.core.keys import PublicKey, SigningKey
from rollproof.core.model import Verdict
from rollproof.core.strictjson import StrictJsonError, loads_strict
from rollproof.governance.events import GENESIS, HEX64, Event, EventKind, NewEvent, parse_utc
from rollproof.verify.attest import pae

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,199}")
_HEX32 = re.compile(r"[0-9a-f]{32}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
MAX_TEXT = 4000
DECISION_PAYLOAD_TYPE = "application/vnd.rollproof.decision+json"
PIN_PAYLOAD_TYPE = "application/vnd.rollproof.validator-pin+json"
PACKET_CHECKS = ("commands.sh", "RERUN.sh")
PACKET_OUTCOMES = ("OVERALL PASS", "OVERALL FAIL", "PASS/MATCH", "FAIL/MISMATCH", "ERROR")


class LedgerRuleError(CheckFailedError):
    """An event breaks a governance rule; `seq` and `kind` name it."""

    def __init__(self, seq: int, kind: str, message: str) -> None:
        self.seq = seq
        self.kind = kind
        self.reason = message
        super().__init__(f"ledger event {seq} ({kind}): {message}")


class AlreadyConsumedError(LedgerRuleError):
    """A grant id, nonce or payload digest was consumed before; `field` says which."""

    def __init__(self, seq: int, field: str, value: str) -> None:
        self.field = field
        super().__init__(seq, EventKind.GRANT_CONSUMED, f"{field} {value} was already consumed")


class LedgerRangeError(UsageError):
    """A fold asked for a position the ledger does not have."""


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


# --- body schemas ------------------------------------------------------------------------------

_Check = tuple[Callable[[Any], bool], str]


def _is_id(v: Any) -> bool:
    return isinstance(v, str) and _ID.fullmatch(v) is not None


def _is_text(v: Any) -> bool:
    return isinstance(v, str) and 0 < len(v) <= MAX_TEXT and not v.isspace()


def _is_hex64(v: Any) -> bool:
    return isinstance(v, str) and HEX64.fullmatch(v) is not None


def _is_hex32(v: Any) -> bool:
    return isinstance(v, str) and _HEX32.fullmatch(v) is not None


def _is_digest(v: Any) -> bool:
    return isinstance(v, str) and _DIGEST.fullmatch(v) is not None


def _is_time(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    try:
        parse_utc(v)
    except ValueError:
        return False
    return True


def _is_conditions(v: Any) -> bool:
    if not isinstance(v, list) or not v:
        return False
    ids = [c.get("id") for c in v if isinstance(c, dict)]
    return (
        len(ids) == len(v)
        and all(set(c) == {"id", "text"} and _is_id(c["id"]) and _is_text(c["text"]) for c in v)
        and len(set(ids)) == len(ids)
    )


def _is_keyids(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(map(_is_hex64, v)) and v == sorted(set(v))


def _is_evidence(v: Any) -> bool:
    return (
        isinstance(v, dict) and set(v) == {"packet_tree_hash"} and _is_hex64(v["packet_tree_hash"])
    )


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**53


def _is_exit_code(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255


def _b64_of(size: int) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        if not isinstance(v, str):
            return False
        try:
            raw = base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError):
            return False
        return len(raw) == size and base64.b64encode(raw).decode("ascii") == v

    return check


def _is_checks(v: Any) -> bool:
    return (
        isinstance(v, list)
        and bool(v)
        and all(
            isinstance(c, dict)
            and set(c) == {"check", "verdict", "detail"}
            and _is_id(c["check"])
            and c["verdict"] in {x.value for x in Verdict}
            and _is_text(c["detail"])
            for c in v
        )
        and len({c["check"] for c in v}) == len(v)
    )


def _one_of(values: Iterable[str]) -> Callable[[Any], bool]:
    allowed = frozenset(values)
    return lambda v: isinstance(v, str) and v in allowed


ID: _Check = (_is_id, "an id")
TEXT: _Check = (_is_text, f"non-blank text of at most {MAX_TEXT} characters")
HEX64_: _Check = (_is_hex64, "64 lowercase hex digits")
HEX32: _Check = (_is_hex32, "32 lowercase hex digits")
KEYIDS: _Check = (_is_keyids, "a sorted list of distinct key ids")
DIGEST: _Check = (_is_digest, "sha256:<64 lowercase hex digits>")
TIME: _Check = (_is_time, "an ISO-8601 UTC time with microseconds")
CONDITIONS: _Check = (_is_conditions, "a non-empty list of {id, text} with distinct ids")
EVIDENCE: _Check = (_is_evidence, "{packet_tree_hash: 64 lowercase hex digits}")
VERDICT: _Check = (_one_of(Verdict), "a verdict")
DECISION: _Check = (_one_of(Decision), "HOLD or PROCEED")
COUNT: _Check = (_is_count, "a non-negative integer")
EXIT_CODE: _Check = (_is_exit_code, "an exit code (0 to 255)")
PUBKEY: _Check = (_b64_of(32), "base64 of a 32-byte Ed25519 public key")
SIGNATURE: _Check = (_b64_of(64), "base64 of a 64-byte Ed25519 signature")
CHECKS: _Check = (_is_checks, "a non-empty list of {check, verdict, detail}, checks distinct")
PACKET_CHECK: _Check = (_one_of(PACKET_CHECKS), " or ".join(PACKET_CHECKS))
OUTCOME: _Check = (_one_of(PACKET_OUTCOMES), ", ".join(PACKET_OUTCOMES))
REQ, OPT = True, False

_SCHEMAS: dict[EventKind, dict[str, tuple[_Check, bool]]] = {
    EventKind.TICKET_OPENED: {"ticket_id": (ID, REQ), "title": (TEXT, REQ), "change_id": (ID, OPT)},
    EventKind.TICKET_UPDATED: {"ticket_id": (ID, REQ), "title": (TEXT, OPT), "note": (TEXT, OPT)},
    EventKind.TICKET_CLOSED: {"ticket_id": (ID, REQ), "reason": (TEXT, REQ)},
    EventKind.BLOCKER_OPENED: {
        "blocker_id": (ID, REQ),
        "title": (TEXT, REQ),
        "conditions": (CONDITIONS, REQ),
        "ticket_id": (ID, OPT),
        "change_id": (ID, OPT),
        "check": (ID, OPT),
    },
    EventKind.BLOCKER_UPDATED: {
        "blocker_id": (ID, REQ),
        "title": (TEXT, OPT),
        "add_conditions": (CONDITIONS, OPT),
        "note": (TEXT, OPT),
    },
    EventKind.BLOCKER_DISCHARGED: {
        "blocker_id": (ID, REQ),
        "condition_id": (ID, REQ),
        "evidence": (EVIDENCE, REQ),
    },
    EventKind.BLOCKER_CLASSIFIED: {"blocker_id": (ID, REQ), "reason": (TEXT, REQ)},
    EventKind.BLOCKER_CLOSED: {"blocker_id": (ID, REQ), "reason": (TEXT, REQ)},
    EventKind.GRANT_CONSUMED: {
        "grant_id": (HEX32, REQ),
        "nonce": (HEX32, REQ),
        "payload_sha256": (HEX64_, REQ),
        "lane": (ID, REQ),
        "change_id": (ID, REQ),
        "source_fingerprint": (DIGEST, REQ),
        "packet_tree_hash": (HEX64_, OPT),
        "audience": (HEX64_, REQ),
        "issuer": (HEX64_, REQ),
        "signers": (KEYIDS, REQ),
        "not_before": (TIME, REQ),
        "expires": (TIME, REQ),
    },
    EventKind.GRANT_REFUSED: {
        "reason": (ID, REQ),
        "detail": (TEXT, REQ),
        "lane": (TEXT, REQ),
        "change_id": (TEXT, REQ),
        "executor": (TEXT, REQ),
        "envelope_sha256": (HEX64_, REQ),
        "grant_id": (HEX32, OPT),
    },
    EventKind.DECISION_RECORDED: {
        "change_id": (ID, REQ),
        "decision": (DECISION, REQ),
        "reason": (TEXT, REQ),
        "lane": (ID, OPT),
        "grant_id": (HEX32, OPT),
        "packet_tree_hash": (HEX64_, OPT),
        "operator_key": (PUBKEY, OPT),
        "signature": (SIGNATURE, OPT),
    },
    EventKind.HOLD_SET: {"change_id": (ID, REQ), "reason": (TEXT, REQ)},
    EventKind.HOLD_RELEASED: {"change_id": (ID, REQ), "grant_id": (HEX32, REQ)},
    EventKind.VALIDATOR_PINNED: {
        "sha256": (HEX64_, REQ),
        "operator_key": (PUBKEY, OPT),
        "signature": (SIGNATURE, OPT),
    },
    EventKind.REHEARSAL_RECORDED: {
        "change_id": (ID, REQ),
        "packet_tree_hash": (HEX64_, REQ),
        "overall": (VERDICT, REQ),
        "lane": (ID, OPT),
        "grant_id": (HEX32, OPT),
        "packet": (TEXT, OPT),
    },
    EventKind.PREFLIGHT_RECORDED: {
        "change_id": (ID, REQ),
        "lane": (ID, REQ),
        "source": (TEXT, REQ),
        "checks": (CHECKS, REQ),
        "overall": (VERDICT, REQ),
        "through": (COUNT, REQ),
        "head": (HEX64_, REQ),
    },
    EventKind.PACKET_CHECKED: {
        "change_id": (ID, REQ),
        "packet_tree_hash": (HEX64_, REQ),
        "check": (PACKET_CHECK, REQ),
        "outcome": (OUTCOME, REQ),
        "exit_code": (EXIT_CODE, REQ),
    },
    EventKind.LANE_REFUSED: {
        "change_id": (ID, REQ),
        "lane": (TEXT, REQ),
        "reason": (TEXT, REQ),
    },
}
_AT_LEAST_ONE: dict[EventKind, frozenset[str]] = {
    EventKind.TICKET_UPDATED: frozenset({"title", "note"}),
    EventKind.BLOCKER_UPDATED: frozenset({"title", "add_conditions", "note"}),
}


def _parse_body(event: Event) -> dict[str, Any]:
    try:
        body = loads_strict(event.body)
    except StrictJsonError as e:
        raise LedgerRuleError(event.seq, event.kind, f"body is not strict JSON: {e}") from e
    if not isinstance(body, dict):
        raise LedgerRuleError(event.seq, event.kind, "body is not a JSON object")
    schema = _SCHEMAS[event.kind]
    unknown = sorted(set(body) - set(schema))
    if unknown:
        # Stops a hand-set state (or any field a later, more lenient reader might honour).
        raise LedgerRuleError(event.seq, event.kind, f"unknown field(s) {unknown}")
    for name, ((check, form), required) in schema.items():
        if name not in body:
            if required:
                raise LedgerRuleError(event.seq, event.kind, f"missing field {name!r}")
            continue
        if not check(body[name]):
            raise LedgerRuleError(event.seq, event.kind, f"field {name!r} must be {form}")
    needs = _AT_LEAST_ONE.get(event.kind)
    if needs is not None and not needs & set(body):
        raise LedgerRuleError(event.seq, event.kind, f"needs one of {sorted(needs)}")
    return body


# --- the fold ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Folder:
    """The incremental fold: `apply` enforces every rule in the module docstring.

    `fold` uses it over stored events; the ledger uses it inside its append transaction to
    refuse a new event before it is committed.
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

    def apply(self, event: Event) -> None:
        if event.seq != self.through + 1:
            raise ValueError(f"fold expects event {self.through + 1}, got {event.seq}")
        body = _parse_body(event)
        handler = _HANDLERS[event.kind]
        handler(self, event, body)
        self.through = event.seq
        self.head = event.hash

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
        )

    # helpers

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


def _conditions(raw: list[dict[str, str]]) -> tuple[Condition, ...]:
    return tuple(Condition(id=c["id"], text=c["text"]) for c in raw)


def _ticket_opened(f: Folder, e: Event, b: dict[str, Any]) -> None:
    if b["ticket_id"] in f.tickets:
        raise LedgerRuleError(e.seq, e.kind, f"ticket {b['ticket_id']} already exists")
    f.tickets[b["ticket_id"]] = Ticket(
        id=b["ticket_id"],
        title=b["title"],
        state=TicketState.OPEN,
        opened_at=e.seq,
        change_id=b.get("change_id"),
    )


def _ticket_updated(f: Folder, e: Event, b: dict[str, Any]) -> None:
    ticket = f._ticket(e, b["ticket_id"])
    notes = (*ticket.notes, b["note"]) if "note" in b else ticket.notes
    f.tickets[ticket.id] = replace(
        ticket,
        title=b.get("title", ticket.title),
        notes=notes,
        updated_at=(*ticket.updated_at, e.seq),
    )


def _ticket_closed(f: Folder, e: Event, b: dict[str, Any]) -> None:
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


def _blocker_opened(f: Folder, e: Event, b: dict[str, Any]) -> None:
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


def _blocker_updated(f: Folder, e: Event, b: dict[str, Any]) -> None:
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


def _blocker_discharged(f: Folder, e: Event, b: dict[str, Any]) -> None:
    blocker = f._blocker(e, b["blocker_id"])
    tree = b["evidence"]["packet_tree_hash"]
    record = f.rehearsals.get(tree)
    if record is None:
        # Stops a discharge that cites a hash of nothing: the evidence must be on the record.
        raise LedgerRuleError(e.seq, e.kind, f"evidence packet {tree} was never recorded")
    if record.overall is not Verdict.PASS:
        raise LedgerRuleError(e.seq, e.kind, f"evidence packet {tree} is {record.overall}")
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


def _blocker_classified(f: Folder, e: Event, b: dict[str, Any]) -> None:
    blocker = f._blocker(e, b["blocker_id"])
    f.blockers[blocker.id] = replace(
        blocker,
        state=BlockerState.CLASSIFIED,
        classification=b["reason"],
        updated_at=(*blocker.updated_at, e.seq),
    )


def _blocker_closed(f: Folder, e: Event, b: dict[str, Any]) -> None:
    blocker = f._blocker(e, b["blocker_id"])
    remaining = [c.id for c in blocker.open_conditions]
    if remaining:
        # Stops closing a blocker by decree while a condition still lacks evidence.
        raise LedgerRuleError(
            e.seq, e.kind, f"blocker {blocker.id} has open conditions: {', '.join(remaining)}"
        )
    f.blockers[blocker.id] = replace(blocker, state=BlockerState.CLOSED, closed_at=e.seq)


def _grant_consumed(f: Folder, e: Event, b: dict[str, Any]) -> None:
    # The database's UNIQUE index refuses these first; the fold refuses them again so that a
    # ledger written around the index still cannot show one grant consumed twice.
    if b["grant_id"] in f.consumed:
        raise AlreadyConsumedError(e.seq, "grant_id", b["grant_id"])
    if b["nonce"] in f.nonces:
        raise AlreadyConsumedError(e.seq, "nonce", b["nonce"])
    if b["payload_sha256"] in f.payloads:
        raise AlreadyConsumedError(e.seq, "payload_sha256", b["payload_sha256"])
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


def _grant_refused(f: Folder, e: Event, b: dict[str, Any]) -> None:
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


def _decision_recorded(f: Folder, e: Event, b: dict[str, Any]) -> None:
    operator = _signer(e, b)
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


def _hold_set(f: Folder, e: Event, b: dict[str, Any]) -> None:
    f.holds[b["change_id"]] = HoldRecord(
        change_id=b["change_id"], held=True, seq=e.seq, reason=b["reason"]
    )


def _hold_released(f: Folder, e: Event, b: dict[str, Any]) -> None:
    grant = f._consumed_for(e, b["grant_id"], b["change_id"])
    if grant.grant_id in f.releases:
        # Stops one grant from lifting HOLD again after an operator set it back.
        raise LedgerRuleError(e.seq, e.kind, f"grant {grant.grant_id} already released a hold")
    f.releases.add(grant.grant_id)
    f.holds[b["change_id"]] = HoldRecord(
        change_id=b["change_id"], held=False, seq=e.seq, grant_id=grant.grant_id
    )


def _validator_pinned(f: Folder, e: Event, b: dict[str, Any]) -> None:
    f.validator_pin_by = _signer(e, b)
    f.validator_pin = b["sha256"]


def _rehearsal_recorded(f: Folder, e: Event, b: dict[str, Any]) -> None:
    tree = b["packet_tree_hash"]
    if tree in f.rehearsals:
        raise LedgerRuleError(e.seq, e.kind, f"packet {tree} is already recorded")
    grant_id, lane = b.get("grant_id"), b.get("lane")
    if grant_id is not None:
        grant = f._consumed_for(e, grant_id, b["change_id"])
        if lane is not None and grant.lane != lane:
            raise LedgerRuleError(e.seq, e.kind, f"grant {grant_id} is for lane {grant.lane}")
        if grant_id in f.backed:
            # Stops one single-use grant from standing behind two rehearsals.
            raise LedgerRuleError(e.seq, e.kind, f"grant {grant_id} already backs a rehearsal")
        f.backed.add(grant_id)
    f.rehearsals[tree] = RehearsalRecord(
        packet_tree_hash=tree,
        change_id=b["change_id"],
        overall=Verdict(b["overall"]),
        seq=e.seq,
        lane=lane,
        grant_id=grant_id,
        packet=b.get("packet"),
    )


def _preflight_recorded(f: Folder, e: Event, b: dict[str, Any]) -> None:
    if b["through"] != f.through or b["head"] != f.head:
        # Stops a preflight claiming to have verified a ledger position it was not appended at.
        raise LedgerRuleError(
            e.seq, e.kind, f"claims to have read the ledger through {b['through']}, not {f.through}"
        )
    checks = tuple(CheckRecord(c["check"], Verdict(c["verdict"]), c["detail"]) for c in b["checks"])
    f.preflights.append(
        PreflightRecord(
            seq=e.seq,
            change_id=b["change_id"],
            lane=b["lane"],
            source=b["source"],
            checks=checks,
            overall=Verdict(b["overall"]),
            through=b["through"],
            head=b["head"],
        )
    )


def _packet_checked(f: Folder, e: Event, b: dict[str, Any]) -> None:
    record = f.rehearsals.get(b["packet_tree_hash"])
    if record is None or record.change_id != b["change_id"]:
        raise LedgerRuleError(
            e.seq, e.kind, f"packet {b['packet_tree_hash']} was never recorded for this change"
        )
    f.packet_checks.append(
        PacketCheckRecord(
            seq=e.seq,
            change_id=b["change_id"],
            packet_tree_hash=b["packet_tree_hash"],
            check=b["check"],
            outcome=b["outcome"],
            exit_code=b["exit_code"],
        )
    )


def _lane_refused(f: Folder, e: Event, b: dict[str, Any]) -> None:
    f.lane_refusals.append(
        LaneRefusalRecord(seq=e.seq, change_id=b["change_id"], lane=b["lane"], reason=b["reason"])
    )


_HANDLERS: dict[EventKind, Callable[[Folder, Event, dict[str, Any]], None]] = {
    EventKind.TICKET_OPENED: _ticket_opened,
    EventKind.TICKET_UPDATED: _ticket_updated,
    EventKind.TICKET_CLOSED: _ticket_closed,
    EventKind.BLOCKER_OPENED: _blocker_opened,
    EventKind.BLOCKER_UPDATED: _blocker_updated,
    EventKind.BLOCKER_DISCHARGED: _blocker_discharged,
    EventKind.BLOCKER_CLASSIFIED: _blocker_classified,
    EventKind.BLOCKER_CLOSED: _blocker_closed,
    EventKind.GRANT_CONSUMED: _grant_consumed,
    EventKind.GRANT_REFUSED: _grant_refused,
    EventKind.DECISION_RECORDED: _decision_recorded,
    EventKind.HOLD_SET: _hold_set,
    EventKind.HOLD_RELEASED: _hold_released,
    EventKind.VALIDATOR_PINNED: _validator_pinned,
    EventKind.REHEARSAL_RECORDED: _rehearsal_recorded,
    EventKind.PREFLIGHT_RECORDED: _preflight_recorded,
    EventKind.PACKET_CHECKED: _packet_checked,
    EventKind.LANE_REFUSED: _lane_refused,
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


# --- builders: one NewEvent per helper; rules are enforced when the ledger folds them in ------


def _body(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


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


def record_rehearsal(
    change_id: str,
    packet_tree_hash: str,
    overall: Verdict,
    *,
    lane: str | None = None,
    grant_id: str | None = None,
    packet: str | None = None,
) -> NewEvent:
    return NewEvent(
        EventKind.REHEARSAL_RECORDED,
        _body(
            change_id=change_id,
            packet_tree_hash=packet_tree_hash,
            overall=str(overall),
            lane=lane,
            grant_id=grant_id,
            packet=packet,
        ),
    )


def record_preflight(
    state: LedgerState,
    *,
    change_id: str,
    lane: str,
    source: str,
    checks: Sequence[CheckRecord],
    overall: Verdict,
) -> NewEvent:
    """A preflight's results, citing the ledger position `state` was folded through."""
    return NewEvent(
        EventKind.PREFLIGHT_RECORDED,
        _body(
            change_id=change_id,
            lane=lane,
            source=source,
            checks=[
                {"check": c.check, "verdict": str(c.verdict), "detail": c.detail} for c in checks
            ],
            overall=str(overall),
            through=state.through,
            head=state.head,
        ),
    )


def record_packet_check(
    change_id: str, packet_tree_hash: str, *, check: str, outcome: str, exit_code: int
) -> NewEvent:
    return NewEvent(
        EventKind.PACKET_CHECKED,
        _body(
            change_id=change_id,
            packet_tree_hash=packet_tree_hash,
            check=check,
            outcome=outcome,
            exit_code=exit_code,
        ),
    )


def refuse_lane(change_id: str, lane: str, *, reason: str) -> NewEvent:
    return NewEvent(EventKind.LANE_REFUSED, _body(change_id=change_id, lane=lane, reason=reason))


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
