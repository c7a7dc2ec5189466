"""Leave a SQLite source's directory as rollproof found it: no `-wal`/`-shm` of its own beside it.

Why this exists: SQLite makes `-wal` and `-shm` beside a WAL-mode database as soon as any
connection reads it, read-only ones included, and only a read-write connection that closes
last removes them. rollproof never opens a source writable, so without this every run on a
cleanly closed WAL database would leave both files behind.

Removing them is safe only when nothing else can be using them, and a wrong removal corrupts
the application's database (a process holding a removed `-wal` writes frames nobody else
sees). So `tidy` removes a side file only when all of these hold, and otherwise leaves it:

* it did not exist when rollproof first opened the database (`absent_side_files`): a file that
  was already there belongs to the application;
* a `-wal` is empty: it holds no transaction, so removing it loses nothing;
* no descriptor of this process refers to the database or either side file: SQLite locks are
  POSIX locks, and closing any descriptor of a file drops every lock the process holds on it,
  so rollproof may not open and close one while a connection of its own still has it open;
* this is the main thread, so SIGIO (what a lease break sends; its default action ends the
  process) can be ignored for the moment the leases are held;
* the kernel grants a write lease (`fcntl F_SETLEASE F_WRLCK`, Linux) on the database and on
  each side file. A write lease is granted only on a file no other descriptor on the machine
  has open, and while it is held anyone else's `open()` of the file waits. Every SQLite
  connection keeps its database file open for its whole life and opens the side files only
  after it, so a granted lease on the database proves that no connection exists, and none can
  start until the files are gone (it then finds none and makes its own, as after a clean close).

Where leases are refused (another platform, a network file system, a file owned by another
user without CAP_LEASE) the files stay where they are: never a removal that was not proven safe.
A rollback-journal database needs none of this: a read-only connection never makes a journal.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

SIDE_SUFFIXES = ("-wal", "-shm")


def side_file(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def absent_side_files(path: Path) -> frozenset[str]:
    """The side-file suffixes with no file beside `path` now (before rollproof opens it)."""
    return frozenset(s for s in SIDE_SUFFIXES if not os.path.lexists(side_file(path, s)))


def _ours_open(identities: set[tuple[int, int]]) -> bool:
    """Whether a descriptor of this process refers to one of the files (by device and inode).
    Read from /proc without opening anything; an unreadable /proc counts as yes."""
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return True
    for fd in fds:
        try:
            st = os.stat(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the directory's own descriptor, or one closed meanwhile
        if (st.st_dev, st.st_ino) in identities:
            return True
    return False


@contextlib.contextmanager
def _sigio_ignored() -> Iterator[bool]:
    """SIGIO ignored while a lease is held (yields False where that cannot be done)."""
    if not hasattr(signal, "SIGIO") or threading.current_thread() is not threading.main_thread():
        yield False
        return
    previous = signal.signal(signal.SIGIO, signal.SIG_IGN)
    try:
        yield True
    finally:
        signal.signal(signal.SIGIO, previous)


def _leased(path: Path, stack: contextlib.ExitStack) -> int | None:
    """A descriptor of `path` holding a write lease (released when `stack` closes), or None."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    stack.callback(os.close, fd)
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
    except OSError:
        return None  # someone has it open, or leases are not available here
    stack.callback(fcntl.fcntl, fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    return fd


def tidy(path: Path, absent: frozenset[str]) -> list[str]:
    """Remove the side files rollproof's own connections made beside `path`, when that is
    proven safe (module docstring); the names of the files removed."""
    made = [side_file(path, s) for s in SIDE_SUFFIXES if s in absent]
    made = [p for p in made if os.path.lexists(p)]
    if not made or not hasattr(fcntl, "F_SETLEASE"):
        return []
    try:
        identities = {(st.st_dev, st.st_ino) for st in (os.stat(p) for p in (path, *made))}
    except OSError:
        return []
    if _ours_open(identities):
        return []
    removed: list[str] = []
    with _sigio_ignored() as ignored, contextlib.ExitStack() as leases:
        if not ignored:
            return []
        fds = [_leased(p, leases) for p in (path, *made)]
        if any(fd is None for fd in fds):
            return []
        for p, fd in zip((path, *made), fds, strict=True):
            assert fd is not None
            try:
                held, now = os.fstat(fd), os.lstat(p)
            except OSError:
                return []  # removed by its own writer meanwhile: nothing of ours to tidy
            if (held.st_dev, held.st_ino) != (now.st_dev, now.st_ino):
                return []  # replaced since it was looked at: not the file that was leased
            if p.name.endswith("-wal") and held.st_size != 0:
                return []  # frames in it: someone committed a transaction there
        # The -wal first, as SQLite does: a -shm without a -wal is rebuilt, never trusted.
        for p in sorted(made, key=lambda p: not p.name.endswith("-wal")):
            try:
                os.unlink(p)
            except OSError:
                break  # e.g. a directory we may not write: what is left stays as it is
            removed.append(p.name)
    return removed
