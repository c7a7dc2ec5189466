"""Migration directories on a PostgreSQL source (two real servers): Alembic rendered for
PostgreSQL, and one small project each for golang-migrate, dbmate and Liquibase formatted SQL.

Each project's `rehearse-dir` run costs about 20 s, so it runs once per module (a module-scoped
fixture) and every test reads that run. The source databases are made here (not with the
function-scoped `pg_source`), fingerprinted when made and again at the end: rollproof must not
change them. The real Alembic writes its source before rollproof runs, as a deploy would.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from psycopg import sql

from rollproof.cli import main
from rollproof.core.model import Verdict
from rollproof.engines.postgres.source import fingerprint_source
from rollproof.verify.reader import validate_packet
from tests.pg_fixtures import Servers, admin, database_names, pg_servers_fixture

__all__ = ["pg_servers_fixture"]

DATA = Path(__file__).parent / "data" / "formats"
LIBRARY = DATA / "alembic" / "library"
USERS = """
CREATE TABLE users (id integer PRIMARY KEY, name text NOT NULL);
INSERT INTO users SELECT i, 'user' || i FROM generate_series(1, 40) AS i;
"""
LOST_BIOS = "table profiles: 40 rows differ; bio: 40 values lost (set before, NULL now)"
LOST_NICKNAMES = "table authors: 30 rows differ; nickname: 30 values lost (set before, NULL now)"


@dataclass(frozen=True)
class Run:
    """One `rehearse-dir` run: its exit code, its output lines, its packets."""

    code: int
    lines: list[str]
    out: Path
    source: str


class Sources:
    """Source databases made for this module, checked unchanged and dropped at the end."""

    def __init__(self, servers: Servers) -> None:
        self.servers = servers
        self.made: list[tuple[str, str, str]] = []

    def make(self, schema_sql: str, seal: bool = True) -> tuple[str, str]:
        name = f"rp_test_{secrets.token_hex(4)}"
        with admin(self.servers.source) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        dsn = self.servers.source_db(name)
        if schema_sql:
            with admin(dsn) as conn:
                conn.execute(schema_sql.encode())
        if seal:
            self.seal(name, dsn)
        return name, dsn

    def seal(self, name: str, dsn: str) -> None:
        """From now on only rollproof reads it: its fingerprint must hold to the end."""
        self.made.append((name, dsn, fingerprint_source(dsn).digest))

    def close(self) -> None:
        changed = [n for n, dsn, d in self.made if fingerprint_source(dsn).digest != d]
        with admin(self.servers.source) as conn:
            for name, _dsn, _d in self.made:
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        assert changed == [], f"source databases changed: {changed}"
        left = {n for n in database_names(self.servers.scratch) if n.startswith("rollproof_")}
        assert left == set(), f"scratch databases left behind: {left}"


@pytest.fixture(scope="module")
def sources(pg_servers: Servers) -> Iterator[Sources]:
    made = Sources(pg_servers)
    try:
        yield made
    finally:
        made.close()


def rehearse_dir(project: Path, source: str, scratch: str, out: Path, *extra: str) -> Run:
    """A real `rollproof rehearse-dir` process, as a user runs it."""
    done = subprocess.run(
        [
            *(sys.executable, "-m", "rollproof", "rehearse-dir", str(project)),
            *("--source", source, "--scratch", scratch, "--out", str(out), *extra),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = [ln for ln in done.stdout.splitlines() if not ln.startswith(" ")]
    assert "Traceback" not in done.stderr, done.stderr
    return Run(done.returncode, lines, out, source)


def verdicts(run: Run) -> list[str]:
    return [ln.split()[0] for ln in run.lines if ln.split()[0] in ("PASS", "FAIL", "ERROR")]


# -- Alembic -------------------------------------------------------------------------------


def _need_alembic() -> None:
    if importlib.util.find_spec("alembic") is None:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("Alembic is not installed in CI: pip install -e '.[dev]'")
        pytest.skip("Alembic is not installed (pip install -e '.[dev]')")


def alembic_on(tmp: Path, dsn: str) -> Path:
    """A copy of the library project whose alembic.ini points the real Alembic at `dsn`."""
    project = tmp / "library"
    shutil.copytree(LIBRARY, project)
    ini = project / "alembic.ini"
    url = dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    ini.write_text(ini.read_text().replace("sqlite:///library.db", url))
    return project


def alembic(project: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(project / "alembic.ini"), *args],
        cwd=project,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return done.stdout


@pytest.fixture(scope="module")
def alembic_run(
    sources: Sources, pg_servers: Servers, tmp_path_factory: pytest.TempPathFactory
) -> Run:
    _need_alembic()
    _name, dsn = sources.make("")
    out = tmp_path_factory.mktemp("alembic") / "packets"
    return rehearse_dir(LIBRARY, dsn, pg_servers.scratch, out)


def test_alembic_on_postgres_fails_exactly_the_lossy_revision(alembic_run: Run) -> None:
    """Revisions rendered by Alembic for PostgreSQL (`SERIAL`, not SQLite's INTEGER): 0001,
    its branch 0003, then 0002 whose downgrade re-adds `nickname` empty. Exactly 0002 FAILS,
    naming the 30 lost nicknames; the range passes (0001's downgrade drops the table)."""
    run = alembic_run
    assert run.code == 1, run.lines
    assert verdicts(run) == ["PASS", "PASS", "FAIL", "PASS"], "\n".join(run.lines)
    assert run.lines[2].startswith("FAIL    exit 1  3-0002 (drop author nickname): revert: ")
    assert LOST_NICKNAMES in run.lines[2]
    assert run.lines[3].startswith("PASS    exit 0  range-0001-to-0002: ")
    rendered = run.out / "1-0001" / "change" / "rollproof-alembic" / "0001.upgrade.sql"
    assert "id SERIAL NOT NULL" in rendered.read_text()
    assert "for postgresql from migrations/versions/0001_create_authors.py" in (
        (run.out / "1-0001" / "change" / "change.toml").read_text()
    )
    assert validate_packet(run.out).overall is Verdict.FAIL


def test_alembic_pending_on_postgres_equals_what_alembic_reports(
    sources: Sources, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real Alembic upgrades the `reports` branch (0001, 0003) online into a PostgreSQL
    source; `alembic upgrade <current>:heads --sql` names what it would run next, and
    rollproof's plan, read from alembic_version there, names the same revisions pending."""
    _need_alembic()
    name, dsn = sources.make("", seal=False)
    project = alembic_on(tmp_path, dsn)
    alembic(project, "upgrade", "0003")
    sources.seal(name, dsn)  # Alembic wrote it; rollproof must not
    current = alembic(project, "current").split()[0]
    assert current == "0003"
    offline = alembic(project, "upgrade", f"{current}:heads", "--sql")
    alembic_pending = re.findall(r"^-- Running upgrade \S+ -> (\S+)$", offline, re.M)
    assert alembic_pending == ["0002"]
    assert main(["plan", str(LIBRARY), "--source", dsn, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    states = {m["id"]: m["state"] for m in doc["migrations"]}
    assert [i for i, s in states.items() if s == "pending"] == alembic_pending
    assert states == {"0001": "deployed", "0003": "deployed", "0002": "pending"}


def test_alembic_rendered_for_sqlite_is_refused_on_postgres(pg_servers: Servers) -> None:
    """Rendered SQL is dialect SQL: a project loaded for SQLite is not rehearsed on PostgreSQL."""
    _need_alembic()
    from rollproof.core.errors import UsageError
    from rollproof.formats.detect import load_project
    from rollproof.formats.run import rehearse_range

    project = load_project(LIBRARY)
    assert project.options["dialect"] == "sqlite"
    with pytest.raises(UsageError) as e:
        rehearse_range(project, pg_servers.source, Path("unused"), start="0001")
    assert str(e.value) == (
        "this alembic project was loaded for sqlite, and the source is postgresql: load it "
        "for postgresql (load_project(..., dialect='postgresql'))"
    )


# -- golang-migrate, dbmate, Liquibase formatted SQL ---------------------------------------


def _rerun(packet: Path) -> subprocess.CompletedProcess[str]:
    """The packet's RERUN.sh, run by bash as a user runs it."""
    from tests.packet_fixtures import subprocess_env

    return subprocess.run(
        ["bash", str(packet / "RERUN.sh")],
        cwd=packet.parent,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def golang_run(
    sources: Sources, pg_servers: Servers, tmp_path_factory: pytest.TempPathFactory
) -> Run:
    """golang-migrate's `profiles`, positions kept (`--keep-positions`) beside the packets."""
    _name, dsn = sources.make(USERS)
    tmp = tmp_path_factory.mktemp("golang")
    return rehearse_dir(
        DATA / "golang-migrate" / "profiles",
        dsn,
        pg_servers.scratch,
        tmp / "packets",
        "--keep-positions",
        str(tmp / "positions"),
    )


def test_golang_migrate_on_postgres(golang_run: Run) -> None:
    run = golang_run
    assert run.code == 1, run.lines
    assert verdicts(run) == ["PASS", "FAIL", "PASS", "PASS"], "\n".join(run.lines)
    assert run.lines[1].startswith("FAIL    exit 1  2-2 (drop profile bio): revert: ")
    assert LOST_BIOS in run.lines[1]
    assert validate_packet(run.out).overall is Verdict.FAIL


def test_a_kept_position_packet_reruns_on_postgres(golang_run: Run) -> None:
    """Position 2 (migration 1 applied) is kept as a pg_dump archive; the packet records it
    with its sha256, and its RERUN.sh, run by bash, re-rehearses from it: PASS/MATCH. The
    archive of another position in its place is refused (exit 2), naming both digests."""
    packet = golang_run.out / "2-2"
    kept = golang_run.out.parent / "positions"
    assert sorted(p.name for p in kept.iterdir()) == ["position-1.dump", "position-2.dump"]
    source = json.loads((packet / "report.json").read_text())["source"]
    recorded = f"pgdump:{kept / 'position-1.dump'}#sha256="
    assert source["dsn"].startswith(recorded)
    done = _rerun(packet)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS/MATCH" in done.stdout
    good = source["dsn"].split("#sha256=")[1]
    swapped = kept / "swapped.dump"
    (kept / "position-1.dump").rename(swapped)
    (kept / "position-2.dump").rename(kept / "position-1.dump")
    try:
        done = _rerun(packet)
        bad = hashlib.sha256((kept / "position-1.dump").read_bytes()).hexdigest()
        assert done.returncode == 2, done.stdout + done.stderr
        assert done.stderr.strip().endswith(
            f"source pgdump:{kept / 'position-1.dump'}: the dump's sha256 is {bad}, not the "
            f"{good} it must have: it is not the dump named (changed, or another)"
        )
    finally:
        (kept / "position-1.dump").rename(kept / "position-2.dump")
        swapped.rename(kept / "position-1.dump")


@pytest.fixture(scope="module")
def dbmate_run(
    sources: Sources, pg_servers: Servers, tmp_path_factory: pytest.TempPathFactory
) -> Run:
    _name, dsn = sources.make("")
    out = tmp_path_factory.mktemp("dbmate") / "packets"
    return rehearse_dir(DATA / "dbmate" / "pgaccounts", dsn, pg_servers.scratch, out)


def test_dbmate_on_postgres(dbmate_run: Run) -> None:
    """Migration 2 is `transaction:false` (CREATE INDEX CONCURRENTLY): its transaction leg is
    not applicable and its other legs pass; migration 3's down re-adds `nickname` empty."""
    run = dbmate_run
    assert run.code == 1, run.lines
    assert verdicts(run) == ["PASS", "PASS", "FAIL", "PASS"], "\n".join(run.lines)
    assert run.lines[1] == (
        "PASS    exit 0  2-20240102120000 (email lower index): passed: revert, restore "
        "(not applicable: read-only, transaction) -> " + str(run.out / "2-20240102120000")
    )
    assert (
        "accounts: 25 rows differ; nickname: 25 values lost (set before, NULL now)"
        in (run.lines[2])
    )
    assert validate_packet(run.out).overall is Verdict.FAIL


@pytest.fixture(scope="module")
def liquibase_run(
    sources: Sources, pg_servers: Servers, tmp_path_factory: pytest.TempPathFactory
) -> Run:
    _name, dsn = sources.make("")
    out = tmp_path_factory.mktemp("liquibase") / "packets"
    return rehearse_dir(DATA / "liquibase" / "pgstore", dsn, pg_servers.scratch, out)


def test_liquibase_formatted_sql_on_postgres(liquibase_run: Run) -> None:
    """ann:2 adds a foreign key to `customers` (declared as a read, so the rehearsal's role
    may REFERENCES it); bob:3's rollback re-adds `email` empty; bob:4 runs outside a
    transaction."""
    run = liquibase_run
    assert run.code == 1, run.lines
    assert verdicts(run) == ["PASS", "PASS", "FAIL", "PASS", "PASS"], "\n".join(run.lines)
    assert (
        "table customers: 2 rows differ; email: 2 values lost (set before, NULL now)"
        in (run.lines[2])
    )
    assert "(not applicable: read-only, transaction)" in run.lines[3]
    toml = (run.out / "2-ann-2" / "change" / "change.toml").read_text()
    assert 'reads = ["customers"]' in toml
    assert validate_packet(run.out).overall is Verdict.FAIL
