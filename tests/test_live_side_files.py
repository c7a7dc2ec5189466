"""A live SQLite source's writer removes its side files while rollproof looks at them.

A writer in rollback-journal mode creates `-journal` when its transaction starts writing and
deletes it when it commits or rolls back; a WAL source's `-wal` goes when its last connection
closes. rollproof lists a source's non-empty side files and hashes each (at the snapshot, and
again at the end to say whether the source moved on). A side file removed between the listing
and its reading once ended a rehearsal as an internal error (exit 70, FileNotFoundError on
`live.db-journal`).

The matrix: for each reader and each side file, count the filesystem calls the reader makes
about that file when nothing disturbs it, then, for every n up to that count, remove the file
just before the n-th call. Each row asserts the reader finishes, the database file's digest is
right, and the side file is either left out (removed before it was opened) or hashed with the
bytes it had (removed after).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import blake3
import pytest

from rollproof.core.errors import SourceError
from rollproof.engines.sqlite import session

SIDE_BYTES = b"journal bytes of a writer mid-transaction\n" * 100


def _held(path: Path) -> dict[str, str]:
    fd = os.open(path, os.O_RDONLY)
    try:
        b3, sha = session._held_digests(fd, path)
    finally:
        os.close(fd)
    assert set(b3) == set(sha)  # both digests of one opening: never one without the other
    return sha


READERS: dict[str, Callable[[Path], dict[str, str]]] = {
    "sha256 (report)": session.source_bytes_digest,
    "blake3 (moved on?)": session.source_bytes_blake3,
    "under the snapshot's lock": _held,
}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _b3(data: bytes) -> str:
    return str(blake3.blake3(data).hexdigest())


class Remover:
    """Counts os.stat and os.open calls about one file; armed with n, removes it just before
    the n-th (as its writer would)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.target: Path | None = None
        self.fire_at, self.calls, self.fired = 0, 0, False
        for name in ("stat", "open"):
            original = getattr(os, name)
            monkeypatch.setattr(os, name, self._wrap(original))

    def _wrap(self, original: Callable[..., object]) -> Callable[..., object]:
        def call(*args: object, **kwargs: object) -> object:
            if self.target is not None and args and Path(str(args[0])) == self.target:
                self.calls += 1
                if self.calls == self.fire_at:
                    target, self.target = self.target, None
                    target.unlink()
                    self.fired = True
            return original(*args, **kwargs)

        return call

    def watch(self, target: Path, fire_at: int = 0) -> None:
        self.target, self.fire_at, self.calls, self.fired = target, fire_at, 0, False


def _scene(where: Path, suffix: str) -> tuple[Path, Path]:
    where.mkdir()
    db = where / "live.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE a (v)")
    conn.execute("INSERT INTO a VALUES (1)")
    conn.commit()
    conn.close()
    side = db.with_name(db.name + suffix)
    side.write_bytes(SIDE_BYTES)
    return db, side


@pytest.mark.parametrize("suffix", ["-journal", "-wal"])
@pytest.mark.parametrize("reader", READERS)
def test_a_side_file_removed_at_any_call_is_absent_or_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reader: str, suffix: str
) -> None:
    read = READERS[reader]
    digest = _b3 if reader.startswith("blake3") else _sha
    remover = Remover(monkeypatch)
    db, side = _scene(tmp_path / "count", suffix)
    remover.watch(side)
    undisturbed = read(db)
    calls = remover.calls
    assert calls >= 2, f"the reader looked at {side.name} only {calls} times"
    assert undisturbed[side.name] == digest(SIDE_BYTES)

    for n in range(1, calls + 1):
        db, side = _scene(tmp_path / f"remove-at-{n}", suffix)
        remover.watch(side, fire_at=n)
        found = read(db)
        assert remover.fired, f"call {n} of {calls} never came"
        assert not side.exists()
        assert found[db.name] == digest(db.read_bytes()), f"removed at call {n}"
        assert found.get(side.name, digest(SIDE_BYTES)) == digest(SIDE_BYTES), f"call {n}"
        assert set(found) <= {db.name, side.name}


def test_the_database_file_removed_is_the_source_gone(tmp_path: Path) -> None:
    db, _side = _scene(tmp_path / "gone", "-journal")
    remover_db = db

    real_open = os.open

    def vanishing_open(path: object, *args: object, **kwargs: object) -> int:
        if Path(str(path)) == remover_db and remover_db.exists():
            remover_db.unlink()
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "open", vanishing_open)
        with pytest.raises(SourceError, match=r"live\.db: removed while it was being read$"):
            session.source_bytes_digest(db)
