"""What the validator can say about a packet: finding codes, findings, the report, the errors.

Every rejection carries a `FindingCode`, so a test (or a CI gate) asserts the exact reason and a
misspelt code cannot silently compare unequal. Codes are grouped by the validation stage that
emits them, in the order the stages run (see `rollproof.verify.validate`).

Errors (all `RollproofError`s, so `cli.main` maps them to exit codes):

    PacketInvalidError(CheckFailedError)   exit 1  the evidence is invalid; carries the findings
    PacketUsageError(UsageError)           exit 2  unusable input: not a directory, no key, ...
    ValidatorPinError(HeldError)           exit 3  the running validator is not the pinned one,
                                                   so no verdict is given at all
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from rollproof.core.errors import CheckFailedError, HeldError, UsageError
from rollproof.core.fingerprint import Fingerprint
from rollproof.core.model import IsolationVerdict, LegName, Verdict


def _printable(text: str) -> str:
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text
    )


class Stage(StrEnum):
    """Validation stages, in the order they run. A stage runs only if every earlier one passed:
    later stages parse and interpret bytes that earlier stages have not yet vouched for."""

    LIMITS = "limits"
    MANIFEST = "manifest"
    FILE_SET = "file-set"
    FILE_TYPES = "file-types"
    CONTENT = "content"
    TREE_HASH = "tree-hash"
    JSON = "strict-json"
    SCHEMA = "schema"
    CHANGE = "change"
    VERDICTS = "verdicts"
    EXIT_CODES = "exit-codes"
    SCRIPTS = "scripts"
    SIGNATURE = "signature"
    GOVERNANCE = "governance"


class FindingCode(StrEnum):
    # limits (checked before anything is read)
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
    # manifest and path grammar
    MANIFEST_MISSING = "MANIFEST_MISSING"
    MANIFEST_MALFORMED = "MANIFEST_MALFORMED"
    PATH_UNSAFE = "PATH_UNSAFE"
    PATH_CASE_COLLISION = "PATH_CASE_COLLISION"
    # the files on disk against the manifest and the layout
    FILE_MISSING = "FILE_MISSING"
    FILE_EXTRA = "FILE_EXTRA"
    FILE_RENAMED = "FILE_RENAMED"
    FILE_UNKNOWN = "FILE_UNKNOWN"
    # file types
    SYMLINK = "SYMLINK"
    HARDLINK = "HARDLINK"
    SPECIAL_FILE = "SPECIAL_FILE"
    # content
    SIZE_MISMATCH = "SIZE_MISMATCH"
    SHA256_MISMATCH = "SHA256_MISMATCH"
    TREE_HASH_MISMATCH = "TREE_HASH_MISMATCH"
    # strict JSON and schemas
    JSON_INVALID = "JSON_INVALID"
    JSON_NOT_CANONICAL = "JSON_NOT_CANONICAL"
    REPORT_VERSION_UNKNOWN = "REPORT_VERSION_UNKNOWN"
    SCHEMA_VIOLATION = "SCHEMA_VIOLATION"
    FINGERPRINT_INVALID = "FINGERPRINT_INVALID"
    DETAIL_FILE_MISMATCH = "DETAIL_FILE_MISMATCH"
    # the change copy and secrets
    SECRET_PRESENT = "SECRET_PRESENT"  # noqa: S105  (a finding code, not a password)
    CONTENT_ID_MISMATCH = "CONTENT_ID_MISMATCH"
    CHANGE_COPY_MISMATCH = "CHANGE_COPY_MISMATCH"
    # verdicts recomputed from the fingerprints
    FINGERPRINT_MISSING = "FINGERPRINT_MISSING"
    FINGERPRINT_UNREFERENCED = "FINGERPRINT_UNREFERENCED"
    LEGS_MALFORMED = "LEGS_MALFORMED"
    LEGS_NOT_REQUESTED = "LEGS_NOT_REQUESTED"
    LEG_BEFORE_NOT_SOURCE = "LEG_BEFORE_NOT_SOURCE"
    LEG_POINTS_INCOMPLETE = "LEG_POINTS_INCOMPLETE"
    NO_MUTATION_FABRICATED = "NO_MUTATION_FABRICATED"
    LEG_VERDICT_CONTRADICTS = "LEG_VERDICT_CONTRADICTS"
    LEG_INVARIANTS_MISMATCH = "LEG_INVARIANTS_MISMATCH"
    LEG_CARRIED_UNFOUNDED = "LEG_CARRIED_UNFOUNDED"
    OVERALL_CONTRADICTS = "OVERALL_CONTRADICTS"
    ISOLATION_CONTRADICTS = "ISOLATION_CONTRADICTS"
    ISOLATION_CHECKS_MISMATCH = "ISOLATION_CHECKS_MISMATCH"
    SOURCE_DUMP_MISMATCH = "SOURCE_DUMP_MISMATCH"
    REPORT_TEXT_CONTRADICTS = "REPORT_TEXT_CONTRADICTS"
    IMPACT_CONTRADICTS = "IMPACT_CONTRADICTS"
    # exit codes and the reproduction scripts
    EXIT_CODE_CONTRADICTS = "EXIT_CODE_CONTRADICTS"
    SCRIPT_MISMATCH = "SCRIPT_MISMATCH"
    # signature
    SIGNATURE_MISSING = "SIGNATURE_MISSING"
    ATTESTATION_MALFORMED = "ATTESTATION_MALFORMED"
    SIGNATURE_INVALID = "SIGNATURE_INVALID"
    ATTESTATION_SUBJECT_MISMATCH = "ATTESTATION_SUBJECT_MISMATCH"
    ATTESTATION_PREDICATE_MISMATCH = "ATTESTATION_PREDICATE_MISMATCH"
    # governance (the optional layer: decision packet, checkpoint, addendum; packet/governance.py)
    GOVERNANCE_MISMATCH = "GOVERNANCE_MISMATCH"
    PROBES_CONTRADICT = "PROBES_CONTRADICT"
    # range packets (rehearse-dir --out; verify/range_packet.py)
    RANGE_MALFORMED = "RANGE_MALFORMED"
    RANGE_PACKET_EXTRA = "RANGE_PACKET_EXTRA"
    RANGE_PACKET_MISSING = "RANGE_PACKET_MISSING"
    RANGE_ORDER = "RANGE_ORDER"
    RANGE_PACKET_INVALID = "RANGE_PACKET_INVALID"
    RANGE_PACKET_MISMATCH = "RANGE_PACKET_MISMATCH"
    RANGE_VERDICT_CONTRADICTS = "RANGE_VERDICT_CONTRADICTS"
    # the validator itself raised: the packet is rejected, never accepted by accident
    VALIDATOR_EXCEPTION = "VALIDATOR_EXCEPTION"


@dataclass(frozen=True, slots=True)
class Finding:
    code: FindingCode
    message: str
    path: str | None = None

    def __str__(self) -> str:
        """One printable line: a message can quote bytes from the packet, and an escape
        sequence in a hostile packet must not reach the reviewer's terminal."""
        where = f" {self.path}" if self.path else ""
        return _printable(f"{self.code}{where}: {self.message}")

    def to_json(self) -> dict[str, Any]:
        return {"code": str(self.code), "path": self.path, "message": self.message}


@dataclass(frozen=True, slots=True)
class VerifiedPacket:
    """A packet that passed every check; built only at the end of the success path."""

    change_id: str
    content_id: str
    overall: Verdict
    isolation: IsolationVerdict
    legs: tuple[tuple[LegName, Verdict], ...]
    exit_code: int
    tree_hash: str
    manifest_sha256: str
    validator_sha256: str
    signed_by: tuple[str, ...]
    report: Mapping[str, Any] = field(repr=False)
    fingerprints: Mapping[str, Fingerprint] = field(repr=False)
    files: Mapping[str, bytes] = field(repr=False)
    decision: Mapping[str, Any] | None = field(default=None, repr=False)
    """The governance layer's decision.json, when the packet carries the layer."""
    governance_files: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    parts: tuple[VerifiedPacket, ...] = field(default=(), repr=False)
    """A range packet's sub-packets, in order (verify/range_packet.py); this packet is then its
    last, with the range's worst overall verdict and highest exit code."""


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """Every finding of the first stage that failed (later stages did not run), or none and the
    verified packet."""

    findings: tuple[Finding, ...]
    stages_passed: tuple[Stage, ...]
    packet: VerifiedPacket | None

    @property
    def ok(self) -> bool:
        return self.packet is not None and not self.findings

    @property
    def codes(self) -> tuple[FindingCode, ...]:
        return tuple(f.code for f in self.findings)

    def verified(self) -> VerifiedPacket:
        """The verified packet, or `PacketInvalidError` carrying every finding."""
        if self.packet is None or self.findings:
            raise PacketInvalidError(self.findings)
        return self.packet


class PacketInvalidError(CheckFailedError):
    """The packet is not valid evidence. `findings[0]` is the first reason, in stage order."""

    def __init__(self, findings: tuple[Finding, ...]) -> None:
        self.findings = findings
        first = str(findings[0]) if findings else "no verified packet"
        more = f" (and {len(findings) - 1} more)" if len(findings) > 1 else ""
        super().__init__(f"packet invalid: {first}{more}")


class PacketUsageError(UsageError):
    """The input cannot be checked at all: not a directory, unreadable, a bad key file."""


class ValidatorPinError(HeldError):
    """The running validator's bytes are not the pinned ones: no verdict is given."""

    def __init__(self, expected: str, actual: str) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"validator pin mismatch: expected {expected}, running validator is {actual}; "
            "refusing to give a verdict"
        )
