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
