"""Shared fixtures: real SQLite source files and change directories, and a source-bytes guard."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from rollproof.core.change import Change, load_change
from rollproof.core.surface import AccessKind
from rollproof.rehearse.report import report_schema
from rollproof.surfaces.static import static_scope

BASE_SCHEMA = """
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, fax TEXT);
CREATE TABLE orders (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id INTEGER NOT NULL,
    status TEXT NOT NULL,
    total REAL
);
CREATE TABLE tags (label TEXT, weight);
"""


def assert_valid_report(report: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(
        report_schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    errors = sorted(str(e.message) for e in validator.iter_errors(report))
    assert errors == []


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def source_db(tmp_path: Path) -> Iterator[Path]:
    """A small 'production' database; the test fails if its bytes change at all."""
    path = tmp_path / "prod" / "prod.db"
    path.parent.mkdir()
    conn = sqlite3.connect(path)
    conn.executescript(BASE_SCHEMA)
    conn.executemany(
        "INSERT INTO customers (name, fax) VALUES (?, ?)",
        [(f"c{i}", f"fax{i}" if i % 2 else None) for i in range(200)],
    )
    conn.executemany(
        "INSERT INTO orders (customer_id, status, total) VALUES (?, ?, ?)",
        [(i % 200 + 1, "new" if i % 3 else "paid", i * 1.5) for i in range(500)],
    )
    conn.executemany(
        "INSERT INTO tags VALUES (?, ?)", [("a", 1), ("b", 1.0), ("a", 1), ("c", None)]
    )
    conn.commit()
    conn.close()
    before = sha256_file(path)
    yield path
    assert sha256_file(path) == before, "the source database's bytes changed"


MakeChange = Callable[..., Change]


def declare_everything(*scripts: str | None) -> str:
    reads: set[str] = set()
    writes: set[str] = set()
    for script in scripts:
        for scope in static_scope(script or ""):
            for access in scope.accesses:
                (reads if access.kind is AccessKind.READ else writes).add(access.object)
    return f"reads = {sorted(reads - writes)!r}\nwrites = {sorted(writes)!r}\n".replace("'", '"')


@pytest.fixture
def make_change(tmp_path: Path) -> MakeChange:
    """Write a change directory from inline SQL and load it."""
    counter = iter(range(1_000_000))

    def make(
        apply: str,
        revert: str,
        verify: str | None = None,
        *,
        extra: str = "",
        name: str | None = None,
        surfaces: str | None = None,
    ) -> Change:
        """`surfaces` is the [surfaces] table body; by default it declares exactly what the
        scripts' SQL touches (writes for anything created, altered, dropped or written)."""
        cdir = tmp_path / "changes" / (name or f"change-{next(counter)}")
        cdir.mkdir(parents=True)
        (cdir / "apply.sql").write_text(apply)
        (cdir / "revert.sql").write_text(revert)
        lines = ['apply = "apply.sql"', 'revert = "revert.sql"']
        if verify is not None:
            (cdir / "verify.sql").write_text(verify)
            lines.append('verify = "verify.sql"')
        if surfaces is None:
            surfaces = declare_everything(apply, revert, verify)
        (cdir / "change.toml").write_text(
            "\n".join(lines) + "\n" + extra + "\n[surfaces]\n" + surfaces
        )
        return load_change(cdir)

    return make


def rehearse_checked(change: Change, source: str, **kwargs: Any) -> Any:
    """Rehearse, and prove the source file's bytes did not change.

    Every test that rehearses against a SQLite file goes through this (or the source_db
    fixture, which checks the same at teardown): a rehearsal never writes its source.
    """
    from rollproof.core.errors import SourceError
    from rollproof.engines.sqlite.source import parse_sqlite_dsn
    from rollproof.rehearse.flow import rehearse

    try:
        path = parse_sqlite_dsn(source)
    except SourceError:
        return rehearse(change, source, **kwargs)  # not a SQLite file: the error is the test
    if not path.is_file():
        return rehearse(change, source, **kwargs)
    before = sha256_file(path)
    result = rehearse(change, source, **kwargs)
    assert sha256_file(path) == before, "the source database's bytes changed"
    return result
