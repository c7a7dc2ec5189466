"""The validator's IO shell: read a packet directory into a `PacketTree`, then ask the pure core.

    check_packet(path)    -> ValidationReport   every finding (of the first failing stage)
    validate_packet(path) -> VerifiedPacket     or PacketInvalidError (exit 1)

Both raise `PacketUsageError` (exit 2) for input that cannot be checked at all (no such
directory, not a directory, the directory itself a symlink, unreadable) and
`ValidatorPinError` (exit 3) when `expect_validator` is given and the running validator's bytes
differ: then no verdict is given at all.

How the directory is read, and why:
* Nothing is ever followed. The root is opened with O_NOFOLLOW|O_DIRECTORY and every name
  below it is looked at with lstat relative to its parent's descriptor (`os.scandir(fd)`), so a
  symlink anywhere, or a directory swapped for a symlink mid-walk, is seen as what it is.
* The whole tree is walked, counting entries, depth and sizes, **before** any file is read; the
  walk stops at the first limit exceeded and nothing is read (the core reports LIMIT_EXCEEDED).
* Only regular files with one link are read: symlinks, hard-linked files, FIFOs, devices and
  sockets are recorded by type and never opened (opening a FIFO can block forever; a hard
  link's bytes can change through another name). A file is opened with O_NOFOLLOW|O_NONBLOCK
  and checked (fstat) to be the same regular file the walk saw, with the size it had; a file
  that changed while being read is recorded as unreadable, and rejected.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from rollproof.verify.attest import TrustedKey
from rollproof.verify.findings import (
    PacketUsageError,
    ValidationReport,
    ValidatorPinError,
    VerifiedPacket,
)
from rollproof.verify.layout import DEFAULT_LIMITS, HEX64, Limits
from rollproof.verify.pin import validator_sha256
from rollproof.verify.validate import FileKind, PacketTree, TreeEntry, check_tree

_NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


def _kind(mode: int) -> FileKind:
    if stat.S_ISREG(mode):
        return FileKind.REGULAR
    if stat.S_ISDIR(mode):
        return FileKind.DIRECTORY
    if stat.S_ISLNK(mode):
        return FileKind.SYMLINK
    if stat.S_ISFIFO(mode):
        return FileKind.FIFO
    if stat.S_ISCHR(mode):
        return FileKind.CHAR_DEVICE
    if stat.S_ISBLK(mode):
        return FileKind.BLOCK_DEVICE
    if stat.S_ISSOCK(mode):
        return FileKind.SOCKET
    return FileKind.OTHER


class _LimitHit(Exception):
    pass


class _Walk:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.meta: dict[str, tuple[FileKind, int, int, int, int]] = {}  # kind size nlink dev ino
        self.total = 0

    def walk(self, dir_fd: int, prefix: str, depth: int) -> None:
        # Iterated, not listed first: a directory of a million names stops at the limit.
        with os.scandir(dir_fd) as it:
            for entry in it:
                self.visit(dir_fd, entry, prefix, depth)

    def visit(self, dir_fd: int, entry: os.DirEntry[str], prefix: str, depth: int) -> None:
        if len(self.meta) + 1 > self.limits.max_files:
            raise _LimitHit(f"more than {self.limits.max_files} entries")
        rel = prefix + entry.name
        st = entry.stat(follow_symlinks=False)
        kind = _kind(st.st_mode)
        if depth > self.limits.max_depth:
            raise _LimitHit(f"{rel!r} is deeper than {self.limits.max_depth} levels")
        size = st.st_size if kind is FileKind.REGULAR else 0
        if size > self.limits.max_file_bytes:
            raise _LimitHit(f"{rel!r} is {size} bytes, limit {self.limits.max_file_bytes}")
        self.total += size
        if self.total > self.limits.max_total_bytes:
            raise _LimitHit(f"more than {self.limits.max_total_bytes} bytes in all")
        self.meta[rel] = (kind, size, st.st_nlink, st.st_dev, st.st_ino)
        if kind is FileKind.DIRECTORY:
            fd = os.open(entry.name, _NOFOLLOW_DIR, dir_fd=dir_fd)
            try:
                self.walk(fd, rel + "/", depth + 1)
            finally:
                os.close(fd)


def _read(root_fd: int, rel: str, size: int, dev: int, ino: int) -> bytes | None:
    """The bytes of the regular file `rel`, opened without following any link, or None if it
    is no longer the file the walk saw."""
    parts = rel.split("/")
    fds: list[int] = []
    try:
        parent = root_fd
        for part in parts[:-1]:
            parent = os.open(part, _NOFOLLOW_DIR, dir_fd=parent)
            fds.append(parent)
        fd = os.open(parts[-1], _NOFOLLOW_FILE, dir_fd=parent)
        fds.append(fd)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (dev, ino):
            return None
        chunks = []
        remaining = size + 1  # one byte more than expected tells a file that grew
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        return data if len(data) == size else None
    except OSError:
        return None
    finally:
        for fd in reversed(fds):
            os.close(fd)


def read_packet_tree(path: str | Path, *, limits: Limits = DEFAULT_LIMITS) -> PacketTree:
    """Walk the packet at `path` (never following links) and read what may be read."""
    root = Path(path)
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        raise PacketUsageError(f"{root}: no such packet directory") from None
    except OSError as e:
        raise PacketUsageError(f"{root}: cannot examine: {e.strerror}") from e
    if stat.S_ISLNK(st.st_mode):
        raise PacketUsageError(f"{root}: is a symlink; give the packet directory itself")
    if not stat.S_ISDIR(st.st_mode):
        raise PacketUsageError(f"{root}: not a directory")
    try:
        root_fd = os.open(root, _NOFOLLOW_DIR)
    except OSError as e:
        raise PacketUsageError(f"{root}: cannot open: {e.strerror}") from e
    try:
        walk = _Walk(limits)
        try:
            walk.walk(root_fd, "", 1)
        except _LimitHit as hit:
            entries = {
                rel: TreeEntry(kind, size, nlink)
                for rel, (kind, size, nlink, _, _) in walk.meta.items()
            }
            return PacketTree(entries, breach=f"limit exceeded before reading: {hit}")
        except OSError as e:
            raise PacketUsageError(f"{root}: cannot read the directory: {e.strerror}") from e
        entries = {}
        for rel, (kind, size, nlink, dev, ino) in walk.meta.items():
            data = None
            if kind is FileKind.REGULAR and nlink == 1:
                data = _read(root_fd, rel, size, dev, ino)
            entries[rel] = TreeEntry(kind, size, nlink, data)
        return PacketTree(entries)
    finally:
        os.close(root_fd)


def check_validator_pin(expect_validator: str | None) -> None:
    """Refuse (ValidatorPinError, exit 3) unless the running validator is the pinned one."""
    if expect_validator is None:
        return
    expected = expect_validator.removeprefix("sha256:")
    if not HEX64.fullmatch(expected):
        raise PacketUsageError(
            f"--expect-validator {expect_validator!r}: give 64 lowercase hex digits"
        )
    actual = validator_sha256()
    if actual != expected:
        raise ValidatorPinError(expected, actual)


def check_packet(
    path: str | Path,
    *,
    trusted_keys: Sequence[TrustedKey] = (),
    require_signature: bool = False,
    expect_validator: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> ValidationReport:
    """Every finding about the packet at `path` (see `rollproof.verify.validate`)."""
    check_validator_pin(expect_validator)
    if require_signature and not trusted_keys:
        raise PacketUsageError("requiring a signature needs a trusted key (--trusted-key)")
    return check_tree(
        read_packet_tree(path, limits=limits),
        trusted_keys=trusted_keys,
        require_signature=require_signature,
        limits=limits,
    )


def validate_packet(
    path: str | Path,
    *,
    trusted_keys: Sequence[TrustedKey] = (),
    require_signature: bool = False,
    expect_validator: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> VerifiedPacket:
    """The verified packet at `path`, or `PacketInvalidError` carrying every finding."""
    return check_packet(
        path,
        trusted_keys=trusted_keys,
        require_signature=require_signature,
        expect_validator=expect_validator,
        limits=limits,
    ).verified()
