"""Which tool a directory belongs to, and loading it with that tool's loader."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from rollproof.core.errors import UsageError
from rollproof.formats import (
    alembic,
    flyway,
    liquibase,
    liquibase_xml,
    liquibase_yaml,
    sectioned,
    sqitch,
)
from rollproof.formats.bookkeeping import is_postgres
from rollproof.formats.model import FORMATS, FormatError, Project

LOADERS: dict[str, Callable[[Path], Project]] = {
    "sqitch": sqitch.load,
    "flyway": flyway.load,
    "liquibase": liquibase.load,
    "golang-migrate": sectioned.load_golang_migrate,
    "dbmate": sectioned.load_dbmate,
    "goose": sectioned.load_goose,
    "alembic": alembic.load,
}
_FLYWAY = re.compile(r"^[VUR][0-9._]*__.+\.sql$")
_HEAD_BYTES = 64 * 1024


def _head(path: Path) -> str:
    with path.open("rb") as f:
        return f.read(_HEAD_BYTES).decode("utf-8", "replace")


def _first_line(path: Path) -> str:
    return next((line for line in _head(path).splitlines() if line.strip()), "")


def detect(directory: Path) -> str:
    """The tool whose conventions the directory follows; refuses to guess between two."""
    if (directory / sqitch.PLAN).is_file() or (directory / sqitch.CONF).is_file():
        return "sqitch"
    if alembic.is_project(directory):
        return "alembic"
    sql = [p for p in sorted(directory.iterdir()) if p.name.endswith(".sql") and p.is_file()]
    found: set[str] = set()
    for p in sql:
        if liquibase.FIRST_LINE.match(_first_line(p)):
            found.add("liquibase")
        elif p.name.endswith((".up.sql", ".down.sql")):
            found.add("golang-migrate")
        elif _FLYWAY.match(p.name):
            found.add("flyway")
        else:
            head = _head(p)
            if re.search(r"^--\s*\+goose\s+up\b", head, re.I | re.M):
                found.add("goose")
            elif re.search(r"^--\s*migrate:up\b", head, re.M):
                found.add("dbmate")
    for p in sorted(directory.iterdir()):
        if not p.is_file():
            continue
        xml = p.name.endswith(".xml") and liquibase_xml.is_changelog(_head(p))
        if xml or liquibase_yaml.is_changelog(p.name, _head(p)):
            found.add("liquibase")
    if len(found) == 1:
        return found.pop()
    if not found:
        raise FormatError(
            str(directory),
            "no migrations of a known tool here (" + ", ".join(FORMATS) + "); "
            "give --format, or the directory that holds them",
        )
    raise FormatError(
        str(directory), "holds migrations of " + " and ".join(sorted(found)) + ": give --format"
    )


def load_project(directory: str | Path, fmt: str | None = None, dialect: str = "sqlite") -> Project:
    """The directory's migrations, in the order its tool deploys them. `dialect` is the
    source's ("sqlite" or "postgresql"): Alembic renders its revisions' SQL for it."""
    d = Path(directory)
    if not d.is_dir():
        raise FormatError(str(d), "is not a directory")
    if fmt is None:
        fmt = detect(d)
    if fmt not in LOADERS:
        raise UsageError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")
    if fmt == "alembic":
        return alembic.load(d, dialect)
    if fmt == "liquibase":
        return liquibase.load(d, dialect)
    return LOADERS[fmt](d)


def dialect_for(source: str) -> str:
    """The SQL dialect a project meant for `source` is rendered in (Alembic's offline SQL)."""
    return "postgresql" if is_postgres(source) else "sqlite"
