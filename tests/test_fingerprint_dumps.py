"""`rollproof fingerprint` of an operator's dump (issue 17): a pg_dump archive restored on the
scratch server, or a SQLite file copy, fingerprinted as the source it was taken from.

The real CLI in a subprocess, a real `pg_dump -Fc` of a test source database and the test
scratch server; the dump's fingerprint must equal the live source's, its sha256 be the file's,
and what is missing (no --scratch) or wrong (another digest) is one line and exit 2.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from rollproof.assurance.selftest import build_tiny_source
from rollproof.engines.postgres.source import fingerprint_source
from rollproof.engines.sqlite.source import fingerprint_file
from tests.pg_fixtures import (
    MakeSource,
    Servers,
    database_names,
    pg_servers_fixture,  # noqa: F401  (fixture)
    pg_source_fixture,  # noqa: F401  (fixture)
)
from tests.test_dump_sources import _pg_dump


def _run(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rollproof", "fingerprint", *argv],
        cwd=cwd,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_pg_dump_fingerprints_as_the_database_it_was_taken_from(
    tmp_path: Path, pg_servers: Servers, pg_source: MakeSource
) -> None:
    dsn = pg_source(
        "CREATE TABLE items (id serial PRIMARY KEY, label text NOT NULL);\n"
        "INSERT INTO items (label) SELECT 'item ' || i FROM generate_series(1, 200) AS i;\n"
        "CREATE TABLE tags (label text);\nINSERT INTO tags VALUES ('a'), ('a'), ('b');\n"
    )
    dump = _pg_dump(dsn, tmp_path / "prod.dump", "custom")
    before = {n for n in database_names(pg_servers.scratch) if n.startswith("rollproof_")}
    run = _run(tmp_path, f"pgdump:{dump}", "--scratch", pg_servers.scratch)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == fingerprint_source(dsn).digest
    assert lines[1] == f"  dump sha256: {hashlib.sha256(dump.read_bytes()).hexdigest()}"
    # Nothing of the restore is left on the scratch server.
    after = {n for n in database_names(pg_servers.scratch) if n.startswith("rollproof_")}
    assert after == before

    missing = _run(tmp_path, f"pgdump:{dump}")
    assert missing.returncode == 2
    assert missing.stdout == ""
    assert missing.stderr.splitlines() == [
        "rollproof: error: fingerprint pgdump:PATH restores the archive onto a scratch "
        "PostgreSQL server first: give --scratch DSN (or --scratch ephemeral)"
    ]


def test_a_sqlite_dump_fingerprints_as_its_file_and_is_held_to_its_digest(tmp_path: Path) -> None:
    source = build_tiny_source(tmp_path / "prod.db")
    dump = tmp_path / "copy.db"
    shutil.copyfile(source, dump)
    digest = hashlib.sha256(dump.read_bytes()).hexdigest()
    run = _run(tmp_path, f"sqlitedump:copy.db#sha256={digest}")
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[:2] == [
        fingerprint_file(source).digest,
        f"  dump sha256: {digest}",
    ]
    other = "0" * 64
    refused = _run(tmp_path, f"sqlitedump:copy.db#sha256={other}")
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert refused.stderr.splitlines() == [
        f"rollproof: source sqlitedump:copy.db: the dump's sha256 is {digest}, not the {other} "
        "it must have: it is not the dump named (changed, or another)"
    ]
    misplaced = _run(tmp_path, "copy.db", "--scratch", "ephemeral")
    assert misplaced.returncode == 2
    assert misplaced.stderr.splitlines() == [
        "rollproof: error: --scratch is only for a pgdump:PATH database"
    ]
