"""The PostgreSQL path through the command line, as a user runs it: rehearse into a packet, then
the packet's own commands.sh and RERUN.sh as real subprocesses, and `rollproof fingerprint`."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rollproof.cli import main
from rollproof.core.model import LegName, Verdict
from rollproof.core.policy import load_policy
from rollproof.engines.postgres.source import fingerprint_source
from rollproof.rehearse.flow import rehearse
from tests.pg_fixtures import (
    MakePgChange,
    MakeSource,
    Servers,
    admin,
    make_pg_change_fixture,  # noqa: F401  (fixture)
    pg_servers_fixture,  # noqa: F401  (fixture)
    pg_source_fixture,  # noqa: F401  (fixture)
    with_db,
)

SOURCE = """
CREATE TABLE items (id serial PRIMARY KEY, label text NOT NULL, qty integer);
INSERT INTO items (label, qty) SELECT 'item ' || i, i FROM generate_series(1, 40) AS i;
"""


def run(script: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["ROLLPROOF"] = f"{sys.executable} -m rollproof"
    return subprocess.run(
        ["bash", str(script)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_postgres_packet_reproduces_with_its_scratch_server(
    pg_servers: Servers,
    pg_source: MakeSource,
    make_pg_change: MakePgChange,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dsn = pg_source(SOURCE)
    change = make_pg_change(
        "UPDATE items SET qty = qty + 1 WHERE id <= 10;",
        "UPDATE items SET qty = qty - 1 WHERE id <= 10;",
        surfaces='writes = ["items"]\n',
    )
    packet = tmp_path / "packet"
    code = main(
        [
            "rehearse",
            str(change.directory),
            "--source",
            dsn,
            "--scratch",
            pg_servers.scratch,
            "--out",
            str(packet),
            "--legs",
            "transaction,revert",
        ]
    )
    assert code == 0, capsys.readouterr()
    report = json.loads((packet / "report.json").read_text())
    assert report["source"]["scratch"] == pg_servers.scratch
    assert f"--scratch {pg_servers.scratch}" in (packet / "commands.sh").read_text().replace(
        "'", ""
    )
    assert main(["validate", str(packet)]) == 0

    work = tmp_path / "elsewhere"
    work.mkdir()
    commands = run(packet / "commands.sh", work)
    assert commands.returncode == 0, commands.stdout + commands.stderr
    assert "\nOVERALL PASS" in commands.stdout
    rerun = run(packet / "RERUN.sh", work)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "PASS/MATCH" in rerun.stdout


def test_fingerprint_command_takes_a_postgresql_dsn(
    pg_source: MakeSource, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = pg_source(SOURCE)
    assert main(["fingerprint", dsn, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == fingerprint_source(dsn).to_json()
    assert printed["engine"] == "postgresql"
    assert printed["tables"]["items"]["rows"] == 40


def test_forbidden_environment_never_reaches_pg_dump(
    pg_servers: Servers,
    pg_source: MakeSource,
    make_pg_change: MakePgChange,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    planted = "planted-" + os.urandom(6).hex()
    monkeypatch.setenv("DEPLOY_TOKEN", planted)
    (tmp_path / "rollproof.toml").write_text('[forbidden]\nenv = ["DEPLOY_TOKEN"]\n')
    policy = load_policy(tmp_path / "rollproof.toml")
    dsn = pg_source(SOURCE)
    change = make_pg_change(
        "UPDATE items SET qty = 0 WHERE id = 1;",
        "UPDATE items SET qty = 1 WHERE id = 1;",
        surfaces='writes = ["items"]\n',
    )
    seen: list[tuple[str, bytes]] = []
    stop = threading.Event()

    def watch() -> None:  # every pg_dump / pg_restore process's environment, while it runs
        while not stop.is_set():
            for proc in Path("/proc").iterdir():
                with contextlib.suppress(OSError):
                    cmdline = (proc / "cmdline").read_bytes()
                    if b"pg_dump" in cmdline or b"pg_restore" in cmdline:
                        seen.append(
                            (cmdline.decode(errors="replace"), (proc / "environ").read_bytes())
                        )
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = rehearse(
            change, dsn, scratch=pg_servers.scratch, policy=policy, legs=[LegName.REVERT]
        )
    finally:
        stop.set()
        watcher.join()
    assert result.overall is Verdict.PASS
    assert seen, "the watcher never saw pg_dump run"
    assert not [cmd for cmd, env in seen if planted.encode() in env]
    [env_status] = [f for f in result.surfaces.forbidden if f.kind == "env"]
    assert (env_status.name, str(env_status.status)) == ("DEPLOY_TOKEN", "not-requested")


def test_a_team_ledger_in_postgresql_governs_a_rehearsal(
    pg_servers: Servers,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A governed workspace whose ledger lives on a PostgreSQL server: the validator pin, the
    # grant's consumption, the rehearsal and a refused replay all land there and verify.
    from tests.test_governance_cli import make_workspace

    ledger_db = "rp_ledger_" + os.urandom(4).hex()
    with admin(pg_servers.scratch) as conn:
        conn.execute(f'CREATE DATABASE "{ledger_db}"')
    ledger_dsn = with_db(pg_servers.scratch, ledger_db)
    # `init --ledger DSN` records the first policy and the validator pin in the team's ledger.
    ws = make_workspace(tmp_path, monkeypatch, capsys, ledger=ledger_dsn)
    assert f'ledger = "{ledger_dsn}"' in (ws.dir / "rollproof.toml").read_text()
    assert not (ws.dir / ".rollproof" / "ledger.db").exists()

    ws.ok("ledger", "pin", "--key", "keys/alice.key")
    grant = ws.issue("team.grant")
    assert ws.rehearse("--grant", str(grant), out="packets/first").code == 0
    replay = ws.rehearse("--grant", str(grant), out="packets/again")
    assert replay.code == 3
    assert ws.ok("ledger", "verify").code == 0
    with admin(ledger_dsn) as conn:
        kinds = [
            r[0] for r in conn.execute("SELECT kind FROM rollproof_ledger.events ORDER BY seq")
        ]
    assert kinds.count("grant.consumed") == 1
    assert kinds.count("grant.refused") == 1
    assert "rehearsal.recorded" in kinds
