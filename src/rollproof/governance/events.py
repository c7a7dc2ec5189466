"""Ledger events as values: their kinds, their times and the leaf hash that chains them.

Pure: no IO, no clock. The ledger store (`ledger.py`) and the fold (`state.py`) both read these
rules, so what is written and what is verified cannot drift apart.

**Leaf hash rule** (RFC 6962 style: a 0x00 leaf prefix, so a leaf can never be confused with an
interior node if the log ever grows a Merkle tree):

    body_sha256 = lowercase hex sha256 of the stored body bytes (the BLOB exactly as stored)
    leaf        = canonical_json({"body_sha256": body_sha256, "kind": kind,
                                  "prev": prev_hash, "seq": seq, "time": time})   (RFC 8785)
    hash        = lowercase hex sha256(b"\\x00" + leaf)
    prev_hash   = the hash of event seq-1, or GENESIS (64 zeros) for event 1

`body` itself is RFC 8785 canonical JSON of a JSON object, stored as a BLOB; the leaf commits
to the sha256 of those stored bytes, so verification rehashes what is on disk rather than a
re-serialisation of what a parser understood.

**Time rule**: every time is UTC, ISO-8601, always with microseconds and a `Z`
(`2026-01-02T03:04:05.000000Z`): one spelling per instant, and string order is time order.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from rollproof.core.canonical import canonical_json

GENESIS = "0" * 64
"""The `prev_hash` of event 1."""

LEAF_PREFIX = b"\x00"
HEX64 = re.compile(r"[0-9a-f]{64}")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


class EventKind(StrEnum):
    """Every kind of governance event; a stored kind outside this set fails verification."""

    TICKET_OPENED = "ticket.opened"
    TICKET_UPDATED = "ticket.updated"
    TICKET_CLOSED = "ticket.closed"
    BLOCKER_OPENED = "blocker.opened"
    BLOCKER_UPDATED = "blocker.updated"
    BLOCKER_DISCHARGED = "blocker.discharged"
    BLOCKER_CLASSIFIED = "blocker.classified"
    BLOCKER_CLOSED = "blocker.closed"
    GRANT_CONSUMED = "grant.consumed"
    GRANT_REFUSED = "grant.refused"
    DECISION_RECORDED = "decision.recorded"
    HOLD_SET = "hold.set"
    HOLD_RELEASED = "hold.released"
    VALIDATOR_PINNED = "validator.pinned"
    REHEARSAL_RECORDED = "rehearsal.recorded"
    PREFLIGHT_RECORDED = "preflight.recorded"
    PACKET_CHECKED = "packet.checked"
    LANE_REFUSED = "lane.refused"
    POLICY_SET = "policy.set"


def format_utc(moment: datetime) -> str:
    """The one spelling of `moment` in the ledger and in grants."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        # A naive datetime is a caller bug: local time would silently shift every window.
        raise ValueError("a timezone-aware datetime is required")
    return moment.astimezone(UTC).strftime(_TIME_FORMAT)


def parse_utc(text: str) -> datetime:
    """Parse a time written by `format_utc`; anything else raises ValueError."""
    if not _TIME.fullmatch(text):
        raise ValueError(f"not an ISO-8601 UTC time with microseconds: {text!r}")
    return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC)


def body_bytes(body: Mapping[str, Any]) -> bytes:
    """The canonical bytes stored for an event body."""
    return canonical_json(dict(body))


def leaf_hash(*, seq: int, time: str, kind: str, body: bytes, prev_hash: str) -> str:
    """The event hash (see the module docstring)."""
    leaf = canonical_json(
        {
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "kind": kind,
            "prev": prev_hash,
            "seq": seq,
            "time": time,
        }
    )
    return hashlib.sha256(LEAF_PREFIX + leaf).hexdigest()


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event about to be appended: its kind and its body (a JSON object)."""

    kind: EventKind
    body: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Event:
    """One stored event. Only `ledger.py` builds these, and only from verified rows."""

    seq: int
    time: str
    kind: EventKind
    body: bytes
    prev_hash: str
    hash: str
