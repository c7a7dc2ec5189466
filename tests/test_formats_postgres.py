"""`rollproof rehearse-dir` and `rollproof plan` on a PostgreSQL source (two real servers).

Each position after the first is the engine's own clone on the scratch server with the earlier
migrations applied, handed to the rehearsal as a pg_dump archive; the first position is the
source itself. The `pg_source` fixture fingerprints every source database when it is made and
again at teardown (a rehearsal that changed it fails there) and checks that no scratch database
is left behind. sqitch is the real one (Debian's package, with DBD::Pg), deploying into the
source before rollproof reads its registry.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
from psycopg import sql

from rollproof.cli import main
from rollproof.core.model import Verdict
from rollproof.engines.postgres.source import fingerprint_source
from rollproof.formats.detect import load_project
from rollproof.verify.reader import validate_packet
from tests.pg_fixtures import MakeSource, Servers, admin, pg_servers_fixture, pg_source_fixture

__all__ = ["pg_servers_fixture", "pg_source_fixture"]

DATA = Path(__file__).parent / "data" / "formats"
FLYWAY = DATA / "flyway" / "pgprofiles"
GOOSE = DATA / "goose" / "pgprofiles"
PGFLIPR = DATA / "sqitch" / "pgflipr"
USERS = """
CREATE TABLE users (id integer PRIMARY KEY, name text NOT NULL);
INSERT INTO users SELECT i, 'user' || i FROM generate_series(1, 40) AS i;
"""
LOST = "table profiles: 40 rows differ; bio: 40 values lost (set before, NULL now)"


def rehearse_dir(project: Path, source: str, servers: Servers, out: Path, *extra: str) -> int:
    return main(
        [
            "rehearse-dir",
            str(project),
            "--source",
            source,
            "--scratch",
            servers.scratch,
            "--out",
            str(out),
            *extra,
        ]
    )


@pytest.mark.parametrize("project", [FLYWAY, GOOSE], ids=["flyway", "goose"])
def test_postgres_positions_find_the_lossy_down_the_range_hides(
    project: Path,
    pg_servers: Servers,
    pg_source: MakeSource,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Migration 2 of 3 drops `profiles.bio` and its down adds it back empty: at its position
    (migration 1 applied in the scratch clone) it FAILS naming the lost bios; the range 1..3
    passes, because migration 1's down drops the table the bios lived in."""
    source = pg_source(USERS)
    before = fingerprint_source(source).digest
    out = tmp_path / "packets"
    code = rehearse_dir(project, source, pg_servers, out)
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert code == 1, text
    assert [line.split()[0] for line in lines[:4]] == ["PASS", "FAIL", "PASS", "PASS"], text
    assert lines[1].startswith("FAIL    exit 1  2-2 (drop profile bio): revert: "), text
    assert LOST in lines[1]
    assert lines[3].startswith("PASS    exit 0  range-1-to-3: ")
    assert (
        f"3 of 3 {load_project(project).format} migrations rehearsed; source unchanged "
        f"(content fingerprint {before})"
    ) in text
    assert fingerprint_source(source).digest == before
    for name in ("1-1", "2-2", "3-3", "range-1-to-3"):
        verified = validate_packet(out / name)
        assert verified.overall is (Verdict.FAIL if name == "2-2" else Verdict.PASS)
    whole = validate_packet(out)  # the range packet: RANGE.json bound to all four
    assert whole.overall is Verdict.FAIL
    assert [p.change_id for p in whole.parts] == ["1", "2", "3", "range-1-to-3"]
    # Migration 1 and the range ran at the source itself; 2 and 3 on positions (dumps).
    sources = {
        name: json.loads((out / name / "report.json").read_text())["source"]
        for name in ("1-1", "2-2", "range-1-to-3")
    }
    assert sources["1-1"]["engine"] == "postgresql"
    assert sources["1-1"]["dsn"] == sources["range-1-to-3"]["dsn"]
    assert sources["2-2"]["dsn"].startswith("pgdump:")
    assert sources["2-2"]["dump"]["format"] == "pg-custom"


def _flyway_history(rows: list[tuple[int, str | None, str, str, str, bool]]) -> str:
    values = ", ".join(
        f"({rank}, {'NULL' if v is None else repr(v)}, {d!r}, {t!r}, {s!r}, {str(ok).lower()})"
        for rank, v, d, t, s, ok in rows
    )
    return f"""
    CREATE TABLE flyway_schema_history (
        installed_rank integer PRIMARY KEY, version varchar(50), description varchar(200),
        type varchar(20) NOT NULL, script varchar(1000) NOT NULL, checksum integer,
        installed_by varchar(100) NOT NULL DEFAULT 'flyway',
        installed_on timestamp NOT NULL DEFAULT now(), execution_time integer NOT NULL DEFAULT 1,
        success boolean NOT NULL);
    INSERT INTO flyway_schema_history
        (installed_rank, version, description, type, script, success) VALUES {values};
    """


def plan(project: Path, source: str, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    assert main(["plan", str(project), "--source", source, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    return {m["id"]: m["state"] for m in doc["migrations"]}


def test_pending_on_postgres_equals_the_recorded_bookkeeping(
    pg_source: MakeSource, capsys: pytest.CaptureFixture[str]
) -> None:
    """Flyway's history (with an undo and a failed-then-fixed shape), goose's version table
    and dbmate's and golang-migrate's schema_migrations, each read read-only from a
    PostgreSQL source: the pending set is what the tool's own rows say."""
    flyway = pg_source(
        USERS
        + _flyway_history(
            [
                (1, "1", "create profiles", "SQL", "V1__create_profiles.sql", True),
                (2, "2", "drop profile bio", "SQL", "V2__drop_profile_bio.sql", True),
                (3, "2", "drop profile bio", "UNDO_SQL", "U2__drop_profile_bio.sql", True),
            ]
        )
    )
    assert plan(FLYWAY, flyway, capsys) == {"1": "deployed", "2": "pending", "3": "pending"}
    goose = pg_source(
        USERS
        + """
        CREATE TABLE goose_db_version (id serial PRIMARY KEY, version_id bigint NOT NULL,
            is_applied boolean NOT NULL, tstamp timestamp DEFAULT now());
        INSERT INTO goose_db_version (version_id, is_applied)
            VALUES (0, true), (1, true), (2, true), (2, false), (3, true);
        """
    )
    assert plan(GOOSE, goose, capsys) == {"1": "deployed", "2": "pending", "3": "deployed"}
    nothing = pg_source(USERS)
    assert plan(GOOSE, nothing, capsys) == {"1": "pending", "2": "pending", "3": "pending"}
    failed = pg_source(
        _flyway_history([(1, "1", "create profiles", "SQL", "V1__create_profiles.sql", False)])
    )
    assert main(["plan", str(FLYWAY), "--source", failed]) == 2
    err = capsys.readouterr().err
    assert "flyway_schema_history row 1 (SQL 1, V1__create_profiles.sql) failed" in err


def _need_sqitch_pg() -> None:
    probe = shutil.which("sqitch") and subprocess.run(
        ["perl", "-MDBD::Pg", "-e", "1"], capture_output=True, check=False
    )
    if not probe or probe.returncode != 0:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("sqitch with DBD::Pg is not installed in CI")
        pytest.skip("sqitch with DBD::Pg is not installed")


def sqitch(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(project),
        "SQITCH_FULLNAME": "Test Deployer",
        "SQITCH_EMAIL": "deployer@example.com",
        "SQITCH_USER_CONFIG": str(project / "no-user.conf"),
        "SQITCH_SYSTEM_CONFIG": str(project / "no-system.conf"),
        "LC_ALL": "C.UTF-8",
    }
    return subprocess.run(
        ["sqitch", *args], cwd=project, env=env, capture_output=True, text=True, timeout=120
    )


def test_sqitch_on_postgres_registry_and_self_bracketing_deploy(
    pg_servers: Servers,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The real sqitch deploys `users` into the source (its registry is the schema `sqitch`
    there); rollproof's pending set is what `sqitch status` lists undeployed, and the pending
    `flips` (a BEGIN ... COMMIT script) is rehearsed at the source and passes."""
    _need_sqitch_pg()
    name = f"rp_test_sqitch_{secrets.token_hex(4)}"
    with admin(pg_servers.source) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        _sqitch_on(pg_servers.source_db(name), pg_servers, tmp_path, capsys)
    finally:
        with admin(pg_servers.source) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _sqitch_on(
    source: str, pg_servers: Servers, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = tmp_path / "pgflipr"
    shutil.copytree(PGFLIPR, project)
    target = "db:" + source.replace("postgresql://", "pg://")
    deployed = sqitch(project, "deploy", "--to", "users", target)
    assert deployed.returncode == 0, deployed.stderr
    before = fingerprint_source(source).digest  # sqitch wrote it; rollproof must not
    status = sqitch(project, "status", target)
    undeployed = status.stdout.split("Undeployed change:")[-1].split("Undeployed changes:")[-1]
    sqitch_pending = [line.strip(" *") for line in undeployed.splitlines() if line.strip()]
    assert sqitch_pending == ["flips"]
    # The registry rows are sqitch's; rollproof's change ids are the ones it recorded.
    with admin(source) as conn:
        recorded = [str(r[0]) for r in conn.execute("SELECT change_id FROM sqitch.changes")]
    loaded = load_project(project)
    assert recorded == [loaded.migrations[0].version]
    assert plan(project, source, capsys) == {"users": "deployed", "flips": "pending"}
    out = tmp_path / "packets"
    code = rehearse_dir(project, source, pg_servers, out)
    text = capsys.readouterr().out
    assert code == 0, text
    assert "note: deploy/flips.sql: its BEGIN ... COMMIT is left out" in text
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        "2-flips",
        "range-flips-to-flips",
    ]
    report = json.loads((out / "2-flips" / "report.json").read_text())
    legs = {leg["name"]: leg["verdict"] for leg in report["legs"]}
    assert legs == {
        "read-only": "PASS",
        "transaction": "PASS",
        "revert": "PASS",
        "restore": "PASS",
    }
    assert fingerprint_source(source).digest == before
