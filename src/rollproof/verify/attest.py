"""Signed attestation of a packet: an in-toto Statement v1 in a DSSE envelope, Ed25519-signed.

Pure: keys are passed in as objects or raw bytes (reading key files is `rollproof.core.keys`).

    attestation.dsse.json = canonical JSON of
      {"payload": base64(body), "payloadType": "application/vnd.in-toto+json",
       "signatures": [{"keyid": sha256-hex(raw public key), "sig": base64(Ed25519(PAE))}]}
    body = canonical JSON of the Statement:
      {"_type": "https://in-toto.io/Statement/v1",
       "subject": [{"name": "MANIFEST.json", "digest": {"sha256": <hex of MANIFEST.json>}},
                   {"name": "rollproof-packet-tree", "digest": {"sha256": <tree hash>}}],
       "predicateType": "https://rollproof.dev/attestation/packet/v1",
       "predicate": {"change_id", "content_id", "overall", "exit_code",
                     "rollproof_version", "validator_sha256"}}
    PAE = b"DSSEv1" SP len(type) SP type SP len(body) SP body     (lengths in bytes, ASCII decimal)

Invariants enforced by `verify_envelope`, each against a named attack:
* the signature is verified over the PAE of the **raw** payload bytes before the body is parsed,
  so a parser quirk can never be reached with unauthenticated input;
* base64 must be canonical (re-encoding the decoded bytes gives the same text): otherwise
  non-zero padding bits would let one signature stand for several envelopes;
* a signature counts only when its keyid names a trusted key and it verifies; a signature
  claiming a trusted keyid that does not verify rejects the envelope (no "one good of many");
* the envelope, the Statement, its subjects and the predicate have exactly the fields above:
  unknown fields, including unknown predicate fields, are rejected, so nothing can ride along
  under a valid signature and be read by a later, more lenient reader.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from rollproof.core.canonical import canonical_json
from rollproof.core.strictjson import StrictJsonError, loads_strict
from rollproof.verify.findings import FindingCode
from rollproof.verify.layout import HEX64, MANIFEST

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

# cryptography is imported only where a signature is verified: a packet validated without a
# trusted key has its envelope's shape checked and its payload left unread, and that run
# loads no signing library (tests/test_startup_imports.py).

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://rollproof.dev/attestation/packet/v1"
TREE_SUBJECT = "rollproof-packet-tree"
PREDICATE_FIELDS = frozenset(
    {"change_id", "content_id", "overall", "exit_code", "rollproof_version", "validator_sha256"}
)


def predicate_for(report: Mapping[str, Any], exit_code: int) -> dict[str, Any]:
    """The attestation predicate for a report: what the signer vouches for."""
    return {
        "change_id": report["change"]["id"],
        "content_id": report["change"]["content_id"],
        "overall": report["overall"],
        "exit_code": exit_code,
        "rollproof_version": report["rollproof_version"],
        "validator_sha256": report["validator_sha256"],
    }


class AttestationError(ValueError):
    """The attestation is rejected; `code` says why."""

    def __init__(self, code: FindingCode, message: str) -> None:
        self.code = code
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """An Ed25519 public key a verifier trusts, by its raw 32 bytes."""

    raw: bytes

    @property
    def keyid(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()


def trusted_key(public: Ed25519PublicKey) -> TrustedKey:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return TrustedKey(public.public_bytes(Encoding.Raw, PublicFormat.Raw))


class Signer(Protocol):
    """What signs an attestation: a key id and a signing function, never the private bytes
    (`rollproof.core.keys.SigningKey` is one)."""

    @property
    def key_id(self) -> str: ...

    def sign(self, data: bytes) -> bytes: ...


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(body), body)


def statement_json(
    manifest_sha256: str, tree_hash: str, predicate: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": MANIFEST, "digest": {"sha256": manifest_sha256}},
            {"name": TREE_SUBJECT, "digest": {"sha256": tree_hash}},
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": dict(predicate),
    }


def sign_envelope(statement: Mapping[str, Any], key: Signer) -> bytes:
    """The canonical DSSE envelope bytes over `statement`, signed with `key`."""
    body = canonical_json(dict(statement))
    sig = key.sign(pae(PAYLOAD_TYPE, body))
    envelope = {
        "payload": base64.b64encode(body).decode("ascii"),
        "payloadType": PAYLOAD_TYPE,
        "signatures": [
            {
                "keyid": key.key_id,
                "sig": base64.b64encode(sig).decode("ascii"),
            }
        ],
    }
    return canonical_json(envelope)


def _malformed(message: str) -> AttestationError:
    return AttestationError(FindingCode.ATTESTATION_MALFORMED, message)


def _b64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise _malformed(f"{what} is not a string")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise _malformed(f"{what} is not base64") from e
    if base64.b64encode(raw).decode("ascii") != text:
        raise _malformed(f"{what} is not canonical base64")
    return raw


def _exact_keys(value: Any, keys: set[str], what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _malformed(f"{what} is not an object")
    if set(value) != keys:
        unknown = sorted(set(value) - keys)
        missing = sorted(keys - set(value))
        raise _malformed(f"{what} fields: unknown {unknown}, missing {missing}")
    return value


@dataclass(frozen=True, slots=True)
class Envelope:
    payload: bytes
    signatures: tuple[tuple[str, bytes], ...]


def parse_envelope(data: bytes) -> Envelope:
    """The envelope's structure, checked without parsing (or trusting) the payload."""
    try:
        doc = loads_strict(data)
    except StrictJsonError as e:
        raise _malformed(f"envelope is not strict JSON: {e}") from e
    if canonical_json(doc) != data:
        raise _malformed("envelope is not RFC 8785 canonical JSON")
    env = _exact_keys(doc, {"payload", "payloadType", "signatures"}, "envelope")
    if env["payloadType"] != PAYLOAD_TYPE:
        raise _malformed(f"payloadType is not {PAYLOAD_TYPE}")
    payload = _b64(env["payload"], "payload")
    sigs = env["signatures"]
    if not isinstance(sigs, list) or not sigs:
        raise _malformed("signatures is not a non-empty list")
    parsed = []
    for i, s in enumerate(sigs):
        entry = _exact_keys(s, {"keyid", "sig"}, f"signature {i}")
        if not isinstance(entry["keyid"], str) or not HEX64.fullmatch(entry["keyid"]):
            raise _malformed(f"signature {i} keyid is not 64 hex digits")
        parsed.append((entry["keyid"], _b64(entry["sig"], f"signature {i} sig")))
    return Envelope(payload, tuple(parsed))


def verify_envelope(
    data: bytes, trusted: Sequence[TrustedKey]
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Verify the envelope's signatures with `trusted` keys, then parse its Statement.

    Returns the Statement and the keyids that signed it. Raises `AttestationError`.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    env = parse_envelope(data)
    by_id = {k.keyid: k for k in trusted}
    signed_over = pae(PAYLOAD_TYPE, env.payload)
    signers: list[str] = []
    for keyid, sig in env.signatures:
        key = by_id.get(keyid)
        if key is None:
            continue  # another party's signature: neither trusted nor held against the packet
        try:
            Ed25519PublicKey.from_public_bytes(key.raw).verify(sig, signed_over)
        except InvalidSignature:
            raise AttestationError(
                FindingCode.SIGNATURE_INVALID,
                f"the signature by trusted key {keyid[:16]}… does not verify",
            ) from None
        signers.append(keyid)
    if not signers:
        raise AttestationError(FindingCode.SIGNATURE_INVALID, "no signature by a trusted key")
    # Only now, with the bytes authenticated, is the body parsed.
    return parse_statement(env.payload), tuple(signers)


def parse_statement(body: bytes) -> dict[str, Any]:
    try:
        doc = loads_strict(body)
    except StrictJsonError as e:
        raise _malformed(f"statement is not strict JSON: {e}") from e
    if canonical_json(doc) != body:
        raise _malformed("statement is not RFC 8785 canonical JSON")
    st = _exact_keys(doc, {"_type", "subject", "predicateType", "predicate"}, "statement")
    if st["_type"] != STATEMENT_TYPE:
        raise _malformed(f"statement _type is not {STATEMENT_TYPE}")
    if st["predicateType"] != PREDICATE_TYPE:
        raise _malformed(f"predicateType is not {PREDICATE_TYPE}")
    subjects = st["subject"]
    if not isinstance(subjects, list) or len(subjects) != 2:
        raise _malformed("subject must list exactly MANIFEST.json and the packet tree")
    for i, (subject, name) in enumerate(zip(subjects, (MANIFEST, TREE_SUBJECT), strict=True)):
        s = _exact_keys(subject, {"name", "digest"}, f"subject {i}")
        if s["name"] != name:
            raise _malformed(f"subject {i} is not {name}")
        d = _exact_keys(s["digest"], {"sha256"}, f"subject {i} digest")
        if not isinstance(d["sha256"], str) or not HEX64.fullmatch(d["sha256"]):
            raise _malformed(f"subject {i} sha256 is not 64 hex digits")
    _exact_keys(st["predicate"], set(PREDICATE_FIELDS), "predicate")
    return dict(st)
