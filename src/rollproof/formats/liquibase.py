"""Liquibase formatted SQL: changelogs whose first line is `--liquibase formatted sql`.

    --liquibase formatted sql
    --changeset ann:1 runInTransaction:false
    --preconditions onFail:MARK_RAN
    --precondition-sql-check expectedResult:0 SELECT count(*) FROM users
    --comment: what it is for
    CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);
    --rollback DROP TABLE users;

A changeset runs from its `--changeset author:id [attributes]` line to the next one; its SQL is
every other line. The rollback is every `--rollback <sql>` line (each one line of the rollback
script) and every `/* liquibase rollback ... */` block. Liquibase's parser appends a block's
lines as it reads them, without a line break between them, and so does this one: the rollback
rehearsed is the one Liquibase would run. `--rollback not required` (or `empty`) is a rollback
that does nothing, so the changeset is reported not reversible; `--rollback changesetId:ID
changesetAuthor:AUTHOR` rolls back with another changeset's SQL.

The lines are matched with Liquibase's own patterns (AbstractFormattedChangeLogParser), and
what Liquibase refuses is refused here with the file and line. `runInTransaction:false` makes
the transaction leg NOT_APPLICABLE. Preconditions are reported (in the change's notes), not
evaluated: rollproof rehearses the changeset as if they held. `dbms:` is evaluated for the
source's dialect (`sqlite` or `postgresql`, the positions `rehearse-dir` builds): a changeset for
other databases only is skipped, as Liquibase would skip it there. `context:` and `labels:`
are reported (Liquibase runs every changeset when no --contexts or --labels are given). What
rollproof cannot rehearse as Liquibase would is refused: `--property` and `${...}`
substitution, an `endDelimiter` other than `;`, `--include`, and SQL before the first
changeset (which Liquibase silently drops).

A directory may hold several changelogs: they are read in the order of their paths, as
Liquibase's `includeAll` reads them. DATABASECHANGELOG records a changeset as (ID, AUTHOR,
FILENAME), FILENAME being the changelog's path as Liquibase was given it (or its
`logicalFilePath`); each migration's `record` keeps that key, with the path relative to the
directory.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from rollproof.formats import liquibase_xml, liquibase_yaml
from rollproof.formats.files import Reader, has_code
from rollproof.formats.model import FormatError, Migration, Project, Sql

BOOKKEEPING = "DATABASECHANGELOG"
DIALECT = "sqlite"
"""What `dbms:` is evaluated for: Liquibase's name of the database positions are built on."""

_I = re.I
FIRST_LINE = re.compile(r"^\s*--\s*liquibase\s*formatted.*", _I)
_CHANGESET = re.compile(r'\s*--[\s]*changeset\s+("[^"]+"|[^:]+):\s*("[^"]+"|\S+)(.*)', _I)
_CHANGESET_LOOSE = re.compile(r"(?:-[\s]*changeset\s.*|\s*--[\s]*changeset[\s]*.*)", _I)
_ROLLBACK = re.compile(r"\s*--[\s]*rollback (.*)", _I)
_ROLLBACK_LOOSE = re.compile(r"\s*-[\s]*rollback\s.*", _I)
_ROLLBACK_BLOCK = re.compile(r"\s*/\*\s*liquibase\s*rollback\s*", _I)
_BLOCK_END = re.compile(r".*\s*\*/\s*", _I)
_PRECONDITIONS = re.compile(r"\s*--[\s]*preconditions(.*)", _I)
_PRECONDITION = re.compile(r"\s*--[\s]*precondition-([a-zA-Z0-9-]+) (.*)", _I)
_PRECONDITION_EMPTY = re.compile(r"\s*--[\s]*precondition-([a-zA-Z0-9-]+)", _I)
_COMMENT = re.compile(r"--[\s]*comment:? (.*)", _I)
_VALID_CHECKSUM = re.compile(r"--[\s]*validCheckSum:? (.*)", _I)
_IGNORE_LINES = re.compile(r"--[\s]*ignoreLines:(\w+)", _I)
_PROPERTY = re.compile(r"\s*-+\s*property\s.*", _I)
_INCLUDE = re.compile(r"\s*--\s*include(?:All)?\s+(?:file|path):.*", _I)
_PRECONDITION_KINDS = ("sql-check", "table-exists", "view-exists")


def _attr(line: str, name: str, value: str = r"(\S*)") -> str | None:
    m = re.match(rf".*\b{name}:{value}.*", line, _I)
    return None if m is None else m.group(1)


def _flag(line: str, name: str, default: bool) -> bool:
    value = _attr(line, name, r"(\w+)")
    return default if value is None else value.lower() == "true"


def _unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def dbms_matches(dbms: str | None, dialect: str = DIALECT) -> bool:
    """Liquibase's `DatabaseList.definitionMatches`: does a changeset's `dbms:` list include
    `dialect` (`all`, `none`, `!name` exclusions)?"""
    if dbms is None or not dbms.strip():
        return True
    names = [d.strip().lower() for d in dbms.split(",") if d.strip()]
    if "none" in names:
        return False
    if "all" in names:
        return True
    if f"!{dialect}" in names:
        return False
    if all(n.startswith("!") for n in names):
        return True
    return dialect in names


@dataclass
class _Changeset:
    rel: str
    author: str
    id: str
    line: int
    header: str
    filename: str
    sql_lines: list[str] = field(default_factory=list)
    rollback: list[str] = field(default_factory=list)
    rollback_line: int = 0
    comment: str = ""
    notes: list[str] = field(default_factory=list)


def _parse(rel: str, text: str, shown: str) -> list[_Changeset]:
    lines = text.splitlines()
    logical = None
    changesets: list[_Changeset] = []
    current: _Changeset | None = None
    n = 0
    while n < len(lines):
        line = lines[n]
        n += 1
        if _PROPERTY.fullmatch(line):
            raise FormatError(
                shown, "`--property` is not supported by rollproof: it substitutes no ${...}", n
            )
        if FIRST_LINE.fullmatch(line):
            logical = _attr(line, "logicalFilePath")
            continue
        ignore = _IGNORE_LINES.fullmatch(line)
        if ignore:
            at = n
            if ignore.group(1) == "start":
                while n < len(lines):
                    n += 1
                    end = _IGNORE_LINES.fullmatch(lines[n - 1])
                    if end and end.group(1) == "end":
                        break
                else:
                    raise FormatError(shown, "`--ignoreLines:start` without `--ignoreLines:end`", n)
            elif ignore.group(1).isdigit():
                n += int(ignore.group(1))
            else:
                raise FormatError(shown, f"unknown ignoreLines syntax {ignore.group(1)!r}", n)
            n = min(n, len(lines))
            if current is not None:  # ignored lines are not run; blanks keep the line numbers
                current.sql_lines.extend([""] * (n - at + 1))
            continue
        head = _CHANGESET.fullmatch(line)
        if head:
            author, cid = _unquote(head.group(1).strip()), _unquote(head.group(2))
            if not cid.replace(":", "").replace(" ", ""):
                raise FormatError(shown, "the changeset id is empty", n)
            filename = _attr(line, "logicalFilePath") or logical or rel
            current = _Changeset(rel, author, cid, n, line, filename)
            changesets.append(current)
            continue
        if _CHANGESET_LOOSE.fullmatch(line):
            raise FormatError(shown, "not a changeset line: --changeset <author>:<id>", n)
        if _INCLUDE.fullmatch(line):
            raise FormatError(shown, "`--include` is not supported by rollproof", n)
        if current is None:
            if _COMMENT.fullmatch(line):
                raise FormatError(shown, "a --comment outside a changeset", n)
            if has_code(line):
                raise FormatError(shown, "SQL before the first --changeset line", n)
            continue
        n = _changeset_line(current, lines, n, line, shown)
    return changesets


def _changeset_line(c: _Changeset, lines: list[str], n: int, line: str, shown: str) -> int:
    """Take line `n` (1-based) of changeset `c`; returns the number of the last line read."""
    rollback = _ROLLBACK.fullmatch(line)
    if comment := _COMMENT.fullmatch(line):
        c.comment = comment.group(1).strip()
        c.sql_lines.append("")
    elif _VALID_CHECKSUM.fullmatch(line):
        c.sql_lines.append("")
    elif rollback:
        c.rollback.append(rollback.group(1) + "\n")
        c.rollback_line = c.rollback_line or n
        c.sql_lines.append("")
    elif _ROLLBACK_LOOSE.fullmatch(line):
        raise FormatError(shown, "not a rollback line: --rollback <sql>", n)
    elif _ROLLBACK_BLOCK.fullmatch(line):
        c.rollback_line = c.rollback_line or n + 1
        c.sql_lines.append("")
        start = n
        while True:
            if n >= len(lines):
                raise FormatError(shown, "the `/* liquibase rollback` block is not closed", start)
            n += 1
            body = lines[n - 1]
            c.sql_lines.append("")
            if _BLOCK_END.fullmatch(body):
                last = re.split(r"\*/\s*$", body)[0]
                if last.strip():
                    c.rollback.append(last)
                break
            c.rollback.append(body)
    elif _PRECONDITIONS.fullmatch(line):
        what = line.strip().lstrip("-").strip()
        c.notes.append(f"{what} ({c.rel}:{n}): reported, not evaluated")
        c.sql_lines.append("")
    elif kind := (_PRECONDITION.fullmatch(line) or _PRECONDITION_EMPTY.fullmatch(line)):
        name = kind.group(1)
        if name not in _PRECONDITION_KINDS:
            raise FormatError(shown, f"the {name!r} precondition type is not supported", n)
        params = kind.group(2).strip() if kind.re is _PRECONDITION else ""
        if not params:
            raise FormatError(shown, f"precondition-{name} has no parameters", n)
        c.notes.append(f"precondition-{name} {params} ({c.rel}:{n}): reported, not evaluated")
        c.sql_lines.append("")
    else:
        c.sql_lines.append(line)
    return n


def _is_xml_changelog(path: Path) -> bool:
    with path.open("rb") as f:
        return liquibase_xml.is_changelog(f.read(64 * 1024).decode("utf-8", "replace"))


def _is_structured_changelog(path: Path) -> bool:
    """A YAML or JSON changelog (liquibase_yaml.py)."""
    with path.open("rb") as f:
        head = f.read(64 * 1024).decode("utf-8", "replace")
    return liquibase_yaml.is_changelog(path.name, head)


def _is_changelog(p: Path) -> bool:
    if p.suffix == ".sql":
        return bool(FIRST_LINE.match(_first_line(p)))
    if p.suffix == ".xml":
        return _is_xml_changelog(p)
    return _is_structured_changelog(p)


def load(directory: Path, dialect: str = DIALECT) -> Project:
    """The changelogs' changesets for `dialect` (what `dbms:` is evaluated against)."""
    reader = Reader(directory)

    def matches(dbms: str | None) -> bool:
        return dbms_matches(dbms, dialect)

    candidates = [
        p
        for pattern in ("*.sql", "*.xml", "*.yaml", "*.yml", "*.json")
        for p in directory.rglob(pattern)
    ]
    changelogs = sorted(
        p.relative_to(directory).as_posix() for p in candidates if p.is_file() and _is_changelog(p)
    )
    if not changelogs:
        raise FormatError(
            str(directory), "no `--liquibase formatted sql`, XML, YAML or JSON changelog here"
        )
    migrations: list[Migration] = []
    seen: dict[tuple[str, str, str], str] = {}
    parsed: list[tuple[str, str, list[_Changeset]]] = []
    xml: dict[str, list[tuple[Migration, int]]] = {}
    for rel in changelogs:
        shown = reader.shown(rel)
        if rel.endswith(".xml"):
            reader.text(rel)  # UTF-8 checked, bytes kept
            xml[rel] = liquibase_xml.load_xml(rel, reader.files[rel], shown, matches)
            parsed.append((rel, shown, []))
            continue
        if rel.endswith(liquibase_yaml.SUFFIXES):
            reader.text(rel)
            xml[rel] = liquibase_yaml.load_structured(rel, reader.files[rel], shown, matches)
            parsed.append((rel, shown, []))
            continue
        parsed.append((rel, shown, _parse(rel, reader.text(rel), shown)))
    by_key = {(c.id, c.author, c.filename): c for _r, _s, cs in parsed for c in cs}
    for rel, shown, changesets in parsed:
        for xm, line in xml.get(rel, []):
            key = (xm.record[0], xm.record[1], xm.record[2])
            if key in seen:
                raise FormatError(shown, f"changeset {xm.id} is also at {seen[key]}", line)
            seen[key] = f"{shown}:{line}"
            migrations.append(replace(xm, files={rel: reader.files[rel]}))
        for c in changesets:
            key = (c.id, c.author, c.filename)
            where = f"{shown}:{c.line}"
            if key in seen:
                raise FormatError(
                    shown, f"changeset {c.author}:{c.id} is also at {seen[key]}", c.line
                )
            seen[key] = where
            m = _migration(shown, c, by_key, reader.files, matches)
            if m is not None:
                migrations.append(m)
    if not migrations:
        shown_dialect = "PostgreSQL" if dialect == "postgresql" else "SQLite"
        raise FormatError(str(directory), f"no changesets here (for {shown_dialect})")
    return Project(
        "liquibase",
        str(directory),
        tuple(migrations),
        bookkeeping=BOOKKEEPING,
        options={"dialect": dialect},
    )


def _first_line(path: Path) -> str:
    with path.open("rb") as f:
        for raw in f:
            text = raw.decode("utf-8", "replace")
            if text.strip():
                return text
    return ""


def _migration(
    shown: str,
    c: _Changeset,
    by_key: dict[tuple[str, str, str], _Changeset],
    files: dict[str, bytes],
    matches: Callable[[str | None], bool] = dbms_matches,
) -> Migration | None:
    header, rel = c.header, c.rel
    if _flag(header, "ignore", False) or not matches(_attr(header, "dbms", r"([^,][\w!,]+)")):
        return None
    name = f"{c.author}:{c.id}"
    delimiter = _attr(header, "endDelimiter")
    if delimiter not in (None, "", ";"):
        raise FormatError(
            shown,
            f"changeset {name}: endDelimiter:{delimiter} is not supported by rollproof",
            c.line,
        )
    rollback_delimiter = _attr(header, "rollbackEndDelimiter")
    if rollback_delimiter not in (None, "", ";"):
        raise FormatError(
            shown,
            f"changeset {name}: rollbackEndDelimiter:{rollback_delimiter} is not supported",
            c.line,
        )
    text = "\n".join(c.sql_lines) + "\n"
    if not has_code(text):
        raise FormatError(shown, f"changeset {name} has no SQL", c.line)
    if "${" in text or "${" in "".join(c.rollback):
        where = next((i for i, ln in enumerate(c.sql_lines) if "${" in ln), None)
        raise FormatError(
            shown,
            f"changeset {name}: `${{...}}` is a Liquibase property, which rollproof does "
            "not substitute",
            c.rollback_line if where is None else c.line + 1 + where,
        )
    notes = list(c.notes)
    for attr in ("context", "contextFilter", "labels"):
        value = _attr(header, attr, r'(".*?"|\S*)')
        if value:
            notes.append(
                f"{attr}:{_unquote(value)} ({rel}:{c.line}): Liquibase runs it unless given "
                "--contexts/--labels that exclude it"
            )
    for attr in ("runOnChange", "runAlways"):
        if _flag(header, attr, False):
            notes.append(
                f"{attr}:true ({rel}:{c.line}): Liquibase runs it again "
                + ("when its SQL changes" if attr == "runOnChange" else "on every update")
                + "; rollproof reads only whether it ran"
            )
    revert, irreversible = _rollback(shown, c, by_key)
    no_txn = None
    if not _flag(header, "runInTransaction", True):
        no_txn = f"liquibase `runInTransaction:false` ({rel}:{c.line})"
    return Migration(
        id=name,
        name=c.comment or f"changeset {name}",
        apply=Sql(path=rel, text=text, line=c.line + 1),
        revert=revert,
        verify=None,
        record=(c.id, c.author, c.filename),
        no_transaction=no_txn,
        irreversible=irreversible,
        notes=tuple(notes),
        files={p: files[p] for p in sorted({rel, revert.path if revert else rel})},
    )


def _rollback(
    shown: str, c: _Changeset, by_key: dict[tuple[str, str, str], _Changeset]
) -> tuple[Sql | None, str | None]:
    """The changeset's rollback script, or None and why there is none."""
    rel = c.rel
    text = "".join(c.rollback)
    if not text.strip():
        return None, f"changeset {c.author}:{c.id} has no --rollback"
    lowered = text.strip().lower()
    if re.match(r"^not required", lowered) or re.match(r"^empty", lowered):
        return None, (
            f"its rollback is `{text.strip()}` ({rel}:{c.rollback_line}): Liquibase rolls it "
            "back by doing nothing"
        )
    if "changesetid" in lowered:
        flat = text.replace("\n", "").replace("\r", "")
        cid = _attr(flat, "changeSetId", r"(\S+)")
        author = _attr(flat, "changesetAuthor", r"(\S+)")
        path = _attr(flat, "changesetPath", r"(\S+)") or c.filename
        if cid is None or author is None:
            raise FormatError(
                shown, "a rollback changesetId needs changesetAuthor too", c.rollback_line
            )
        other = by_key.get((cid, author, path))
        if other is None:
            raise FormatError(
                shown, f"rollback changeset {author}:{cid} ({path}) does not exist", c.rollback_line
            )
        return Sql(other.rel, "\n".join(other.sql_lines) + "\n", other.line + 1), None
    if not has_code(text):
        return None, f"changeset {c.author}:{c.id}: its rollback has no SQL"
    return Sql(path=rel, text=text, line=c.rollback_line), None
