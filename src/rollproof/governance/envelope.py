"""DSSE envelopes for governance documents (grants, ledger checkpoints).

Pure: bytes and keys in, an `Envelope` or a `SignatureCheck` out. The pre-authentication
encoding is `rollproof.verify.attest.pae`, shared with packet attestations, so there is one
definition of the signed bytes:

    envelope = {"payload": base64(payload), "payloadType": <type>,
                "signatures": [{"keyid": <64 hex>, "sig": base64(Ed25519(PAE(type, payload)))}]}

Invariants, each against a named attack:

* signatures are checked over the PAE of the **raw** payload bytes and the payload is never
  parsed here: a caller parses it only after `check_signatures` has vouched for it, so a parser
  quirk is never reached with unauthenticated input;
* the payload type is part of the PAE and must equal the type the caller expects, so a
  checkpoint cannot be presented as a grant (type confusion);
* base64 must be canonical standard base64: non-zero padding bits would let several texts stand
  for one signature;
* the envelope has exactly the three fields and each signature exactly `keyid` and `sig`;
  strict JSON (no duplicate keys, NaN, BOM); a size cap stops a parser bomb before parsing;
* a signature counts only when its keyid names a trusted key and it verifies with that key;
  a trusted keyid whose signature does not verify is reported as invalid, never skipped;
  each trusted key counts once, however often its keyid is repeated.

The envelope's own JSON need not be canonical (other DSSE tools do not write RFC 8785), so two
encodings of one signed payload are the same document; callers key single use on the payload.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rollproof.core.canonical import canonical_json
from rollproof.core.keys import PublicKey, SigningKey
from rollproof.core.strictjson import StrictJsonError, loads_strict
from rollproof.verify.attest import pae

MAX_ENVELOPE_BYTES = 64 * 1024
MAX_SIGNATURES = 16
_KEYID = re.compile(r"[0-9a-f]{64}")


class EnvelopeError(ValueError):
    """The bytes are not a well-formed envelope of the expected type; callers translate it."""


@dataclass(frozen=True, slots=True)
class Signature:
    keyid: str
    sig: bytes = field(repr=False)  # never shown: a grant's signature is not printed


@dataclass(frozen=True, slots=True)
class Envelope:
    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...]

    def signed_bytes(self) -> bytes:
        return pae(self.payload_type, self.payload)


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    """What the signatures prove: key ids that verified, trusted ids that did not, the rest."""

    verified: frozenset[str]
    invalid: frozenset[str]
    untrusted: frozenset[str]


def _b64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise EnvelopeError(f"{what} is not a string")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise EnvelopeError(f"{what} is not base64") from e
    if base64.b64encode(raw).decode("ascii") != text:
        raise EnvelopeError(f"{what} is not canonical base64")
    return raw


def _exact(value: Any, keys: set[str], what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise EnvelopeError(f"{what} is not a JSON object")
    if set(value) != keys:
        unknown, missing = sorted(set(value) - keys), sorted(keys - set(value))
        raise EnvelopeError(f"{what} fields: unknown {unknown}, missing {missing}")
    return value


def parse_envelope(data: bytes, payload_type: str) -> Envelope:
    """The envelope's structure, checked without parsing (or trusting) its payload."""
    if len(data) > MAX_ENVELOPE_BYTES:
        raise EnvelopeError(f"envelope is larger than {MAX_ENVELOPE_BYTES} bytes")
    try:
        doc = loads_strict(data)
    except StrictJsonError as e:
        raise EnvelopeError(f"envelope is not strict JSON: {e}") from e
    env = _exact(doc, {"payload", "payloadType", "signatures"}, "envelope")
    if env["payloadType"] != payload_type:
        raise EnvelopeError(f"payloadType is not {payload_type}")
    payload = _b64(env["payload"], "payload")
    raw_sigs = env["signatures"]
    if not isinstance(raw_sigs, list) or not 1 <= len(raw_sigs) <= MAX_SIGNATURES:
        raise EnvelopeError(f"signatures is not a list of 1 to {MAX_SIGNATURES} entries")
    signatures = []
    for i, s in enumerate(raw_sigs):
        entry = _exact(s, {"keyid", "sig"}, f"signature {i}")
        if not isinstance(entry["keyid"], str) or not _KEYID.fullmatch(entry["keyid"]):
            raise EnvelopeError(f"signature {i} keyid is not 64 lowercase hex digits")
        signatures.append(Signature(entry["keyid"], _b64(entry["sig"], f"signature {i} sig")))
    return Envelope(payload_type, payload, tuple(signatures))


def encode_envelope(envelope: Envelope) -> bytes:
    """Canonical JSON bytes of `envelope`."""
    return canonical_json(
        {
            "payload": base64.b64encode(envelope.payload).decode("ascii"),
            "payloadType": envelope.payload_type,
            "signatures": [
                {"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode("ascii")}
                for s in envelope.signatures
            ],
        }
    )


def sign_envelope(payload_type: str, payload: bytes, keys: Sequence[SigningKey]) -> Envelope:
    """An envelope over `payload` signed by each of `keys`."""
    if not keys:
        raise ValueError("at least one signing key is required")
    envelope = Envelope(payload_type, payload, ())
    for key in keys:
        envelope = add_signature(envelope, key)
    return envelope


def add_signature(envelope: Envelope, key: SigningKey) -> Envelope:
    """`envelope` with one more signature, by `key`, over the same PAE bytes."""
    sig = Signature(key.key_id, key.sign(envelope.signed_bytes()))
    return Envelope(envelope.payload_type, envelope.payload, (*envelope.signatures, sig))


def check_signatures(envelope: Envelope, trusted: Mapping[str, PublicKey]) -> SignatureCheck:
    """Check every signature against `trusted` (key id -> key); report, never raise."""
    signed = envelope.signed_bytes()
    verified: set[str] = set()
    invalid: set[str] = set()
    untrusted: set[str] = set()
    for s in envelope.signatures:
        key = trusted.get(s.keyid)
        if key is None:
            untrusted.add(s.keyid)
        elif key.key_id == s.keyid and key.verify(s.sig, signed):
            verified.add(s.keyid)
        else:
            invalid.add(s.keyid)
    return SignatureCheck(frozenset(verified), frozenset(invalid), frozenset(untrusted))
