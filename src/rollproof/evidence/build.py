"""Assemble a rehearsal's evidence packet: every file, the manifest, the tree hash, a signature.

    assemble_packet(report, ...) -> {relative path: bytes}     (no IO)
    write_packet_files(files, out) -> out                      (atomic: `write_tree_atomically`)

It works from the report's data, not from a rehearsal: `rollproof.rehearse.packet` turns a
`RehearsalResult` into that data and calls these.

The packet (layout and rules in `rollproof.verify.layout`):

    report.json                 the rehearsal (rollproof.rehearse.report)
    report.md                   rendered from report.json (rollproof.verify.report_md)
    isolation.json              report.json's `isolation`, canonical JSON
    surfaces.json               report.json's `surfaces`, canonical JSON
    fingerprints/<hex>.json     every fingerprint the report refers to, canonical JSON
    change/...                  a byte copy of `Change.files` (change.toml and its scripts)
    exit_codes.json             the rehearse command (argv, secrets removed) and the exit code
                                it returns: the packet is written before the process exits, so
                                this is `RehearsalResult.exit_code`, the code about to be returned
    commands.sh, RERUN.sh       rendered from the above (rollproof.verify.scripts)
    MANIFEST.json, TREE_HASH    over all of the above
    attestation.dsse.json       only when signing: over MANIFEST.json and the tree hash

Everything that goes into the packet is rendered from data that the validator checks, with the
same functions the validator uses, so a packet rollproof writes always validates. Paths outside
the grammar (a change file named with a space, say) are refused before anything is written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rollproof.core.canonical import canonical_json
from rollproof.core.change import Change
from rollproof.core.errors import UsageError
from rollproof.core.redact import redact_argv
from rollproof.evidence.write import write_tree_atomically
from rollproof.verify.attest import Signer, predicate_for, sign_envelope, statement_json
from rollproof.verify.layout import (
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
from rollproof.verify.report_md import render_report_md
from rollproof.verify.scripts import render_commands, render_rerun


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


def assemble_packet(
    report: Mapping[str, Any],
    *,
    report_json_bytes: bytes,
    fingerprints: Mapping[str, bytes],
    change_files: Mapping[str, bytes],
    argv: Sequence[str],
    exit_code: int,
    signing_key: Signer | None = None,
) -> dict[str, bytes]:
    """Every file of the packet for the rehearsal `report` describes, by relative POSIX path.

    `argv` is the command that ran the rehearsal (secrets are removed here); `exit_code` is the
    code that command returns.
    """
    exit_codes = {
        "schema": EXIT_CODES_SCHEMA,
        "commands": [
            {
                "step": 1,
                "name": "rehearse",
                "argv": redact_argv(list(argv)),
                "exit_code": int(exit_code),
            }
        ],
    }
    payload = {
        REPORT_JSON: report_json_bytes,
        REPORT_MD: render_report_md(report),
        ISOLATION_JSON: canonical_json(report["isolation"]),
        SURFACES_JSON: canonical_json(report["surfaces"]),
        EXIT_CODES_JSON: canonical_json(exit_codes),
        COMMANDS_SH: render_commands(report, exit_codes),
        RERUN_SH: render_rerun(report),
        **fingerprints,
        **{f"{CHANGE_DIR}/{rel}": data for rel, data in change_files.items()},
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
            predicate_for(report, int(exit_code)),
        )
        files[ATTESTATION] = sign_envelope(statement, signing_key)
    return files


def write_packet_files(files: Mapping[str, bytes], out: Path) -> Path:
    """Write a packet's files into the new (or empty) directory `out`, atomically: they are
    written under a temporary name beside `out` and renamed into place only when complete."""
    return write_tree_atomically(out, files, modes=dict.fromkeys(EXECUTABLE_FILES, 0o755))
