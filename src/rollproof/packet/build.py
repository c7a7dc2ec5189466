"""Assemble a rehearsal's evidence packet: every file, the manifest, the tree hash, a signature.

    build_packet(result) -> {relative path: bytes}     (no IO)
    write_packet(result, out) -> out                   (atomic: `write_tree_atomically`)

The packet (layout and rules in `rollproof.packet.layout`):

    report.json, report.md      the rehearsal (rollproof.report)
    isolation.json              report.json's `isolation`, canonical JSON
    surfaces.json               report.json's `surfaces`, canonical JSON
    fingerprints/<hex>.json     every fingerprint the report refers to, canonical JSON
    change/...                  a byte copy of `Change.files` (change.toml and its scripts)
    exit_codes.json             the rehearse command (argv, secrets removed) and the exit code
                                it returns: the packet is written before the process exits, so
                                this is `RehearsalResult.exit_code`, the code about to be returned
    commands.sh, RERUN.sh       rendered from the above (rollproof.packet.scripts)
    MANIFEST.json, TREE_HASH    over all of the above
    attestation.dsse.json       only when signing: over MANIFEST.json and the tree hash

Everything that goes into the packet is rendered from data that the validator checks, with the
same functions the validator uses, so a packet rollproof writes always validates. Paths outside
the grammar (a change file named with a space, say) are refused before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rollproof.canonical import canonical_json
from rollproof.change import Change
from rollproof.errors import UsageError
from rollproof.packet.attest import Signer, predicate_for, sign_envelope, statement_json
from rollproof.packet.layout import (
    ATTESTATION,
    CHANGE_DIR,
    COMMANDS_SH,
    EXECUTABLE_FILES,
    EXIT_CODES_JSON,
    EXIT_CODES_SCHEMA,
    ISOLATION_JSON,
    MANIFEST,
    REPORT_JSON,
    REPORT_MD,
    RERUN_SH,
    SURFACES_JSON,
    TREE_HASH,
    path_problem,
    seal,
    sha256_hex,
)
from rollproof.packet.redact import redact_argv, redact_dsn
from rollproof.packet.scripts import render_commands, render_rerun
from rollproof.packet.write import write_tree_atomically
from rollproof.rehearsal import RehearsalResult
from rollproof.report import fingerprint_files, report_bytes, report_json, report_markdown


class PacketPathError(UsageError):
    """A file that would go into the packet has a name outside the packet's path grammar."""


def check_change_paths(change: Change) -> None:
    """Refuse a change whose files cannot be copied into a packet (checked before rehearsing,
    so a long rehearsal does not end in a packet that cannot be written)."""
    for rel in sorted(change.files):
        problem = path_problem(f"{CHANGE_DIR}/{rel}")
        if problem is not None:
            raise PacketPathError(
                f"change file {rel!r} cannot go into an evidence packet: its path {problem}"
            )


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
    exit_codes = {
        "schema": EXIT_CODES_SCHEMA,
        "commands": [
            {
                "step": 1,
                "name": "rehearse",
                "argv": redact_argv(list(invocation or default_invocation(result))),
                "exit_code": int(result.exit_code),
            }
        ],
    }
    payload = {
        REPORT_JSON: report_bytes(report),
        REPORT_MD: report_markdown(result).encode("utf-8"),
        ISOLATION_JSON: canonical_json(report["isolation"]),
        SURFACES_JSON: canonical_json(report["surfaces"]),
        EXIT_CODES_JSON: canonical_json(exit_codes),
        COMMANDS_SH: render_commands(report, exit_codes),
        RERUN_SH: render_rerun(report),
        **fingerprint_files(result),
        **{f"{CHANGE_DIR}/{rel}": data for rel, data in result.change.files.items()},
    }
    for path in payload:
        problem = path_problem(path)
        if problem is not None:  # every name above is rollproof's own; this is a bug
            raise ValueError(f"packet path {path!r} {problem}")
    files = seal(payload)
    if signing_key is not None:
        statement = statement_json(
            sha256_hex(files[MANIFEST]),
            files[TREE_HASH].decode("ascii").strip(),
            predicate_for(report, int(result.exit_code)),
        )
        files[ATTESTATION] = sign_envelope(statement, signing_key)
    return files


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
    return write_tree_atomically(out, files, modes=dict.fromkeys(EXECUTABLE_FILES, 0o755))
