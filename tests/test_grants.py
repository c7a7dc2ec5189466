"""Keys and grants with real Ed25519 keys and real ledger files: issue, consume once, refuse."""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import pickle
import sqlite3
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from rollproof.core.canonical import canonical_json
from rollproof.core.errors import ExitCode
from rollproof.governance import (
    AlreadyConsumedError,
    ConsumedGrant,
    Decision,
    EventKind,
    GrantAudienceError,
    GrantChangeError,
    GrantEvidenceError,
    GrantExpiredError,
    GrantIssueError,
    GrantLaneError,
    GrantMalformedError,
    GrantNotYetValidError,
    GrantRefusedError,
    GrantReplayError,
    GrantSelfSignedError,
    GrantSignatureError,
    GrantSourceError,
    GrantUnknownKeyError,
    KeyFileError,
    LedgerIntegrityError,
    LedgerRuleError,
    PublicKey,
    SigningKey,
    append_events,
    consume_grant,
    cosign_grant,
    fold_ledger,
    generate_key_pair,
    issue_grant,
    load_public_key,
    load_signing_key,
    pin_validator,
    read_verified,
    record_decision,
    release_hold,
    short_key_id,
    verify_chain,
    write_checkpoint,
)
from rollproof.governance.envelope import encode_envelope, parse_envelope, sign_envelope
from rollproof.governance.grants import GRANT_PAYLOAD_TYPE
from rollproof.governance.ledger import CHECKPOINT_PAYLOAD_TYPE
from tests.test_ledger import T0, raw_tamper

SOURCE = "sha256:" + "5" * 64
OTHER_SOURCE = "sha256:" + "6" * 64
TREE = "7" * 64
NOW = T0 + timedelta(minutes=10)


def make_key(directory: Path, name: str) -> SigningKey:
    generate_key_pair(directory / f"{name}.key", directory / f"{name}.pub")
    return load_signing_key(directory / f"{name}.key")


@dataclass
class World:
    """Two operators, an executor, an outsider, a ledger, and helpers to issue and consume."""

    dir: Path
    ledger: Path
    operator: SigningKey
    second: SigningKey
    executor: SigningKey
    outsider: SigningKey

    def issue(self, keys: SigningKey | list[SigningKey] | None = None, **fields: Any) -> bytes:
        args: dict[str, Any] = {
            "lane": "production-apply",
            "change_id": "c1",
            "source_fingerprint": SOURCE,
            "audience": self.executor.key_id,
            "not_before": T0,
            "expires": T0 + timedelta(hours=1),
        } | fields
        return issue_grant(keys or self.operator, **args)

    def consume(self, envelope: bytes, **overrides: Any) -> ConsumedGrant:
        args: dict[str, Any] = {
            "trusted_keys": [self.operator.public, self.second.public],
            "lane": "production-apply",
            "change_id": "c1",
            "source_fingerprint": SOURCE,
            "executor_key_id": self.executor.key_id,
            "now": NOW,
        } | overrides
        return consume_grant(self.ledger, envelope, **args)

    def kinds(self) -> list[EventKind]:
        return [e.kind for e in read_verified(self.ledger).events]

    def last_body(self) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(read_verified(self.ledger).events[-1].body)
        return body


@pytest.fixture
def world(tmp_path: Path) -> World:
    keys = tmp_path / "keys"
    ledger = tmp_path / ".rollproof" / "ledger.db"
    append_events(ledger, [pin_validator("d" * 64)], now=T0)
    return World(
        tmp_path,
        ledger,
        make_key(keys, "operator"),
        make_key(keys, "second"),
        make_key(keys, "executor"),
        make_key(keys, "outsider"),
    )


def payload_of(envelope: bytes) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(base64.b64decode(json.loads(envelope)["payload"]))
    return payload


def signed(payload: dict[str, Any], *keys: SigningKey, raw: bytes | None = None) -> bytes:
    data = raw if raw is not None else canonical_json(payload)
    return encode_envelope(sign_envelope(GRANT_PAYLOAD_TYPE, data, list(keys)))


# --- the positive path ---------------------------------------------------------------------------


def test_a_grant_is_consumed_once_and_recorded_without_its_signature(world: World) -> None:
    envelope = world.issue(packet_tree_hash=TREE)
    consumed = world.consume(envelope, packet_tree_hash=TREE)
    grant = consumed.grant
    assert (grant.lane, grant.change_id, grant.issuer, grant.signers) == (
        "production-apply",
        "c1",
        world.operator.key_id,
        frozenset({world.operator.key_id}),
    )
    assert consumed.event.seq == 2
    assert world.kinds() == [EventKind.VALIDATOR_PINNED, EventKind.GRANT_CONSUMED]
    body = world.last_body()
    assert set(body) == {
        "grant_id",
        "nonce",
        "payload_sha256",
        "lane",
        "change_id",
        "source_fingerprint",
        "packet_tree_hash",
        "audience",
        "issuer",
        "signers",
        "not_before",
        "expires",
    }
    assert body["grant_id"] == grant.grant_id == payload_of(envelope)["grant_id"]
    assert body["not_before"] == "2026-03-01T09:00:00.000000Z"
    with sqlite3.connect(world.ledger) as conn:
        assert conn.execute("SELECT grant_id, nonce, seq FROM consumed_grants").fetchall() == [
            (grant.grant_id, grant.nonce, 2)
        ]
    state = fold_ledger(world.ledger)
    assert state.consumed_grants[grant.grant_id].lane == "production-apply"
    assert grant.nonce in state.consumed_nonces


def test_two_operator_grant_meets_a_threshold_of_two(world: World) -> None:
    envelope = world.issue()
    with pytest.raises(
        GrantSignatureError, match="needs 2 signatures by distinct trusted operator keys, has 1"
    ):
        world.consume(envelope, required_signatures=2)
    both = cosign_grant(envelope, world.second)
    consumed = world.consume(both, required_signatures=2)
    assert consumed.grant.signers == {world.operator.key_id, world.second.key_id}


def test_a_consumed_grant_backs_a_hold_release_and_a_proceed_decision(world: World) -> None:
    grant = world.consume(world.issue()).grant
    append_events(
        world.ledger,
        [
            release_hold("c1", grant_id=grant.grant_id),
            record_decision(
                "c1",
                Decision.PROCEED,
                reason="operator granted",
                lane="production-apply",
                grant_id=grant.grant_id,
            ),
        ],
        now=NOW,
    )
    state = fold_ledger(world.ledger)
    assert not state.is_held("c1")
    assert state.is_held("c2")
    with pytest.raises(
        LedgerRuleError, match=f"grant {grant.grant_id} is for lane production-apply"
    ):
        append_events(
            world.ledger,
            [
                record_decision(
                    "c1", Decision.PROCEED, reason="x", lane="cutover", grant_id=grant.grant_id
                )
            ],
            now=NOW,
        )
    with pytest.raises(LedgerRuleError, match="already released a hold"):
        append_events(world.ledger, [release_hold("c1", grant_id=grant.grant_id)], now=NOW)


def test_grant_events_cannot_be_appended_around_consume_grant(world: World) -> None:
    from rollproof.governance import NewEvent

    with pytest.raises(
        ValueError, match=r"grant\.consumed events are written by consume_grant only"
    ):
        append_events(
            world.ledger, [NewEvent(EventKind.GRANT_CONSUMED, {"grant_id": "0" * 32})], now=NOW
        )
    assert world.kinds() == [EventKind.VALIDATOR_PINNED]


def test_the_unique_index_not_a_prior_read_refuses_the_second_consumption(world: World) -> None:
    envelope = world.issue()
    world.consume(envelope)
    with pytest.raises(GrantReplayError) as caught:
        world.consume(envelope)
    assert isinstance(caught.value.__cause__, AlreadyConsumedError)
    assert isinstance(caught.value.__cause__.__cause__, sqlite3.IntegrityError)
    assert "UNIQUE constraint failed: consumed_grants" in str(caught.value.__cause__.__cause__)


def test_consumed_grants_rows_are_append_only(world: World) -> None:
    world.consume(world.issue())
    for sql in ("DELETE FROM consumed_grants", "UPDATE consumed_grants SET nonce = 'x'"):
        with (
            sqlite3.connect(world.ledger) as conn,
            pytest.raises(sqlite3.IntegrityError, match="consumed_grants refused"),
        ):
            conn.execute(sql)


def test_deleting_the_consumed_row_does_not_reopen_the_grant(world: World) -> None:
    envelope = world.issue()
    world.consume(envelope)
    raw_tamper(world.ledger, ("DELETE FROM consumed_grants", ()))
    with pytest.raises(LedgerIntegrityError, match="consumed_grants table does not match"):
        world.consume(envelope)
    with sqlite3.connect(world.ledger) as conn:
        assert conn.execute(
            "SELECT count(*) FROM events WHERE kind = 'grant.consumed'"
        ).fetchone() == (1,)


# --- refusals ------------------------------------------------------------------------------------

Setup = Callable[[World], tuple[bytes, dict[str, Any], bytes | None, dict[str, Any]]]
"""world -> (bad envelope, bad overrides, twin envelope (None: a fresh valid grant), twin overrides)"""


def _params_only(**overrides: Any) -> Setup:
    def setup(w: World) -> tuple[bytes, dict[str, Any], bytes | None, dict[str, Any]]:
        env = w.issue()
        return env, overrides, env, {}  # the same grant, used as addressed, is the twin

    return setup


def _envelope(make: Callable[[World], bytes], **overrides: Any) -> Setup:
    return lambda w: (make(w), overrides, None, {})


def _replay(make_copy: Callable[[World, bytes], bytes]) -> Setup:
    def setup(w: World) -> tuple[bytes, dict[str, Any], bytes | None, dict[str, Any]]:
        env = w.issue()
        w.consume(env)  # the positive twin: the first use succeeds
        return make_copy(w, env), {}, None, {}

    return setup


def _tamper_payload(w: World) -> bytes:
    doc = json.loads(w.issue())
    payload = payload_of(w.issue()) | {"lane": "cutover"}
    doc["payload"] = base64.b64encode(canonical_json(payload)).decode()
    return canonical_json(doc)


def _flip_signature(w: World) -> bytes:
    doc = json.loads(w.issue())
    sig = bytearray(base64.b64decode(doc["signatures"][0]["sig"]))
    sig[5] ^= 0x01
    doc["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    return canonical_json(doc)


def _duplicate_key(w: World) -> bytes:
    env = w.issue().decode()
    return ('{"payload":"e30=",' + env[1:]).encode()


def _checkpoint_as_grant(w: World) -> bytes:
    write_checkpoint(w.ledger, w.operator, w.dir / "cp.json", now=NOW)
    return (w.dir / "cp.json").read_bytes()


def _with(w: World, **fields: Any) -> dict[str, Any]:
    return payload_of(w.issue()) | fields


def _same_nonce_new_id(w: World, env: bytes) -> bytes:
    return signed(payload_of(env) | {"grant_id": "9" * 32}, w.operator)


def _reencoded(w: World, env: bytes) -> bytes:
    doc = json.loads(env)
    return json.dumps(
        {
            "signatures": doc["signatures"],
            "payloadType": doc["payloadType"],
            "payload": doc["payload"],
        },
        indent=2,
    ).encode()


REFUSALS = [
    pytest.param(
        _envelope(lambda w: b"{not json"),
        GrantMalformedError,
        "envelope is not strict JSON",
        id="malformed-not-json",
    ),
    pytest.param(
        _envelope(_duplicate_key),
        GrantMalformedError,
        "duplicate key 'payload'",
        id="malformed-duplicate-key",
    ),
    pytest.param(
        _envelope(_checkpoint_as_grant),
        GrantMalformedError,
        f"payloadType is not {GRANT_PAYLOAD_TYPE}",
        id="malformed-checkpoint-as-grant",
    ),
    pytest.param(
        _envelope(lambda w: signed(_with(w, extra="x"), w.operator)),
        GrantMalformedError,
        "payload fields: unknown ['extra'], missing []",
        id="malformed-signed-extra-field",
    ),
    pytest.param(
        _envelope(lambda w: signed({}, w.operator, raw=json.dumps(_with(w), indent=1).encode())),
        GrantMalformedError,
        "payload is not a canonical JSON object",
        id="malformed-signed-noncanonical-payload",
    ),
    pytest.param(
        _envelope(lambda w: w.issue(w.outsider)),
        GrantUnknownKeyError,
        "not signed by a trusted operator key (signed by",
        id="unknown-key",
    ),
    pytest.param(
        _envelope(_tamper_payload),
        GrantSignatureError,
        "does not verify",
        id="bad-signature-payload-altered",
    ),
    pytest.param(
        _envelope(_flip_signature),
        GrantSignatureError,
        "does not verify",
        id="bad-signature-sig-flipped",
    ),
    pytest.param(
        _envelope(
            lambda w: signed(_with(w, issuer=w.executor.key_id), w.executor),
            trusted_keys_with_executor=True,
        ),
        GrantSelfSignedError,
        "signed with the executor's own key",
        id="self-signed-by-executor",
    ),
    pytest.param(
        _envelope(lambda w: signed(_with(w, issuer=w.executor.key_id), w.operator)),
        GrantSelfSignedError,
        "issued by the executor itself",
        id="self-issued-executor-named-issuer",
    ),
    pytest.param(
        _envelope(lambda w: signed(_with(w), w.second)),
        GrantSignatureError,
        "did not sign it",
        id="issuer-did-not-sign",
    ),
    pytest.param(
        _envelope(lambda w: w.issue(audience=w.outsider.key_id)),
        GrantAudienceError,
        "addressed to executor",
        id="wrong-audience",
    ),
    pytest.param(
        _params_only(lane="cutover"),
        GrantLaneError,
        "grant is for lane production-apply, not cutover",
        id="wrong-lane",
    ),
    pytest.param(
        _params_only(change_id="c2"),
        GrantChangeError,
        "grant is for change c1, not c2",
        id="wrong-change",
    ),
    pytest.param(
        _params_only(source_fingerprint=OTHER_SOURCE),
        GrantSourceError,
        "another source fingerprint",
        id="wrong-source",
    ),
    pytest.param(
        lambda w: (
            w.issue(packet_tree_hash=TREE),
            {"packet_tree_hash": "8" * 64},
            w.issue(packet_tree_hash=TREE),
            {"packet_tree_hash": TREE},
        ),
        GrantEvidenceError,
        f"grant requires evidence packet {TREE}",
        id="wrong-evidence",
    ),
    pytest.param(
        _params_only(now=T0 - timedelta(microseconds=1)),
        GrantNotYetValidError,
        "not valid before 2026-03-01T09:00:00.000000Z",
        id="not-yet-valid",
    ),
    pytest.param(
        _params_only(now=T0 + timedelta(hours=1)),
        GrantExpiredError,
        "expired at 2026-03-01T10:00:00.000000Z",
        id="expired-at-the-boundary",
    ),
    pytest.param(
        _replay(lambda w, env: env),
        GrantReplayError,
        "was already consumed (same grant_id)",
        id="replay",
    ),
    pytest.param(
        _replay(_reencoded),
        GrantReplayError,
        "was already consumed (same grant_id)",
        id="replay-re-encoded",
    ),
    pytest.param(
        _replay(lambda w, env: cosign_grant(env, w.second)),
        GrantReplayError,
        "was already consumed (same grant_id)",
        id="replay-re-signed",
    ),
    pytest.param(
        _replay(_same_nonce_new_id),
        GrantReplayError,
        "was already consumed (same nonce)",
        id="replay-same-nonce-new-id",
    ),
]


@pytest.mark.parametrize(("setup", "error", "fragment"), REFUSALS)
def test_every_refusal_is_named_recorded_and_its_twin_passes(
    world: World, setup: Setup, error: type[GrantRefusedError], fragment: str
) -> None:
    bad, overrides, twin, twin_overrides = setup(world)
    if overrides.pop("trusted_keys_with_executor", False):
        overrides["trusted_keys"] = [world.operator.public, world.executor.public]
    consumed_before = world.kinds().count(EventKind.GRANT_CONSUMED)
    with pytest.raises(error) as caught:
        world.consume(bad, **overrides)
    assert type(caught.value) is error
    assert fragment in str(caught.value)
    assert caught.value.exit_code == ExitCode.HELD
    assert world.kinds()[-1] is EventKind.GRANT_REFUSED
    assert world.kinds().count(EventKind.GRANT_CONSUMED) == consumed_before
    body = world.last_body()
    assert body["reason"] == str(error.reason)
    assert body["detail"] == str(caught.value)
    assert fold_ledger(world.ledger).refusals[-1].reason == str(error.reason)
    # The positive twin: the grant as addressed (or a fresh valid one) is consumed.
    consumed = world.consume(twin if twin is not None else world.issue(), **twin_overrides)
    assert world.kinds()[-1] is EventKind.GRANT_CONSUMED
    assert consumed.event.seq == len(world.kinds())
    assert verify_chain(world.ledger).size == len(world.kinds())


def test_a_refused_grant_stays_refused_when_the_ledger_cannot_record_it(world: World) -> None:
    raw_tamper(
        world.ledger, ("UPDATE events SET time = '2020-01-01T00:00:00.000000Z' WHERE seq = 1", ())
    )
    with pytest.raises(GrantLaneError) as caught:
        world.consume(world.issue(), lane="cutover")
    assert any("could not be recorded" in note for note in caught.value.__notes__)
    with pytest.raises(LedgerIntegrityError, match="hash does not match"):
        world.consume(world.issue())  # a valid grant is not consumed into a broken ledger


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        pytest.param({"expires": T0}, "expires is not after not_before", id="empty-window"),
        pytest.param({"lane": "../prod"}, "lane must be an id", id="bad-lane"),
        pytest.param(
            {"source_fingerprint": "5" * 64},
            "source_fingerprint must be sha256:",
            id="untagged-fingerprint",
        ),
        pytest.param({"audience": "AUDIENCE"}, "audience must be a key id", id="bad-audience"),
    ],
)
def test_issue_refuses_a_grant_that_could_never_be_consumed(
    world: World, fields: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(GrantIssueError, match=fragment.replace("(", r"\(")):
        world.issue(**fields)
    assert payload_of(world.issue())["schema"] == "rollproof/grant/v1"  # positive twin


def test_an_operator_cannot_address_a_grant_to_itself(world: World) -> None:
    with pytest.raises(GrantIssueError, match="cannot be addressed to its own issuer"):
        world.issue(audience=world.operator.key_id)


# --- concurrency ---------------------------------------------------------------------------------


def _race_worker(
    ledger: str, envelope: str, trusted: list[str], executor: str, barrier: Any, results: Any
) -> None:
    keys = [load_public_key(Path(p)) for p in trusted]
    data = Path(envelope).read_bytes()
    barrier.wait()
    try:
        consume_grant(
            Path(ledger),
            data,
            trusted_keys=keys,
            lane="production-apply",
            change_id="c1",
            source_fingerprint=SOURCE,
            executor_key_id=executor,
            now=NOW,
        )
        results.put("consumed")
    except GrantRefusedError as e:
        results.put(type(e).__name__)


def test_eight_processes_racing_for_one_grant_consume_it_once(world: World) -> None:
    envelope = world.dir / "grant.json"
    envelope.write_bytes(world.issue())
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(8), ctx.Queue()
    trusted = [str(world.dir / "keys" / "operator.pub"), str(world.dir / "keys" / "second.pub")]
    procs = [
        ctx.Process(
            target=_race_worker,
            args=(
                str(world.ledger),
                str(envelope),
                trusted,
                world.executor.key_id,
                barrier,
                results,
            ),
        )
        for _ in range(8)
    ]
    for p in procs:
        p.start()
    outcomes = sorted(results.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert outcomes == ["GrantReplayError"] * 7 + ["consumed"]
    kinds = world.kinds()
    assert kinds.count(EventKind.GRANT_CONSUMED) == 1
    assert kinds.count(EventKind.GRANT_REFUSED) == 7
    assert {r.reason for r in fold_ledger(world.ledger).refusals} == {"replay"}
    assert verify_chain(world.ledger).size == 1 + 1 + 7


# --- secrets -------------------------------------------------------------------------------------


def test_private_keys_and_signatures_never_leave_their_files(world: World) -> None:
    key_file = world.dir / "keys" / "operator.key"
    private = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    raw = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    pem_body = b"".join(key_file.read_bytes().splitlines()[1:-1])
    secrets = [raw, raw.hex().encode(), base64.b64encode(raw), pem_body, pem_body[10:40]]

    envelope = world.issue()
    sig = base64.b64decode(json.loads(envelope)["signatures"][0]["sig"])
    signatures = [sig, sig.hex().encode(), base64.b64encode(sig)]
    consumed = world.consume(envelope)
    with pytest.raises(GrantReplayError) as caught:
        world.consume(envelope)
    write_checkpoint(world.ledger, world.operator, world.dir / "checkpoint.json", now=NOW)

    shown = [
        repr(world.operator),
        str(world.operator),
        repr(consumed),
        repr(consumed.grant),
        repr(parse_envelope(envelope, GRANT_PAYLOAD_TYPE)),
        str(caught.value),
        repr(caught.value),
    ]
    for text in shown:
        for secret in secrets + signatures:
            assert secret.decode("latin-1") not in text
    assert "<redacted>" in repr(world.operator)
    for event in read_verified(world.ledger).events:
        for secret in secrets + signatures:
            assert secret not in event.body
    for path in world.dir.rglob("*"):
        if path.is_file() and path != key_file:
            data = path.read_bytes()
            for secret in secrets:
                assert secret not in data, f"private key material in {path.name}"
            if path.suffix == ".db":
                for s in signatures:
                    assert s not in data, "a grant signature was stored in the ledger"
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(world.operator)


# --- keys ----------------------------------------------------------------------------------------


def test_generated_key_files_and_key_id(tmp_path: Path) -> None:
    public = generate_key_pair(tmp_path / "k" / "op.key", tmp_path / "k" / "op.pub")
    assert stat.S_IMODE(os.stat(tmp_path / "k" / "op.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "k" / "op.pub").st_mode) == 0o644
    assert (tmp_path / "k" / "op.pub").read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    key = load_signing_key(tmp_path / "k" / "op.key")
    assert key.public == public == load_public_key(tmp_path / "k" / "op.pub")
    import hashlib

    assert key.key_id == hashlib.sha256(public.raw).hexdigest()
    assert short_key_id(key.key_id) == key.key_id[:16]
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == [
        "op.key",
        "op.pub",
    ]  # no temp files left


def test_generate_never_overwrites_a_private_key(tmp_path: Path) -> None:
    generate_key_pair(tmp_path / "op.key", tmp_path / "op.pub")
    before = (tmp_path / "op.key").read_bytes()
    with pytest.raises(KeyFileError, match="already exists; refusing to overwrite a key"):
        generate_key_pair(tmp_path / "op.key", tmp_path / "other.pub")
    assert (tmp_path / "op.key").read_bytes() == before
    assert not (tmp_path / "other.pub").exists()


def test_a_private_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    generate_key_pair(tmp_path / "op.key", tmp_path / "op.pub")
    load_signing_key(tmp_path / "op.key")  # positive twin
    os.chmod(tmp_path / "op.key", 0o640)
    with pytest.raises(KeyFileError, match="readable by others; chmod 600 it"):
        load_signing_key(tmp_path / "op.key")


def test_passphrase_protected_key(tmp_path: Path) -> None:
    generate_key_pair(tmp_path / "op.key", tmp_path / "op.pub", passphrase=b"correct horse")
    with pytest.raises(KeyFileError, match="not a usable PEM private key"):
        load_signing_key(tmp_path / "op.key")
    with pytest.raises(KeyFileError, match="not a usable PEM private key"):
        load_signing_key(tmp_path / "op.key", passphrase=b"wrong")
    assert load_signing_key(
        tmp_path / "op.key", passphrase=b"correct horse"
    ).public == load_public_key(tmp_path / "op.pub")


def test_keys_of_another_type_are_refused(tmp_path: Path) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    priv = tmp_path / "ec.key"
    priv.write_bytes(
        other.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(priv, 0o600)
    pub = tmp_path / "ec.pub"
    pub.write_bytes(
        other.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(KeyFileError, match="not an Ed25519 private key"):
        load_signing_key(priv)
    with pytest.raises(KeyFileError, match="not an Ed25519 public key"):
        load_public_key(pub)
    with pytest.raises(KeyFileError, match="no such key file"):
        load_public_key(tmp_path / "missing.pub")
    with pytest.raises(ValueError, match="32 bytes"):
        PublicKey(b"short")


def test_a_checkpoint_envelope_type_is_distinct_from_a_grant() -> None:
    assert CHECKPOINT_PAYLOAD_TYPE != GRANT_PAYLOAD_TYPE
