"""Atomic writes of files and whole directories.

A crash must never leave something that looks complete: a file is written to a temporary name
in the same directory, flushed and fsynced, then renamed over its final name; a directory is
built under a hidden temporary name and renamed into place only when every file in it is
durable. Readers therefore see either nothing or the whole thing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from rollproof.core.errors import EnvironmentProblemError, UsageError
from rollproof.core.steps import Step, reached
from rollproof.engines.workspace import make_owned_dir, sweep


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write `data` to `path` so that a crash leaves either the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _safe_relative(rel: str) -> PurePosixPath:
    p = PurePosixPath(rel)
    if p.is_absolute() or not p.parts or any(part in ("", ".", "..") for part in p.parts):
        raise ValueError(f"unsafe relative path {rel!r}")
    return p


def write_tree_atomically(
    dest: Path, files: Mapping[str, bytes], *, modes: Mapping[str, int] | None = None
) -> Path:
    """Create directory `dest` holding exactly `files` (relative POSIX path -> bytes).

    `dest` must not exist yet, or be an empty directory: evidence is never overwritten.
    """
    modes = modes or {}
    dest = dest.absolute()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UsageError(
            f"output directory {dest} already exists and is not empty; choose another --out"
        )
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        sweep([dest.parent], partial_only=True)  # partial packets of runs that died
        owned = make_owned_dir(f".{dest.name}.partial-", dest.parent, beside=True)
    except OSError as e:
        raise EnvironmentProblemError(
            f"cannot create output under {dest.parent}: {e.strerror}"
        ) from e
    staging = owned.directory
    try:
        staging.chmod(0o755)
        for rel, data in sorted(files.items()):
            target = staging.joinpath(*_safe_relative(rel).parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(target, modes.get(rel, 0o644))
        for d in sorted({p for p in staging.rglob("*") if p.is_dir()} | {staging}, reverse=True):
            _fsync_dir(d)
        reached(Step.PACKET_STAGED)
        if dest.exists():
            dest.rmdir()
        os.rename(staging, dest)
        _fsync_dir(dest.parent)
        owned.owner.unlink()  # beside the staging directory: never part of the packet
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        owned.owner.unlink(missing_ok=True)
        raise EnvironmentProblemError(f"cannot write {dest}: {e.strerror}") from e
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        owned.owner.unlink(missing_ok=True)
        raise
    finally:
        owned.release()
    return dest
