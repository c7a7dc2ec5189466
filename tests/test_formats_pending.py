"""What a source has deployed, read from each tool's own bookkeeping, read-only.

sqitch's registry is made by the real sqitch (Debian's package, with its SQLite driver:
`scripts/test` installs it as root; elsewhere these tests skip, and in CI they fail without it),
and rollproof's pending set must equal the "Undeployed changes" `sqitch status` reports.
Flyway and Liquibase are Java tools that no package registry here installs: their tables are
made by hand with the column layout the tools document (Flyway's `flyway_schema_history`,
Liquibase's `DATABASECHANGELOG`), holding the rows those tools write.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from rollproof.cli import main
from rollproof.core.errors import ExitCode
from rollproof.formats.bookkeeping import deployed_ids, sqitch_registry
from rollproof.formats.detect import load_project

DATA = Path(__file__).parent / "data" / "formats"
FLIPR = DATA / "sqitch" / "flipr"
SHOP = DATA / "flyway" / "shop"
STORE = DATA / "liquibase" / "store"


def plan_states(
    directory: Path, source: Path, capsys: pytest.CaptureFixture[str]
) -> dict[str, str]:
    assert main(["plan", str(directory), "--source", str(source), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    return {m["id"]: m["state"] for m in doc["migrations"]}


def empty_source(tmp_path: Path, name: str = "prod.db") -> Path:
    path = tmp_path / "prod" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    sqlite3.connect(path).close()
    return path


# --- sqitch -----------------------------------------------------------------------------------


def _need_sqitch() -> None:
    probe = shutil.which("sqitch") and subprocess.run(
        ["perl", "-MDBD::SQLite", "-e", "1"], capture_output=True, check=False
    )
    if not probe or probe.returncode != 0:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(
                "sqitch (with DBD::SQLite) is not installed in CI: scripts/test installs it"
            )
        pytest.skip("sqitch with DBD::SQLite is not installed (scripts/test installs it as root)")


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


def flipr_copy(tmp_path: Path) -> Path:
    """flipr, less its `!legacy_flips` conflict: sqitch refuses a conflict with a change that is
    not in the plan, so the copy is the plan sqitch itself deploys."""
    project = tmp_path / "flipr"
    shutil.copytree(FLIPR, project)
    plan = project / "sqitch.plan"
    plan.write_text(plan.read_text().replace(" !legacy_flips", ""))
    return project


def test_sqitch_change_ids_and_pending_match_sqitch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _need_sqitch()
    project = flipr_copy(tmp_path)
    source = empty_source(tmp_path, "flipr.db")
    target = f"db:sqlite:{source}"
    # No registry yet: what is deployed is not known (sqitch: "not initialized").
    assert deployed_ids(load_project(project), str(source)) is None
    deploy = sqitch(project, "deploy", "--to", "users", target)
    assert deploy.returncode == 0, deploy.stderr
    registry = sqitch_registry(source, "sqitch")
    assert registry == source.with_name("sqitch.db")
    assert registry.is_file()
    # rollproof computes the change ids sqitch records.
    with sqlite3.connect(registry) as conn:
        recorded = [str(r[0]) for r in conn.execute("SELECT change_id FROM changes")]
    p = load_project(project)
    assert recorded == [p.migrations[0].version]
    status = sqitch(project, "status", target)
    assert status.returncode == 0, status.stderr
    undeployed = status.stdout.split("Undeployed changes:\n", 1)[1].splitlines()
    sqitch_pending = [line.strip(" *").replace(" ", "") for line in undeployed if line.strip()]
    assert sqitch_pending == ["flips@v1.0", "flips"]
    before = hashlib.sha256(registry.read_bytes()).hexdigest()
    states = plan_states(project, source, capsys)
    assert [i for i, s in states.items() if s == "pending"] == sqitch_pending
    assert [i for i, s in states.items() if s == "deployed"] == ["users"]
    assert hashlib.sha256(registry.read_bytes()).hexdigest() == before  # read-only
    # Every change deployed, ids of the reworked change included: nothing pending.
    assert sqitch(project, "deploy", target).returncode == 0
    with sqlite3.connect(registry) as conn:
        recorded = [str(r[0]) for r in conn.execute("SELECT change_id FROM changes")]
    assert sorted(recorded) == sorted(str(m.version) for m in load_project(project).migrations)
    assert set(plan_states(project, source, capsys).values()) == {"deployed"}
    code = main(["rehearse-dir", str(project), "--source", str(source)])
    assert code == 0
    assert "sqitch: nothing pending" in capsys.readouterr().out


def test_sqitch_registry_change_not_in_plan_is_refused_as_sqitch_refuses_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _need_sqitch()
    project = flipr_copy(tmp_path)
    source = empty_source(tmp_path, "flipr.db")
    target = f"db:sqlite:{source}"
    assert sqitch(project, "deploy", "--to", "users", target).returncode == 0
    old_id = load_project(project).migrations[0].version
    plan = project / "sqitch.plan"
    plan.write_text(plan.read_text().replace("track our users.", "track users."))
    refused = sqitch(project, "status", target)
    assert refused.returncode != 0
    assert "Cannot find this change in sqitch.plan" in refused.stderr
    assert main(["plan", str(project), "--source", str(source)]) == ExitCode.USAGE
    assert (
        f"sqitch registry {source.with_name('sqitch.db')}: the last change deployed, users "
        f"({old_id}), is not in sqitch.plan: sqitch refuses this too"
    ) in capsys.readouterr().err


def test_sqitch_change_ids_are_the_ones_sqitch_records(tmp_path: Path) -> None:
    """The ids sqitch 1.3.1 recorded in its registry when it deployed this plan (the reworked
    `flips` included): computed here without sqitch."""
    p = load_project(flipr_copy(tmp_path))
    assert [(m.id, m.version) for m in p.migrations] == [
        ("users", "895f5b61262c5278193eed255bad1aa45e1aee3e"),
        ("flips@v1.0", "df635ccc611ec48c0d9dd819221039db8b7520b5"),
        ("flips", "0d5b9236c6d63016cb7c54186173eb5f5ea425b7"),
    ]


def test_sqitch_registry_location_follows_sqitch() -> None:
    target = Path("/data/flipr.db")
    assert sqitch_registry(target, "sqitch") == Path("/data/sqitch.db")
    assert sqitch_registry(target, "meta.sqlite") == Path("/data/meta.sqlite")
    assert sqitch_registry(Path("/data/flipr"), "sqitch") == Path("/data/sqitch")
    assert sqitch_registry(target, "/var/reg.db") == Path("/var/reg.db")


# --- Flyway -----------------------------------------------------------------------------------

FLYWAY_TABLE = """
CREATE TABLE flyway_schema_history (
    installed_rank INT NOT NULL PRIMARY KEY,
    version VARCHAR(50),
    description VARCHAR(200) NOT NULL,
    type VARCHAR(20) NOT NULL,
    script VARCHAR(1000) NOT NULL,
    checksum INT,
    installed_by VARCHAR(100) NOT NULL,
    installed_on TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    execution_time INT NOT NULL,
    success BOOLEAN NOT NULL
);
"""


def flyway_source(tmp_path: Path, rows: list[tuple[object, ...]], *, apply: list[str]) -> Path:
    """A source with the given flyway_schema_history rows (rank, version, description, type,
    script, success) and the named migrations' SQL applied, as Flyway would leave it."""
    source = empty_source(tmp_path, "shop.db")
    conn = sqlite3.connect(source)
    conn.executescript(FLYWAY_TABLE)
    for rank, version, description, kind, script, success in rows:
        conn.execute(
            "INSERT INTO flyway_schema_history (installed_rank, version, description, type, "
            "script, checksum, installed_by, execution_time, success) "
            "VALUES (?, ?, ?, ?, ?, 0, 'flyway', 3, ?)",
            (rank, version, description, kind, script, success),
        )
    for name in apply:
        conn.executescript((SHOP / name).read_text())
    conn.commit()
    conn.close()
    return source


def test_flyway_schema_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows: list[tuple[object, ...]] = [
        (1, "1", "create items", "SQL", "V1__create_items.sql", 1),
        (2, "1.9", "add stock", "SQL", "V1.9__add_stock.sql", 1),
    ]
    source = flyway_source(tmp_path, rows, apply=["V1__create_items.sql", "V1.9__add_stock.sql"])
    assert plan_states(SHOP, source, capsys) == {
        "1": "deployed",
        "1.9": "deployed",
        "1.10": "pending",
        "R__item_view": "pending",
    }
    out = tmp_path / "packets"
    code = main(["rehearse-dir", str(SHOP), "--source", str(source), "--out", str(out)])
    assert code == 0, capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        "3-1.10",
        "4-R__item_view",
        "range-1.10-to-R__item_view",
    ]


def test_flyway_baseline_undo_and_repeatable(tmp_path: Path) -> None:
    rows: list[tuple[object, ...]] = [
        (1, "1.9", "<< Flyway Baseline >>", "BASELINE", "<< Flyway Baseline >>", 1),
        (2, "1.10", "index sku", "SQL", "V1.10__index_sku.sql", 1),
        (3, "1.10", "index sku", "UNDO_SQL", "U1.10__index_sku.sql", 1),
        (4, None, "item view", "SQL", "R__item_view.sql", 1),
    ]
    source = flyway_source(tmp_path, rows, apply=[])
    assert deployed_ids(load_project(SHOP), str(source)) == {"1", "1.9", "R__item_view"}


def test_flyway_failed_row_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows: list[tuple[object, ...]] = [
        (1, "1", "create items", "SQL", "V1__create_items.sql", 1),
        (2, "1.9", "add stock", "SQL", "V1.9__add_stock.sql", 0),
    ]
    source = flyway_source(tmp_path, rows, apply=["V1__create_items.sql"])
    assert main(["rehearse-dir", str(SHOP), "--source", str(source)]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.strip() == (
        f"rollproof: source {source}: flyway_schema_history row 2 (SQL 1.9, "
        "V1.9__add_stock.sql) failed (success = false): Flyway will not migrate until it is "
        "repaired (flyway repair)"
    )


# --- Liquibase --------------------------------------------------------------------------------

DATABASECHANGELOG = """
CREATE TABLE DATABASECHANGELOG (
    ID VARCHAR(255) NOT NULL,
    AUTHOR VARCHAR(255) NOT NULL,
    FILENAME VARCHAR(255) NOT NULL,
    DATEEXECUTED TEXT NOT NULL,
    ORDEREXECUTED INTEGER NOT NULL,
    EXECTYPE VARCHAR(10) NOT NULL,
    MD5SUM VARCHAR(35),
    DESCRIPTION VARCHAR(255),
    COMMENTS VARCHAR(255),
    TAG VARCHAR(255),
    LIQUIBASE VARCHAR(20),
    CONTEXTS VARCHAR(255),
    LABELS VARCHAR(255),
    DEPLOYMENT_ID VARCHAR(10)
);
"""


def liquibase_source(tmp_path: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    """A source with DATABASECHANGELOG rows (ID, AUTHOR, FILENAME, EXECTYPE) and the first
    changesets' SQL applied, as `liquibase update` would leave it."""
    source = empty_source(tmp_path, "store.db")
    conn = sqlite3.connect(source)
    conn.executescript(DATABASECHANGELOG)
    p = load_project(STORE)
    for n, (cid, author, filename, exectype) in enumerate(rows, 1):
        conn.execute(
            "INSERT INTO DATABASECHANGELOG (ID, AUTHOR, FILENAME, DATEEXECUTED, ORDEREXECUTED, "
            "EXECTYPE, MD5SUM, DESCRIPTION, LIQUIBASE, DEPLOYMENT_ID) VALUES "
            "(?, ?, ?, '2024-05-01 10:00:00', ?, ?, '9:0', 'sql', '4.29.2', '1')",
            (cid, author, filename, n, exectype),
        )
        conn.executescript(p.migrations[n - 1].apply.text)
    conn.commit()
    conn.close()
    return source


def test_databasechangelog(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Liquibase records FILENAME as it was given the changelog: here from a parent directory.
    rows = [
        ("1", "ann", "db/store/changelog.sql", "EXECUTED"),
        ("2", "ann", "db/store/changelog.sql", "MARK_RAN"),
    ]
    source = liquibase_source(tmp_path, rows)
    assert plan_states(STORE, source, capsys) == {
        "ann:1": "deployed",
        "ann:2": "deployed",
        "bob:3": "pending",
        "bob:4": "pending",
    }
    out = tmp_path / "packets"
    code = main(["rehearse-dir", str(STORE), "--source", str(source), "--out", str(out)])
    assert code == 0, capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        "3-bob-3",
        "4-bob-4",
        "range-bob-3-to-bob-4",
    ]


def test_databasechangelog_other_file_or_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Another changelog's changeset with the same ID and AUTHOR is not this one.
    source = liquibase_source(tmp_path / "a", [("1", "ann", "other/changelog2.sql", "EXECUTED")])
    assert deployed_ids(load_project(STORE), str(source)) == frozenset()
    source = liquibase_source(tmp_path / "b", [("1", "ann", "changelog.sql", "FAILED")])
    assert main(["plan", str(STORE), "--source", str(source)]) == ExitCode.USAGE
    assert (
        f"source {source}: DATABASECHANGELOG records changeset ann:1 (changelog.sql) as "
        "FAILED: fix the database before rehearsing what comes next"
    ) in capsys.readouterr().err
