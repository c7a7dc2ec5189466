"""A fingerprint killed mid-spill leaves its sort directory; `rollproof gc` removes it, never
while the fingerprint lives.

A key-less table's sorted row-digest runs spill to `rollproof-sort-*` in the temporary
directory (engines/sqlite/fingerprint.py). The directory is claimed like a workspace, so the
owner's lock, not its age, decides: a stopped (live) process keeps it, a killed one does not.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rollproof.engines.sqlite import fingerprint as fp

FINGERPRINT = """
import sys
from rollproof.engines.sqlite import fingerprint as fp
fp.RUN_DIGESTS = 64  # spill every 64 row digests: many small runs
from rollproof.engines.sqlite.source import fingerprint_file
from pathlib import Path
fingerprint_file(Path(sys.argv[1]))
"""


def _source(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE log (n INTEGER, note TEXT)")  # no key: row digests, spilled
    conn.executemany("INSERT INTO log VALUES (?, ?)", ((i, f"r{i}") for i in range(300_000)))
    conn.commit()
    conn.close()
    return path


def _gc(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rollproof", "gc"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _spilling(tmp: Path, proc: subprocess.Popen[bytes]) -> Path:
    """The process's spill directory, once it holds a spilled run."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        for d in tmp.glob("rollproof-sort-*"):
            if any(d.glob("run-*")):
                return d
        time.sleep(0.002)
    raise AssertionError(f"no spilled run seen (exit {proc.poll()})")


def test_gc_removes_the_spill_of_a_killed_fingerprint_never_a_live_one(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    db = _source(tmp_path / "big.db")
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = subprocess.Popen([sys.executable, "-c", FINGERPRINT, str(db)], env=env)
    try:
        spill = _spilling(tmp, proc)
        proc.send_signal(signal.SIGSTOP)  # alive, holding its lock, mid-spill
        live = _gc(env, tmp_path)
        assert live.returncode == 0, live.stderr
        assert spill.is_dir()  # a live owner's: untouched
        assert any(spill.glob("run-*"))
        proc.kill()
        proc.wait(timeout=30)
        assert spill.is_dir()  # killed: nothing removed it
        dead = _gc(env, tmp_path)
        assert dead.returncode == 0, dead.stderr
        assert not spill.exists()
        assert str(spill.name) in dead.stdout + dead.stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def test_a_finished_fingerprint_leaves_no_spill(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    conn = sqlite3.connect(tmp_path / "small.db")
    conn.execute("CREATE TABLE log (n INTEGER)")
    conn.executemany("INSERT INTO log VALUES (?)", ((i,) for i in range(1000)))
    conn.commit()
    conn.close()
    done = subprocess.run(
        [sys.executable, "-c", FINGERPRINT, str(tmp_path / "small.db")],
        env={**os.environ, "TMPDIR": str(tmp)},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    assert list(tmp.iterdir()) == []


def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for whoever reaps it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_workers_of_a_killed_fingerprint_exit_and_gc_removes_its_spill(tmp_path: Path) -> None:
    # Large enough (over PARALLEL_MIN_BYTES) to be read by worker processes.
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    db = tmp_path / "big.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE log (n INTEGER, note TEXT)")
    pad = "x" * 40
    conn.executemany("INSERT INTO log VALUES (?, ?)", ((i, f"{pad}{i}") for i in range(300_000)))
    conn.commit()
    conn.close()
    assert db.stat().st_size > fp.PARALLEL_MIN_BYTES
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = subprocess.Popen([sys.executable, "-c", FINGERPRINT, str(db)], env=env)
    try:
        spill = _spilling(tmp, proc)
        workers = _children(proc.pid)
        assert workers, "the fingerprint read in this process, not in workers"
        proc.kill()
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_running(w) for w in workers):
            time.sleep(0.05)
        assert [w for w in workers if _running(w)] == []  # none waits forever for work
        dead = _gc(env, tmp_path)
        assert dead.returncode == 0, dead.stderr
        assert not spill.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
