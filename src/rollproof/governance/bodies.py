"""Event bodies: the schema of every event kind, the strict parse the fold runs first, and the
`_body` helper the builders write bodies with.

Owns `_SCHEMAS` (the exact fields of each kind and the form of each) and `_parse_body`.

Invariants (every kind): the body is strict JSON and a JSON object with exactly the fields
listed in `_SCHEMAS`, each of the stated form, and at least one of the fields `_AT_LEAST_ONE`
lists for an update; an unknown field is refused, so a state cannot be set by hand
(`{"blocker_id": "B1", "state": "CLOSED"}` in a `blocker.updated` is refused, not ignored).
A body that fails any of this raises `LedgerRuleError` before any rule of its kind is asked.
Pure. `_SCHEMAS` names every `EventKind` (the fold asserts it).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterable
from typing import Any

from rollproof.core.impact import is_impact_record
from rollproof.core.model import IsolationVerdict, Verdict
from rollproof.core.strictjson import StrictJsonError, loads_strict
from rollproof.governance.events import HEX64, Event, EventKind, parse_utc
from rollproof.governance.records import Decision, LedgerRuleError

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,199}")
_HEX32 = re.compile(r"[0-9a-f]{32}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
MAX_TEXT = 4000
PACKET_CHECKS = ("commands.sh", "RERUN.sh")
PACKET_OUTCOMES = ("OVERALL PASS", "OVERALL FAIL", "PASS/MATCH", "FAIL/MISMATCH", "ERROR")


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


def _is_policy_signatures(v: Any) -> bool:
    pubkey, signature = _b64_of(32), _b64_of(64)
    return (
        isinstance(v, list)
        and bool(v)
        and all(
            isinstance(s, dict)
            and set(s) == {"key", "signature"}
            and pubkey(s["key"])
            and signature(s["signature"])
            for s in v
        )
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
ISOLATION: _Check = (_one_of(IsolationVerdict), "an isolation verdict")
DECISION: _Check = (_one_of(Decision), "HOLD or PROCEED")
COUNT: _Check = (_is_count, "a non-negative integer")
EXIT_CODE: _Check = (_is_exit_code, "an exit code (0 to 255)")
PUBKEY: _Check = (_b64_of(32), "base64 of a 32-byte Ed25519 public key")
SIGNATURE: _Check = (_b64_of(64), "base64 of a 64-byte Ed25519 signature")
CHECKS: _Check = (_is_checks, "a non-empty list of {check, verdict, detail}, checks distinct")
PACKET_CHECK: _Check = (_one_of(PACKET_CHECKS), " or ".join(PACKET_CHECKS))
OUTCOME: _Check = (_one_of(PACKET_OUTCOMES), ", ".join(PACKET_OUTCOMES))
POLICY_DOC: _Check = (lambda v: isinstance(v, dict), "a policy document (an object)")
POLICY_SIGNATURES: _Check = (_is_policy_signatures, "a non-empty list of {key, signature}")
IMPACT: _Check = (is_impact_record, "{measured, reason, figures, change_limits}")
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
        "isolation": (ISOLATION, REQ),
        "exit_code": (EXIT_CODE, REQ),
        "signed_by": (KEYIDS, OPT),
        "lane": (ID, OPT),
        "grant_id": (HEX32, OPT),
        "packet": (TEXT, OPT),
        "impact": (IMPACT, OPT),
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
    EventKind.POLICY_SET: {
        "policy": (POLICY_DOC, REQ),
        "sha256": (HEX64_, REQ),
        "previous": (COUNT, REQ),
        "signatures": (POLICY_SIGNATURES, OPT),
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


# --- for the builders: a body without its unset (None) fields -------------------------------


def _body(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}
