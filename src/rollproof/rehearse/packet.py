"""A rehearsal's evidence packet: the report's data handed to `rollproof.evidence.build`.

build_packet(result) -> {relative path: bytes}     (no IO)
write_packet(result, out) -> out                   (atomic)
write_report(result, out)                          the same, as the CLI and the flow call it
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rollproof.core.redact import redact_dsn
from rollproof.evidence.build import assemble_packet, check_change_paths, write_packet_files
from rollproof.rehearse.flow import RehearsalResult
from rollproof.rehearse.report import fingerprint_files, report_bytes, report_json
from rollproof.verify.attest import Signer


def default_invocation(result: RehearsalResult) -> list[str]:
    """The `rollproof rehearse` command equivalent to a rehearsal run from the library."""
    argv = [
        "rollproof",
        "rehearse",
        str(result.change.directory),
        "--source",
        redact_dsn(str(result.source.get("dsn", ""))),
        "--legs",
        ",".join(str(leg.name) for leg in result.legs),
    ]
    if result.surfaces.allow_undeclared:
        argv.append("--allow-undeclared")
    return argv


def build_packet(
    result: RehearsalResult,
    *,
    invocation: Sequence[str] | None = None,
    validator_sha256: str | None = None,
    signing_key: Signer | None = None,
) -> dict[str, bytes]:
    """Every file of the packet for `result`, by relative POSIX path."""
    check_change_paths(result.change)
    report = report_json(result, validator_sha256=validator_sha256)
    return assemble_packet(
        report,
        report_json_bytes=report_bytes(report),
        fingerprints=fingerprint_files(result),
        change_files=result.change.files,
        argv=list(invocation or default_invocation(result)),
        exit_code=int(result.exit_code),
        signing_key=signing_key,
    )


def write_packet(
    result: RehearsalResult,
    out: Path,
    *,
    invocation: Sequence[str] | None = None,
    validator_sha256: str | None = None,
    signing_key: Signer | None = None,
) -> Path:
    """Write the packet for `result` into the new (or empty) directory `out`, atomically: it
    is built under a temporary name beside `out` and renamed into place only when complete."""
    files = build_packet(
        result,
        invocation=invocation,
        validator_sha256=validator_sha256,
        signing_key=signing_key,
    )
    return write_packet_files(files, out)


def default_out_dir(result: RehearsalResult, root: Path) -> Path:
    """`root/<change-id>-<UTC stamp of the rehearsal's start>`."""
    stamp = result.started_at.strftime("%Y%m%dT%H%M%SZ")
    return root / f"{result.change.id}-{stamp}"


def write_report(
    result: RehearsalResult,
    out: Path,
    *,
    invocation: list[str] | None = None,
    signing_key: Signer | None = None,
) -> Path:
    """Write the rehearsal's whole evidence packet into the new directory `out`, atomically.

    `invocation` is the command line that ran the rehearsal (recorded with secrets removed);
    without it, the equivalent `rollproof rehearse` command is recorded. `signing_key` adds a
    signed attestation.
    """
    return write_packet(result, out, invocation=invocation, signing_key=signing_key)
