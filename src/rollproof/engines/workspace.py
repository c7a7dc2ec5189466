"""Private directories a run owns, and sweeping the ones whose run died.

A rehearsal's workspace holds copies of production (the snapshot, the clones); a packet is
staged in a `.NAME.partial-*` directory before it is renamed into place. A run killed with
SIGKILL cannot remove either, so they would stay in the temporary directory forever. Each such
directory therefore carries an `OWNER` file that its run holds an exclusive `flock` on for as
long as it lives, and that says who it is (pid, the process's start time, host):

* the lock, not the pid, decides whether the owner is alive: the kernel drops it when the
  process dies, however it dies, and a recycled pid cannot keep a dead run's directory;
* `sweep` removes a directory only when it can take that lock itself (its owner is gone), so a
  live run's workspace is never touched, even by a concurrent `rollproof gc`;
* a directory with the right name and no `OWNER` file is a run killed between creating it and
  claiming it (microseconds), or one made by an older rollproof: it is removed only once it is
  older than `UNCLAIMED_GRACE_SECONDS`.

Sweeps run at the start of every rehearsal (in the workspace's parent directory) and on demand
with `rollproof gc`.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rollproof.core.errors import EnvironmentProblemError, UsageError
from rollproof.core.steps import Step, reached

OWNER_FILE = "OWNER"
KEPT_FILE = "KEPT"
"""A workspace the user asked to keep (`--keep-clone`): never swept; they remove it."""
WORKSPACE_PREFIXES = ("rollproof-",)
PARTIAL_MARK = ".partial-"
CLAIMING_MARK = ".claiming-"
"""An owner file being made: locked, not yet renamed to its name (`claim`)."""
UNCLAIMED_GRACE_SECONDS = 3600


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a recycled pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


@dataclass
class Claim:
    """An open, locked owner file; the directory is this process's until `release`."""

    directory: Path
    fd: int
    owner: Path

    def keep(self) -> None:
        """Hand the directory to the user: marked kept, so no sweep removes it."""
        (self.directory / KEPT_FILE).write_text("kept by --keep-clone; remove it when done\n")
        with contextlib.suppress(OSError):
            self.owner.unlink()
        self.release()

    def release(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


def owner_beside(directory: Path) -> Path:
    """The owner file of a directory whose contents must be exactly its payload (a staged
    packet): beside it, not inside, so it never becomes part of what is renamed into place."""
    return directory.parent / f"{directory.name}.owner"


def claim(directory: Path, owner: Path | None = None) -> Claim:
    """Take ownership of `directory` (just created by this process); the owner file is
    `directory/OWNER` unless `owner` names another.

    The owner file appears under its name already locked: it is made and locked under a private
    name, then renamed into place. A sweep that met an unlocked OWNER between its creation and
    its lock took it for a dead run's and removed a live workspace (or held the lock, so the
    claim failed): concurrent runs on one machine deleted each other's workspaces."""
    owner = directory / OWNER_FILE if owner is None else owner
    private = owner.with_name(f"{owner.name}{CLAIMING_MARK}{os.getpid()}-{os.urandom(4).hex()}")
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a name nobody else knows: never held
        body = {
            "pid": os.getpid(),
            "process_start": _process_start(os.getpid()),
            "host": socket.gethostname(),
            "claimed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        os.write(fd, (json.dumps(body, sort_keys=True) + "\n").encode())
        os.rename(private, owner)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            private.unlink()
        raise
    return Claim(directory, fd, owner)


def make_owned_dir(prefix: str, parent: Path | None, *, beside: bool = False) -> Claim:
    """A new private (0700) directory under `parent` (default: the temporary directory),
    claimed by this process; `beside` keeps the owner file out of it (`owner_beside`)."""
    directory = Path(
        tempfile.mkdtemp(prefix=prefix, dir=None if parent is None else str(parent))
    ).resolve()
    try:
        return claim(directory, owner_beside(directory) if beside else None)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


@contextlib.contextmanager
def owned_temp_dir(prefix: str, parent: Path | None = None) -> Iterator[Path]:
    """A private directory, claimed like a workspace and removed on exit: what
    `tempfile.TemporaryDirectory` gives, except that a sweep of another run never takes it
    while this process lives (an unclaimed `rollproof-*` directory is swept once its
    modification time is an hour old, which a long run's own directory can be)."""
    owned = make_owned_dir(prefix, parent)
    try:
        yield owned.directory
    finally:
        shutil.rmtree(owned.directory, ignore_errors=True)
        owned.release()


def make_workspace(prefix: str, workdir: Path | None) -> Claim:
    """A rehearsal's workspace under `workdir` (default: the temporary directory), after
    sweeping the workspaces dead runs left there. A `--workdir` that is a file or cannot be
    written is the user's to fix (exit 2); a read-only or full file system is the machine's
    (exit 4)."""
    where = workdir or Path(tempfile.gettempdir())
    try:
        if workdir is not None:
            workdir.mkdir(parents=True, exist_ok=True)
        sweep([where])
        owned = make_owned_dir(prefix, workdir)
        reached(Step.WORKSPACE_MADE)
        return owned
    except (FileExistsError, NotADirectoryError):
        raise UsageError(f"--workdir {workdir}: not a directory") from None
    except PermissionError as e:
        raise UsageError(f"--workdir {where}: {e.strerror}") from None
    except OSError as e:
        raise EnvironmentProblemError(f"cannot make a workspace in {where}: {e.strerror}") from e


@contextlib.contextmanager
def _try_lock(owner: Path) -> Iterator[bool]:
    try:
        fd = os.open(owner, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False  # held: its owner is alive
            return
        yield True
    finally:
        os.close(fd)


def lock_is_free(owner: Path) -> bool:
    """Whether the owner file `owner` exists and no live process holds its lock (its run is
    gone); a scratch server's sweep asks this of the workspace a database names."""
    with _try_lock(owner) as free:
        return free


def running(pid: int, process_start: str | None) -> bool:
    """Whether process `pid` runs and, when `process_start` is known, is the same process (a
    recycled pid has another start time). Unknowable (no /proc) counts as running."""
    if pid <= 0:
        return True  # not a process id: nothing is proven about it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass  # it exists (another user's process, EPERM)
    if process_start is None:
        return True
    now = _process_start(pid)
    return now is None or now == process_start


def _is_candidate(entry: Path, partial_only: bool) -> bool:
    name = entry.name
    if PARTIAL_MARK in name and name.startswith("."):
        return True
    return not partial_only and name.startswith(WORKSPACE_PREFIXES)


def sweep(parents: Iterable[Path], *, partial_only: bool = False) -> list[Path]:
    """Remove every rollproof workspace and partial packet in `parents` whose run is gone;
    return what was removed. Never follows a symlink, never touches a live run's directory.

    Other runs share the temporary directory and remove their own directories while this one
    looks: an entry that vanishes (or cannot be read) between the listing and its inspection is
    skipped, not an error. A sweep is housekeeping; it never fails the run that asked for it."""
    removed: list[Path] = []
    now = time.time()
    for parent in parents:
        try:
            entries = list(parent.iterdir())
        except OSError:
            continue
        for entry in sorted(entries):
            try:
                if _sweep_entry(entry, partial_only, now):
                    removed.append(entry)
            except OSError:
                continue  # gone or unreadable under us: another run's business
    return removed


def _sweep_entry(entry: Path, partial_only: bool, now: float) -> bool:
    """Remove `entry` if it is a rollproof directory whose run is gone; whether it was."""
    if entry.is_symlink() or not entry.is_dir() or not _is_candidate(entry, partial_only):
        return False
    if (entry / KEPT_FILE).exists() or any(entry.glob("*/postmaster.pid")):
        # Kept by the user; or an ephemeral PostgreSQL cluster of a dead run that may still be
        # running: stopping it is pg_ctl's job, deleting its files is not.
        return False
    owner = owner_beside(entry)
    if not owner.exists():
        owner = entry / OWNER_FILE
    if owner.exists():
        with _try_lock(owner) as dead:
            # KEPT again under the lock: a run that kept its workspace (`Claim.keep`) wrote
            # KEPT before it let go of the owner file, so a lock taken after that sees it.
            if not dead or (entry / KEPT_FILE).exists():
                return False
            _remove(entry)
            return True
    if now - entry.stat().st_mtime <= UNCLAIMED_GRACE_SECONDS:
        return False
    _remove(entry)
    return True


def _remove(entry: Path) -> None:
    """Remove a dead run's directory with its owner file beside, and any owner file it was
    still making there when it died (`claim`)."""
    shutil.rmtree(entry, ignore_errors=True)
    beside = owner_beside(entry)
    for leftover in (beside, *entry.parent.glob(f"{glob.escape(beside.name)}{CLAIMING_MARK}*")):
        leftover.unlink(missing_ok=True)
