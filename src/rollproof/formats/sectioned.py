"""golang-migrate, dbmate and goose: one directory of numbered SQL files.

golang-migrate  `<N>_<title>.up.sql` and `<N>_<title>.down.sql`; records the current version
                in `schema_migrations(version, dirty)`.
dbmate          `<version>_<name>.sql` with `-- migrate:up` and `-- migrate:down` sections; an
                option `transaction:false` on a section's line runs it outside a transaction;
                records each applied version in `schema_migrations(version)`.
goose           `<version>_<name>.sql` with `-- +goose Up` and `-- +goose Down` sections,
                `-- +goose StatementBegin`/`StatementEnd` around a statement with its own `;`s,
                `-- +goose NO TRANSACTION`; records `goose_db_version(version_id, is_applied)`.
"""

from __future__ import annotations

import re
from pathlib import Path

from rollproof.formats.files import Reader, has_code, script
from rollproof.formats.model import FormatError, Migration, Project, Sql

_GOLANG = re.compile(r"^(?P<version>\d+)_(?P<title>.*)\.(?P<dir>up|down)\.sql$")
_NUMBERED = re.compile(r"^(?P<version>\d+)_(?P<title>.+)\.sql$")
_DBMATE = re.compile(r"^--\s*migrate:(?P<dir>up|down)\b(?P<opts>.*)$")
_GOOSE = re.compile(r"^--\s*\+goose\s+(?P<what>.+?)\s*$")


def _sql_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.endswith(".sql") and p.is_file())


def load_golang_migrate(directory: Path) -> Project:
    reader = Reader(directory)
    found: dict[int, dict[str, str]] = {}
    titles: dict[int, str] = {}
    for path in _sql_files(directory):
        m = _GOLANG.match(path.name)
        if m is None:
            raise FormatError(str(path), "not <version>_<title>.up.sql or .down.sql")
        version = int(m.group("version"))
        if m.group("dir") in found.get(version, {}):
            other = found[version][m.group("dir")]
            raise FormatError(str(path), f"version {version} is also {other}")
        found.setdefault(version, {})[m.group("dir")] = path.name
        titles[version] = m.group("title")
    migrations = []
    for version in sorted(found):
        names = found[version]
        if "up" not in names:
            raise FormatError(str(directory / names["down"]), "a down migration with no up")
        notes: list[str] = []
        text = reader.text(names["up"])
        if not has_code(text):
            raise FormatError(reader.shown(names["up"]), "has no SQL statement", 1)
        apply = script(names["up"], text, notes)
        revert = None
        if "down" in names:
            down = reader.text(names["down"])
            if has_code(down):
                revert = script(names["down"], down, notes)
        migrations.append(
            Migration(
                id=str(version),
                name=titles[version].replace("_", " "),
                apply=apply,
                revert=revert,
                verify=None,
                version=str(version),
                irreversible=None if revert else f"no {version}_{titles[version]}.down.sql",
                notes=tuple(notes),
                files=reader.take(),
            )
        )
    if not migrations:
        raise FormatError(str(directory), "no <version>_<title>.up.sql migrations here")
    return Project("golang-migrate", str(directory), tuple(migrations), "schema_migrations")


def _numbered(directory: Path, tool: str) -> list[tuple[int, str, str, Path]]:
    out: list[tuple[int, str, str, Path]] = []
    seen: dict[int, str] = {}
    for path in _sql_files(directory):
        m = _NUMBERED.match(path.name)
        if m is None:
            raise FormatError(str(path), f"not a {tool} migration name: <version>_<name>.sql")
        version = int(m.group("version"))
        if version in seen:
            raise FormatError(str(path), f"version {version} is also {seen[version]}")
        seen[version] = path.name
        out.append((version, m.group("version"), m.group("title"), path))
    if not out:
        raise FormatError(str(directory), f"no {tool} migrations (<version>_<name>.sql) here")
    return sorted(out)


def _section(rel: str, lines: list[str], start: int, end: int, notes: list[str]) -> Sql | None:
    """Lines start..end-1 (0-based, after the marker) as a script, or None if no SQL."""
    text = "".join(lines[start:end])
    if not has_code(text):
        return None
    return script(rel, text, notes, line=start + 1, end=end)


def load_dbmate(directory: Path) -> Project:
    reader = Reader(directory)
    migrations = []
    for _version, raw_version, title, path in _numbered(directory, "dbmate"):
        rel = path.name
        shown = reader.shown(rel)
        lines = reader.text(rel).splitlines(keepends=True)
        marks: dict[str, tuple[int, str]] = {}
        for n, line in enumerate(lines):
            m = _DBMATE.match(line.strip())
            if m is None:
                if not marks and line.strip() and not line.strip().startswith("--"):
                    raise FormatError(shown, "SQL before the `-- migrate:up` line", n + 1)
                continue
            if m.group("dir") in marks:
                raise FormatError(shown, f"a second `-- migrate:{m.group('dir')}` section", n + 1)
            opts = m.group("opts").split()
            for opt in opts:
                if opt not in ("transaction:false", "transaction:true"):
                    raise FormatError(shown, f"unknown dbmate option {opt!r}", n + 1)
            marks[m.group("dir")] = (n, " ".join(opts))
        if "up" not in marks:
            raise FormatError(shown, "has no `-- migrate:up` section", 1)
        up_at, up_opts = marks["up"]
        down_at, down_opts = marks.get("down", (len(lines), ""))
        if down_at < up_at:
            raise FormatError(shown, "`-- migrate:down` comes before `-- migrate:up`", down_at + 1)
        notes: list[str] = []
        apply = _section(rel, lines, up_at + 1, down_at, notes)
        if apply is None:
            raise FormatError(shown, "the `-- migrate:up` section has no SQL", up_at + 1)
        revert = _section(rel, lines, down_at + 1, len(lines), notes) if "down" in marks else None
        no_txn = None
        for where, opts in ((up_at, up_opts), (down_at, down_opts)):
            if "transaction:false" in opts:
                no_txn = no_txn or f"dbmate `transaction:false` ({rel}:{where + 1})"
        migrations.append(
            Migration(
                id=raw_version,
                name=title.replace("_", " "),
                apply=apply,
                revert=revert,
                verify=None,
                version=raw_version,
                no_transaction=no_txn,
                irreversible=None if revert else "its `-- migrate:down` section has no SQL",
                notes=tuple(notes),
                files=reader.take(),
            )
        )
    return Project("dbmate", str(directory), tuple(migrations), "schema_migrations")


def load_goose(directory: Path) -> Project:
    reader = Reader(directory)
    migrations = []
    for version, _raw, title, path in _numbered(directory, "goose"):
        rel = path.name
        shown = reader.shown(rel)
        lines = reader.text(rel).splitlines(keepends=True)
        marks: dict[str, int] = {}
        no_txn = None
        open_stmt: int | None = None
        for n, line in enumerate(lines):
            m = _GOOSE.match(line.strip())
            if m is None:
                if not marks and line.strip() and not line.strip().startswith("--"):
                    raise FormatError(shown, "SQL before the `-- +goose Up` line", n + 1)
                continue
            what = " ".join(m.group("what").split()).upper()
            if what in ("UP", "DOWN"):
                if open_stmt is not None:
                    raise FormatError(shown, "StatementBegin without StatementEnd", open_stmt + 1)
                if what.lower() in marks:
                    raise FormatError(shown, f"a second `-- +goose {m.group('what')}`", n + 1)
                marks[what.lower()] = n
            elif what == "STATEMENTBEGIN":
                if open_stmt is not None:
                    raise FormatError(shown, "StatementBegin inside another StatementBegin", n + 1)
                if not marks:
                    raise FormatError(shown, "StatementBegin before `-- +goose Up`", n + 1)
                open_stmt = n
            elif what == "STATEMENTEND":
                if open_stmt is None:
                    raise FormatError(shown, "StatementEnd without StatementBegin", n + 1)
                open_stmt = None
            elif what == "NO TRANSACTION":
                no_txn = f"goose `NO TRANSACTION` ({rel}:{n + 1})"
            elif what.startswith("ENVSUB"):
                raise FormatError(shown, "`+goose ENVSUB` is not supported by rollproof", n + 1)
            else:
                raise FormatError(shown, f"unknown goose annotation {m.group('what')!r}", n + 1)
        if open_stmt is not None:
            raise FormatError(shown, "StatementBegin without StatementEnd", open_stmt + 1)
        if "up" not in marks:
            raise FormatError(shown, "has no `-- +goose Up` section", 1)
        up_at = marks["up"]
        down_at = marks.get("down", len(lines))
        if down_at < up_at:
            raise FormatError(shown, "`-- +goose Down` comes before `-- +goose Up`", down_at + 1)
        notes: list[str] = []
        apply = _section(rel, lines, up_at + 1, down_at, notes)
        if apply is None:
            raise FormatError(shown, "the `-- +goose Up` section has no SQL", up_at + 1)
        revert = _section(rel, lines, down_at + 1, len(lines), notes) if "down" in marks else None
        migrations.append(
            Migration(
                id=str(version),
                name=title.replace("_", " "),
                apply=apply,
                revert=revert,
                verify=None,
                version=str(version),
                no_transaction=no_txn,
                irreversible=None if revert else "no `-- +goose Down` SQL",
                notes=tuple(notes),
                files=reader.take(),
            )
        )
    return Project("goose", str(directory), tuple(migrations), "goose_db_version")
