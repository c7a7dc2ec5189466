"""PostgreSQL faults end as exit 4 naming the resource, never 70 and never a packet that blames
the change; libpq's own environment reaches pg_dump and pg_restore; kills at every step.

Every row runs the real CLI (`python -m rollproof`) in a subprocess against the two test servers
and asserts the exit code, exactly one line on stderr with the expected words, no traceback and
no packet. The `pg_source` fixture checks at teardown that the source's fingerprint did not
change and that no rollproof_* database is left on the scratch server; a test whose fault stops
rollproof's own cleanup (a stopped server, a kill) asserts that what the dead run left is there,
then has it removed (`rollproof gc --scratch`, or by hand for a server that was stopped).
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from rollproof.core.steps import KILL_AT_ENV, Step
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
WRITES = 'writes = ["items"]\n'
REVERT = "UPDATE items SET qty = id;"


def _run(
    argv: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != KILL_AT_ENV}
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "rollproof", *argv],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _rehearse_argv(change: Path, source: str, scratch: str, out: Path) -> list[str]:
    return ["rehearse", str(change), "--source", source, "--scratch", scratch, "--out", str(out)]


def _one_line(proc: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len(lines) == 1, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _leftovers(scratch: str) -> set[str]:
    return {n for n in database_names(scratch) if n.startswith("rollproof_")}


def _drop_leftovers(scratch: str) -> set[str]:
    """Drop what a dead run left on the scratch server (databases and its change role)."""
    left = _leftovers(scratch)
    with admin(scratch) as conn:
        templates = {
            str(r[0]) for r in conn.execute("SELECT datname FROM pg_database WHERE datistemplate")
        }
        for name in left:
            ident = sql.Identifier(name)
            if name in templates:  # (ALTER of a database killed mid-CREATE is FATAL)
                conn.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(ident))
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(ident))
        roles = conn.execute(
            "SELECT rolname FROM pg_roles WHERE rolname ~ '^rollproof_[0-9a-f]{8}_change$'"
        ).fetchall()
        for (role,) in roles:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(str(role))))
    return left


# --- faults of the server and the machine -------------------------------------------------------


def test_a_script_that_kills_its_own_connection_is_exit_4(
    pg_servers: Servers, pg_source: MakeSource, make_pg_change: MakePgChange, tmp_path: Path
) -> None:
    """57P01 (admin shutdown) under a change script: the server's doing, not a leg FAIL."""
    dsn = pg_source(SOURCE)
    change = make_pg_change(
        "UPDATE items SET qty = 0;\nSELECT pg_catalog.pg_terminate_backend(pg_backend_pid());",
        REVERT,
        surfaces=WRITES,
    )
    out = tmp_path / "out"
    proc = _run(_rehearse_argv(change.directory, dsn, pg_servers.scratch, out), tmp_path)
    _one_line(proc, 4, "shut down (administrator command)", "SQLSTATE 57P01", "scratch")
    assert not out.exists()
    assert "FAIL" not in proc.stdout


@pytest.fixture
def temp_file_limit(pg_servers: Servers) -> Iterator[None]:
    with admin(pg_servers.scratch) as conn:
        conn.execute("ALTER SYSTEM SET temp_file_limit = '1MB'")
        conn.execute("SELECT pg_reload_conf()")
    time.sleep(0.3)
    try:
        yield
    finally:
        with admin(pg_servers.scratch) as conn:
            conn.execute("ALTER SYSTEM RESET temp_file_limit")
            conn.execute("SELECT pg_reload_conf()")


def test_a_class_53_error_under_a_script_is_exit_4(
    pg_servers: Servers,
    pg_source: MakeSource,
    make_pg_change: MakePgChange,
    tmp_path: Path,
    temp_file_limit: None,
) -> None:
    """53400 configuration_limit_exceeded (temp_file_limit) stands in for a full disk."""
    dsn = pg_source(SOURCE)
    change = make_pg_change(
        "UPDATE items SET qty = 0;\n"
        "SELECT count(*) FROM (SELECT g::text FROM generate_series(1, 2000000) g "
        "ORDER BY 1 DESC OFFSET 0) s;",
        REVERT,
        surfaces=WRITES,
    )
    out = tmp_path / "out"
    proc = _run(_rehearse_argv(change.directory, dsn, pg_servers.scratch, out), tmp_path)
    _one_line(proc, 4, "resource limit", "SQLSTATE 53400")
    assert not out.exists()


def _cluster_of(dsn: str) -> tuple[str, str] | None:
    """(version, name) of the Debian cluster listening on the DSN's port, if pg_ctlcluster
    can manage it."""
    if shutil.which("pg_lsclusters") is None or shutil.which("pg_ctlcluster") is None:
        return None
    port = conninfo_to_dict(dsn).get("port")
    listed = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=False)
    for line in listed.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == str(port):
            return fields[0], fields[1]
    return None


def test_the_scratch_server_stopped_mid_leg_is_exit_4(
    pg_servers: Servers, pg_source: MakeSource, make_pg_change: MakePgChange, tmp_path: Path
) -> None:
    cluster = _cluster_of(pg_servers.scratch)
    if cluster is None:
        pytest.skip("the scratch server is not a pg_ctlcluster cluster")
    dsn = pg_source(SOURCE)
    change = make_pg_change(
        "UPDATE items SET qty = 0;\nSELECT pg_catalog.pg_sleep(60);", REVERT, surfaces=WRITES
    )
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != KILL_AT_ENV}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rollproof",
            *_rehearse_argv(change.directory, dsn, pg_servers.scratch, out),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with admin(pg_servers.scratch) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)%' "
                    "AND pid <> pg_backend_pid()"
                ).fetchone()
            if row is not None and row[0] > 0:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        else:
            pytest.fail("the script never started")
        subprocess.run(["pg_ctlcluster", *cluster, "stop", "-m", "immediate"], check=True)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        subprocess.run(["pg_ctlcluster", *cluster, "start"], check=True)
        _wait_for(pg_servers.scratch)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    _one_line(done, 4, "scratch")
    assert "SQLSTATE 57P01" in stderr or "connection" in stderr
    assert not out.exists()
    # The dead server could not be told to drop the rehearsal's databases: they stay.
    assert _drop_leftovers(pg_servers.scratch)


def _wait_for(dsn: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            admin(dsn).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _fake_tool(directory: Path, name: str, body: str) -> dict[str, str]:
    directory.mkdir(exist_ok=True)
    tool = directory / name
    tool.write_text("#!/bin/sh\n" + body)
    tool.chmod(0o755)
    return {"PATH": f"{directory}{os.pathsep}{os.environ.get('PATH', '')}"}


def _real(name: str) -> str:
    from rollproof.engines.postgres.tools import find_tool

    return find_tool(name)


@pytest.mark.parametrize(
    ("tool", "body", "words"),
    [
        ("pg_dump", "kill -KILL $$\n", ("pg_dump of the source was killed by SIGKILL",)),
        (
            "pg_dump",
            'echo "pg_dump: error: could not write to file: No space left on device" >&2\nexit 1\n',
            ("pg_dump of the source failed (exit 1)", "No space left on device"),
        ),
        ("pg_restore", "kill -KILL $$\n", ("pg_restore on the scratch server was killed",)),
    ],
    ids=["pg_dump-killed", "pg_dump-disk-full", "pg_restore-killed"],
)
def test_a_client_program_killed_or_failing_is_exit_4(
    pg_servers: Servers,
    pg_source: MakeSource,
    make_pg_change: MakePgChange,
    tmp_path: Path,
    tool: str,
    body: str,
    words: tuple[str, ...],
) -> None:
    dsn = pg_source(SOURCE)
    change = make_pg_change("UPDATE items SET qty = 0;", REVERT, surfaces=WRITES)
    if tool == "pg_restore":  # pg_dump must find the real one: it is not on PATH here
        _fake_tool(tmp_path / "bin", "pg_dump", f'exec {_real("pg_dump")} "$@"\n')
    env = _fake_tool(tmp_path / "bin", tool, body)
    out = tmp_path / "out"
    proc = _run(_rehearse_argv(change.directory, dsn, pg_servers.scratch, out), tmp_path, env)
    _one_line(proc, 4, *words)
    assert not out.exists()


# --- libpq's environment ------------------------------------------------------------------------


@pytest.fixture
def password_role(pg_servers: Servers, pg_source: MakeSource) -> Iterator[tuple[str, str, str]]:
    """(database DSN over TCP without a password, user, password) of a password-only role."""
    dsn = pg_source(SOURCE)
    user = f"rp_pw_{secrets.token_hex(3)}"
    password = f"Pl@nt:{secrets.token_hex(10)}/é"
    with admin(dsn) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(user), sql.Literal(password)
            )
        )
        conn.execute(sql.SQL("GRANT pg_read_all_data TO {}").format(sql.Identifier(user)))
    params = conninfo_to_dict(dsn)
    yield f"postgresql://{user}@127.0.0.1:{params['port']}/{params['dbname']}", user, password
    with admin(dsn) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(user)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(user)))
    with admin(pg_servers.scratch) as conn:  # copied there as NOLOGIN by the rehearsal
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(user)))


def _forms(secret: str) -> list[bytes]:
    """The password as bytes, URL-encoded, hex and base64 (at each of the three alignments)."""
    raw = secret.encode()
    forms = [raw, urllib.parse.quote(secret, safe="").encode(), raw.hex().encode()]
    forms.append(urllib.parse.quote_plus(secret).encode())
    for k in range(3):
        encoded = base64.b64encode(b"\0" * k + raw)
        start, end = -(-k * 8 // 6), (k + len(raw)) * 8 // 6
        forms.append(encoded[start:end])
    return forms


def _assert_nowhere(secret: str, proc: subprocess.CompletedProcess[str], out: Path) -> None:
    forms = _forms(secret)
    blobs = [("stdout", proc.stdout.encode()), ("stderr", proc.stderr.encode())]
    blobs += [(str(p), p.read_bytes()) for p in sorted(out.rglob("*")) if p.is_file()]
    assert len(blobs) > 5, blobs
    for where, blob in blobs:
        for form in forms:
            assert form not in blob, (where, form)


def _env_without_libpq() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


@pytest.mark.parametrize("how", ["PGPASSWORD", "PGPASSFILE"])
def test_a_password_only_in_libpq_environment_reaches_pg_dump(
    pg_servers: Servers,
    make_pg_change: MakePgChange,
    password_role: tuple[str, str, str],
    tmp_path: Path,
    how: str,
) -> None:
    source, user, password = password_role
    env = _env_without_libpq()
    if how == "PGPASSWORD":
        env["PGPASSWORD"] = password
    else:
        passfile = tmp_path / "pgpass"
        escaped = password.replace("\\", "\\\\").replace(":", "\\:")
        passfile.write_text(f"127.0.0.1:*:*:{user}:{escaped}\n")
        passfile.chmod(0o600)
        env["PGPASSFILE"] = str(passfile)
    # A wrapper on PATH that records what pg_dump was given (names of its PG* variables only).
    log = tmp_path / "pg_dump.log"
    env.update(
        _fake_tool(
            tmp_path / "bin",
            "pg_dump",
            f'env | grep -o "^PG[A-Z]*" | sort > {log}\nprintf "%s\\n" "$@" >> {log}\n'
            f'exec {_real("pg_dump")} "$@"\n',
        )
    )
    change = make_pg_change("UPDATE items SET qty = 0;", REVERT, surfaces=WRITES)
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rollproof",
            *_rehearse_argv(change.directory, source, pg_servers.scratch, out),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "overall: PASS" in proc.stdout
    seen = log.read_text()
    assert "PGPASSWORD" in seen.splitlines()  # the password went by environment ...
    assert "PGPASSFILE" not in seen.splitlines()  # ... resolved, not the caller's passfile
    assert "host=127.0.0.1" in seen
    assert f"user={user}" in seen
    _assert_nowhere(password, proc, out)
    assert password.encode() not in log.read_bytes()
    for script in ("commands.sh", "RERUN.sh"):  # they say which variables they honour
        assert "PGPASSWORD, PGPASSFILE" in (out / script).read_text()
    verdicts = _run(["validate", str(out)], tmp_path)
    assert verdicts.returncode == 0, verdicts.stdout + verdicts.stderr


def test_libpq_tls_settings_reach_pg_dump(
    pg_servers: Servers,
    make_pg_change: MakePgChange,
    password_role: tuple[str, str, str],
    tmp_path: Path,
) -> None:
    """PGSSLMODE and PGSSLROOTCERT decide pg_dump's connection as they decide rollproof's own:
    given explicitly (the test servers offer no TLS, so the mode asked is `disable`)."""
    source, _user, password = password_role
    log = tmp_path / "pg_dump.log"
    root = tmp_path / "root.crt"
    env = _env_without_libpq()
    env |= {"PGPASSWORD": password, "PGSSLMODE": "disable", "PGSSLROOTCERT": str(root)}
    env |= _fake_tool(
        tmp_path / "bin",
        "pg_dump",
        f'env | grep -o "^PG[A-Z]*" | sort > {log}\nprintf "%s\\n" "$@" >> {log}\n'
        f'exec {_real("pg_dump")} "$@"\n',
    )
    change = make_pg_change("UPDATE items SET qty = 0;", REVERT, surfaces=WRITES)
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rollproof",
            *_rehearse_argv(change.directory, source, pg_servers.scratch, out),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen = log.read_text()
    assert "sslmode=disable" in seen
    assert f"sslrootcert={root}" in seen
    assert "PGSSLMODE" not in seen.splitlines()
    assert "PGSSLROOTCERT" not in seen.splitlines()


def test_a_passfile_naming_another_server_does_not_redirect(tmp_path: Path) -> None:
    """Unit: the caller's PGPASSFILE, PGSERVICE and PGSSL* never reach a child as variables."""
    from rollproof.engines.postgres.conn import parse_pg_dsn, subprocess_env

    base = {
        "PGPASSFILE": "/x",
        "PGSERVICE": "prod",
        "PGSERVICEFILE": "/y",
        "PGSSLMODE": "disable",
        "PGSSLROOTCERT": "/z",
        "PGSSLCERT": "/c",
        "PGSSLKEY": "/k",
        "HOME": "/home/u",
    }
    env = subprocess_env(parse_pg_dsn("postgresql://u:secret@h/db"), base)
    assert env["PGPASSWORD"] == "secret"
    assert env["HOME"] == "/home/u"
    assert not {k for k in env if k.startswith(("PGSSL", "PGSERVICE", "PGPASSFILE"))}


# --- kills at every step ------------------------------------------------------------------------


@pytest.mark.parametrize("step", list(Step), ids=[s.value for s in Step])
def test_a_kill_at_each_step_of_a_postgres_rehearsal(
    pg_servers: Servers,
    pg_source: MakeSource,
    make_pg_change: MakePgChange,
    tmp_path: Path,
    step: Step,
) -> None:
    """As tests/test_kill_steps.py for SQLite. What differs: the dead run's databases and role on
    a named scratch server are swept by `rollproof gc --scratch` (docs/RELIABILITY.md)."""
    dsn = pg_source(SOURCE)
    change = make_pg_change("UPDATE items SET qty = 0;", REVERT, surfaces=WRITES)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    packets = tmp_path / "packets"
    argv = _rehearse_argv(change.directory, dsn, pg_servers.scratch, packets / "p")
    env = {"TMPDIR": str(tmp)}
    before = _leftovers(pg_servers.scratch)
    assert before == set()

    killed = _run(argv, tmp_path, {**env, KILL_AT_ENV: step.value})
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert not (packets / "p").exists()
    left = _leftovers(pg_servers.scratch)
    if step is Step.WORKSPACE_MADE:
        assert left == set()  # killed before anything was made on the scratch server
    elif step is not Step.PACKET_STAGED:
        assert left, "the dead run's databases"
    gc = _run(["gc", "--packets", str(packets)], tmp_path, env)
    assert gc.returncode == 0, gc.stderr
    assert not [p for p in tmp.iterdir() if p.name.startswith("rollproof-")]
    assert not [p for p in packets.iterdir() if ".partial-" in p.name] if packets.exists() else True
    assert _leftovers(pg_servers.scratch) == left  # gc without --scratch does not touch it
    swept = _run(["gc", "--scratch", pg_servers.scratch], tmp_path, env)
    assert swept.returncode == 0, swept.stderr
    assert _leftovers(pg_servers.scratch) == set()  # the dead run's databases, and its role:
    assert not [r for r in role_names(pg_servers.scratch) if r.endswith("_change")]

    again = _run(argv, tmp_path, env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert _run(["validate", str(packets / "p")], tmp_path, env).returncode == 0
    assert _leftovers(pg_servers.scratch) == set()
