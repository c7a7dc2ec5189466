"""The evidence packet's layout: file names, the path grammar, limits, manifest and tree hash.

Pure: no IO. The packet writer and the validator both read these rules, so what is written and
what is accepted cannot drift apart.

A packet is a directory of **payload** files plus three **control** files:

    MANIFEST.json          canonical JSON (RFC 8785): {"schema": "rollproof/manifest/v1",
                           "files": [{"path", "sha256", "size"}, ...]} listing every payload
                           file, sorted by path
    TREE_HASH              "<64 lowercase hex>\\n": the tree hash (below)
    attestation.dsse.json  optional: a DSSE envelope over an in-toto Statement whose subjects
                           are MANIFEST.json's sha256 and the tree hash

The control files are not payload: the manifest cannot list itself, the tree hash cannot cover
itself, and the attestation signs both.

A governed rehearsal adds a **governance layer** once the evidence has validated: files that
cite the tree hash and so cannot be covered by it (`rollproof.verify.governance_layer`):

    governance/decision.json   the decision packet (schema rollproof/decision/v1): HOLD first
                               and default, each next lane with what it needs, APPLY_NOW
    governance/decision.md     the same for people, rendered from decision.json
    governance/checkpoint.md   the checkpoint: where the change stands, from ledger and packet
    governance/addendum.json   tickets opened or touched by the run (by id range), APPLY_NOW
    governance/probes.json     `rollproof probe --json` of this run: rollproof's own gates probed
                               with bad inputs (schema rollproof/probes/v1)
    GOVERNANCE.json            control file sealing the layer: canonical JSON
                               {"schema": "rollproof/governance-seal/v1", "tree_hash": <TREE_HASH>,
                                "files": [{"path", "sha256", "size"}, ...]} over exactly the five

The layer is optional, all or nothing: without GOVERNANCE.json nothing may sit under
governance/, and the manifest never lists a governance path.

**Tree hash rule** (recomputable with coreutils): the sha256 of the `sha256sum`-style lines
`<sha256 hex>  <path>\\n` of every payload file, sorted by path in byte order:

    cd PACKET && find . -type f ! -path ./MANIFEST.json ! -path ./TREE_HASH \\
      ! -path ./attestation.dsse.json ! -path ./GOVERNANCE.json ! -path './governance/*' \\
      | sed 's|^\\./||' | LC_ALL=C sort \\
      | xargs -d '\\n' sha256sum | sha256sum | cut -d' ' -f1

**Path grammar** (every payload path): relative POSIX paths of 1 to `MAX_DEPTH` segments, each
matching `SEGMENT`, at most `MAX_PATH_CHARS` characters; no two paths equal when lower-cased.
ASCII only, so there is no Unicode normalisation or case-folding ambiguity, and no character
`sha256sum` would escape (backslash, newline). The grammar stops a packet from naming a file
outside itself (`..`, absolute paths), from hiding one name behind another on a
case-insensitive file system, and from smuggling control characters into a reviewer's terminal.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rollproof.core.canonical import canonical_json

MANIFEST = "MANIFEST.json"
TREE_HASH = "TREE_HASH"
ATTESTATION = "attestation.dsse.json"
GOVERNANCE_SEAL = "GOVERNANCE.json"
CONTROL_FILES = frozenset({MANIFEST, TREE_HASH, ATTESTATION, GOVERNANCE_SEAL})

GOVERNANCE_DIR = "governance"
DECISION_JSON = "governance/decision.json"
DECISION_MD = "governance/decision.md"
CHECKPOINT_MD = "governance/checkpoint.md"
ADDENDUM_JSON = "governance/addendum.json"
PROBES_JSON = "governance/probes.json"
GOVERNANCE_FILES = (ADDENDUM_JSON, CHECKPOINT_MD, DECISION_JSON, DECISION_MD, PROBES_JSON)
"""The governance layer's files, sorted: all present with GOVERNANCE.json, or none."""

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
ISOLATION_JSON = "isolation.json"
SURFACES_JSON = "surfaces.json"
EXIT_CODES_JSON = "exit_codes.json"
COMMANDS_SH = "commands.sh"
RERUN_SH = "RERUN.sh"
FINGERPRINTS_DIR = "fingerprints"
CHANGE_DIR = "change"
CHANGE_TOML = "change/change.toml"

REQUIRED_FILES = (
    COMMANDS_SH,
    RERUN_SH,
    CHANGE_TOML,
    EXIT_CODES_JSON,
    ISOLATION_JSON,
    REPORT_JSON,
    REPORT_MD,
    SURFACES_JSON,
)
"""Payload files every packet holds (besides fingerprints/ and the rest of change/)."""

EXECUTABLE_FILES = frozenset({COMMANDS_SH, RERUN_SH})

MANIFEST_SCHEMA = "rollproof/manifest/v1"
EXIT_CODES_SCHEMA = "rollproof/exit-codes/v1"

SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+@-]{0,127}")
FINGERPRINT_FILE = re.compile(r"fingerprints/([0-9a-f]{64})\.json")
TREE_HASH_LINE = re.compile(rb"[0-9a-f]{64}\n")
HEX64 = re.compile(r"[0-9a-f]{64}")
MAX_DEPTH = 8
MAX_PATH_CHARS = 512


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds checked before any file is read or parsed: a packet is small, a hostile tree
    need not be (a million files, a multi-gigabyte "report", a directory a thousand deep)."""

    max_files: int = 4096
    max_depth: int = MAX_DEPTH
    max_file_bytes: int = 64 * 1024 * 1024
    max_total_bytes: int = 256 * 1024 * 1024
    max_json_values: int = 250_000


DEFAULT_LIMITS = Limits()


def path_problem(path: str) -> str | None:
    """Why `path` breaks the path grammar, or None when it is a valid payload path."""
    if not path:
        return "empty path"
    if len(path) > MAX_PATH_CHARS:
        return f"longer than {MAX_PATH_CHARS} characters"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        return "contains a control character"
    if "\\" in path:
        return "contains a backslash"
    if not path.isascii():
        return "contains a non-ASCII character"
    if path.startswith("/"):
        return "is absolute"
    segments = path.split("/")
    if any(s in ("", ".", "..") for s in segments):
        return "has an empty, '.' or '..' segment"
    if len(segments) > MAX_DEPTH:
        return f"is deeper than {MAX_DEPTH} levels"
    bad = next((s for s in segments if not SEGMENT.fullmatch(s)), None)
    if bad is not None:
        return f"segment {bad!r} is outside [A-Za-z0-9_][A-Za-z0-9._+@-]*"
    return None


def case_collisions(paths: Iterable[str]) -> list[tuple[str, str]]:
    """Pairs of distinct paths that are equal when lower-cased (or one is a directory of the
    other's case-twin), in sorted order."""
    seen: dict[str, str] = {}
    out: list[tuple[str, str]] = []
    for p in sorted(paths):
        parts = p.split("/")
        # every prefix is a name on disk too: "Change/x" collides with "change/y"
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            key = prefix.lower()
            other = seen.setdefault(key, prefix)
            if other != prefix and (other, prefix) not in out:
                out.append((other, prefix))
    return out


def is_governance_path(path: str) -> bool:
    """True for the governance layer's seal and anything under governance/."""
    return path in (GOVERNANCE_SEAL, GOVERNANCE_DIR) or path.startswith(GOVERNANCE_DIR + "/")


def is_known_payload(path: str) -> bool:
    """True when `path` has a place in the packet layout."""
    return (
        path in REQUIRED_FILES
        or FINGERPRINT_FILE.fullmatch(path) is not None
        or path.startswith(CHANGE_DIR + "/")
    )


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tree_lines(digests: Mapping[str, str]) -> bytes:
    """The `sha256sum` output for payload files (path -> sha256 hex), sorted by path (UTF-8)."""
    return b"".join(f"{digests[p]}  {p}\n".encode() for p in sorted(digests))


def tree_hash(digests: Mapping[str, str]) -> str:
    """The tree hash (hex) of payload files given as path -> sha256 hex."""
    return sha256_hex(tree_lines(digests))


def manifest_json(payload: Mapping[str, bytes]) -> dict[str, Any]:
    return {
        "schema": MANIFEST_SCHEMA,
        "files": [
            {"path": p, "sha256": sha256_hex(payload[p]), "size": len(payload[p])}
            for p in sorted(payload)
        ],
    }


def seal(payload: Mapping[str, bytes]) -> dict[str, bytes]:
    """`payload` plus MANIFEST.json and TREE_HASH (no attestation)."""
    if CONTROL_FILES & set(payload):
        raise ValueError("payload must not contain control files")
    files = dict(payload)
    files[MANIFEST] = canonical_json(manifest_json(payload))
    files[TREE_HASH] = (tree_hash({p: sha256_hex(d) for p, d in payload.items()}) + "\n").encode(
        "ascii"
    )
    return files


def payload_of(files: Mapping[str, bytes]) -> dict[str, bytes]:
    """The payload files of a packet's file mapping (everything but the control files)."""
    return {p: d for p, d in files.items() if p not in CONTROL_FILES}
