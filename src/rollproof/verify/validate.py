"""The evidence validator's pure core: a packet's files in, a verified packet or findings out.

No IO: the shell (`rollproof.verify.reader`) walks the directory without following anything and
hands over a `PacketTree` (every name with its file type, size and link count, and the bytes of
the regular files it agreed to read). `check_tree` returns a `ValidationReport`;
`verify_tree` returns the `VerifiedPacket` or raises `PacketInvalidError`. Both run the same
stages, so "report every finding" and "refuse unless clean" cannot disagree.

Stages run in this order, and each runs only if every earlier stage passed: a later stage
parses or interprets bytes that the earlier ones have not yet vouched for. The valid result is
built only at the end of the success path, and an exception inside any stage is itself a
finding (VALIDATOR_EXCEPTION): the validator fails closed, never open.

1. limits     file count, depth, per-file and total size, checked (by the shell, again here)
              before anything is read: a hostile tree must not exhaust the validator.
2. manifest   MANIFEST.json is a regular file of strict, canonical JSON matching its schema,
              sorted and unique, naming no control file; every path obeys the path grammar
              (no `..`, absolute, backslash, control character, non-ASCII) and no two collide
              when lower-cased. Paths are only ever compared as strings, never opened: a
              manifest entry `../x` cannot make the validator read outside the packet.
3. file-set   the files on disk are exactly the manifest's, plus MANIFEST.json, TREE_HASH and
              an optional attestation.dsse.json: nothing missing, extra or renamed, no stray
              directory; every file the layout requires is listed, nothing outside the layout.
4. file-types every file is a regular file with one link: no symlink (it could point anywhere),
              no hard link (its bytes can change through another name), no FIFO or device
              (reading could block or never end).
5. content    every file has the manifest's size and sha256.
6. tree-hash  TREE_HASH is 64 lowercase hex and a newline, equal to the tree hash recomputed
              from the files (rule in `rollproof.verify.layout`).
7. strict-json every JSON file parses strictly (`rollproof.core.strictjson`: no duplicate
              keys, NaN, lone surrogates or trailing data); machine files are RFC 8785
              canonical, so one meaning has one byte sequence.
8. schema     report.json's `schema` is exactly rollproof/report/v1, and it matches the JSON
              Schema (no unknown fields anywhere); exit_codes.json likewise; isolation.json and
              surfaces.json equal the report's sections; every fingerprint file rebuilds
              (`fingerprint_from_json` recomputes its digest), is canonical and is named by it.
9. change     no secret in any DSN; the change copy and content id agree with the report.
10. verdicts  every verdict recomputed from the fingerprints (`rollproof.verify.recompute`).
11. exit-codes the recorded exit code is the one the verdicts give.
12. scripts   commands.sh and RERUN.sh are exactly what rollproof renders for this packet.
13. signature when required (or when a trusted key is given), attestation.dsse.json verifies
              with a trusted key over the raw payload before the payload is parsed, its
              subjects are this MANIFEST.json and tree hash, and its predicate says what the
              report says (`rollproof.verify.attest`).
14. governance the optional governance layer (GOVERNANCE.json and governance/*) is sealed
              over this tree hash, complete, and consistent (`rollproof.verify.governance_layer`).
              The file-set and file-types stages leave the layer's names to this stage.

Longer than 600 lines because the stages are one fail-closed sequence over one shared state:
split across modules, the order that makes each stage safe would no longer be visible in one
place.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
import jsonschema.validators

from rollproof.core.canonical import canonical_json
from rollproof.core.fingerprint import Fingerprint, fingerprint_from_json
from rollproof.core.impact import LimitError, recomputed_impact
from rollproof.core.model import IsolationVerdict, LegName, Verdict
from rollproof.core.strictjson import StrictJsonError, loads_strict
from rollproof.verify import governance_layer as layer
from rollproof.verify import recompute
from rollproof.verify.attest import (
    AttestationError,
    TrustedKey,
    parse_envelope,
    predicate_for,
    verify_envelope,
)
from rollproof.verify.findings import (
    Finding,
    FindingCode,
    Stage,
    ValidationReport,
    VerifiedPacket,
)
from rollproof.verify.layout import (
    ATTESTATION,
    CONTROL_FILES,
    DEFAULT_LIMITS,
    EXIT_CODES_JSON,
    FINGERPRINT_FILE,
    GOVERNANCE_SEAL,
    ISOLATION_JSON,
    MANIFEST,
    REPORT_JSON,
    REQUIRED_FILES,
    SURFACES_JSON,
    TREE_HASH,
    TREE_HASH_LINE,
    Limits,
    case_collisions,
    is_governance_path,
    is_known_payload,
    path_problem,
    sha256_hex,
    tree_hash,
)
from rollproof.verify.range_packet import RANGE_FILE, check_range
from rollproof.verify.scripts import recorded_exit_code

REPORT_SCHEMA_ID = "rollproof/report/v1"
CANONICAL_JSON_FILES = frozenset({MANIFEST, ISOLATION_JSON, EXIT_CODES_JSON, SURFACES_JSON})
_MAX_SCHEMA_ERRORS = 20


class FileKind(StrEnum):
    REGULAR = "regular file"
    DIRECTORY = "directory"
    SYMLINK = "symlink"
    FIFO = "FIFO"
    CHAR_DEVICE = "character device"
    BLOCK_DEVICE = "block device"
    SOCKET = "socket"
    OTHER = "unknown file type"


@dataclass(frozen=True, slots=True)
class TreeEntry:
    """One name in the packet directory as the shell found it (lstat, never followed)."""

    kind: FileKind
    size: int
    nlink: int = 1
    data: bytes | None = None  # read only for regular files with one link


@dataclass(frozen=True, slots=True)
class PacketTree:
    """Everything the pure core sees: relative POSIX path -> entry, and any limit the shell
    hit while walking (in which case it read nothing)."""

    entries: Mapping[str, TreeEntry]
    breach: str | None = None

    @classmethod
    def from_files(cls, files: Mapping[str, bytes]) -> PacketTree:
        """A tree of regular files (and the directories they imply), e.g. built in memory."""
        entries: dict[str, TreeEntry] = {
            p: TreeEntry(FileKind.REGULAR, len(d), 1, d) for p, d in files.items()
        }
        for p in files:
            parts = p.split("/")
            for i in range(1, len(parts)):
                entries.setdefault("/".join(parts[:i]), TreeEntry(FileKind.DIRECTORY, 0))
        return cls(entries)


def _shown(path: str) -> str:
    """A path safe to print: valid paths as they are, anything else escaped."""
    return path if path_problem(path) is None or path in CONTROL_FILES else repr(path)


def _type_finding(path: str, e: TreeEntry) -> Finding | None:
    if e.kind is FileKind.SYMLINK:
        return Finding(FindingCode.SYMLINK, "is a symlink (not followed)", _shown(path))
    if e.kind is not FileKind.REGULAR:
        return Finding(FindingCode.SPECIAL_FILE, f"is a {e.kind}, not a regular file", _shown(path))
    if e.nlink > 1:
        return Finding(FindingCode.HARDLINK, f"has {e.nlink} hard links (not read)", _shown(path))
    if e.data is None:
        return Finding(FindingCode.SPECIAL_FILE, "was not readable as a regular file", _shown(path))
    return None


# -- schemas -------------------------------------------------------------------------------

_DATE_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})", re.ASCII
)


def _is_date_time(value: object) -> bool:
    """RFC 3339 date-time, checked here rather than by an optional jsonschema extra."""
    if not isinstance(value, str):
        return True  # the "type" keyword judges non-strings
    if not _DATE_TIME.fullmatch(value):
        return False
    datetime.fromisoformat(value)  # raises ValueError on a day or hour out of range
    return True


def _format_checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker(formats=())
    checker.checks("date-time", raises=ValueError)(_is_date_time)
    return checker


def _pattern_keyword(
    validator: Any, pattern: str, instance: Any, schema: Any
) -> Iterator[jsonschema.ValidationError]:
    """JSON Schema `pattern` with ECMA-262's `$`: the end of the string. Python's `$` also
    matches before a final newline, so `^[0-9]+$` would accept "1\\n"; every schema pattern is
    anchored `^...$` (a test checks), and its `$` is read here as `\\Z`."""
    if not validator.is_type(instance, "string"):
        return
    if _compiled(pattern).search(instance) is None:
        yield jsonschema.ValidationError(f"{instance[:80]!r} does not match {pattern!r}")


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator, {"pattern": _pattern_keyword}
)  # type: ignore[no-untyped-call]


@cache
def _schema_validator(name: str) -> Any:
    text = resources.files("rollproof").joinpath(f"schemas/{name}").read_text("utf-8")
    schema = json.loads(text)
    jsonschema.Draft202012Validator.check_schema(schema)
    return _Validator(schema, format_checker=_format_checker())


def _schema_findings(name: str, doc: Any, path: str) -> list[Finding]:
    """The first `_MAX_SCHEMA_ERRORS` schema errors, in the order the validator meets them:
    never all of them (a document with a million bad entries would make a million errors)."""
    errors = itertools.islice(_schema_validator(name).iter_errors(doc), _MAX_SCHEMA_ERRORS)
    return [
        Finding(
            FindingCode.SCHEMA_VIOLATION,
            f"at /{'/'.join(str(p)[:80] for p in e.absolute_path)}: {e.message[:300]}",
            path,
        )
        for e in errors
    ]


def json_values_bound(data: bytes, limit: int) -> str | None:
    """A cheap bound on how many values a JSON document holds, taken from its bytes before it
    is parsed: every value but the first follows a `,`, `:`, `[` or `{`, so their count bounds
    the number of values (from above: such bytes inside strings count too). Parsing allocates
    an object per value, so this keeps a small file from becoming a large heap."""
    count = sum(data.count(c) for c in (b",", b":", b"[", b"{"))
    if count > limit:
        return f"{count} JSON separators, limit {limit} (a bound on the values it holds)"
    return None


# -- the stages ----------------------------------------------------------------------------


@dataclass
class _State:
    tree: PacketTree
    limits: Limits
    trusted_keys: Sequence[TrustedKey]
    require_signature: bool
    manifest: dict[str, tuple[str, int]] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    docs: dict[str, Any] = field(default_factory=dict)
    fingerprints: dict[str, Fingerprint] = field(default_factory=dict)
    tree_hash: str = ""
    manifest_sha256: str = ""
    signers: tuple[str, ...] = ()
    decision: dict[str, Any] | None = None
    governance_files: dict[str, bytes] = field(default_factory=dict)

    def evidence(self) -> recompute.Evidence:
        return recompute.Evidence(
            report=self.docs[REPORT_JSON],
            exit_codes=self.docs[EXIT_CODES_JSON],
            fingerprints=self.fingerprints,
            files=self.files,
        )


def _limits(st: _State) -> list[Finding]:
    if st.tree.breach is not None:
        return [Finding(FindingCode.LIMIT_EXCEEDED, st.tree.breach)]
    lim, entries = st.limits, st.tree.entries
    out = []
    if len(entries) > lim.max_files:
        out.append(
            Finding(FindingCode.LIMIT_EXCEEDED, f"{len(entries)} entries, limit {lim.max_files}")
        )
    total = 0
    for path, e in sorted(entries.items()):
        depth = path.count("/") + 1
        if depth > lim.max_depth:
            out.append(
                Finding(
                    FindingCode.LIMIT_EXCEEDED,
                    f"{depth} levels deep, limit {lim.max_depth}",
                    _shown(path),
                )
            )
        if e.kind is FileKind.REGULAR:
            total += e.size
            if e.size > lim.max_file_bytes:
                out.append(
                    Finding(
                        FindingCode.LIMIT_EXCEEDED,
                        f"{e.size} bytes, limit {lim.max_file_bytes}",
                        _shown(path),
                    )
                )
    if total > lim.max_total_bytes:
        out.append(
            Finding(
                FindingCode.LIMIT_EXCEEDED, f"{total} bytes in all, limit {lim.max_total_bytes}"
            )
        )
    return out


def _manifest(st: _State) -> list[Finding]:
    e = st.tree.entries.get(MANIFEST)
    if e is None:
        return [Finding(FindingCode.MANIFEST_MISSING, "the packet has no manifest", MANIFEST)]
    bad_type = _type_finding(MANIFEST, e)
    if bad_type is not None:
        return [bad_type]
    assert e.data is not None
    too_many = json_values_bound(e.data, st.limits.max_json_values)
    if too_many is not None:
        return [Finding(FindingCode.LIMIT_EXCEEDED, too_many, MANIFEST)]
    try:
        doc = loads_strict(e.data)
    except StrictJsonError as err:
        return [Finding(FindingCode.MANIFEST_MALFORMED, f"not strict JSON: {err}", MANIFEST)]
    if canonical_json(doc) != e.data:
        return [Finding(FindingCode.MANIFEST_MALFORMED, "not RFC 8785 canonical JSON", MANIFEST)]
    schema = _schema_findings("manifest-v1.schema.json", doc, MANIFEST)
    if schema:
        return [Finding(FindingCode.MANIFEST_MALFORMED, f.message, MANIFEST) for f in schema]
    paths = [f["path"] for f in doc["files"]]
    out = []
    if any(a >= b for a, b in itertools.pairwise(paths)):
        out.append(
            Finding(FindingCode.MANIFEST_MALFORMED, "paths are not sorted and unique", MANIFEST)
        )
    for p in paths:
        if p in CONTROL_FILES:
            out.append(Finding(FindingCode.MANIFEST_MALFORMED, "lists a control file", _shown(p)))
            continue
        problem = path_problem(p)
        if problem is not None:
            out.append(Finding(FindingCode.PATH_UNSAFE, f"path {problem}", _shown(p)))
    if out:
        return out
    for a, b in case_collisions([*paths, MANIFEST, TREE_HASH, ATTESTATION]):
        out.append(
            Finding(FindingCode.PATH_CASE_COLLISION, f"{a!r} and {b!r} differ only in case", b)
        )
    st.manifest = {f["path"]: (f["sha256"], f["size"]) for f in doc["files"]}
    st.manifest_sha256 = sha256_hex(e.data)
    return out


def _file_set(st: _State) -> list[Finding]:
    # The governance layer's names are the governance stage's to judge (unless the manifest
    # lists one, which `is_known_payload` refuses below).
    entries = {p: e for p, e in st.tree.entries.items() if not is_governance_path(p)}
    on_disk = {p for p, e in entries.items() if e.kind is not FileKind.DIRECTORY}
    expected = set(st.manifest) | {MANIFEST, TREE_HASH}
    missing = sorted(expected - on_disk)
    extra = sorted(on_disk - expected - {ATTESTATION})
    out = []
    for m in list(missing):
        if m not in st.manifest:
            continue
        sha, size = st.manifest[m]
        twin = next(
            (
                x
                for x in extra
                if entries[x].data is not None
                and entries[x].size == size
                and sha256_hex(entries[x].data or b"") == sha
            ),
            None,
        )
        if twin is not None:
            out.append(Finding(FindingCode.FILE_RENAMED, f"renamed to {_shown(twin)}", m))
            missing.remove(m)
            extra.remove(twin)
    out += [Finding(FindingCode.FILE_MISSING, "listed but not on disk", m) for m in missing]
    out += [Finding(FindingCode.FILE_EXTRA, "on disk but not listed", _shown(x)) for x in extra]
    present = expected | ({ATTESTATION} & on_disk)
    for d in sorted(p for p, e in entries.items() if e.kind is FileKind.DIRECTORY):
        if not any(p.startswith(d + "/") for p in present):
            out.append(
                Finding(FindingCode.FILE_EXTRA, "a directory holding no listed file", _shown(d))
            )
    if out:
        return out
    out += [
        Finding(FindingCode.FILE_MISSING, "required in every packet, not listed", r)
        for r in REQUIRED_FILES
        if r not in st.manifest
    ]
    out += [
        Finding(FindingCode.FILE_UNKNOWN, "has no place in the packet layout", p)
        for p in sorted(st.manifest)
        if not is_known_payload(p)
    ]
    return out


def _file_types(st: _State) -> list[Finding]:
    out = []
    for path in sorted(set(st.manifest) | {TREE_HASH, ATTESTATION}):
        e = st.tree.entries.get(path)
        if e is None:
            continue  # only the optional attestation can be absent here
        bad = _type_finding(path, e)
        if bad is not None:
            out.append(bad)
    return out


def _content(st: _State) -> list[Finding]:
    out = []
    for path, (sha, size) in sorted(st.manifest.items()):
        data = st.tree.entries[path].data
        assert data is not None
        if len(data) != size:
            out.append(
                Finding(FindingCode.SIZE_MISMATCH, f"{len(data)} bytes, manifest says {size}", path)
            )
        elif sha256_hex(data) != sha:
            out.append(
                Finding(FindingCode.SHA256_MISMATCH, "sha256 differs from the manifest", path)
            )
        else:
            st.files[path] = data
    return out


def _tree_hash(st: _State) -> list[Finding]:
    data = st.tree.entries[TREE_HASH].data
    assert data is not None
    if not TREE_HASH_LINE.fullmatch(data):
        return [
            Finding(
                FindingCode.TREE_HASH_MISMATCH,
                "must be 64 lowercase hex digits and a newline",
                TREE_HASH,
            )
        ]
    computed = tree_hash({p: sha for p, (sha, _) in st.manifest.items()})
    if data[:64].decode("ascii") != computed:
        return [
            Finding(
                FindingCode.TREE_HASH_MISMATCH,
                f"recorded {data[:64].decode('ascii')}, the files give {computed}",
                TREE_HASH,
            )
        ]
    st.tree_hash = computed
    return []


def _json(st: _State) -> list[Finding]:
    out = []
    names = [REPORT_JSON, ISOLATION_JSON, EXIT_CODES_JSON, SURFACES_JSON]
    names += sorted(p for p in st.files if FINGERPRINT_FILE.fullmatch(p))
    for name in names:
        if name not in st.files:
            continue
        too_many = json_values_bound(st.files[name], st.limits.max_json_values)
        if too_many is not None:
            out.append(Finding(FindingCode.LIMIT_EXCEEDED, too_many, name))
            continue
        try:
            doc = loads_strict(st.files[name])
        except StrictJsonError as e:
            out.append(Finding(FindingCode.JSON_INVALID, str(e), name))
            continue
        canonical = name in CANONICAL_JSON_FILES or FINGERPRINT_FILE.fullmatch(name)
        if canonical and canonical_json(doc) != st.files[name]:
            out.append(Finding(FindingCode.JSON_NOT_CANONICAL, "not RFC 8785 canonical", name))
            continue
        st.docs[name] = doc
    return out


def _schemas(st: _State) -> list[Finding]:
    report = st.docs[REPORT_JSON]
    if not isinstance(report, dict) or report.get("schema") != REPORT_SCHEMA_ID:
        version = report.get("schema") if isinstance(report, dict) else None
        return [
            Finding(
                FindingCode.REPORT_VERSION_UNKNOWN,
                f"schema is {version!r}; this validator reads {REPORT_SCHEMA_ID!r} only",
                REPORT_JSON,
            )
        ]
    out = _schema_findings("report-v1.schema.json", report, REPORT_JSON)
    out += _schema_findings("exit-codes-v1.schema.json", st.docs[EXIT_CODES_JSON], EXIT_CODES_JSON)
    if out:
        return out
    for name, section in ((ISOLATION_JSON, "isolation"), (SURFACES_JSON, "surfaces")):
        if st.files.get(name) != canonical_json(report[section]):
            out.append(
                Finding(
                    FindingCode.DETAIL_FILE_MISMATCH,
                    f"differs from report.json's {section!r} section",
                    name,
                )
            )
    for path in sorted(p for p in st.docs if FINGERPRINT_FILE.fullmatch(p)):
        try:
            fp = fingerprint_from_json(st.docs[path])
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            out.append(Finding(FindingCode.FINGERPRINT_INVALID, f"{type(e).__name__}: {e}", path))
            continue
        if canonical_json(fp.to_json()) != st.files[path]:
            out.append(
                Finding(
                    FindingCode.FINGERPRINT_INVALID,
                    "holds fields outside the fingerprint format (or values of the wrong type)",
                    path,
                )
            )
        elif f"fingerprints/{fp.digest.removeprefix('sha256:')}.json" != path:
            out.append(
                Finding(
                    FindingCode.FINGERPRINT_INVALID, f"named for another digest ({fp.digest})", path
                )
            )
        else:
            st.fingerprints[fp.digest] = fp
    return out or _table_digests(st.fingerprints)


def _table_digests(fingerprints: Mapping[str, Fingerprint]) -> list[Finding]:
    """A table digest's header names its table and order mode and its rows fix the count, so
    across a packet one digest stands for one (table, rows, order): a digest copied from another
    table, or a count or order edited beside it, says otherwise."""
    seen: dict[str, tuple[str, int, str, str]] = {}
    for digest, fp in sorted(fingerprints.items()):
        path = f"fingerprints/{digest.removeprefix('sha256:')}.json"
        for name, t in sorted(fp.tables.items()):
            first = seen.setdefault(t.digest, (name, t.rows, t.order, path))
            if first[:3] != (name, t.rows, t.order):
                return [
                    Finding(
                        FindingCode.FINGERPRINT_INVALID,
                        f"table {name} ({t.rows} rows, {t.order}) has the digest of table "
                        f"{first[0]} ({first[1]} rows, {first[2]}) in {first[3]}",
                        path,
                    )
                ]
    return []


def _change(st: _State) -> list[Finding]:
    ev = st.evidence()
    return recompute.check_secrets(ev) + recompute.check_change(ev)


def _verdicts(st: _State) -> list[Finding]:
    return recompute.check_verdicts(st.evidence()) + _impact(st)


def _impact(st: _State) -> list[Finding]:
    """The impact section is measured, so only its arithmetic can be checked: every aggregate,
    lock hold time, row count (from the source fingerprint) and over-limit line must be what
    its own statements and limits give (`core.impact.recomputed_impact`)."""
    report = st.docs[REPORT_JSON]
    impact = report["impact"]
    source = st.fingerprints.get(report["source"]["fingerprint"])
    rows = {} if source is None else {n: t.rows for n, t in source.tables.items()}
    try:
        same = recomputed_impact(impact, rows) == impact
    except (LimitError, KeyError, ValueError):
        same = False
    if same and impact["engine"] == report["source"]["engine"]:
        return []
    return [
        Finding(
            FindingCode.IMPACT_CONTRADICTS,
            "impact: the recorded figures, lock times or over-limit lines are not the ones its "
            "own statements, limits and the source's row counts give",
            REPORT_JSON,
        )
    ]


def _exit_codes(st: _State) -> list[Finding]:
    return recompute.check_exit_codes(st.evidence())


def _scripts(st: _State) -> list[Finding]:
    return recompute.check_scripts(st.evidence())


def _signature(st: _State) -> list[Finding]:
    e = st.tree.entries.get(ATTESTATION)
    if e is None:
        if st.require_signature:
            return [Finding(FindingCode.SIGNATURE_MISSING, "a signature is required", ATTESTATION)]
        return []
    assert e.data is not None
    try:
        if not st.trusted_keys:
            parse_envelope(e.data)  # shape only: without a trusted key the payload stays unread
            return []
        statement, signers = verify_envelope(e.data, st.trusted_keys)
    except AttestationError as err:
        return [Finding(err.code, str(err), ATTESTATION)]
    out = []
    subjects = statement["subject"]
    if subjects[0]["digest"]["sha256"] != st.manifest_sha256:
        out.append(
            Finding(
                FindingCode.ATTESTATION_SUBJECT_MISMATCH,
                "signs another MANIFEST.json",
                ATTESTATION,
            )
        )
    if subjects[1]["digest"]["sha256"] != st.tree_hash:
        out.append(
            Finding(FindingCode.ATTESTATION_SUBJECT_MISMATCH, "signs another tree", ATTESTATION)
        )
    report = st.docs[REPORT_JSON]
    expected = predicate_for(report, recorded_exit_code(st.docs[EXIT_CODES_JSON]))
    if statement["predicate"] != expected:
        out.append(
            Finding(
                FindingCode.ATTESTATION_PREDICATE_MISMATCH,
                "the signed predicate does not say what the report says",
                ATTESTATION,
            )
        )
    st.signers = signers
    return out


def _governance(st: _State) -> list[Finding]:
    entries = st.tree.entries
    under = sorted(p for p in entries if is_governance_path(p) and p != GOVERNANCE_SEAL)
    files_under = [p for p in under if entries[p].kind is not FileKind.DIRECTORY]
    seal = entries.get(GOVERNANCE_SEAL)
    if seal is None:
        return [
            Finding(FindingCode.FILE_EXTRA, "governance layer file without GOVERNANCE.json", p)
            for p in (files_under or under)
        ]
    bad = _type_finding(GOVERNANCE_SEAL, seal)
    if bad is not None:
        return [bad]
    assert seal.data is not None
    for p in [GOVERNANCE_SEAL, *files_under]:
        data = entries[p].data
        too_many = None if data is None else json_values_bound(data, st.limits.max_json_values)
        if too_many is not None:
            return [Finding(FindingCode.LIMIT_EXCEEDED, too_many, _shown(p))]
    out, sealed = layer.check_seal(seal.data, st.tree_hash, _schema_findings)
    if out:
        return out
    out += [
        Finding(FindingCode.FILE_MISSING, "sealed but not on disk", p)
        for p in sorted(set(sealed) - set(files_under))
    ]
    out += [
        Finding(FindingCode.FILE_EXTRA, "on disk but not sealed", _shown(p))
        for p in sorted(set(files_under) - set(sealed))
    ]
    if out:
        return out
    files: dict[str, bytes] = {}
    for path, (sha, size) in sealed.items():
        entry = entries[path]
        bad = _type_finding(path, entry)
        if bad is not None:
            out.append(bad)
            continue
        assert entry.data is not None
        if len(entry.data) != size:
            out.append(
                Finding(FindingCode.SIZE_MISMATCH, f"{len(entry.data)} bytes, sealed {size}", path)
            )
        elif sha256_hex(entry.data) != sha:
            out.append(Finding(FindingCode.SHA256_MISMATCH, "sha256 differs from the seal", path))
        else:
            files[path] = entry.data
    if out:
        return out
    out, decision = layer.check_layer_documents(
        files,
        change_id=st.docs[REPORT_JSON]["change"]["id"],
        tree_hash=st.tree_hash,
        schema_check=_schema_findings,
    )
    st.decision = decision
    st.governance_files = {**files, GOVERNANCE_SEAL: seal.data}
    return out


_STAGES: tuple[tuple[Stage, Callable[[_State], list[Finding]]], ...] = (
    (Stage.LIMITS, _limits),
    (Stage.MANIFEST, _manifest),
    (Stage.FILE_SET, _file_set),
    (Stage.FILE_TYPES, _file_types),
    (Stage.CONTENT, _content),
    (Stage.TREE_HASH, _tree_hash),
    (Stage.JSON, _json),
    (Stage.SCHEMA, _schemas),
    (Stage.CHANGE, _change),
    (Stage.VERDICTS, _verdicts),
    (Stage.EXIT_CODES, _exit_codes),
    (Stage.SCRIPTS, _scripts),
    (Stage.SIGNATURE, _signature),
    (Stage.GOVERNANCE, _governance),
)


def _verified(st: _State) -> VerifiedPacket:
    report = st.docs[REPORT_JSON]
    return VerifiedPacket(
        change_id=report["change"]["id"],
        content_id=report["change"]["content_id"],
        overall=Verdict(report["overall"]),
        isolation=IsolationVerdict(report["isolation"]["verdict"]),
        legs=tuple((LegName(leg["name"]), Verdict(leg["verdict"])) for leg in report["legs"]),
        exit_code=recorded_exit_code(st.docs[EXIT_CODES_JSON]),
        tree_hash=st.tree_hash,
        manifest_sha256=st.manifest_sha256,
        validator_sha256=report["validator_sha256"],
        signed_by=st.signers,
        report=report,
        fingerprints=dict(st.fingerprints),
        files=dict(st.files),
        decision=st.decision,
        governance_files=dict(st.governance_files),
    )


def check_tree(
    tree: PacketTree,
    *,
    trusted_keys: Sequence[TrustedKey] = (),
    require_signature: bool = False,
    limits: Limits = DEFAULT_LIMITS,
) -> ValidationReport:
    """Run every stage over `tree`; report the findings of the first stage that fails. A
    tree holding RANGE.json and no MANIFEST.json is a range packet (verify/range_packet.py)."""
    if require_signature and not trusted_keys:
        raise ValueError("require_signature needs at least one trusted key")
    if RANGE_FILE in tree.entries and MANIFEST not in tree.entries and tree.breach is None:
        return _check_range(tree, trusted_keys, require_signature, limits)
    st = _State(tree, limits, tuple(trusted_keys), require_signature)
    passed: list[Stage] = []
    for stage, run in _STAGES:
        try:
            findings = run(st)
        except Exception as e:  # fail closed: a validator that crashed has not validated
            findings = [
                Finding(FindingCode.VALIDATOR_EXCEPTION, f"{stage}: {type(e).__name__}: {e}")
            ]
        if findings:
            return ValidationReport(tuple(findings), tuple(passed), None)
        passed.append(stage)
    try:
        packet = _verified(st)
    except Exception as e:  # fail closed, as above
        finding = Finding(FindingCode.VALIDATOR_EXCEPTION, f"result: {type(e).__name__}: {e}")
        return ValidationReport((finding,), tuple(passed), None)
    return ValidationReport((), tuple(passed), packet)


def _check_range(
    tree: PacketTree,
    trusted_keys: Sequence[TrustedKey],
    require_signature: bool,
    limits: Limits,
) -> ValidationReport:
    """Every sub-packet through `check_tree`, the range manifest bound to them (fail closed)."""

    def subtree(name: str) -> PacketTree:
        prefix = name + "/"
        return PacketTree(
            {p[len(prefix) :]: e for p, e in tree.entries.items() if p.startswith(prefix)}
        )

    def one(sub: PacketTree) -> ValidationReport:
        return check_tree(
            sub, trusted_keys=trusted_keys, require_signature=require_signature, limits=limits
        )

    entry = tree.entries[RANGE_FILE]
    data = entry.data if entry.kind is FileKind.REGULAR and entry.nlink == 1 else None
    top = {p.split("/", 1)[0] for p in tree.entries}
    try:
        return check_range(top, data, subtree, one)
    except Exception as e:  # fail closed
        finding = Finding(FindingCode.VALIDATOR_EXCEPTION, f"range: {type(e).__name__}: {e}")
        return ValidationReport((finding,), (), None)


def verify_tree(
    tree: PacketTree,
    *,
    trusted_keys: Sequence[TrustedKey] = (),
    require_signature: bool = False,
    limits: Limits = DEFAULT_LIMITS,
) -> VerifiedPacket:
    """The verified packet, or `PacketInvalidError` with every finding of `check_tree`."""
    return check_tree(
        tree, trusted_keys=trusted_keys, require_signature=require_signature, limits=limits
    ).verified()
