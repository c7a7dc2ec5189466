"""An operator issues (or co-signs) a grant file for one lane of one change, against the policy.

    issue_grant_file(policy, key_path=..., lane=..., change_id=..., source=..., expires=...,
                     out=..., now=...) -> IssuedGrant
    cosign_grant_file(policy, path, key_path=...) -> IssuedGrant

The grant's content and signature rules are `grants.py`'s; this module fills its fields from the
policy **in force** (the ledger's, `in_force.py`; not the file's) and the world: the audience
is the policy's executor key, the source fingerprint is taken *now* from the source opened
read-only (a dump's is its sha256, hashed without a server: `dump_sha256`), a lane that needs
the evidence of the lanes below names the validated packet the operator read (`--evidence`),
and the change's content id is the one read from its directory (`--change DIR`) or recorded by
that packet. Refusals (exit 2, nothing written):

* a change directory whose content id is not the one the evidence records: the evidence is
  about the change as it was before an edit (a script, a setting, an `[impact]` limit);

* a key that is not one of the policy's operators: its grant would be refused anyway, and the
  executor's own key above all (the executor cannot mint its own grant);
* evidence that does not validate, is for another change, or does not count as evidence
  (`evidence.py`: a FAIL, an UNKNOWN, a NOT_PROVEN isolation, a non-zero exit, or unsigned
  when the policy requires signed evidence);
* a source that moved on since the evidence's snapshot where the change reads or writes (the
  drift check): the packet's verdicts are about that snapshot, so a grant standing on it is
  bound to a source that still matches it there. Elsewhere the source may have moved on (a
  production primary always does); the grant then binds the whole fingerprint taken now, and
  `grant consume` refuses a target that differs from it anywhere, which keeps the production
  target equal to the rehearsed snapshot where the change reads or writes;
* an expiry that is not a positive duration of at most `MAX_GRANT_LIFETIME`: a grant is a
  bearer token until it is consumed, so it should not outlive the decision it records.

A grant file is a secret until consumed (whoever holds it can present it): it is written with
mode 0600, never over an existing file, and never printed; only its id is shown.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from rollproof.core.dumps import dump_scheme, parse_dump_dsn
from rollproof.core.errors import SourceError, UsageError
from rollproof.core.fingerprint import Fingerprint
from rollproof.core.keys import SigningKey, load_signing_key, short_key_id
from rollproof.core.policy import Governance, Policy
from rollproof.core.surface import AccessKind, Coverage, Implicit
from rollproof.evidence.write import atomic_write_bytes
from rollproof.governance.envelope import EnvelopeError, parse_envelope
from rollproof.governance.evidence import evidence_signer, judge_evidence, validate_evidence
from rollproof.governance.grants import (
    GRANT_PAYLOAD_TYPE,
    GrantIssueError,
    cosign_grant,
    issue_grant,
)
from rollproof.governance.in_force import governance_in_force, load_in_force
from rollproof.surfaces.scope import changed_objects
from rollproof.verify.findings import VerifiedPacket

MAX_GRANT_LIFETIME = timedelta(days=30)
_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


@dataclass(frozen=True, slots=True)
class IssuedGrant:
    path: Path
    grant_id: str
    lane: str
    change_id: str
    expires: str
    packet_tree_hash: str | None
    signers: int


def _short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:16] + "…"


def parse_duration(text: str) -> timedelta:
    """`2h`, `90m`, `1d12h`, `45s` as a timedelta; anything else is a usage error."""
    match = _DURATION.fullmatch(text.strip())
    if not text.strip() or match is None:
        raise UsageError(f"expiry {text!r} is not a duration such as 2h, 90m or 1d12h")
    d, h, m, s = (int(x or 0) for x in match.groups())
    duration = timedelta(days=d, hours=h, minutes=m, seconds=s)
    if not timedelta(0) < duration <= MAX_GRANT_LIFETIME:
        raise UsageError(f"expiry must be more than 0 and at most {MAX_GRANT_LIFETIME.days} days")
    return duration


def dump_sha256(dsn: str) -> str | None:
    """The sha256 of the dump a `pgdump:`/`sqlitedump:` source names (None for any other
    source), hashed without touching a server: a file's bytes, a directory archive's listing
    (docs/postgresql.md, "Dump sources"). A source string's `#sha256=` must match it."""
    if dump_scheme(dsn) is None:
        return None
    from rollproof.engines.postgres.dump import dump_digest

    parsed = parse_dump_dsn(dsn)
    _kind, digest = dump_digest(Path(parsed.path))
    if parsed.sha256 is not None and parsed.sha256 != digest:
        raise SourceError(
            f"source {parsed.scheme}:{parsed.path}: the dump's sha256 is {digest}, not the "
            f"{parsed.sha256} it must have: it is not the dump named (changed, or another)"
        )
    return digest


def fingerprint_source(dsn: str) -> Fingerprint:
    """The content fingerprint of the source a DSN names, opened read-only."""
    from rollproof.rehearse.flow import is_postgres_dsn

    if is_postgres_dsn(dsn):
        from rollproof.engines.postgres.source import fingerprint_source as fingerprint_postgres

        return fingerprint_postgres(dsn)
    from rollproof.engines.sqlite.source import fingerprint_file, parse_sqlite_dsn

    return fingerprint_file(parse_sqlite_dsn(dsn))


def operator_key(gov: Governance, key_path: Path) -> tuple[SigningKey, str]:
    """The operator's signing key and name, or a refusal naming why it is not one.

    Asked of the operators **in force** (the ledger's policy, `in_force.py`), whatever `gov`
    (a policy file's governance) lists: a key added to the file alone is not an operator."""
    gov = governance_in_force(gov)
    key = load_signing_key(key_path)
    if gov.executor is not None and key.key_id == gov.executor.key_id:
        # The executor cannot mint its own grant: refused here, and at consumption again.
        raise GrantIssueError(f"{key_path} is the executor's key; only an operator signs grants")
    name = gov.operator_name(key.key_id)
    if name is None:
        raise GrantIssueError(
            f"{key_path} (key {short_key_id(key.key_id)}) is not an operator key in the "
            "policy; a grant it signs would be refused"
        )
    return key, name


def drifted_surfaces(verified: VerifiedPacket, now: Fingerprint) -> list[str]:
    """What the change reads or writes (declared, or covered implicitly as the packet
    records) that differs between the packet's rehearsed snapshot and `now`."""
    report = verified.report
    snapshot = verified.fingerprints[report["source"]["fingerprint"]]
    declared = report["change"]["surfaces"]
    implicit = [
        Implicit(i["object"], i["covered_by"], AccessKind(i["kind"]), i["reason"])
        for i in report["surfaces"].get("implicit", [])
    ]
    coverage = Coverage(declared["reads"], declared["writes"], implicit)
    names = {n.removeprefix("public.") for n in coverage.declared}
    return sorted(
        name
        for name in changed_objects(snapshot, now)
        if name.removeprefix("public.") in names
        or coverage.explain(name, AccessKind.READ) is not None
    )


def _evidence_packet(gov: Governance, change_id: str, evidence: Path) -> VerifiedPacket:
    verified = validate_evidence(evidence, gov)
    if verified.change_id != change_id:
        raise GrantIssueError(f"evidence {evidence} is for change {verified.change_id}")
    judgement = judge_evidence(verified, required_signer=evidence_signer(gov))
    if not judgement.counts:
        # Stops a grant for the next lane standing on a FAIL, UNKNOWN or NOT_PROVEN packet.
        raise GrantIssueError(
            f"evidence {evidence} does not count as evidence: {judgement.why_not()}"
        )
    return verified


def write_secret_file(path: Path, data: bytes) -> None:
    """Create `path` with mode 0600 holding `data`; never over an existing file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise UsageError(f"{path} already exists; a grant file is never overwritten") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def issue_grant_file(
    policy: Policy,
    *,
    key_path: Path,
    lane: str,
    change_id: str,
    source: str,
    expires: timedelta,
    out: Path,
    now: datetime,
    evidence: Path | None = None,
    content_id: str | None = None,
    content_of: str | None = None,
) -> IssuedGrant:
    """Sign a grant with an operator's key and write it to `out` (module docstring).

    `content_id` is the change's (read from its directory, `content_of`); the grant binds it,
    or else the content id of the evidence it stands on, which must then be the same."""
    gov = load_in_force(policy).policy.governed()
    chosen = gov.lane(lane)
    if gov.executor is None:
        raise UsageError("the policy names no executor key ([governance] executor): no audience")
    key, _name = operator_key(gov, key_path)
    packet: VerifiedPacket | None = None
    if chosen.evidence:
        if evidence is None:
            raise GrantIssueError(
                f"lane {chosen.name} needs the evidence of the lanes below: name the validated "
                "packet you read with --evidence PACKET"
            )
        packet = _evidence_packet(gov, change_id, evidence)
    elif evidence is not None:
        raise GrantIssueError(f"lane {chosen.name} stands on no evidence; drop --evidence")
    if packet is not None:
        recorded = str(packet.report["change"]["content_id"])
        if content_id is not None and recorded != content_id:
            # Stops a grant standing on evidence about the change as it was before an edit.
            raise GrantIssueError(
                f"evidence {evidence} is about change {change_id} with content id "
                f"{_short(recorded)}, not the one of {content_of} now ({_short(content_id)}): "
                "rehearse the change as it is now"
            )
        content_id = recorded
    if out.exists():
        raise UsageError(f"{out} already exists; a grant file is never overwritten")
    digest = dump_sha256(source)
    if digest is not None:
        # A dump is its bytes: the grant binds its sha256, and no server is touched. The drift
        # check has nothing to compare (the dump's content is known once it is restored): the
        # rehearsal in the lane makes the evidence about this dump that the lanes above stand on.
        envelope = issue_grant(
            key,
            lane=chosen.name,
            change_id=change_id,
            source_fingerprint=f"sha256:{digest}",
            audience=gov.executor.key_id,
            not_before=now,
            expires=now + expires,
            packet_tree_hash=None if packet is None else packet.tree_hash,
            content_id=content_id,
        )
        write_secret_file(out, envelope)
        return _describe(out, envelope)
    now_fp = fingerprint_source(source)
    if packet is not None:
        drifted = drifted_surfaces(packet, now_fp)
        if drifted:
            raise GrantIssueError(
                f"the source moved on since the snapshot evidence {evidence} rehearsed, where "
                f"the change reads or writes ({', '.join(drifted)}): its verdicts are about "
                f"snapshot {packet.report['source']['fingerprint']}, not this source; rehearse "
                "again"
            )
    tree = None if packet is None else packet.tree_hash
    envelope = issue_grant(
        key,
        lane=chosen.name,
        change_id=change_id,
        source_fingerprint=now_fp.digest,
        audience=gov.executor.key_id,
        not_before=now,
        expires=now + expires,
        packet_tree_hash=tree,
        content_id=content_id,
    )
    write_secret_file(out, envelope)
    return _describe(out, envelope)


def _describe(path: Path, envelope: bytes) -> IssuedGrant:
    parsed = parse_envelope(envelope, GRANT_PAYLOAD_TYPE)
    doc = json.loads(parsed.payload)
    return IssuedGrant(
        path=path,
        grant_id=doc["grant_id"],
        lane=doc["lane"],
        change_id=doc["change_id"],
        expires=doc["expires"],
        packet_tree_hash=doc["packet_tree_hash"],
        signers=len({s.keyid for s in parsed.signatures}),
    )


def cosign_grant_file(policy: Policy, path: Path, *, key_path: Path) -> IssuedGrant:
    """Add a second (third...) operator's signature to a grant file, in place."""
    gov = load_in_force(policy).policy.governed()
    key, _name = operator_key(gov, key_path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read grant {path}: {e.strerror}") from e
    try:
        already = {s.keyid for s in parse_envelope(data, GRANT_PAYLOAD_TYPE).signatures}
    except EnvelopeError as e:
        raise GrantIssueError(f"cannot co-sign {path}: {e}") from e
    if key.key_id in already:
        raise GrantIssueError(f"{path} is already signed by this key (one key counts once)")
    signed = cosign_grant(data, key)
    atomic_write_bytes(path, signed, mode=0o600)
    return _describe(path, signed)
