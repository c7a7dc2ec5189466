"""Signed attestations: DSSE encoding, verification order, strictness, and the golden packet."""

from __future__ import annotations

import base64
import json
import tempfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from rollproof.assurance.selftest import SOUND_CHANGE, build_tiny_source, write_change
from rollproof.cli import main
from rollproof.core.canonical import canonical_json
from rollproof.core.keys import SigningKey
from rollproof.governance.keys import generate_key
from rollproof.verify.attest import (
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    AttestationError,
    pae,
    sign_envelope,
    trusted_key,
    verify_envelope,
)
from rollproof.verify.findings import FindingCode
from rollproof.verify.layout import ATTESTATION, MANIFEST, sha256_hex
from rollproof.verify.reader import check_packet
from tests.packet_fixtures import (
    GOLDEN_DIR,
    GOLDEN_KEY,
    golden_files,
    golden_trusted_key,
    read_tree,
)

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
TRUSTED = trusted_key(KEY.public_key())
SIGNER = SigningKey.from_private(KEY)
STATEMENT = {
    "_type": "https://in-toto.io/Statement/v1",
    "subject": [
        {"name": "MANIFEST.json", "digest": {"sha256": "a" * 64}},
        {"name": "rollproof-packet-tree", "digest": {"sha256": "b" * 64}},
    ],
    "predicateType": PREDICATE_TYPE,
    "predicate": {
        "change_id": "c",
        "content_id": "sha256:" + "c" * 64,
        "overall": "PASS",
        "exit_code": 0,
        "rollproof_version": "0.1.0",
        "validator_sha256": "d" * 64,
    },
}


def test_pae_matches_the_dsse_specification() -> None:
    # the example from the DSSE v1 protocol description
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )
    assert pae("t\u00e9", b"") == b"DSSEv1 3 t\xc3\xa9 0 "  # lengths in bytes


def test_sign_and_verify_round_trip() -> None:
    envelope = sign_envelope(STATEMENT, SIGNER)
    statement, signers = verify_envelope(envelope, [TRUSTED])
    assert statement == STATEMENT
    assert signers == (TRUSTED.keyid,)
    doc = json.loads(envelope)
    assert doc["payloadType"] == PAYLOAD_TYPE
    body = base64.b64decode(doc["payload"])
    KEY.public_key().verify(base64.b64decode(doc["signatures"][0]["sig"]), pae(PAYLOAD_TYPE, body))


def _envelope(**change: object) -> bytes:
    doc = json.loads(sign_envelope(STATEMENT, SIGNER))
    doc.update(change)
    return canonical_json(doc)


def _signed_body(body: bytes, key: Ed25519PrivateKey = KEY) -> bytes:
    sig = key.sign(pae(PAYLOAD_TYPE, body))
    return canonical_json(
        {
            "payload": base64.b64encode(body).decode(),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [
                {
                    "keyid": trusted_key(key.public_key()).keyid,
                    "sig": base64.b64encode(sig).decode(),
                }
            ],
        }
    )


def _non_canonical_sig() -> bytes:
    doc = json.loads(sign_envelope(STATEMENT, SIGNER))
    sig = doc["signatures"][0]["sig"]  # 64 bytes: the last data character carries 4 unused bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = sig[-3]
    doc["signatures"][0]["sig"] = sig[:-3] + alphabet[alphabet.index(last) ^ 1] + "=="
    return canonical_json(doc)


STATEMENT_WITH_EXTRA = {**STATEMENT, "predicate": {**STATEMENT["predicate"], "note": "x"}}  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("envelope", "code"),
    [
        pytest.param(
            lambda: _envelope(extra=1), FindingCode.ATTESTATION_MALFORMED, id="envelope-field"
        ),
        pytest.param(
            lambda: _envelope(payloadType="text/plain"),
            FindingCode.ATTESTATION_MALFORMED,
            id="payload-type",
        ),
        pytest.param(
            lambda: _envelope(signatures=[]), FindingCode.ATTESTATION_MALFORMED, id="no-sigs"
        ),
        pytest.param(
            _non_canonical_sig, FindingCode.ATTESTATION_MALFORMED, id="base64-padding-bits"
        ),
        pytest.param(
            lambda: json.dumps(json.loads(sign_envelope(STATEMENT, SIGNER))).encode(),
            FindingCode.ATTESTATION_MALFORMED,
            id="not-canonical",
        ),
        pytest.param(
            lambda: _signed_body(b"not json"),
            FindingCode.ATTESTATION_MALFORMED,
            id="signed-garbage-parsed-after-verify",
        ),
        pytest.param(
            lambda: _signed_body(b"not json", Ed25519PrivateKey.generate()),
            FindingCode.SIGNATURE_INVALID,
            id="unsigned-garbage-never-parsed",
        ),
        pytest.param(
            lambda: sign_envelope(STATEMENT_WITH_EXTRA, SIGNER),
            FindingCode.ATTESTATION_MALFORMED,
            id="unknown-predicate-field",
        ),
        pytest.param(
            lambda: sign_envelope({**STATEMENT, "predicateType": "https://x/v1"}, SIGNER),
            FindingCode.ATTESTATION_MALFORMED,
            id="other-predicate-type",
        ),
        pytest.param(
            lambda: sign_envelope({**STATEMENT, "subject": STATEMENT["subject"][:1]}, SIGNER),
            FindingCode.ATTESTATION_MALFORMED,
            id="one-subject",
        ),
    ],
)
def test_envelope_rejections(envelope: object, code: FindingCode) -> None:
    verify_envelope(sign_envelope(STATEMENT, SIGNER), [TRUSTED])  # the positive twin
    with pytest.raises(AttestationError) as info:
        verify_envelope(envelope(), [TRUSTED])  # type: ignore[operator]
    assert info.value.code is code


def test_a_bad_signature_under_a_trusted_keyid_rejects_even_beside_a_good_one() -> None:
    doc = json.loads(sign_envelope(STATEMENT, SIGNER))
    good = doc["signatures"][0]
    bad = {"keyid": good["keyid"], "sig": base64.b64encode(bytes(64)).decode()}
    doc["signatures"] = [good, bad]
    with pytest.raises(AttestationError) as info:
        verify_envelope(canonical_json(doc), [TRUSTED])
    assert info.value.code is FindingCode.SIGNATURE_INVALID


# -- through the CLI ---------------------------------------------------------------------------


def test_rehearse_sign_then_validate_require_signature(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = generate_key(tmp_path / "mine")
    other = generate_key(tmp_path / "other")
    source = build_tiny_source(tmp_path / "source.db")
    change = write_change(tmp_path / "add-item-note", SOUND_CHANGE)
    packet = tmp_path / "packet"
    argv = ["rehearse", str(change), "--source", f"sqlite:///{source}", "--out", str(packet)]
    assert main([*argv, "--sign", str(mine.private_path)]) == 0

    envelope = json.loads((packet / ATTESTATION).read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["subject"][0]["digest"]["sha256"] == sha256_hex(
        (packet / MANIFEST).read_bytes()
    )
    assert statement["subject"][1]["digest"]["sha256"] == (packet / "TREE_HASH").read_text().strip()
    assert envelope["signatures"][0]["keyid"] == mine.key_id

    capsys.readouterr()
    assert (
        main(
            ["validate", str(packet), "--require-signature", "--trusted-key", str(mine.public_path)]
        )
        == 0
    )
    assert f"signed by {mine.key_id[:16]}" in capsys.readouterr().out
    assert (
        main(
            [
                "validate",
                str(packet),
                "--require-signature",
                "--trusted-key",
                str(other.public_path),
            ]
        )
        == 1
    )
    assert "SIGNATURE_INVALID" in capsys.readouterr().out
    assert (
        main(
            [
                "validate",
                str(packet),
                "--trusted-key",
                str(other.public_path),
                "--trusted-key",
                str(mine.public_path),
                "--require-signature",
            ]
        )
        == 0
    )


# -- the golden packet -------------------------------------------------------------------------


def test_golden_packet_regenerates_byte_for_byte() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = golden_files(Path(tmp))
    stored = read_tree(GOLDEN_DIR)
    assert sorted(fresh) == sorted(stored)
    differing = [p for p in sorted(fresh) if fresh[p] != stored[p]]
    assert differing == [], "regenerate with: python3 -m tests.packet_fixtures"


def test_golden_packet_validates_with_its_key_only() -> None:
    report = check_packet(GOLDEN_DIR, trusted_keys=[golden_trusted_key()], require_signature=True)
    assert report.ok, report.findings
    assert report.packet is not None
    assert report.packet.signed_by == (golden_trusted_key().keyid,)
    stranger = trusted_key(Ed25519PrivateKey.generate().public_key())
    report = check_packet(GOLDEN_DIR, trusted_keys=[stranger], require_signature=True)
    assert report.codes == (FindingCode.SIGNATURE_INVALID,)


def test_golden_signature_is_deterministic() -> None:
    """Ed25519 signs deterministically, so the golden attestation is stable for a fixed key."""
    envelope = (GOLDEN_DIR / ATTESTATION).read_bytes()
    doc = json.loads(envelope)
    body = base64.b64decode(doc["payload"])
    sig = GOLDEN_KEY.sign(pae(PAYLOAD_TYPE, body))
    assert base64.b64encode(sig).decode() == doc["signatures"][0]["sig"]
