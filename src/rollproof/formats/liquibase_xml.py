"""Liquibase XML changelogs: `<databaseChangeLog>` with `<changeSet>`s of raw `<sql>`.

    <databaseChangeLog xmlns="http://www.liquibase.org/xml/ns/dbchangelog">
      <changeSet id="1" author="ann" runInTransaction="false">
        <comment>what it is for</comment>
        <sql>CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);</sql>
        <rollback>DROP TABLE users;</rollback>
      </changeSet>
    </databaseChangeLog>

Read with the standard library's expat, keeping line numbers, refusing a DOCTYPE (so no entity
is ever expanded). A changeset's SQL is its `<sql>` elements in order (each ended with `;`); its
rollback is `<rollback>`'s own text or its `<sql>` children; an empty `<rollback/>` is a
rollback that does nothing (not reversible); no `<rollback>` at all is not reversible either
(Liquibase can roll back only what it knows how to undo, and raw SQL it does not). Attributes
are read as in formatted SQL: `runInTransaction="false"`, `dbms` (evaluated for SQLite),
`ignore`, `context`/`labels`/`runOnChange`/`runAlways` (reported), `logicalFilePath` (the
FILENAME DATABASECHANGELOG records). `<preConditions>` are reported, not evaluated.

Refused, with the file and line: every Liquibase change type other than `<sql>` (`<createTable>`,
`<addColumn>`, `<sqlFile>`, ...: Liquibase generates their SQL, rollproof does not), `<include>`
and `<includeAll>`, a rollback that names another changeset, an `endDelimiter` other than `;`,
`splitStatements="false"`, and `${...}` properties.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from xml.parsers import expat

from rollproof.formats.files import has_code
from rollproof.formats.model import FormatError, Migration, Sql

_CHANGE_LOG = "databaseChangeLog"
_IGNORED = {"comment", "preConditions", "validCheckSum", "tagDatabase"}


@dataclass
class _Node:
    tag: str
    attrs: dict[str, str]
    line: int
    text: str = ""
    children: list[_Node] = field(default_factory=list)


def _local(name: str) -> str:
    return name.rsplit(" ", 1)[-1].rsplit(":", 1)[-1]


def _tree(data: bytes, shown: str) -> _Node:
    """The document as nodes with line numbers (namespaces dropped)."""
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    stack: list[_Node] = []
    root: list[_Node] = []

    def doctype(*_args: object) -> None:
        raise FormatError(
            shown, "a DOCTYPE is refused (no entity is expanded)", parser.CurrentLineNumber
        )

    def start(name: str, attrs: dict[str, str]) -> None:
        node = _Node(
            _local(name), {_local(k): v for k, v in attrs.items()}, parser.CurrentLineNumber
        )
        (stack[-1].children if stack else root).append(node)
        stack.append(node)

    def end(_name: str) -> None:
        stack.pop()

    def text(data: str) -> None:
        if stack:
            stack[-1].text += data

    parser.StartDoctypeDeclHandler = doctype
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    try:
        parser.Parse(data, True)
    except expat.ExpatError as e:
        raise FormatError(
            shown, f"not well-formed XML: {expat.ErrorString(e.code)}", e.lineno
        ) from None
    if not root or root[0].tag != _CHANGE_LOG:
        raise FormatError(shown, f"the root element is not <{_CHANGE_LOG}>", 1)
    return root[0]


def is_changelog(head: str) -> bool:
    """A file whose first 64 KiB name the XML changelog's root element."""
    return f"<{_CHANGE_LOG}" in head or f":{_CHANGE_LOG}" in head


def _statements(nodes: list[_Node], shown: str, where: str) -> str:
    parts = []
    for n in nodes:
        if n.attrs.get("endDelimiter", ";") not in ("", ";"):
            raise FormatError(shown, f"{where}: endDelimiter is not supported by rollproof", n.line)
        if n.attrs.get("splitStatements", "true").lower() == "false":
            raise FormatError(shown, f'{where}: splitStatements="false" is not supported', n.line)
        body = n.text.strip()
        if body:
            parts.append(body if body.endswith(";") else body + ";")
    return "\n".join(parts) + "\n" if parts else ""


Dbms = Callable[[str | None], bool]


def load_xml(rel: str, data: bytes, shown: str, dbms: Dbms) -> list[tuple[Migration, int]]:
    """The changesets of one XML changelog, each with its line."""
    root = _tree(data, shown)
    logical = root.attrs.get("logicalFilePath") or rel
    out: list[tuple[Migration, int]] = []
    for node in root.children:
        if node.tag in ("include", "includeAll"):
            raise FormatError(shown, f"<{node.tag}> is not supported by rollproof", node.line)
        if node.tag in ("preConditions", "property", "comment"):
            if node.tag == "property":
                raise FormatError(shown, "<property> is not substituted by rollproof", node.line)
            continue
        if node.tag != "changeSet":
            raise FormatError(shown, f"<{node.tag}> is not a changeSet", node.line)
        m = _changeset(rel, node, logical, shown, dbms)
        if m is not None:
            out.append((m, node.line))
    return out


def _changeset(rel: str, node: _Node, logical: str, shown: str, dbms: Dbms) -> Migration | None:
    a = node.attrs
    cid, author = a.get("id"), a.get("author")
    if not cid or not author:
        raise FormatError(shown, "a changeSet needs id and author", node.line)
    name = f"{author}:{cid}"
    if a.get("ignore", "false").lower() == "true":
        return None
    if not dbms(a.get("dbms")):
        return None
    sql: list[_Node] = []
    rollback: _Node | None = None
    notes: list[str] = []
    comment = ""
    for child in node.children:
        if child.tag == "sql":
            sql.append(child)
        elif child.tag == "rollback":
            if rollback is not None:
                raise FormatError(shown, f"changeSet {name}: a second <rollback>", child.line)
            rollback = child
        elif child.tag == "comment":
            comment = " ".join(child.text.split())
        elif child.tag == "preConditions":
            notes.append(f"preConditions ({rel}:{child.line}): reported, not evaluated")
        elif child.tag in _IGNORED:
            continue
        else:
            raise FormatError(
                shown,
                f"changeSet {name}: <{child.tag}> is a Liquibase change type whose SQL "
                "Liquibase generates; rollproof rehearses only <sql> (or formatted SQL)",
                child.line,
            )
    text = _statements(sql, shown, f"changeSet {name}")
    if not has_code(text):
        raise FormatError(shown, f"changeSet {name} has no <sql>", node.line)
    revert: Sql | None = None
    irreversible: str | None = f"changeSet {name} has no <rollback>"
    if rollback is not None:
        if "changeSetId" in rollback.attrs:
            raise FormatError(
                shown,
                f"changeSet {name}: a rollback naming another changeSet is not supported",
                rollback.line,
            )
        inner = [c for c in rollback.children if c.tag == "sql"]
        body = _statements(inner, shown, f"changeSet {name}") if inner else rollback.text.strip()
        if body and not inner and not body.endswith(";"):
            body += ";"
        if has_code(body):
            revert = Sql(
                path=rel, text=body if body.endswith("\n") else body + "\n", line=rollback.line
            )
            irreversible = None
        else:
            irreversible = (
                f"its <rollback> is empty ({rel}:{rollback.line}): Liquibase rolls it back by "
                "doing nothing"
            )
    if "${" in text or (revert is not None and "${" in revert.text):
        raise FormatError(
            shown,
            f"changeSet {name}: `${{...}}` is a Liquibase property, which rollproof does not "
            "substitute",
            node.line,
        )
    for attr in ("context", "contextFilter", "labels"):
        if a.get(attr):
            notes.append(
                f"{attr}:{a[attr]} ({rel}:{node.line}): Liquibase runs it unless given "
                "--contexts/--labels that exclude it"
            )
    for attr in ("runOnChange", "runAlways"):
        if a.get(attr, "false").lower() == "true":
            notes.append(f"{attr}:true ({rel}:{node.line}): rollproof reads only whether it ran")
    no_txn = None
    if a.get("runInTransaction", "true").lower() == "false":
        no_txn = f'liquibase runInTransaction="false" ({rel}:{node.line})'
    return Migration(
        id=name,
        name=comment or f"changeset {name}",
        apply=Sql(path=rel, text=text, line=sql[0].line),
        revert=revert,
        verify=None,
        record=(cid, author, a.get("logicalFilePath") or logical),
        no_transaction=no_txn,
        irreversible=irreversible,
        notes=tuple(notes),
    )
