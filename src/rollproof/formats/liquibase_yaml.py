"""Liquibase YAML and JSON changelogs: `databaseChangeLog` with changesets of raw `sql`.

    databaseChangeLog:
      - changeSet:
          id: "1"
          author: ann
          runInTransaction: false
          comment: what it is for
          changes:
            - sql:
                sql: CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);
          rollback: DROP TABLE users;

JSON is the same document (`{"databaseChangeLog": [{"changeSet": {...}}]}`), read with the
standard library; YAML is read with PyYAML's `yaml.safe_load` only (no Python object is ever
built from a tag). Each changeset becomes the nodes the XML reader builds and is read by the
same rules (`liquibase_xml._changeset`): `changes` of `sql` only (each ended with `;`), a
`rollback` given as SQL text, as one `sql` change or a list of them (empty: Liquibase rolls back
by doing nothing; none: not reversible), and the attributes `runInTransaction`, `dbms`,
`ignore`, `context`/`labels`, `runOnChange`/`runAlways`, `logicalFilePath`, `preConditions`.

Neither parser keeps line numbers, so a line is found in the text: the n-th `changeSet` key of
the file is the n-th changeset, and a key inside it is its first occurrence after that line.
Refused, with the file and line: every change type other than `sql` (`createTable`,
`addColumn`, `sqlFile`, ...: Liquibase generates their SQL, rollproof does not), `include`,
`includeAll`, `property`, a rollback naming another changeset, an `endDelimiter` other than `;`,
`splitStatements: false`, and `${...}` properties.
"""

from __future__ import annotations

import json
import re
from typing import Any

from rollproof.formats.liquibase_xml import _CHANGE_LOG, Dbms, _changeset, _Node
from rollproof.formats.model import FormatError, Migration

SUFFIXES = (".yaml", ".yml", ".json")
_ATTRS = (
    "id",
    "author",
    "runInTransaction",
    "dbms",
    "ignore",
    "context",
    "contextFilter",
    "labels",
    "runOnChange",
    "runAlways",
    "logicalFilePath",
)
_SQL_ATTRS = ("endDelimiter", "splitStatements")


def is_changelog(rel: str, head: str) -> bool:
    """A YAML or JSON file whose first 64 KiB name the changelog's root key."""
    return rel.endswith(SUFFIXES) and _CHANGE_LOG in head


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


class _Lines:
    """Line numbers found in the changelog's text (the parsers keep none)."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.changesets = [i + 1 for i, ln in enumerate(self.lines) if _key("changeSet").search(ln)]

    def changeset(self, index: int) -> int:
        return self.changesets[index] if index < len(self.changesets) else 1

    def key(self, name: str, after: int) -> int:
        pattern = _key(name)
        for i in range(max(after - 1, 0), len(self.lines)):
            if pattern.search(self.lines[i]):
                return i + 1
        return after


def _key(name: str) -> re.Pattern[str]:
    return re.compile(rf"""(^|[\s{{,\-])["']?{re.escape(name)}["']?\s*:""")


def _load(rel: str, data: bytes, shown: str) -> Any:
    text = data.decode("utf-8")
    if rel.endswith(".json"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise FormatError(shown, f"not valid JSON: {e.msg}", e.lineno) from None
    import yaml  # type: ignore[import-untyped]  # PyYAML ships no type hints

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise FormatError(
            shown, f"not valid YAML: {problem}", None if mark is None else mark.line + 1
        ) from None


def _sql_nodes(value: Any, shown: str, where: str, line: int, lines: _Lines) -> list[_Node]:
    """`sql` changes (a mapping with `sql`, or the SQL itself) as nodes; others refused."""
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if not isinstance(item, dict) or len(item) != 1:
            raise FormatError(
                shown, f"{where}: a change must be a mapping of one change type", line
            )
        ((kind, body),) = item.items()
        at = lines.key(str(kind), line)
        if kind != "sql":
            raise FormatError(
                shown,
                f"{where}: {kind} is a Liquibase change type whose SQL Liquibase generates; "
                "rollproof rehearses only sql (or formatted SQL)",
                at,
            )
        if isinstance(body, dict):
            attrs = {k: _scalar(body[k]) for k in _SQL_ATTRS if k in body}
            text = _scalar(body.get("sql"))
        else:
            attrs, text = {}, _scalar(body)
        out.append(_Node("sql", attrs, at, text))
    return out


def _changeset_node(cs: Any, shown: str, line: int, lines: _Lines) -> _Node:
    if not isinstance(cs, dict):
        raise FormatError(shown, "a changeSet must be a mapping", line)
    attrs = {k: _scalar(cs[k]) for k in _ATTRS if k in cs}
    name = f"{attrs.get('author', '?')}:{attrs.get('id', '?')}"
    where = f"changeSet {name}"
    node = _Node("changeSet", attrs, line)
    for key, value in cs.items():
        at = lines.key(str(key), line)
        if key in _ATTRS or key in ("validCheckSum", "failOnError", "objectQuotingStrategy"):
            continue
        if key == "comment":
            node.children.append(_Node("comment", {}, at, _scalar(value)))
        elif key == "preConditions":
            node.children.append(_Node("preConditions", {}, at))
        elif key == "changes":
            node.children += _sql_nodes(value or [], shown, where, at, lines)
        elif key == "rollback":
            rollback = _Node("rollback", {}, at)
            if isinstance(value, dict) and ("changeSetId" in value or "changesetId" in value):
                rollback.attrs["changeSetId"] = _scalar(value.get("changeSetId"))
            elif isinstance(value, dict | list) and value:
                rollback.children = _sql_nodes(value, shown, where, at, lines)
            else:
                rollback.text = _scalar(value)
            node.children.append(rollback)
        else:
            raise FormatError(shown, f"{where}: {key} is not supported by rollproof", at)
    return node


def load_structured(rel: str, data: bytes, shown: str, dbms: Dbms) -> list[tuple[Migration, int]]:
    """The changesets of one YAML or JSON changelog, each with its line."""
    doc = _load(rel, data, shown)
    lines = _Lines(data.decode("utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get(_CHANGE_LOG), list):
        raise FormatError(shown, f"the document is not {{{_CHANGE_LOG}: [...]}}", 1)
    logical = rel
    out: list[tuple[Migration, int]] = []
    index = 0
    for entry in doc[_CHANGE_LOG]:
        if not isinstance(entry, dict) or len(entry) != 1:
            raise FormatError(shown, f"each {_CHANGE_LOG} entry must be one key", 1)
        ((key, value),) = entry.items()
        if key == "changeSet":
            line = lines.changeset(index)
            index += 1
            m = _changeset(rel, _changeset_node(value, shown, line, lines), logical, shown, dbms)
            if m is not None:
                out.append((m, line))
        elif key == "preConditions":
            continue
        elif key == "property":
            raise FormatError(
                shown, "property is not substituted by rollproof", lines.key("property", 1)
            )
        else:
            raise FormatError(shown, f"{key} is not supported by rollproof", lines.key(key, 1))
    return out
