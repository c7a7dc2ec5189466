"""The validator's own bytes, pinned: which files make the validator, and their hash.

A validator that can be edited silently can be made to accept anything, so its bytes are
pinned: `rollproof validator-hash` prints the hash, every packet records the hash of the
validator that was running when it was written (report.json `validator_sha256`), and
`rollproof validate --expect-validator SHA` refuses to give any verdict when the running
validator's bytes differ (exit 3).

**Rule**: the files are `VALIDATOR_FILES`, paths relative to the installed `rollproof` package:
the validator's pure core, its IO shell, every rollproof module they import (transitively, not
counting package `__init__.py` files, which only re-export) and the JSON Schemas they check
against. The hash is the tree-hash rule of the packet applied to them: the sha256 of the
`sha256sum` lines `<hex>  <path>\\n`, sorted by path. From a shell:

    cd "$(python3 -c 'import rollproof, os; print(os.path.dirname(rollproof.__file__))')" \\
      && sha256sum $(rollproof validator-hash --files | cut -d' ' -f3) | sha256sum

Third-party libraries (jsonschema, cryptography, rfc8785) are not hashed; their versions are
pinned by the package's dependencies. A test keeps `VALIDATOR_FILES` equal to the import
closure, so a new import cannot slip out of the pin.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from rollproof.verify.layout import sha256_hex, tree_hash, tree_lines

VALIDATOR_FILES: tuple[str, ...] = (
    "core/brackets.py",
    "core/canonical.py",
    "core/change.py",
    "core/dumps.py",
    "core/errors.py",
    "core/explain.py",
    "core/fingerprint.py",
    "core/impact.py",
    "core/inputs.py",
    "core/invariants.py",
    "core/isolation.py",
    "core/model.py",
    "core/redact.py",
    "core/sqltext.py",
    "core/strictjson.py",
    "schemas/decision-v1.schema.json",
    "schemas/exit-codes-v1.schema.json",
    "schemas/governance-addendum-v1.schema.json",
    "schemas/governance-seal-v1.schema.json",
    "schemas/manifest-v1.schema.json",
    "schemas/probes-v1.schema.json",
    "schemas/report-v1.schema.json",
    "verify/attest.py",
    "verify/dumps.py",
    "verify/findings.py",
    "verify/governance_layer.py",
    "verify/layout.py",
    "verify/pin.py",
    "verify/range_packet.py",
    "verify/reader.py",
    "verify/recompute.py",
    "verify/report_md.py",
    "verify/scripts.py",
    "verify/validate.py",
)

PACKAGE_DIR = Path(__file__).resolve().parent.parent


def validator_digests() -> dict[str, str]:
    """sha256 hex of each validator file as installed now."""
    return {rel: sha256_hex((PACKAGE_DIR / rel).read_bytes()) for rel in VALIDATOR_FILES}


@cache
def validator_sha256() -> str:
    """The running validator's hash (read once per process: the code that runs was loaded
    once, so later edits on disk do not describe it)."""
    return tree_hash(validator_digests())


def validator_listing() -> str:
    """The `sha256sum` lines the hash is taken over."""
    return tree_lines(validator_digests()).decode("ascii")
