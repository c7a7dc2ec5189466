"""Dump sources (issue 17): an operator's pg_dump archive or SQLite file copy, rehearsed with no
connection to production, recorded with its sha256 and lane, reproduced only from the same dump.

Real pg_dump -Fc and -Fd archives of the test source cluster, restored on the test scratch
server by the real CLI in a subprocess; damaged dumps are exit 2 with pg_restore's own reason;
a packet that claims a dump with another check set, or a dump it does not name, is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from rollproof.core.isolation import DUMP_ISOLATION_CHECKS, ISOLATION_CHECKS
from rollproof.engines.postgres.source import fingerprint_source
from rollproof.engines.postgres.tools import find_tool
from tests.pg_fixtures import (
    MakePgChange,
    MakeSource,
    Servers,
    admin,
    make_pg_change_fixture,  # noqa: F401  (fixture)
    pg_servers_fixture,  # noqa: F401  (fixture)
    pg_source_fixture,  # noqa: F401  (fixture)
    role_names,
)

ROWS = 3000


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "ROLLPROOF_TEST_KILL_AT"}
    return subprocess.run(
        [sys.executable, "-m", "rollproof", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _bash(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ROLLPROOF": f"{sys.executable} -m rollproof"}
    return subprocess.run(
        ["bash", str(script), *args],
        cwd=script.parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _one_line(proc: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len(lines) == 1, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _report(packet: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((packet / "report.json").read_text())
    return data


def _pg_dump(dsn: str, out: Path, fmt: str) -> Path:
    subprocess.run(
        [find_tool("pg_dump"), f"--format={fmt}", f"--file={out}", f"--dbname={dsn}"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return out


def _listing_digest(directory: Path) -> str:
    """The documented digest of a directory dump, computed independently of rollproof:
    `find . -type f | LC_ALL=C sort | xargs sha256sum | sha256sum`."""
    files = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())
    listing = "".join(
        f"{hashlib.sha256((directory / f).read_bytes()).hexdigest()}  {f}\n" for f in files
    )
    return hashlib.sha256(listing.encode()).hexdigest()


@pytest.fixture
def dump_role(pg_servers: Servers) -> Iterator[str]:
    """A role of the source cluster the scratch server lacks; dropped on both servers after
    the source database (set up after it, so torn down before it) is gone."""
    role = f"rp_dump_reader_{secrets.token_hex(3)}"
    with admin(pg_servers.source) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
    yield role
    for server in (pg_servers.source, pg_servers.scratch):
        with admin(server) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture
def dump_source(dump_role: str, pg_source: MakeSource) -> tuple[str, str]:
    """A source database whose table `dump_role` may read, and that role's name."""
    dsn = pg_source(
        "CREATE TABLE items (id serial PRIMARY KEY, label text NOT NULL, qty integer);\n"
        "INSERT INTO items (label, qty) SELECT 'item ' || i, i "
        f"FROM generate_series(1, {ROWS}) AS i;\n"
        f'GRANT SELECT ON items TO "{dump_role}";\n'
    )
    return dsn, dump_role


def _rehearse(change: Path, source: str, scratch: str, out: Path) -> list[str]:
    return ["rehearse", str(change), "--source", source, "--scratch", scratch, "--out", str(out)]


# --- PostgreSQL: pg_dump archives -----------------------------------------------------------------


def test_a_custom_dump_is_rehearsed_without_production_and_rerun_refuses_another_dump(
    pg_servers: Servers,
    dump_source: tuple[str, str],
    make_pg_change: MakePgChange,
    tmp_path: Path,
) -> None:
    dsn, role = dump_source
    dump = _pg_dump(dsn, tmp_path / "prod.dump", "custom")
    change = make_pg_change(
        "UPDATE items SET qty = 0 WHERE id <= 100;",
        "UPDATE items SET qty = id WHERE id <= 100;",
        surfaces='writes = ["items"]\n',
    )
    packet = tmp_path / "packet"
    proc = _run(_rehearse(change.directory, f"pgdump:{dump}", pg_servers.scratch, packet), tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    report = _report(packet)
    digest = hashlib.sha256(dump.read_bytes()).hexdigest()
    assert report["source"]["dump"] == {
        "format": "pg-custom",
        "sha256": digest,
        "lane": "production-shaped-clone",
    }
    assert report["source"]["dsn"] == f"pgdump:{dump}#sha256={digest}"
    checks = report["isolation"]["checks"]
    assert tuple(c["name"] for c in checks) == DUMP_ISOLATION_CHECKS["pgdump"]
    assert all(c["holds"] for c in checks)
    assert report["isolation"]["verdict"] == "PROVEN_ISOLATED_NOT_PRODUCTION"
    restored = next(c for c in checks if c["name"] == "dump-restored-cleanly")
    assert role in restored["evidence"]  # the dump's grantee, created NOLOGIN on the scratch
    assert role in role_names(pg_servers.scratch)
    # The restored dump is the source, byte for byte of content: owners and grants included.
    assert report["source"]["fingerprint"] == fingerprint_source(dsn).digest
    assert _run(["validate", str(packet)], tmp_path).returncode == 0

    rerun = _bash(packet / "RERUN.sh")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "PASS/MATCH" in rerun.stdout

    with dump.open("ab") as f:  # the same path, another dump
        f.write(b"\0")
    changed = _bash(packet / "RERUN.sh")
    _one_line(changed, 2, f"the dump's sha256 is {hashlib.sha256(dump.read_bytes()).hexdigest()}")
    assert f"not the {digest} it must have" in changed.stderr


def test_a_directory_dump_catches_a_revert_that_forgets_and_commands_sh_reproduces_it(
    pg_servers: Servers,
    dump_source: tuple[str, str],
    make_pg_change: MakePgChange,
    tmp_path: Path,
) -> None:
    dsn, _role = dump_source
    dump = _pg_dump(dsn, tmp_path / "prod.dir", "directory")
    change = make_pg_change(
        "ALTER TABLE items DROP COLUMN qty;",
        "ALTER TABLE items ADD COLUMN qty integer;",
        surfaces='writes = ["items"]\n',
    )
    packet = tmp_path / "packet"
    proc = _run(_rehearse(change.directory, f"pgdump:{dump}", pg_servers.scratch, packet), tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = _report(packet)
    assert report["source"]["dump"]["format"] == "pg-directory"
    assert report["source"]["dump"]["sha256"] == _listing_digest(dump)
    legs = {leg["name"]: leg for leg in report["legs"]}
    assert legs["revert"]["verdict"] == "FAIL"
    assert "qty" in legs["revert"]["reason"]
    assert legs["restore"]["verdict"] == "PASS"
    assert report["isolation"]["verdict"] == "PROVEN_ISOLATED_NOT_PRODUCTION"

    again = _bash(packet / "commands.sh", str(tmp_path / "reproduced"))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "OVERALL PASS" in again.stdout


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("head", "could not read from input file: end of file"),
        ("tail", "pg_restore cannot read the dump: could not read from input file"),
        (
            "not-a-dump-directory",
            'does not appear to be a valid archive ("toc.dat" does not exist)',
        ),
        ("plain-sql", "input file does not appear to be a valid archive"),
    ],
)
def test_a_damaged_dump_is_exit_2_with_pg_restores_reason(
    pg_servers: Servers,
    dump_source: tuple[str, str],
    make_pg_change: MakePgChange,
    tmp_path: Path,
    damage: str,
    reason: str,
) -> None:
    dsn, _role = dump_source
    good = _pg_dump(dsn, tmp_path / "good.dump", "custom")
    data = good.read_bytes()
    bad = tmp_path / "bad.dump"
    if damage == "head":
        bad.write_bytes(data[:1500])  # inside the table of contents
    elif damage == "tail":
        bad.write_bytes(data[: len(data) // 2])  # the table of contents whole, the data cut
    elif damage == "not-a-dump-directory":
        bad.mkdir()
        (bad / "notes.txt").write_text("not a dump\n")
    else:
        bad.write_text("CREATE TABLE t (id int);\n")
    change = make_pg_change(
        "UPDATE items SET qty = 0;", "UPDATE items SET qty = id;", surfaces='writes = ["items"]\n'
    )
    packet = tmp_path / "packet"
    proc = _run(_rehearse(change.directory, f"pgdump:{bad}", pg_servers.scratch, packet), tmp_path)
    _one_line(proc, 2, f"source pgdump:{bad}", reason)
    assert not packet.exists()


def test_the_validator_holds_a_dump_packet_to_its_own_check_set(
    pg_servers: Servers,
    dump_source: tuple[str, str],
    make_pg_change: MakePgChange,
    tmp_path: Path,
) -> None:
    from rollproof.assurance.selftest import forge
    from rollproof.evidence.write import write_tree_atomically
    from rollproof.verify.reader import validate_packet

    dsn, _role = dump_source
    dump = _pg_dump(dsn, tmp_path / "prod.dump", "custom")
    change = make_pg_change(
        "UPDATE items SET qty = 0;", "UPDATE items SET qty = id;", surfaces='writes = ["items"]\n'
    )
    packet = tmp_path / "packet"
    proc = _run(_rehearse(change.directory, f"pgdump:{dump}", pg_servers.scratch, packet), tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    files = {
        p.relative_to(packet).as_posix(): p.read_bytes() for p in packet.rglob("*") if p.is_file()
    }

    def live_checks(report: dict[str, Any]) -> None:
        # Claims the live engine's proof: a source server compared and re-read.
        report["isolation"]["checks"] = [
            {"name": name, "holds": True, "evidence": "x"}
            for name in ISOLATION_CHECKS["postgresql"]
        ]

    def dropped_check(report: dict[str, Any]) -> None:
        del report["isolation"]["checks"][2]  # dump-restored-cleanly

    def no_dump_record(report: dict[str, Any]) -> None:
        del report["source"]["dump"]

    def other_digest(report: dict[str, Any]) -> None:
        report["source"]["dump"]["sha256"] = "0" * 64

    forged = [
        ("live", live_checks, "ISOLATION_CHECKS_MISMATCH", "pgdump source's"),
        ("dropped", dropped_check, "ISOLATION_CHECKS_MISMATCH", "pgdump source's"),
        ("no-record", no_dump_record, "SOURCE_DUMP_MISMATCH", "records none"),
        ("digest", other_digest, "SOURCE_DUMP_MISMATCH", "naming the dump's sha256"),
    ]
    for name, edit, code, words in forged:
        out = write_tree_atomically(tmp_path / f"forged-{name}", forge(files, edit))
        proc = _run(["validate", str(out)], tmp_path)
        assert proc.returncode == 1, (name, proc.stdout, proc.stderr)
        assert code in proc.stdout + proc.stderr, (name, proc.stdout, proc.stderr)
        assert words in proc.stdout + proc.stderr, (name, proc.stdout, proc.stderr)
    # The positive twin: the same bytes resealed without an edit validate.
    twin = write_tree_atomically(tmp_path / "resealed", forge(files))
    assert validate_packet(twin).overall.value == "PASS"


def test_a_pgdump_source_cannot_be_read_as_a_catalog_or_a_sqlite_path(tmp_path: Path) -> None:
    from rollproof.core.errors import SourceError, UsageError
    from rollproof.engines import read_catalog

    with pytest.raises(UsageError, match="no catalog until it is restored"):
        read_catalog(f"pgdump:{tmp_path}/x.dump")
    from rollproof.core.dumps import parse_dump_dsn

    parsed = parse_dump_dsn(f"pgdump:/a#b/c.dump#sha256={'a' * 64}")
    assert (parsed.path, parsed.sha256) == ("/a#b/c.dump", "a" * 64)
    with pytest.raises(SourceError, match="64 lower-case hex"):
        parse_dump_dsn("pgdump:/x.dump#sha256=ABC")


# --- SQLite: a file copy ------------------------------------------------------------------------


def _sqlite_dump(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, label TEXT NOT NULL, qty INTEGER)")
    conn.executemany(
        "INSERT INTO items (label, qty) VALUES (?, ?)", [(f"i{i}", i) for i in range(200)]
    )
    conn.commit()
    conn.close()
    return path


def _sqlite_change(root: Path) -> Path:
    root.mkdir()
    (root / "apply.sql").write_text("UPDATE items SET qty = 0 WHERE id <= 10;\n")
    (root / "revert.sql").write_text("UPDATE items SET qty = id - 1 WHERE id <= 10;\n")
    (root / "change.toml").write_text(
        'apply = "apply.sql"\nrevert = "revert.sql"\n[surfaces]\nwrites = ["items"]\n'
    )
    return root


def test_a_sqlite_file_given_as_a_dump_is_recorded_and_reproduced_only_from_itself(
    tmp_path: Path,
) -> None:
    (tmp_path / "copy").mkdir()
    dump = _sqlite_dump(tmp_path / "copy" / "prod-copy.db")
    change = _sqlite_change(tmp_path / "change")
    packet = tmp_path / "packet"
    proc = _run(
        ["rehearse", str(change), "--source", f"sqlitedump:{dump}", "--out", str(packet)], tmp_path
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = _report(packet)
    digest = hashlib.sha256(dump.read_bytes()).hexdigest()
    assert report["source"]["dump"] == {
        "format": "sqlite-file",
        "sha256": digest,
        "lane": "production-shaped-clone",
    }
    assert report["source"]["dsn"] == f"sqlitedump:{dump}#sha256={digest}"
    assert report["source"]["bytes_sha256_before"] == {"prod-copy.db": digest}
    assert (
        tuple(c["name"] for c in report["isolation"]["checks"])
        == DUMP_ISOLATION_CHECKS["sqlitedump"]
    )
    assert _run(["validate", str(packet)], tmp_path).returncode == 0
    assert "PASS/MATCH" in _bash(packet / "RERUN.sh").stdout

    conn = sqlite3.connect(dump)
    conn.execute("UPDATE items SET label = 'changed' WHERE id = 1")
    conn.commit()
    conn.close()
    changed = _bash(packet / "RERUN.sh")
    _one_line(changed, 2, "the dump's sha256 is", f"not the {digest} it must have")
    # A dump with a live journal beside it is not one file.
    (dump.parent / "prod-copy.db-wal").write_bytes(b"x" * 32)
    side = _run(
        ["rehearse", str(change), "--source", f"sqlitedump:{dump}", "--out", str(tmp_path / "p2")],
        tmp_path,
    )
    _one_line(side, 2, "a dump is one file")
    shutil.rmtree(dump.parent)


def test_rerun_holds_a_dump_given_without_a_digest_to_the_recorded_one() -> None:
    from rollproof.rehearse.rerun import _source_for

    recorded = {"dsn": f"pgdump:/a.dump#sha256={'a' * 64}", "dump": {"sha256": "a" * 64}}
    assert _source_for(recorded, None) == recorded["dsn"]
    assert (
        _source_for(recorded, "pgdump:/moved/a.dump") == f"pgdump:/moved/a.dump#sha256={'a' * 64}"
    )
    named = f"pgdump:/b.dump#sha256={'b' * 64}"
    assert _source_for(recorded, named) == named  # a digest given is the caller's own
    assert _source_for({"dsn": "postgresql://h/db"}, "pgdump:/c.dump") == "pgdump:/c.dump"
