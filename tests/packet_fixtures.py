"""Helpers shared by the packet, validator and attestation tests, and the golden packet.

The golden packet (tests/data/golden/packet/) is a real rehearsal's packet built with a fixed
clock, a fixed signing key and a fixed validator pin. Four things in a real rehearsal's result
depend on the machine, not on the change, and are normalised before the packet is written
(with `dataclasses.replace`, so the writer and the validator see an ordinary result):

* the source's location and file bytes (`source.path`, `source.dsn`, `bytes_sha256_before`,
  and `after`, which names them again):
  the temporary directory differs per run, and SQLite's file header records the library
  version that wrote it;
* the isolation checks' evidence, which names device and inode numbers, the owner's uid and
  the source's file hash (each check's name and outcome are kept);
* the change's directory (the recorded command line is passed in explicitly);
* the measured impact's statement times (each set to 1 ms, and the figures derived from them
  recomputed).

Everything else (fingerprints, content ids, the surfaces evidence, commands.sh, RERUN.sh, the
manifest, the tree hash and the Ed25519 signature, which is deterministic) comes out of the real
code unchanged. Regenerate after an intended format change with:

    python3 -m tests.packet_fixtures
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from rollproof.assurance.selftest import (
    SOUND_CHANGE,
    build_tiny_source,
    tiny_rehearsal,
    write_change,
)
from rollproof.core.impact import recomputed_impact
from rollproof.core.isolation import IsolationCheck, IsolationProof
from rollproof.core.keys import SigningKey
from rollproof.rehearse.flow import RehearsalResult
from rollproof.rehearse.packet import build_packet
from rollproof.verify.attest import TrustedKey

DATA = Path(__file__).parent / "data"
GOLDEN_DIR = DATA / "golden" / "packet"
GOLDEN_KEY = SigningKey.from_private(
    Ed25519PrivateKey.from_private_bytes(
        hashlib.sha256(b"rollproof golden packet test key (not a secret)").digest()
    )
)
GOLDEN_VALIDATOR_PIN = hashlib.sha256(b"golden validator pin").hexdigest()
GOLDEN_INVOCATION = [
    "rollproof",
    "rehearse",
    "changes/add-item-note",
    "--source",
    "sqlite:///source.db",
    "--sign",
    "golden.key",
]


def golden_trusted_key() -> TrustedKey:
    return TrustedKey(GOLDEN_KEY.public.raw)


def normalise(result: RehearsalResult) -> RehearsalResult:
    """`result` with its machine-dependent parts replaced by fixed values (module docstring)."""
    checks = tuple(
        IsolationCheck(c.name, c.holds, "normalised for the golden packet")
        for c in result.isolation.checks
    )
    source = {
        "engine": "sqlite",
        "dsn": "sqlite:////golden/source.db",
        "path": "/golden/source.db",
        "bytes_sha256_before": {"source.db": "0" * 64},
        "after": {"moved_on": False, "evidence": "normalised for the golden packet"},
    }
    change = dataclasses.replace(result.change, directory=Path("/golden/changes/add-item-note"))
    return dataclasses.replace(
        result,
        source=source,
        isolation=IsolationProof(checks),
        change=change,
        impact=normalised_impact(result),
    )


def normalised_impact(result: RehearsalResult) -> dict[str, Any]:
    """The impact section with every statement's time fixed at 1 ms (times are the machine's),
    and everything derived from the times recomputed from them."""
    assert result.impact is not None
    doc = json.loads(json.dumps(result.impact))
    for statement in doc["statements"]:
        statement["duration_us"] = 1000
    rows = {name: t.rows for name, t in result.source_fingerprint.tables.items()}
    return recomputed_impact(doc, rows)


def golden_files(workdir: Path) -> dict[str, bytes]:
    """Build the golden packet's files from a fresh real rehearsal under `workdir`."""
    source = build_tiny_source(workdir / "source.db")
    change = write_change(workdir / "changes" / "add-item-note", SOUND_CHANGE)
    result = normalise(tiny_rehearsal(source, change))
    return build_packet(
        result,
        invocation=GOLDEN_INVOCATION,
        validator_sha256=GOLDEN_VALIDATOR_PIN,
        signing_key=GOLDEN_KEY,
    )


def read_tree(root: Path) -> dict[str, bytes]:
    """Every regular file under `root`, by relative POSIX path."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for scripts run as subprocesses: this interpreter's bin directory
    first on PATH, so `rollproof` is the one under test."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.pop("ROLLPROOF", None)
    env.pop("ROLLPROOF_SOURCE", None)
    env.update(extra)
    return env


def regenerate() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        files = golden_files(Path(tmp))
    if GOLDEN_DIR.exists():
        shutil.rmtree(GOLDEN_DIR)
    for rel, data in files.items():
        target = GOLDEN_DIR / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    print(f"wrote {len(files)} files to {GOLDEN_DIR.relative_to(Path.cwd())}")


if __name__ == "__main__":
    regenerate()
