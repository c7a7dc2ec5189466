"""A live source: others write it while rollproof rehearses, and the proof is about rollproof.

Real writer processes commit to a SQLite file (WAL and rollback journal) and to a PostgreSQL
database while `rollproof rehearse` runs. Every transaction of a writer adds one row to `a` and
one to `b`, so a snapshot taken at one instant has as many rows in each: the verdicts are about
such a snapshot, the isolation is proven, and `source.after` records that the source moved on.

Also here: the `-wal`/`-shm` SQLite makes beside a WAL source are gone again after a run when
nothing else had the database open, and untouched when another process did; the validator
accepts exactly each engine's new check set; a grant standing on evidence is refused when the
source moved on where the change reads or writes.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from rollproof.assurance.selftest import Corpus, build_corpus, forge
from rollproof.cli import main
from rollproof.core.change import load_change
from rollproof.core.isolation import ISOLATION_CHECKS
from rollproof.core.model import Point, Verdict
from rollproof.engines.postgres.session import _wrote_nothing
from rollproof.engines.sqlite.sidefiles import absent_side_files, tidy
from rollproof.rehearse.flow import rehearse
from rollproof.rehearse.packet import write_packet
from rollproof.verify.findings import FindingCode
from rollproof.verify.reader import check_packet
from rollproof.verify.validate import PacketTree, check_tree
from tests.conftest import sha256_file
from tests.packet_fixtures import read_tree
from tests.pg_fixtures import Servers, admin, pg_servers_fixture  # noqa: F401  (fixture)
from tests.test_governance_cli import Workspace, make_workspace

PAIRED = "CREATE TABLE a (id INTEGER PRIMARY KEY, v INTEGER); CREATE TABLE b (v INTEGER);"
CHANGE = {
    "change.toml": (
        'id = "bump-a"\napply = "apply.sql"\nrevert = "revert.sql"\n\n'
        '[surfaces]\nreads = []\nwrites = ["a"]\n'
    ),
    "apply.sql": "UPDATE a SET v = v + 1000;\n",
    "revert.sql": "UPDATE a SET v = v - 1000;\n",
}

SQLITE_WRITER = """
import os, sqlite3, sys, time
path, journal, ready, stop = sys.argv[1:5]
conn = sqlite3.connect(path, timeout=30, isolation_level=None)
conn.execute(f"PRAGMA journal_mode = {journal}")
n = 0
while not os.path.exists(stop):
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO a (v) VALUES (?)", (n,))
    conn.execute("INSERT INTO b (v) VALUES (?)", (n,))
    conn.execute("COMMIT")
    n += 1
    if n == 1:
        open(ready, "w").close()
    time.sleep(0.002)
assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
conn.close()
print(n)
"""

PG_WRITER = """
import os, sys, time
import psycopg
dsn, ready, stop = sys.argv[1:4]
with psycopg.connect(dsn, autocommit=True) as conn:
    n = 0
    while not os.path.exists(stop):
        with conn.transaction():
            conn.execute("INSERT INTO a (v) VALUES (%s)", (n,))
            conn.execute("INSERT INTO b (v) VALUES (%s)", (n,))
        n += 1
        if n == 1:
            open(ready, "w").close()
        time.sleep(0.005)
print(n)
"""

HOLDER = """
import sqlite3, sys
path = sys.argv[1]
conn = sqlite3.connect(path, isolation_level=None)
conn.execute("SELECT count(*) FROM a").fetchone()   # the WAL is open: -wal and -shm exist
print("ready", flush=True)
sys.stdin.readline()                                  # held open while rollproof runs
conn.execute("INSERT INTO b (v) VALUES (7)")          # and it keeps working afterwards
rows = conn.execute("SELECT count(*) FROM b").fetchone()[0]
print(conn.execute("PRAGMA integrity_check").fetchone()[0], rows, flush=True)
conn.close()
"""


def write_change(directory: Path) -> Path:
    directory.mkdir(parents=True)
    for name, text in CHANGE.items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory


def rollproof(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`rollproof ARGV` as a user runs it: a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "rollproof", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def make_sqlite(path: Path, journal: str) -> Path:
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA journal_mode = {journal}")
    conn.executescript(PAIRED + "INSERT INTO a (v) VALUES (1); INSERT INTO b (v) VALUES (1);")
    conn.commit()
    conn.close()
    return path


def listing(directory: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(directory.iterdir()) if p.is_file()}


@contextlib.contextmanager
def writing(argv: list[str], ready: Path, stop: Path) -> Iterator[list[str]]:
    """A writer process committing until `stop` exists; yields, then collects its output."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the writer never committed"
            time.sleep(0.01)
        yield out
    finally:
        stop.touch()
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, stderr
        out.append(stdout.strip())


def snapshot_rows(packet: Path, report: dict[str, Any]) -> tuple[int, int]:
    digest = report["source"]["fingerprint"].removeprefix("sha256:")
    fp = json.loads((packet / "fingerprints" / f"{digest}.json").read_text())
    return fp["tables"]["a"]["rows"], fp["tables"]["b"]["rows"]


# -- SQLite ---------------------------------------------------------------------------------


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_sqlite_source_written_by_another_process_is_proven_and_moved_on(
    tmp_path: Path, journal: str
) -> None:
    (tmp_path / "prod").mkdir()
    source = make_sqlite(tmp_path / "prod" / "live.db", journal)
    change = write_change(tmp_path / "bump-a")
    writer = [sys.executable, "-c", SQLITE_WRITER, str(source), journal]
    with writing(
        [*writer, str(tmp_path / "ready"), str(tmp_path / "stop")],
        tmp_path / "ready",
        tmp_path / "stop",
    ) as commits:
        run = rollproof(
            "rehearse", str(change), "--source", f"sqlite:///{source}", "--out", "packet",
            cwd=tmp_path,
        )  # fmt: skip
        time.sleep(0.05)  # at least one more commit after the rehearsal's own last look
    assert run.returncode == 0, run.stdout + run.stderr
    assert "source moved on since the snapshot" in run.stdout
    assert int(commits[0]) > 1
    packet = tmp_path / "packet"
    assert rollproof("validate", "packet", cwd=tmp_path).returncode == 0
    report = json.loads((packet / "report.json").read_text())
    assert report["isolation"]["verdict"] == "PROVEN_ISOLATED_NOT_PRODUCTION"
    assert [c["name"] for c in report["isolation"]["checks"]] == list(ISOLATION_CHECKS["sqlite"])
    assert report["overall"] == "PASS"
    assert report["source"]["after"]["moved_on"] is True
    assert report["source"]["fingerprint"] in report["source"]["after"]["evidence"]
    # The verdicts are about one instant of the source: every writer transaction is in the
    # snapshot whole or not at all, and the source now holds more than it did then.
    a, b = snapshot_rows(packet, report)
    assert a == b >= 2
    with contextlib.closing(sqlite3.connect(source)) as conn:
        assert conn.execute("SELECT count(*) FROM a").fetchone()[0] > a
    # WAL: always the backup API. Rollback journal: a byte copy under the read lock, or the
    # backup API when the writer's -journal happened to be there at that instant.
    how = report["isolation"]["checks"][-1]["evidence"]
    backup = how.startswith("snapshot made by the backup API inside one read transaction")
    assert backup or (journal == "delete" and how.startswith("snapshot copied byte for byte"))
    assert not (source.parent / "live.db-journal").exists()


def test_wal_source_cleanly_closed_is_left_exactly_as_found(tmp_path: Path) -> None:
    (tmp_path / "prod").mkdir()
    source = make_sqlite(tmp_path / "prod" / "clean.db", "wal")
    before = listing(source.parent)
    assert list(before) == ["clean.db"]  # closed cleanly: no -wal, no -shm
    change = write_change(tmp_path / "bump-a")
    run = rollproof("rehearse", str(change), "--source", str(source), cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert listing(source.parent) == before
    run = rollproof("fingerprint", str(source), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert listing(source.parent) == before
    # The twin, to show the test can fail: a read-only connection alone leaves both files.
    with contextlib.closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as conn:
        conn.execute("SELECT count(*) FROM a").fetchone()
    assert sorted(listing(source.parent)) == ["clean.db", "clean.db-shm", "clean.db-wal"]


def test_rollback_journal_source_is_never_left_with_a_journal(tmp_path: Path) -> None:
    (tmp_path / "prod").mkdir()
    source = make_sqlite(tmp_path / "prod" / "plain.db", "delete")
    before = listing(source.parent)
    change = write_change(tmp_path / "bump-a")
    assert rollproof("rehearse", str(change), "--source", str(source), cwd=tmp_path).returncode == 0
    assert rollproof("fingerprint", str(source), cwd=tmp_path).returncode == 0
    assert listing(source.parent) == before


def test_wal_files_another_process_holds_are_left_alone(tmp_path: Path) -> None:
    (tmp_path / "prod").mkdir()
    source = make_sqlite(tmp_path / "prod" / "held.db", "wal")
    argv = [sys.executable, "-c", HOLDER, str(source)]
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    with subprocess.Popen(argv, text=True, **pipes) as holder:  # type: ignore[call-overload]
        try:
            assert holder.stdout.readline().strip() == "ready"
            sides = [source.parent / "held.db-wal", source.parent / "held.db-shm"]
            inodes = [p.stat().st_ino for p in sides]
            change = write_change(tmp_path / "bump-a")
            run = rollproof("rehearse", str(change), "--source", str(source), cwd=tmp_path)
            assert run.returncode == 0, run.stdout + run.stderr
            assert "isolation: PROVEN_ISOLATED_NOT_PRODUCTION" in run.stdout
            assert rollproof("fingerprint", str(source), cwd=tmp_path).returncode == 0
            assert [p.stat().st_ino for p in sides] == inodes  # the holder's, untouched
            holder.stdin.write("go\n")
            holder.stdin.flush()
            assert holder.stdout.readline().split() == ["ok", "2"]  # and it kept working
            assert holder.wait(timeout=30) == 0
        finally:
            if holder.poll() is None:
                holder.kill()
    # It closed last and read-write: SQLite itself removed both files.
    assert sorted(listing(source.parent)) == ["held.db"]


def test_a_wal_left_with_frames_is_never_removed(tmp_path: Path) -> None:
    """A -wal that was there first is the application's, and one with frames holds commits."""
    source = make_sqlite(tmp_path / "crashed.db", "wal")
    crash = (
        "import os, sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1])\n"
        "c.execute('INSERT INTO a (v) VALUES (5)'); c.commit()\n"
        "os._exit(0)\n"  # no close: the frames stay in the -wal, as after a crash
    )
    subprocess.run([sys.executable, "-c", crash, str(source)], check=True, timeout=60)

    def kept() -> dict[str, str]:
        # The -shm is an index any reader rebuilds from the -wal; the rest are bytes to keep.
        return {k: v if not k.endswith("-shm") else "index" for k, v in listing(tmp_path).items()}

    before = kept()
    assert sorted(before) == ["crashed.db", "crashed.db-shm", "crashed.db-wal"]
    assert main(["fingerprint", str(source)]) == 0
    assert kept() == before
    # Even a file rollproof might have made is kept while its -wal holds frames.
    assert (tmp_path / "crashed.db-wal").stat().st_size > 0
    assert tidy(source, frozenset({"-wal", "-shm"})) == []
    assert kept() == before
    assert absent_side_files(source) == frozenset()


# -- PostgreSQL -----------------------------------------------------------------------------


@pytest.fixture
def live_pg(pg_servers: Servers) -> Iterator[str]:
    """A database of its own (the writer changes it for good), dropped afterwards."""
    name = f"rp_live_{secrets.token_hex(4)}"
    with admin(pg_servers.source) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = pg_servers.source_db(name)
    with admin(dsn) as conn:
        conn.execute(
            "CREATE TABLE a (id serial PRIMARY KEY, v integer); CREATE TABLE b (v integer);"
            "INSERT INTO a (v) VALUES (1); INSERT INTO b (v) VALUES (1);"
        )
    yield dsn
    with admin(pg_servers.source) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_postgres_source_written_by_another_process_is_proven_and_moved_on(
    pg_servers: Servers, live_pg: str, tmp_path: Path
) -> None:
    change = write_change(tmp_path / "bump-a")
    writer = [sys.executable, "-c", PG_WRITER, live_pg]
    with writing(
        [*writer, str(tmp_path / "ready"), str(tmp_path / "stop")],
        tmp_path / "ready",
        tmp_path / "stop",
    ) as commits:
        result = rehearse(load_change(change), live_pg, scratch=pg_servers.scratch)
    assert int(commits[0]) > 1
    assert str(result.isolation.verdict) == "PROVEN_ISOLATED_NOT_PRODUCTION", [
        (c.name, c.holds, c.evidence) for c in result.isolation.checks if not c.holds
    ]
    assert result.overall is Verdict.PASS
    assert [c.name for c in result.isolation.checks] == list(ISOLATION_CHECKS["postgresql"])
    assert result.source["after"]["moved_on"] is True
    wrote = re.match(r"(\d+) of (\d+) rollproof transaction", result.isolation.checks[-1].evidence)
    assert wrote is not None
    assert wrote[1] == wrote[2]
    assert int(wrote[1]) >= 2
    matches = next(c for c in result.isolation.checks if c.name == "clone-matches-source")
    assert "pg_dump dumped snapshot " in matches.evidence
    # One instant: every writer transaction is in the snapshot whole or not at all.
    tables = result.source_fingerprint.tables
    assert tables["a"].rows == tables["b"].rows >= 2
    with admin(live_pg) as conn:
        row = conn.execute("SELECT count(*) FROM a").fetchone()
    assert row is not None
    assert row[0] > tables["a"].rows
    befores = [leg_.fingerprints.get(Point.BEFORE) for leg_ in result.legs]
    assert {fp.digest for fp in befores if fp is not None} == {result.source_fingerprint.digest}

    packet = write_packet(result, tmp_path / "packet")
    assert check_packet(packet).ok
    # The validator holds a PostgreSQL packet to exactly the new set: the retired check, in
    # place of the new one, is refused.
    files = read_tree(packet)

    def retire(report: dict[str, Any]) -> None:
        report["isolation"]["checks"][-1]["name"] = "source-fingerprint-unchanged"

    report = check_tree(PacketTree.from_files(forge(files, retire)))
    assert report.codes == (FindingCode.ISOLATION_CHECKS_MISMATCH,)
    assert "source-fingerprint-unchanged is retired" in report.findings[0].message


def test_a_source_transaction_that_wrote_is_told_apart(pg_servers: Servers, live_pg: str) -> None:
    """source-wrote-nothing's probe, on both sides: a read-only transaction, and one that wrote
    (or was merely given a transaction id) on a writable connection to the same database."""
    with contextlib.closing(psycopg.connect(live_pg, autocommit=True)) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        conn.execute("SELECT count(*) FROM a").fetchone()
        assert _wrote_nothing(conn) is True
        conn.execute("ROLLBACK")
        conn.execute("BEGIN")
        conn.execute("UPDATE b SET v = v")
        assert _wrote_nothing(conn) is False
        conn.execute("ROLLBACK")
        conn.execute("BEGIN")
        conn.execute("SELECT txid_current()")
        assert _wrote_nothing(conn) is False
        conn.execute("ROLLBACK")


# -- the validator: exactly the new set -----------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return build_corpus(tmp_path_factory.mktemp("corpus"))


def test_the_sqlite_packet_has_the_new_set_and_validates(corpus: Corpus) -> None:
    report = json.loads(corpus.sound["report.json"])
    assert [c["name"] for c in report["isolation"]["checks"]] == [
        "clone-distinct-file",
        "clone-outside-source-dir",
        "workspace-private",
        "source-opened-read-only",
        "clone-matches-source",
    ]
    assert report["source"]["after"]["moved_on"] is False
    assert check_tree(PacketTree.from_files(corpus.sound)).ok


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(
            lambda r: r["isolation"]["checks"][-1].update(name="source-bytes-unchanged"),
            id="retired-set",
        ),
        pytest.param(
            lambda r: r["isolation"]["checks"].append(
                {"name": "source-bytes-unchanged", "holds": True, "evidence": "identical"}
            ),
            id="mixed-set",
        ),
    ],
)
def test_the_validator_refuses_a_retired_or_mixed_sqlite_set(corpus: Corpus, edit: Any) -> None:
    report = check_tree(PacketTree.from_files(forge(corpus.sound, edit)))
    assert report.codes == (FindingCode.ISOLATION_CHECKS_MISMATCH,)
    assert report.findings[0].message.endswith(
        "; source-bytes-unchanged is retired: it judged what others wrote to the source"
    )


# -- governance: a grant on evidence is bound to the rehearsed snapshot ----------------------


@pytest.fixture
def ws(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Workspace:
    return make_workspace(tmp_path, monkeypatch, capsys)


def test_a_grant_on_evidence_needs_the_source_unmoved_where_the_change_writes(
    ws: Workspace,
) -> None:
    assert ws.rehearse("--grant", str(ws.issue("clone.grant")), out="packets/clone").code == 0
    # Others write the source elsewhere: the evidence still stands for this change.
    with contextlib.closing(sqlite3.connect(ws.source)) as conn:
        conn.execute("CREATE TABLE visits (at TEXT)")
        conn.execute("INSERT INTO visits VALUES ('now')")
        conn.commit()
    ws.issue("shaped.grant", lane="production-shaped-clone", evidence="packets/clone")
    # ... and then where the change writes: its verdicts are about another state of items.
    with contextlib.closing(sqlite3.connect(ws.source)) as conn:
        conn.execute("UPDATE items SET qty = qty + 1 WHERE id = 1")
        conn.commit()
    refused = ws.run(
        "grant", "issue", "--lane", "production-shaped-clone", "--change", "add-item-note",
        "--source", ws.dsn, "--expires", "1h", "--key", "keys/alice.key",
        "--evidence", "packets/clone", "--out", str(ws.dir / "grants" / "late.grant"),
    )  # fmt: skip
    assert refused.code == 2
    assert refused.err.startswith(
        "rollproof: the source moved on since the snapshot evidence packets/clone rehearsed, "
        "where the change reads or writes (items): its verdicts are about snapshot sha256:"
    )
    assert not (ws.dir / "grants" / "late.grant").exists()


def test_clone_matches_source_fails_when_the_two_reads_differ(tmp_path: Path) -> None:
    """The check is computed, not asserted: a snapshot not equal to what the source held in
    the transaction fails it, for both ways a snapshot is made (the positive twins above)."""
    from rollproof.engines.sqlite.session import SqliteSession
    from rollproof.engines.sqlite.source import fingerprint_file

    other = make_sqlite(tmp_path / "other.db", "delete")
    with contextlib.closing(sqlite3.connect(other)) as conn:
        conn.execute("INSERT INTO b (v) VALUES (2)")  # one more row than the source has
        conn.commit()
    for journal in ("wal", "delete"):
        (tmp_path / journal).mkdir()
        source = make_sqlite(tmp_path / journal / "prod.db", journal)
        session = SqliteSession(str(source), workdir=tmp_path / "work")
        try:
            [check] = [c for c in session.isolation().checks if c.name == "clone-matches-source"]
            assert check.holds is True
            if journal == "wal":
                session._source_fp = fingerprint_file(other)
            else:
                session._snapshot_blake3 = "0" * 64
            [check] = [c for c in session.isolation().checks if c.name == "clone-matches-source"]
            assert check.holds is False
            assert " DIFFER" in check.evidence
            assert str(session.isolation().verdict) == "NOT_PROVEN"
        finally:
            session.close(keep=False)
