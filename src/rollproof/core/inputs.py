"""Reading a user's input file: only a regular file, never blocking, never without a size cap.

Every file rollproof reads because a user named it (change.toml and its scripts, rollproof.toml,
a key file) goes through `read_input`. Each rule stops a named failure:

* the file is opened with `O_NONBLOCK`, so a FIFO named as `apply.sql` cannot hang the process
  waiting for a writer that never comes; it is then refused because it is not a regular file;
* only a regular file is read (checked with `fstat` on the opened descriptor, so a path swapped
  between a check and the open cannot slip a device in): `/dev/zero` or `/dev/urandom` behind a
  symlink would otherwise be read until memory runs out;
* at most `limit` bytes are read: a file that grows past the cap while it is read is refused, not
  truncated, so what is hashed is the whole file.

Errors are `InputFileError` (a `UsageError`, exit 2) naming the file and the reason; callers
that have a more specific error (a change file, a policy file) wrap it with their own context.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from rollproof.core.errors import UsageError

MAX_INPUT_BYTES = 16 * 1024 * 1024
"""The default cap: a migration script or a config file larger than 16 MiB is refused."""

_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


class InputFileError(UsageError):
    """An input file that cannot be read as one: missing, not a regular file, too large."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def read_input(path: str | Path, *, limit: int = MAX_INPUT_BYTES) -> bytes:
    """The bytes of the regular file at `path` (symlinks followed), at most `limit` of them."""
    shown = str(path)
    try:
        fd = os.open(path, _FLAGS)
    except FileNotFoundError:
        raise InputFileError(shown, "no such file") from None
    except IsADirectoryError:
        raise InputFileError(shown, "is a directory, not a file") from None
    except OSError as e:
        raise InputFileError(shown, f"cannot open: {e.strerror}") from e
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputFileError(shown, f"is {_kind(info.st_mode)}, not a regular file")
        if info.st_size > limit:
            raise InputFileError(shown, f"is {info.st_size} bytes; the limit is {limit}")
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            except OSError as e:
                raise InputFileError(shown, f"cannot read: {e.strerror}") from e
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise InputFileError(shown, f"grew past the limit of {limit} bytes while read")
        return b"".join(chunks)
    finally:
        os.close(fd)
