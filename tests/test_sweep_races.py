"""A sweep shares the temporary directory with other runs that remove their own directories.

Every rehearsal sweeps its workspace's parent on start. Another run (or `rollproof gc`) may
remove a directory between this sweep's listing and any later look at it: that once failed a
rehearsal with "cannot make a workspace in /tmp: No such file or directory" (exit 4) when a
concurrent fingerprint removed its `rollproof-sort-*` spill while the sweep looked inside.

The matrix: for each kind of directory a sweep meets, count the filesystem calls it makes about
that directory when nothing disturbs it, then, for every n up to that count, run the sweep again
on a fresh twin with the directory removed by "another run" just before the n-th call. Each row
asserts the sweep neither fails nor loses its other work: the dead workspace beside is still
removed, the live one still kept.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from rollproof.engines import workspace
from rollproof.engines.workspace import (
    OWNER_FILE,
    UNCLAIMED_GRACE_SECONDS,
    make_owned_dir,
    make_workspace,
    owner_beside,
    sweep,
)


def _dead_workspace(parent: Path, name: str) -> Path:
    """A workspace whose owner is gone: claimed, then the lock dropped."""
    claim = make_owned_dir(name, parent)
    (claim.directory / "snapshot.db").write_bytes(b"x")
    claim.release()
    return claim.directory


def _unclaimed_old(parent: Path, name: str) -> Path:
    d = parent / f"{name}old"
    d.mkdir()
    (d / "snapshot.db").write_bytes(b"x")
    past = time.time() - UNCLAIMED_GRACE_SECONDS - 60
    os.utime(d, (past, past))
    return d


def _partial_packet(parent: Path, name: str) -> Path:
    claim = make_owned_dir(f".{name}pkt{workspace.PARTIAL_MARK}", parent, beside=True)
    (claim.directory / "packet.json").write_text("{}")
    claim.release()
    return claim.directory


def _kept(parent: Path, name: str) -> Path:
    claim = make_owned_dir(name, parent)
    claim.keep()
    return claim.directory


def _cluster_inside(parent: Path, name: str) -> Path:
    claim = make_owned_dir(name, parent)
    (claim.directory / "pgdata").mkdir()
    (claim.directory / "pgdata" / "postmaster.pid").write_text("1\n")
    claim.release()
    return claim.directory


KINDS: dict[str, Callable[[Path, str], Path]] = {
    "dead workspace": _dead_workspace,
    "unclaimed and old": _unclaimed_old,
    "partial packet (owner beside)": _partial_packet,
    "kept by the user": _kept,
    "holds a PostgreSQL cluster": _cluster_inside,
}


class Vanisher:
    """Counts the filesystem calls (os.stat, os.scandir, os.open, os.listdir) made about a
    directory or anything under it; armed with n, removes the directory just before the n-th."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.target: Path | None = None
        self.fire_at = 0
        self.calls = 0
        self.fired = False
        for name in ("stat", "scandir", "open", "listdir"):
            self._wrap(monkeypatch, name)

    def _wrap(self, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        original = getattr(os, name)

        def call(*args: object, **kwargs: object) -> object:
            if args and self._about(args[0], kwargs):
                self.calls += 1
                if self.calls == self.fire_at:
                    self._another_run_removes()
            return original(*args, **kwargs)

        monkeypatch.setattr(os, name, call)

    def _about(self, path: object, kwargs: dict[str, object]) -> bool:
        if self.target is None or kwargs.get("dir_fd") is not None:
            return False
        if not isinstance(path, (str, Path)) or not os.path.isabs(path):
            return False
        p = Path(path)
        return p == self.target or self.target in p.parents

    def _another_run_removes(self) -> None:
        target, self.target = self.target, None  # its own calls are not the sweep's
        assert target is not None
        shutil.rmtree(target)
        owner_beside(target).unlink(missing_ok=True)
        self.fired = True

    def watch(self, target: Path, fire_at: int = 0) -> None:
        self.target, self.fire_at, self.calls, self.fired = target, fire_at, 0, False


def _scene(where: Path, make: Callable[[Path, str], Path]) -> tuple[Path, Path, workspace.Claim]:
    where.mkdir()
    subject = make(where, "rollproof-a-")
    dead = _dead_workspace(where, "rollproof-z-")
    live = make_owned_dir("rollproof-live-", where)
    return subject, dead, live


@pytest.mark.parametrize("kind", KINDS)
def test_a_directory_removed_by_another_run_at_any_call_of_the_sweep_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    vanisher = Vanisher(monkeypatch)
    subject, dead, live = _scene(tmp_path / "count", KINDS[kind])
    vanisher.watch(subject)
    sweep([subject.parent])
    calls = vanisher.calls
    live.release()
    assert calls >= 3, f"the sweep looked at {subject.name} only {calls} times"

    for n in range(1, calls + 1):
        subject, dead, live = _scene(tmp_path / f"vanish-at-{n}", KINDS[kind])
        try:
            vanisher.watch(subject, fire_at=n)
            removed = sweep([subject.parent])
            assert vanisher.fired, f"call {n} of {calls} never came"
            assert not subject.exists()
            assert dead in removed, f"vanish at call {n}"
            assert not dead.exists(), f"vanish at call {n}"
            assert (live.directory / OWNER_FILE).exists(), f"vanish at call {n}"
            assert live.directory not in removed
        finally:
            live.release()


def test_a_workspace_is_made_while_another_run_removes_its_spill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failure as it was met: a rehearsal's start-up sweep meets a live `rollproof-sort-*`
    that its fingerprint removes while the sweep looks inside it for a PostgreSQL cluster."""
    vanisher = Vanisher(monkeypatch)
    spill = make_owned_dir("rollproof-sort-", tmp_path)
    vanisher.watch(spill.directory, fire_at=5)  # the look inside (glob)
    owned = make_workspace("rollproof-", tmp_path)
    try:
        assert vanisher.fired
        assert owned.directory.parent == tmp_path.resolve()
        assert (owned.directory / OWNER_FILE).exists()
    finally:
        owned.release()
        spill.release()


def test_a_sweep_of_a_parent_that_is_gone_finds_nothing(tmp_path: Path) -> None:
    assert sweep([tmp_path / "gone"]) == []


# --- a sweep meets a claim being made ---------------------------------------------------------


class Interleaver:
    """Runs another process's sweep of `parent` before the n-th of the calls a claim makes
    (os.open, fcntl.flock, os.write, os.rename), either whole (`sweep`) or holding, across that
    call, the lock a sweep takes on an owner file while it decides (`hold`)."""

    CALLS = (("os", "open"), ("fcntl", "flock"), ("os", "write"), ("os", "rename"))

    def __init__(self, monkeypatch: pytest.MonkeyPatch, parent: Path) -> None:
        self.parent, self.mode, self.fire_at, self.calls = parent, "", 0, 0
        self.removed: list[Path] = []
        self.held = False
        import fcntl

        for module, name in self.CALLS:
            self._wrap(monkeypatch, os if module == "os" else fcntl, name)

    def _wrap(self, monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> None:
        original = getattr(module, name)

        def call(*args: object, **kwargs: object) -> object:
            if not self.mode:
                return original(*args, **kwargs)
            self.calls += 1
            if self.calls != self.fire_at:
                return original(*args, **kwargs)
            mode, self.mode = self.mode, ""  # the other process's own calls are not counted
            try:
                if mode == "sweep":
                    self.removed += sweep([self.parent])
                    return original(*args, **kwargs)
                with contextlib.ExitStack() as held:
                    for owner in [
                        *self.parent.glob(f"*/{OWNER_FILE}"),
                        *self.parent.glob("*.owner"),
                    ]:
                        self.held |= held.enter_context(workspace._try_lock(owner))
                    return original(*args, **kwargs)
            finally:
                self.mode = mode

        monkeypatch.setattr(module, name, call)

    def arm(self, mode: str, fire_at: int) -> None:
        self.mode, self.fire_at, self.calls, self.removed, self.held = mode, fire_at, 0, [], False

    def disarm(self) -> int:
        calls, self.mode = self.calls, ""
        return calls


@pytest.mark.parametrize("beside", [False, True], ids=["owner inside", "owner beside"])
@pytest.mark.parametrize("mode", ["sweep", "hold"])
def test_a_sweep_at_any_step_of_a_claim_never_takes_the_live_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, beside: bool
) -> None:
    """Concurrent runs deleted each other's workspaces: a sweep met OWNER after its creation and
    before its lock, took it for a dead run's and removed the directory (the run then failed on
    a missing workspace, exit 70), or held its lock so the claim itself failed (exit 4)."""
    prefix = f".pkt{workspace.PARTIAL_MARK}" if beside else "rollproof-"
    interleaver = Interleaver(monkeypatch, tmp_path)
    interleaver.arm(mode, fire_at=-1)
    counted = make_owned_dir(prefix, tmp_path, beside=beside)
    calls = interleaver.disarm()
    counted.release()
    assert calls >= 3, f"a claim made {calls} calls"

    for n in range(1, calls + 1):
        where = tmp_path / f"{mode}-at-{n}"
        where.mkdir()
        interleaver.parent = where
        interleaver.arm(mode, fire_at=n)
        owned = make_owned_dir(prefix, where, beside=beside)
        try:
            assert interleaver.disarm() == calls
            assert owned.directory.is_dir(), f"{mode} before call {n} removed a live directory"
            assert interleaver.removed == [], f"{mode} before call {n}"
            assert owned.owner.is_file()
            assert not workspace.lock_is_free(owned.owner)
            assert (
                sorted(p.name for p in where.iterdir() if workspace.CLAIMING_MARK in p.name) == []
            )
            assert sweep([where]) == []
            assert owned.directory.is_dir()
        finally:
            owned.release()
        assert sweep([where]) == [owned.directory], "a released claim is a dead run's"
        assert sorted(where.iterdir()) == []


def _claim_many(parent: str, count: int) -> list[str]:
    """Make and release `count` workspaces, writing into each: what went missing under us."""
    lost = []
    for _ in range(count):
        try:
            owned = make_workspace("rollproof-", Path(parent))
        except Exception as e:  # the test reports what a run met
            lost.append(f"claim failed: {type(e).__name__}: {e}")
            continue
        try:
            (owned.directory / "clone.db").write_bytes(b"x")
        except OSError as e:
            lost.append(f"workspace vanished: {e}")
        finally:
            shutil.rmtree(owned.directory, ignore_errors=True)
            owned.release()
    return lost


def test_runs_claiming_and_sweeping_one_directory_in_parallel_lose_nothing(tmp_path: Path) -> None:
    """The same race between real processes: four make workspaces (each sweeping first, as a
    rehearsal does) in one directory at once."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(4) as pool:
        results = list(pool.map(_claim_many, [str(tmp_path)] * 4, [400] * 4))
    assert [line for lost in results for line in lost] == []
    assert sorted(tmp_path.iterdir()) == []


# --- every rollproof-* directory a run makes is claimed -----------------------------------------


def test_an_owned_temporary_directory_outlives_a_sweep_however_old_its_time(
    tmp_path: Path,
) -> None:
    """A long run's private directory whose modification time is over an hour old: claimed,
    a sweep leaves it; the same directory unclaimed (as TemporaryDirectory made them) is taken."""
    from rollproof.engines.workspace import owned_temp_dir

    past = time.time() - UNCLAIMED_GRACE_SECONDS - 60
    with owned_temp_dir("rollproof-test-", tmp_path) as owned:
        (owned / "positions.db").write_bytes(b"x")
        os.utime(owned, (past, past))
        unclaimed = _unclaimed_old(tmp_path, "rollproof-test-")
        assert sweep([tmp_path]) == [unclaimed]
        assert (owned / "positions.db").exists()
    assert not owned.exists()
    assert sorted(tmp_path.iterdir()) == []


def test_no_module_makes_an_unclaimed_rollproof_directory() -> None:
    """Every `rollproof-*` directory is made by engines/workspace.py (claimed, so sweeps of
    other runs respect it), never by tempfile directly with that prefix."""
    import re

    import rollproof

    root = Path(rollproof.__file__).parent
    pattern = re.compile(r"(TemporaryDirectory|mkdtemp)\([^)]*prefix=f?[\"']rollproof")
    offenders = [
        str(path.relative_to(root))
        for path in sorted(root.rglob("*.py"))
        if path.name != "workspace.py" and pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_a_workspace_kept_while_a_sweep_takes_its_lock_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--keep-clone` writes KEPT, then lets go of its owner file. A sweep that saw no KEPT and
    opened the owner file just before could take the lock right after and remove the kept
    clone; it looks for KEPT again once it holds the lock."""
    import fcntl

    claim = make_owned_dir("rollproof-keep-", tmp_path)
    (claim.directory / "clone.db").write_bytes(b"x")
    original = fcntl.flock
    kept: list[bool] = []

    def flock(fd: int, op: int) -> None:
        if fd != claim.fd and not kept and claim.fd >= 0:
            claim.keep()  # between the sweep's look for KEPT and its lock
            kept.append(True)
        original(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock)
    assert sweep([tmp_path]) == []
    assert kept == [True]
    assert (claim.directory / "clone.db").exists()
    assert (claim.directory / "KEPT").exists()
