"""Scratch leftovers (issue 14): a killed PostgreSQL rehearsal's databases and role are swept by
`rollproof gc --scratch` and by the next rehearsal's start, never a live run's, never a kept
clone's, never an object rollproof did not mark as its own.

Real rehearsals in subprocesses, SIGKILLed at a named step by the kill hook, against the test
scratch server; the live run is a session this test process holds open.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from psycopg import sql

from rollproof.core.guard import SurfaceGuard
from rollproof.core.steps import KILL_AT_ENV, Step
from rollproof.engines.postgres.sweep import NAME, Owner, owner_gone, parse_owner
from rollproof.engines.workspace import make_owned_dir
from tests.pg_fixtures import (
    MakePgChange,
    MakeSource,
    Servers,
    admin,
    database_names,
    make_pg_change_fixture,  # noqa: F401  (fixture)
    pg_servers_fixture,  # noqa: F401  (fixture)
    pg_source_fixture,  # noqa: F401  (fixture)
    role_names,
)

SOURCE = """
CREATE TABLE items (id serial PRIMARY KEY, label text NOT NULL, qty integer);
INSERT INTO items (label, qty) SELECT 'item ' || i, i FROM generate_series(1, 40) AS i;
"""


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != KILL_AT_ENV}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "rollproof", *argv],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _ours(scratch: str) -> set[str]:
    """Every rollproof-named database and role on the scratch server."""
    names = database_names(scratch) | role_names(scratch)
    return {n for n in names if NAME.match(n)}


def _killed_run(scratch: str, dsn: str, change: Path, cwd: Path, tmp: Path, step: Step) -> set[str]:
    """Run a rehearsal killed at `step`; return the scratch objects it left."""
    before = _ours(scratch)
    argv = ["rehearse", str(change), "--source", dsn, "--scratch", scratch, "--out", str(cwd / "p")]
    killed = _run(argv, cwd, {"TMPDIR": str(tmp), KILL_AT_ENV: step.value})
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    left = _ours(scratch) - before
    # snapshot, clone, change role, and the next clone when it was being copied in the background
    assert (
        {"snap", "work", "change"}
        <= {n.rsplit("_", 1)[1] for n in left}
        <= {
            "snap",
            "work",
            "change",
            "next",
        }
    ), left
    return left


def _drop(scratch: str, names: set[str]) -> None:
    with admin(scratch) as conn:
        for name in sorted(names, key=lambda n: n.endswith("_change")):
            ident = sql.Identifier(name)
            if name.endswith("_change"):
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident))
            else:
                conn.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(ident))
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))


# --- who is dead: the rule, without a server -------------------------------------------------


def test_an_owner_is_gone_only_when_provably_so(tmp_path: Path) -> None:
    host = socket.gethostname()
    live = make_owned_dir("rollproof-pg-", tmp_path)  # this process holds its lock
    try:
        alive = Owner(host, os.getpid(), None, str(live.directory))
        assert owner_gone(alive) is None
        assert owner_gone(Owner("another-host", 1, None, "/nowhere")) is None
        gone = Owner(host, 2**22 + 7, "1", str(tmp_path / "removed-workspace"))
        assert owner_gone(gone) == (
            f"its workspace {tmp_path / 'removed-workspace'} is gone and process "
            f"{2**22 + 7} has ended"
        )
        assert owner_gone(Owner(host, 2**22 + 7, "1", "/x", kept=True)) is None
        # The same workspace with its lock free: its run is gone, whatever the pid says.
        live.release()
        assert owner_gone(alive) == f"its workspace {live.directory} is no longer locked"
        (live.directory / "KEPT").write_text("kept\n")
        assert owner_gone(alive) is None
    finally:
        live.release()
    assert parse_owner("a comment someone wrote") is None
    assert parse_owner(json.dumps({"rollproof": "other", "host": host})) is None
    assert parse_owner(alive.comment()) == alive


# --- against the scratch server ----------------------------------------------------------------


def test_gc_sweeps_a_killed_runs_objects_and_spares_a_live_runs_and_foreign_ones(
    pg_servers: Servers,
    pg_source: MakeSource,
    make_pg_change: MakePgChange,
    tmp_path: Path,
) -> None:
    from rollproof.engines.postgres.session import PostgresSession

    dsn = pg_source(SOURCE)
    change = make_pg_change(
        "UPDATE items SET qty = 0;", "UPDATE items SET qty = id;", surfaces='writes = ["items"]\n'
    )
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    # Not rollproof's: a database with a rollproof name and no owner record, and one whose
    # record names a run on another host (whose lock cannot be seen from here).
    foreign = {"rollproof_0badc0de_snap", "rollproof_0badc0df_work"}
    with admin(pg_servers.scratch) as conn:
        for name in foreign:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        other = Owner("another-host", 1, None, "/tmp/rollproof-pg-x")
        conn.execute(
            sql.SQL("COMMENT ON DATABASE rollproof_0badc0df_work IS {}").format(
                sql.Literal(other.comment())
            )
        )
    # A live run, held open by this process while another is killed and gc runs.
    live = PostgresSession(
        dsn,
        scratch=pg_servers.scratch,
        workdir=tmp,
        guard=SurfaceGuard(reads=[], writes=["items"]),
    )
    try:
        mine = {live.snapshot_db, f"rollproof_{live._tag}_change"}
        assert mine <= _ours(pg_servers.scratch)
        dead = _killed_run(
            pg_servers.scratch, dsn, change.directory, tmp_path, tmp, Step.CLONE_MADE
        )
        comments = {}
        with admin(pg_servers.scratch) as conn:
            for name, comment in conn.execute(
                "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
                "UNION ALL SELECT rolname, shobj_description(oid, 'pg_authid') FROM pg_roles"
            ).fetchall():
                if name in dead:
                    comments[name] = parse_owner(comment)
        owners = set(comments.values())
        assert len(owners) == 1  # one owner record, on each of the three
        (owner,) = owners
        assert owner is not None
        assert owner.workspace.startswith(str(tmp))

        gc = _run(["gc", "--scratch", pg_servers.scratch, "--json"], tmp_path, {"TMPDIR": str(tmp)})
        assert gc.returncode == 0, gc.stdout + gc.stderr
        (server,) = json.loads(gc.stdout)["scratch"]
        fate = {o["name"]: o for o in server["objects"]}
        assert {n for n, o in fate.items() if o["removed"]} == dead
        assert _ours(pg_servers.scratch) & dead == set()
        assert mine <= _ours(pg_servers.scratch)  # the live run's survive
        assert "may still be alive" in fate[live.snapshot_db]["why"]
        assert foreign <= _ours(pg_servers.scratch)
        assert fate["rollproof_0badc0de_snap"]["why"].startswith("no owner record")
        assert "host another-host" in fate["rollproof_0badc0df_work"]["why"]
        assert live.workspace.exists()  # its workspace, under the same TMPDIR, too
    finally:
        live.close(keep=False)
        _drop(pg_servers.scratch, foreign)
    assert _ours(pg_servers.scratch) == set()


def test_the_next_rehearsal_sweeps_a_killed_runs_objects_at_its_start(
    pg_servers: Servers,
    pg_source: MakeSource,
    make_pg_change: MakePgChange,
    tmp_path: Path,
) -> None:
    dsn = pg_source(SOURCE)
    change = make_pg_change(
        "UPDATE items SET qty = 0;", "UPDATE items SET qty = id;", surfaces='writes = ["items"]\n'
    )
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    dead = _killed_run(pg_servers.scratch, dsn, change.directory, tmp_path, tmp, Step.SCRIPT_RUN)
    argv = ["rehearse", str(change.directory), "--source", dsn, "--scratch", pg_servers.scratch]
    again = _run([*argv, "--out", str(tmp_path / "again")], tmp_path, {"TMPDIR": str(tmp)})
    assert again.returncode == 0, again.stdout + again.stderr
    # Swept by the run itself (no gc ran): the dead run's three objects, and its own.
    assert _ours(pg_servers.scratch) & dead == set()
    assert _ours(pg_servers.scratch) == set()


@pytest.mark.parametrize("scratch", ["mysql://u:secret@h/db"])
def test_gc_refuses_a_scratch_that_is_not_postgresql(tmp_path: Path, scratch: str) -> None:
    proc = _run(["gc", "--scratch", scratch], tmp_path, {"TMPDIR": str(tmp_path)})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "rollproof: --scratch mysql://u@h/db: name a PostgreSQL server (postgresql://…)"
    ]


def test_a_kept_clone_is_never_swept(
    pg_servers: Servers,
    pg_source: MakeSource,
    make_pg_change: MakePgChange,
    tmp_path: Path,
) -> None:
    dsn = pg_source(SOURCE)
    change = make_pg_change(
        "UPDATE items SET qty = 0;", "UPDATE items SET qty = id;", surfaces='writes = ["items"]\n'
    )
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    argv = ["rehearse", str(change.directory), "--source", dsn, "--scratch", pg_servers.scratch]
    kept = _run(
        [*argv, "--keep-clone", "--out", str(tmp_path / "p")], tmp_path, {"TMPDIR": str(tmp)}
    )
    assert kept.returncode == 0, kept.stdout + kept.stderr
    left = _ours(pg_servers.scratch)
    assert len(left) == 3
    workspace = next(p for p in tmp.iterdir() if p.name.startswith("rollproof-pg-"))
    try:
        shutil.rmtree(workspace)  # even with its workspace gone, the record says kept
        gc = _run(["gc", "--scratch", pg_servers.scratch], tmp_path, {"TMPDIR": str(tmp)})
        assert gc.returncode == 0, gc.stderr
        assert _ours(pg_servers.scratch) == left
        assert "kept with --keep-clone" in gc.stdout
    finally:
        _drop(pg_servers.scratch, left)
