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
    """Counts the calls about one file (os.stat and os.open by its name; os.fstat and os.pread
    of a descriptor of it); armed with n, removes or truncates it just before the n-th, as its
    writer would (a -journal deleted, or truncated in TRUNCATE mode, at every commit)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.target: Path | None = None
        self.fire_at, self.calls, self.fired, self.action = 0, 0, False, "remove"
        self.fds: set[int] = set()
        for name in ("stat", "open", "fstat", "pread"):
            original = getattr(os, name)
            monkeypatch.setattr(os, name, self._wrap(name, original))

    def _about(self, name: str, args: tuple[object, ...]) -> bool:
        if self.target is None or not args:
            return False
        if name in ("fstat", "pread"):
            return args[0] in self.fds
        return Path(str(args[0])) == self.target

    def _wrap(self, name: str, original: Callable[..., object]) -> Callable[..., object]:
        def call(*args: object, **kwargs: object) -> object:
            if self._about(name, args):
                self.calls += 1
                if self.calls == self.fire_at:
                    target, self.target = self.target, None
                    assert target is not None
                    if self.action == "remove":
                        target.unlink()
                    else:
                        os.truncate(target, len(SIDE_BYTES) // 2)
                    self.fired = True
            result = original(*args, **kwargs)
            if name == "open" and self.target is not None and Path(str(args[0])) == self.target:
                assert isinstance(result, int)
                self.fds.add(result)
            return result

        return call

    def watch(self, target: Path, fire_at: int = 0, action: str = "remove") -> None:
        self.target, self.fire_at, self.calls, self.fired = target, fire_at, 0, False
        self.action, self.fds = action, set()


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


@pytest.mark.parametrize("action", ["remove", "truncate"])
@pytest.mark.parametrize("suffix", ["-journal", "-wal"])
@pytest.mark.parametrize("reader", READERS)
def test_a_side_file_removed_or_truncated_at_any_call_is_read_as_it_was_or_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reader: str, suffix: str, action: str
) -> None:
    read = READERS[reader]
    digest = _b3 if reader.startswith("blake3") else _sha
    remover = Remover(monkeypatch)
    db, side = _scene(tmp_path / "count", suffix)
    remover.watch(side)
    undisturbed = read(db)
    calls = remover.calls
    assert calls >= 3, f"the reader looked at {side.name} only {calls} times"
    assert undisturbed[side.name] == digest(SIDE_BYTES)
    # what a reader may see: the bytes before, the bytes after, or no file
    seen = {digest(SIDE_BYTES), digest(SIDE_BYTES[: len(SIDE_BYTES) // 2])}

    for n in range(1, calls + 1):
        db, side = _scene(tmp_path / f"{action}-at-{n}", suffix)
        remover.watch(side, fire_at=n, action=action)
        found = read(db)
        assert remover.fired, f"call {n} of {calls} never came"
        assert side.exists() is (action == "truncate")
        assert found[db.name] == digest(db.read_bytes()), f"{action} at call {n}"
        assert found.get(side.name, digest(SIDE_BYTES)) in seen, f"{action} at call {n}"
        assert set(found) <= {db.name, side.name}
        if action == "truncate":
            assert side.name in found  # truncated, not gone: it is still read


WRITER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA journal_mode = TRUNCATE")
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE a SET v = v + 1")
    conn.execute("INSERT INTO a SELECT v FROM a LIMIT 50")
    conn.execute("COMMIT")
"""
READER = """
import sys, time
from pathlib import Path
from rollproof.engines.sqlite import session
end = time.monotonic() + float(sys.argv[2])
n = 0
while time.monotonic() < end:
    session.source_bytes_blake3(Path(sys.argv[1]))
    session.source_bytes_digest(Path(sys.argv[1]))
    n += 1
print(n)
"""


def test_a_real_writer_truncating_its_journal_at_every_commit_never_kills_the_reader(
    tmp_path: Path,
) -> None:
    """The race as a writer makes it: in TRUNCATE mode the -journal is cut to nothing at each
    commit. A memory-mapped read of it died with SIGBUS (exit -7, no message); read with pread
    the reader runs to its end."""
    import subprocess
    import sys

    db, _side = _scene(tmp_path / "live", "-journal")
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db), "2.0"])
    try:
        reader = subprocess.run(
            [sys.executable, "-c", READER, str(db), "1.5"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        writer.wait(timeout=60)
    assert reader.returncode == 0, reader.stderr
    assert int(reader.stdout) > 10
    assert writer.returncode == 0


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
