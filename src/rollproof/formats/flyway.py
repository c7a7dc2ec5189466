"""Flyway: `V<version>__<desc>.sql`, undo `U<version>__<desc>.sql`, repeatable `R__<desc>.sql`.

Versions compare as Flyway compares them: parts separated by `.` or `_`, each compared as a
number, trailing zero parts ignored (1.10 > 1.9, 1.0 == 1). Repeatable migrations run after
every versioned one, ordered by description; they have no undo, so they are not reversible.
"""

from __future__ import annotations

import re
from pathlib import Path

from rollproof.formats.files import Reader, has_code, script
from rollproof.formats.model import FormatError, Migration, Project

_NAME = re.compile(r"^(?P<kind>[VUR])(?P<version>[^_]*(?:_[^_]+)*?)__(?P<desc>.+)\.sql$")
_VERSION = re.compile(r"^\d+(?:[._]\d+)*$")


def version_key(version: str) -> tuple[int, ...]:
    """Flyway's ordering key: numeric parts, trailing zeros dropped (1.0 == 1)."""
    parts = [int(p) for p in re.split(r"[._]", version)]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def normal_version(version: str) -> str:
    return ".".join(str(p) for p in version_key(version))


def load(directory: Path) -> Project:
    reader = Reader(directory)
    versioned: dict[tuple[int, ...], tuple[str, str, str]] = {}
    undo: dict[tuple[int, ...], str] = {}
    repeatable: list[tuple[str, str]] = []
    for path in sorted(directory.iterdir()):
        name = path.name
        if not name.endswith(".sql") or name[:1] not in "VUR" or not path.is_file():
            continue
        shown = str(path)
        m = _NAME.match(name)
        if m is None:
            raise FormatError(shown, "not <V|U|R><version>__<description>.sql")
        kind, version = m.group("kind"), m.group("version")
        if kind == "R":
            if version:
                raise FormatError(shown, "a repeatable migration has no version: R__<desc>.sql")
            repeatable.append((m.group("desc"), name))
            continue
        if not _VERSION.match(version):
            raise FormatError(shown, f"version {version!r} is not numbers separated by . or _")
        key = version_key(version)
        if kind == "V":
            if key in versioned:
                raise FormatError(
                    shown, f"version {normal_version(version)} is also {versioned[key][2]}"
                )
            versioned[key] = (version, m.group("desc"), name)
        else:
            if key in undo:
                raise FormatError(shown, f"undo {normal_version(version)} is also {undo[key]}")
            undo[key] = name
    for key, name in sorted(undo.items()):
        if key not in versioned:
            raise FormatError(str(directory / name), "an undo migration with no V migration")
    migrations: list[Migration] = []
    for key in sorted(versioned):
        version, desc, name = versioned[key]
        notes: list[str] = []
        text = reader.text(name)
        if not has_code(text):
            raise FormatError(reader.shown(name), "has no SQL statement", 1)
        apply = script(name, text, notes)
        revert = None
        if key in undo:
            u = reader.text(undo[key])
            if has_code(u):
                revert = script(undo[key], u, notes)
        migrations.append(
            Migration(
                id=normal_version(version),
                name=desc.replace("_", " "),
                apply=apply,
                revert=revert,
                verify=None,
                version=normal_version(version),
                irreversible=None if revert else f"no U{version}__{desc}.sql undo migration",
                notes=tuple(notes),
                files=reader.take(),
            )
        )
    for desc, name in sorted(repeatable):
        notes = []
        text = reader.text(name)
        if not has_code(text):
            raise FormatError(reader.shown(name), "has no SQL statement", 1)
        migrations.append(
            Migration(
                id=f"R__{desc}",
                name=desc.replace("_", " "),
                apply=script(name, text, notes),
                revert=None,
                verify=None,
                irreversible="a repeatable (R__) migration has no undo",
                notes=tuple(notes),
                files=reader.take(),
            )
        )
    if not migrations:
        raise FormatError(str(directory), "no V__/R__ migrations here")
    return Project("flyway", str(directory), tuple(migrations), bookkeeping="flyway_schema_history")
