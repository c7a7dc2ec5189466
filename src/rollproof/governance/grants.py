"""Grants: operator-signed, scoped, single-use authorisations to run one lane of one change.

A grant is a DSSE envelope (`envelope.py`), payloadType `application/vnd.rollproof.grant+json`,
whose payload is the canonical JSON of exactly:

    {"schema": "rollproof/grant/v1", "grant_id": <32 hex, random>, "nonce": <32 hex, random>,
     "lane": <id>, "change_id": <id>, "source_fingerprint": "sha256:<64 hex>",
     "packet_tree_hash": <64 hex> | null, "audience": <executor key id>,
     "issuer": <operator key id>, "not_before": <UTC>, "expires": <UTC>}

and, optionally, `"content_id": "sha256:<64 hex>"`: the change's content id (its scripts,
settings and `[impact]` limits), when the operator named the change's directory or the evidence
packet that records it. For a dump source (`pgdump:`/`sqlitedump:`) `source_fingerprint` is
`sha256:` and the dump's own sha256: a dump is its bytes.

`check_grant` is the pure verification core (bytes, keys and a clock in; a `Grant` or a
`GrantRefusedError` out); `consume_grant` adds the ledger. Invariants, in the order they are
checked, each against a named attack:

1. the envelope is well formed and of the grant payload type (a checkpoint or an attestation
   cannot be presented as a grant);
2. no signature claims the executor's own key id: the executor cannot mint its own grant, even
   if its key were (wrongly) listed among the operators;
3. the signatures are verified over the PAE of the raw payload bytes, against trusted operator
   keys only, **before the payload is parsed**; a trusted key id whose signature does not verify
   refuses the grant; `required_signatures` distinct trusted keys must have signed;
4. the payload is canonical JSON with exactly the fields above (nothing rides along under the
   signature), its issuer is one of the keys that signed it, and the issuer is not the executor;
5. it is addressed to this executor (audience), this lane, this change (and, when it names
   one, this content id: the change as it was when the grant was issued), this source's
   fingerprint (or this dump), and (when it names one) this evidence packet: a grant for one
   thing never authorises another; a lane that needs evidence refuses a grant that names none;
6. `not_before <= now < expires`;
7. consumption inserts the grant id, nonce and payload sha256 into UNIQUE columns in the same
   `BEGIN IMMEDIATE` transaction that appends `grant.consumed`: a replay, even re-encoded or
   re-signed, or racing from another process, fails on the index; there is no check-then-write.

Every refusal raises a `GrantRefusedError` subclass (exit 3) and appends `grant.refused` with
the reason, the asked-for lane, change and executor, and the envelope's sha256. No event, error
message or repr carries a signature or key material.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

from rollproof.core.canonical import canonical_json
from rollproof.core.errors import HeldError, RollproofError, UsageError
from rollproof.core.keys import PublicKey, SigningKey, short_key_id
from rollproof.core.strictjson import StrictJsonError, loads_strict
from rollproof.governance.envelope import (
    Envelope,
    EnvelopeError,
    add_signature,
    check_signatures,
    encode_envelope,
    parse_envelope,
    sign_envelope,
)
from rollproof.governance.events import Event, EventKind, NewEvent, format_utc, parse_utc
from rollproof.governance.rules_grants import AlreadyConsumedError
from rollproof.governance.store import LedgerStore, open_ledger

GRANT_PAYLOAD_TYPE = "application/vnd.rollproof.grant+json"
GRANT_SCHEMA = "rollproof/grant/v1"
_FIELDS = frozenset(
    {
        "schema",
        "grant_id",
        "nonce",
        "lane",
        "change_id",
        "source_fingerprint",
        "packet_tree_hash",
        "audience",
        "issuer",
        "not_before",
        "expires",
    }
)
_OPTIONAL_FIELDS = frozenset({"content_id"})
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,199}")
_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_MAX_LOGGED = 200


class RefusalReason(StrEnum):
    MALFORMED = "malformed"
    UNKNOWN_KEY = "unknown-key"
    BAD_SIGNATURE = "bad-signature"
    SELF_SIGNED = "self-signed"
    WRONG_AUDIENCE = "wrong-audience"
    WRONG_LANE = "wrong-lane"
    WRONG_CHANGE = "wrong-change"
    WRONG_SOURCE = "wrong-source"
    WRONG_EVIDENCE = "wrong-evidence"
    NOT_YET_VALID = "not-yet-valid"
    EXPIRED = "expired"
    REPLAY = "replay"


class GrantRefusedError(HeldError):
    """A grant was refused; `reason` says why, `grant_id` names it once it is authenticated."""

    reason: ClassVar[RefusalReason]

    def __init__(self, message: str, *, grant_id: str | None = None) -> None:
        self.grant_id = grant_id
        super().__init__(f"grant refused ({self.reason}): {message}")


class GrantMalformedError(GrantRefusedError):
    reason = RefusalReason.MALFORMED


class GrantUnknownKeyError(GrantRefusedError):
    reason = RefusalReason.UNKNOWN_KEY


class GrantSignatureError(GrantRefusedError):
    reason = RefusalReason.BAD_SIGNATURE


class GrantSelfSignedError(GrantRefusedError):
    reason = RefusalReason.SELF_SIGNED


class GrantAudienceError(GrantRefusedError):
    reason = RefusalReason.WRONG_AUDIENCE


class GrantLaneError(GrantRefusedError):
    reason = RefusalReason.WRONG_LANE


class GrantChangeError(GrantRefusedError):
    reason = RefusalReason.WRONG_CHANGE


class GrantSourceError(GrantRefusedError):
    reason = RefusalReason.WRONG_SOURCE


class GrantEvidenceError(GrantRefusedError):
    reason = RefusalReason.WRONG_EVIDENCE


class GrantNotYetValidError(GrantRefusedError):
    reason = RefusalReason.NOT_YET_VALID


class GrantExpiredError(GrantRefusedError):
    reason = RefusalReason.EXPIRED


class GrantReplayError(GrantRefusedError):
    reason = RefusalReason.REPLAY


class GrantIssueError(UsageError):
    """An operator asked for a grant that cannot be issued (bad field, empty window)."""


@dataclass(frozen=True, slots=True)
class Grant:
    """A grant whose signatures verified; `payload_sha256` is the digest of the signed bytes."""

    grant_id: str
    nonce: str
    lane: str
    change_id: str
    source_fingerprint: str
    packet_tree_hash: str | None
    audience: str
    issuer: str
    not_before: str
    expires: str
    payload_sha256: str
    signers: frozenset[str]


@dataclass(frozen=True, slots=True)
class ConsumedGrant:
    grant: Grant
    event: Event


class _PayloadError(ValueError):
    pass


def _short(digest: str) -> str:
    """A `sha256:` digest as an error line shows it: its first 16 hex digits."""
    return digest.removeprefix("sha256:")[:16] + "…"


def _parse_payload(payload: bytes) -> dict[str, Any]:
    """The grant fields from authenticated payload bytes; `_PayloadError` on any flaw."""
    try:
        doc = loads_strict(payload)
    except StrictJsonError as e:
        raise _PayloadError(f"payload is not strict JSON: {e}") from e
    if not isinstance(doc, dict) or canonical_json(doc) != payload:
        # One meaning per signed byte string: the digest keyed for single use is unambiguous.
        raise _PayloadError("payload is not a canonical JSON object")
    if not _FIELDS <= set(doc) <= _FIELDS | _OPTIONAL_FIELDS:
        unknown = sorted(set(doc) - _FIELDS - _OPTIONAL_FIELDS)
        missing = sorted(_FIELDS - set(doc))
        raise _PayloadError(f"payload fields: unknown {unknown}, missing {missing}")
    if doc["schema"] != GRANT_SCHEMA:
        raise _PayloadError(f"payload schema is not {GRANT_SCHEMA}")
    forms: dict[str, tuple[re.Pattern[str], str]] = {
        "grant_id": (_HEX32, "32 lowercase hex digits"),
        "nonce": (_HEX32, "32 lowercase hex digits"),
        "lane": (_ID, "an id"),
        "change_id": (_ID, "an id"),
        "source_fingerprint": (_DIGEST, "sha256:<64 lowercase hex digits>"),
        "audience": (_HEX64, "a key id"),
        "issuer": (_HEX64, "a key id"),
    }
    for name, (pattern, form) in forms.items():
        if not isinstance(doc[name], str) or not pattern.fullmatch(doc[name]):
            raise _PayloadError(f"{name} must be {form}")
    if "content_id" in doc and not (
        isinstance(doc["content_id"], str) and _DIGEST.fullmatch(doc["content_id"])
    ):
        raise _PayloadError("content_id must be sha256:<64 lowercase hex digits>")
    tree = doc["packet_tree_hash"]
    if tree is not None and (not isinstance(tree, str) or not _HEX64.fullmatch(tree)):
        raise _PayloadError("packet_tree_hash must be null or 64 lowercase hex digits")
    try:
        not_before = parse_utc(doc["not_before"])
        expires = parse_utc(doc["expires"])
    except (TypeError, ValueError):
        raise _PayloadError("not_before and expires must be ISO-8601 UTC times") from None
    if expires <= not_before:
        raise _PayloadError("expires is not after not_before")
    return doc


def issue_grant(
    keys: SigningKey | Sequence[SigningKey],
    *,
    lane: str,
    change_id: str,
    source_fingerprint: str,
    audience: str,
    not_before: datetime,
    expires: datetime,
    packet_tree_hash: str | None = None,
    content_id: str | None = None,
    random_bytes: Callable[[int], bytes] = os.urandom,
) -> bytes:
    """A grant signed by `keys` (the first is the issuer), as envelope bytes to hand over."""
    signers = [keys] if isinstance(keys, SigningKey) else list(keys)
    if not signers:
        raise ValueError("at least one operator key is required")
    issuer = signers[0].key_id
    if audience == issuer:
        # An operator's grant to itself is the executor minting its own grant by another name.
        raise GrantIssueError("a grant cannot be addressed to its own issuer")
    try:
        fields = {
            "schema": GRANT_SCHEMA,
            "grant_id": random_bytes(16).hex(),
            "nonce": random_bytes(16).hex(),
            "lane": lane,
            "change_id": change_id,
            "source_fingerprint": source_fingerprint,
            "packet_tree_hash": packet_tree_hash,
            "audience": audience,
            "issuer": issuer,
            "not_before": format_utc(not_before),
            "expires": format_utc(expires),
        } | ({} if content_id is None else {"content_id": content_id})
        payload = canonical_json(fields)
        _parse_payload(payload)  # one set of rules for what is issued and what is accepted
    except _PayloadError as e:
        raise GrantIssueError(f"cannot issue grant: {e}") from e
    return encode_envelope(sign_envelope(GRANT_PAYLOAD_TYPE, payload, signers))


def cosign_grant(envelope_bytes: bytes, key: SigningKey) -> bytes:
    """Add `key`'s signature to an issued grant (for `required_signatures` > 1)."""
    try:
        envelope = parse_envelope(envelope_bytes, GRANT_PAYLOAD_TYPE)
    except EnvelopeError as e:
        raise GrantIssueError(f"cannot co-sign: {e}") from e
    return encode_envelope(add_signature(envelope, key))


def _authenticate(
    envelope: Envelope,
    trusted_keys: Sequence[PublicKey],
    executor_key_id: str,
    required_signatures: int,
) -> frozenset[str]:
    if any(s.keyid == executor_key_id for s in envelope.signatures):
        # The executor cannot mint its own grant, whatever the trust list says.
        raise GrantSelfSignedError(
            f"signed with the executor's own key {short_key_id(executor_key_id)}"
        )
    operators = {k.key_id: k for k in trusted_keys if k.key_id != executor_key_id}
    check = check_signatures(envelope, operators)
    if check.invalid:
        # A forged or altered grant: never "one good signature among bad ones".
        shown = ", ".join(sorted(short_key_id(k) for k in check.invalid))
        raise GrantSignatureError(f"the signature by trusted key {shown} does not verify")
    if not check.verified:
        shown = ", ".join(sorted(short_key_id(k) for k in check.untrusted))
        raise GrantUnknownKeyError(f"not signed by a trusted operator key (signed by {shown})")
    if len(check.verified) < required_signatures:
        raise GrantSignatureError(
            f"needs {required_signatures} signatures by distinct trusted operator keys, "
            f"has {len(check.verified)}"
        )
    return check.verified


def check_grant(
    envelope_bytes: bytes,
    *,
    trusted_keys: Sequence[PublicKey],
    lane: str,
    change_id: str,
    source_fingerprint: str,
    executor_key_id: str,
    now: datetime,
    required_signatures: int = 1,
    packet_tree_hash: str | None = None,
    require_evidence: bool = False,
    content_id: str | None = None,
    dump: bool = False,
) -> Grant:
    """Verify a grant for this use, without consuming it (see the module docstring).

    `content_id` is the change's as it is rehearsed now (None where no change is at hand: a
    production lane, which stands on evidence that records it); `dump` says the source is a
    dump, whose `source_fingerprint` is `sha256:` and its sha256.

    `packet_tree_hash` is the evidence this use stands on; with `require_evidence` a grant must
    name it (a lane above the first needs the evidence of the lanes below).
    """
    if required_signatures < 1:
        raise ValueError("required_signatures must be at least 1")
    try:
        envelope = parse_envelope(envelope_bytes, GRANT_PAYLOAD_TYPE)
    except EnvelopeError as e:
        raise GrantMalformedError(str(e)) from e
    signers = _authenticate(envelope, trusted_keys, executor_key_id, required_signatures)
    # Only now, with the bytes authenticated, is the payload parsed.
    try:
        doc = _parse_payload(envelope.payload)
    except _PayloadError as e:
        raise GrantMalformedError(str(e)) from e
    gid = doc["grant_id"]
    if doc["issuer"] == executor_key_id:
        raise GrantSelfSignedError("issued by the executor itself", grant_id=gid)
    if doc["issuer"] not in signers:
        # Stops a grant re-signed by someone else under the real issuer's name.
        raise GrantSignatureError(
            f"its issuer {short_key_id(doc['issuer'])} did not sign it", grant_id=gid
        )
    if doc["audience"] != executor_key_id:
        # Stops a grant taken from the executor it was addressed to.
        raise GrantAudienceError(
            f"addressed to executor {short_key_id(doc['audience'])}, "
            f"not {short_key_id(executor_key_id)}",
            grant_id=gid,
        )
    if doc["lane"] != lane:
        raise GrantLaneError(f"grant is for lane {doc['lane']}, not {lane}", grant_id=gid)
    if doc["change_id"] != change_id:
        raise GrantChangeError(
            f"grant is for change {doc['change_id']}, not {change_id}", grant_id=gid
        )
    bound = doc.get("content_id")
    if bound is not None and content_id is not None and bound != content_id:
        # Stops a grant outliving the change it was given for: a script, a setting or an
        # [impact] limit edited since makes another change.
        raise GrantChangeError(
            f"grant is for change {doc['change_id']} with content id {_short(bound)}, not "
            f"{_short(content_id)} (the change was edited after the grant was issued)",
            grant_id=gid,
        )
    if doc["source_fingerprint"] != source_fingerprint and dump:
        # Stops a grant for one dump serving another, or the same file changed since.
        raise GrantSourceError(
            f"grant is for the dump with sha256 {_short(doc['source_fingerprint'])}, not this "
            f"one ({_short(source_fingerprint)}): another dump, or it changed since the grant "
            "was issued",
            grant_id=gid,
        )
    if doc["source_fingerprint"] != source_fingerprint:
        # Stops a grant outliving the source it was given for: the database has changed since.
        raise GrantSourceError(
            "grant is for another source fingerprint (the target changed since it was issued)",
            grant_id=gid,
        )
    if doc["packet_tree_hash"] is not None and doc["packet_tree_hash"] != packet_tree_hash:
        raise GrantEvidenceError(
            f"grant requires evidence packet {doc['packet_tree_hash']}", grant_id=gid
        )
    if require_evidence and doc["packet_tree_hash"] is None:
        # Stops a grant written without looking at the evidence from opening a lane that needs it.
        raise GrantEvidenceError(
            "grant names no evidence packet, and this lane needs the evidence of the lanes below",
            grant_id=gid,
        )
    moment = format_utc(now)
    if moment < doc["not_before"]:
        raise GrantNotYetValidError(f"not valid before {doc['not_before']}", grant_id=gid)
    if moment >= doc["expires"]:
        raise GrantExpiredError(f"expired at {doc['expires']}", grant_id=gid)
    return Grant(
        grant_id=gid,
        nonce=doc["nonce"],
        lane=doc["lane"],
        change_id=doc["change_id"],
        source_fingerprint=doc["source_fingerprint"],
        packet_tree_hash=doc["packet_tree_hash"],
        audience=doc["audience"],
        issuer=doc["issuer"],
        not_before=doc["not_before"],
        expires=doc["expires"],
        payload_sha256=hashlib.sha256(envelope.payload).hexdigest(),
        signers=signers,
    )


def _consumed_event(grant: Grant) -> NewEvent:
    body: dict[str, Any] = {
        "grant_id": grant.grant_id,
        "nonce": grant.nonce,
        "payload_sha256": grant.payload_sha256,
        "lane": grant.lane,
        "change_id": grant.change_id,
        "source_fingerprint": grant.source_fingerprint,
        "audience": grant.audience,
        "issuer": grant.issuer,
        "signers": sorted(grant.signers),
        "not_before": grant.not_before,
        "expires": grant.expires,
    }
    if grant.packet_tree_hash is not None:
        body["packet_tree_hash"] = grant.packet_tree_hash
    return NewEvent(EventKind.GRANT_CONSUMED, body)


def _logged(text: str) -> str:
    """Caller-supplied text as it may appear in a refusal event: bounded, never blank."""
    return text[:_MAX_LOGGED] if text.strip() else "(blank)"


def _record_refusal(
    store: LedgerStore,
    refusal: GrantRefusedError,
    envelope_bytes: bytes,
    *,
    lane: str,
    change_id: str,
    executor_key_id: str,
    now: datetime,
) -> None:
    body: dict[str, Any] = {
        "reason": str(refusal.reason),
        "detail": str(refusal)[:1000],
        "lane": _logged(lane),
        "change_id": _logged(change_id),
        "executor": _logged(executor_key_id),
        "envelope_sha256": hashlib.sha256(envelope_bytes).hexdigest(),
    }
    if refusal.grant_id is not None:
        body["grant_id"] = refusal.grant_id
    try:
        store.record_grant_event(NewEvent(EventKind.GRANT_REFUSED, body), now=now)
    except (RollproofError, ValueError) as e:
        # The grant stays refused either way; say that the record of it is missing.
        refusal.add_note(f"the refusal could not be recorded in the ledger: {e}")


def consume_grant(
    ledger: Path | LedgerStore,
    envelope_bytes: bytes,
    *,
    trusted_keys: Sequence[PublicKey],
    lane: str,
    change_id: str,
    source_fingerprint: str,
    executor_key_id: str,
    now: datetime,
    required_signatures: int = 1,
    packet_tree_hash: str | None = None,
    require_evidence: bool = False,
    content_id: str | None = None,
    dump: bool = False,
) -> ConsumedGrant:
    """Verify a grant for this use and consume it exactly once, or refuse it on the record.

    `ledger` is a SQLite ledger file or any `LedgerStore` (`store.open_ledger`). Returns the
    grant and its `grant.consumed` event. Raises a `GrantRefusedError` subclass (after appending
    `grant.refused`), or a ledger error if the ledger itself does not verify.
    """
    store = open_ledger(ledger)
    try:
        grant = check_grant(
            envelope_bytes,
            trusted_keys=trusted_keys,
            lane=lane,
            change_id=change_id,
            source_fingerprint=source_fingerprint,
            executor_key_id=executor_key_id,
            now=now,
            required_signatures=required_signatures,
            packet_tree_hash=packet_tree_hash,
            require_evidence=require_evidence,
            content_id=content_id,
            dump=dump,
        )
        try:
            event = store.record_grant_event(_consumed_event(grant), now=now)
        except AlreadyConsumedError as e:
            raise GrantReplayError(
                f"grant {grant.grant_id} was already consumed (same {e.field})",
                grant_id=grant.grant_id,
            ) from e
    except GrantRefusedError as refusal:
        _record_refusal(
            store,
            refusal,
            envelope_bytes,
            lane=lane,
            change_id=change_id,
            executor_key_id=executor_key_id,
            now=now,
        )
        raise
    return ConsumedGrant(grant, event)
