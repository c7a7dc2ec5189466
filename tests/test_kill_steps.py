"""Systematic kill tests: rollproof is SIGKILLed at every named step of a rehearsal.

Not at random times: `ROLLPROOF_TEST_KILL_AT=<step>` makes the process kill itself when it
reaches the step (rollproof.core.steps). After each kill: the source is byte-identical, nothing
at the output validates as complete, `rollproof gc` removes the workspace and partial packet the
dead run left (and nothing else), and the next run to the same --out works. A private TMPDIR
per test keeps other runs' workspaces out of the picture.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from rollproof.core.steps import KILL_AT_ENV, Step

CHANGE = """\
apply_sql = "UPDATE t SET y = y || '!' WHERE x < 50;"
revert_sql = "UPDATE t SET y = substr(y, 1, length(y) - 1) WHERE x < 50;"
[surfaces]
writes = ["t"]
"""


def _run(
    argv: list[str], cwd: Path, tmp: Path, kill_at: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != KILL_AT_ENV}
    env["TMPDIR"] = str(tmp)
    if kill_at is not None:
        env[KILL_AT_ENV] = kill_at
    return subprocess.run(
        [sys.executable, "-m", "rollproof", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    source = tmp_path / "prod" / "prod.db"
    source.parent.mkdir()
    with sqlite3.connect(source) as conn:
        conn.execute("CREATE TABLE t (x INTEGER PRIMARY KEY, y TEXT)")
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"v{i}") for i in range(500)])
    conn.close()
    change = tmp_path / "change"
    change.mkdir()
    (change / "change.toml").write_text(CHANGE)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    return source, change, tmp


def _leftovers(tmp: Path, packets: Path) -> list[str]:
    found = [p.name for p in tmp.iterdir() if p.name.startswith("rollproof-")]
    if packets.exists():
        found += [p.name for p in packets.iterdir() if ".partial-" in p.name]  # dir + owner file
    return sorted(found)


@pytest.mark.parametrize("step", list(Step), ids=[s.value for s in Step])
def test_a_kill_at_each_step_leaves_nothing_complete_and_nothing_for_good(
    setup: tuple[Path, Path, Path], tmp_path: Path, step: Step
) -> None:
    source, change, tmp = setup
    before = source.read_bytes()
    packets = tmp_path / "packets"
    argv = ["rehearse", str(change), "--source", str(source), "--out", str(packets / "p")]

    killed = _run(argv, tmp_path, tmp, kill_at=step.value)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert source.read_bytes() == before
    assert not (packets / "p").exists()  # killed before the rename: nothing complete
    assert not list(source.parent.glob("prod.db-*"))  # no -journal, -wal or -shm beside it

    left = [name for name in _leftovers(tmp, packets) if not name.endswith(".owner")]
    assert left  # the dead run could not clean up: the sweep has something to do
    gc = _run(["gc", "--packets", str(packets)], tmp_path, tmp)
    assert gc.returncode == 0, gc.stderr
    assert f"gc: {len(left)} removed" in gc.stdout
    assert _leftovers(tmp, packets) == []

    again = _run(argv, tmp_path, tmp)
    assert again.returncode == 0, again.stdout + again.stderr
    assert _run(["validate", str(packets / "p")], tmp_path, tmp).returncode == 0
    assert source.read_bytes() == before
    assert _leftovers(tmp, packets) == []


def test_gc_leaves_a_live_runs_workspace(setup: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """The twin: a workspace whose owner is alive (this test process holds its lock) stays."""
    from rollproof.engines.workspace import make_owned_dir

    _source, _change, tmp = setup
    owned = make_owned_dir("rollproof-", tmp)
    try:
        gc = _run(["gc"], tmp_path, tmp)
        assert gc.returncode == 0, gc.stderr
        assert "gc: 0 removed" in gc.stdout
        assert owned.directory.is_dir()
    finally:
        owned.release()
    gc = _run(["gc"], tmp_path, tmp)
    assert "gc: 1 removed" in gc.stdout
    assert not owned.directory.exists()


def test_a_kept_clone_is_never_swept(setup: tuple[Path, Path, Path], tmp_path: Path) -> None:
    source, change, tmp = setup
    proc = _run(
        ["rehearse", str(change), "--source", str(source), "--out", "out", "--keep-clone"],
        tmp_path,
        tmp,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    kept = [p for p in tmp.iterdir() if p.name.startswith("rollproof-")]
    assert len(kept) == 1
    gc = _run(["gc"], tmp_path, tmp)
    assert "gc: 0 removed" in gc.stdout
    assert kept[0].is_dir()
