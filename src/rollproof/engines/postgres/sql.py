"""PostgreSQL statement facts: splitting a script, and which statements refuse a transaction.

Splitting uses PostgreSQL's own scanner (pglast, the server's parser as a library), so a `;`
inside a string, a dollar-quoted body, a comment or a quoted identifier never cuts a
statement. A `;` also does not cut inside parentheses (a multi-action CREATE RULE) or inside a
`BEGIN ATOMIC ... END` function body. Unlike `pglast.split`, text the scanner cannot read is
kept as a statement of its own (it will fail when run, or read as UNKNOWN), never dropped.

`not_in_transaction` names a statement that PostgreSQL will not run inside a transaction block
(or whose effect a transaction would change), so the transaction leg can be NOT_APPLICABLE with
the statement named instead of failing or, worse, passing by not running it.
"""

from __future__ import annotations

from typing import Any

from pglast import ast, parse_sql
from pglast.parser import ParseError, scan

from rollproof.core.sqltext import without_leading_comments

_SEMICOLON = "ASCII_59"
_OPEN, _CLOSE = "ASCII_40", "ASCII_41"
_COMMENTS = frozenset({"SQL_COMMENT", "C_COMMENT"})


def split_postgres(sql: str) -> list[str]:
    """The statements of `sql`, each without its terminating `;`, comments kept."""
    try:
        tokens = list(scan(sql))
    except ParseError:
        # An unterminated string or comment: nothing can be split honestly, so the rest is one
        # statement that will fail (or read as UNKNOWN) with the scanner's own complaint.
        return [sql.strip()] if sql.strip() else []
    data = sql.encode("utf-8")
    out: list[str] = []
    start = 0
    depth = 0
    atomic = 0
    previous = ""
    meaningful = False
    for tok in tokens:
        name = tok.name
        if name == _OPEN:
            depth += 1
        elif name == _CLOSE:
            depth = max(0, depth - 1)
        elif (name == "ATOMIC" and previous == "BEGIN_P") or (atomic and name == "CASE"):
            atomic += 1
        elif atomic and name == "END_P":
            atomic -= 1
        if name == _SEMICOLON and depth == 0 and atomic == 0:
            if meaningful:
                out.append(data[start : tok.start].decode("utf-8").strip())
            start, meaningful = tok.end + 1, False
        elif name not in _COMMENTS:
            meaningful = True
        if name not in _COMMENTS:
            previous = name
    rest = data[start:].decode("utf-8").strip()
    if meaningful and rest:
        out.append(rest)
    return out


def parse_one(statement: str) -> ast.Node | None:
    """The statement's parse tree, or None when PostgreSQL's parser cannot read it."""
    try:
        nodes = parse_sql(statement)
    except ParseError:
        return None
    if len(nodes) != 1:
        return None
    stmt = nodes[0].stmt
    return stmt if isinstance(stmt, ast.Node) else None


def parse_error(statement: str) -> str | None:
    """PostgreSQL's parser's own complaint about `statement` (`syntax error at or near "x"`),
    or None when it reads."""
    try:
        parse_sql(statement)
    except ParseError as e:
        return str(e.args[0]) if e.args else str(e)
    return None


def _defelem_names(options: Any) -> set[str]:
    return {str(o.defname) for o in options or () if isinstance(o, ast.DefElem)}


_OWN_TRANSACTION = frozenset({"BEGIN", "START", "COMMIT", "ROLLBACK", "PREPARE", "COMMIT_PREPARED"})


def manages_transaction(node: ast.Node | None) -> bool:
    """BEGIN, COMMIT, ROLLBACK (not ROLLBACK TO), PREPARE TRANSACTION: the script's own."""
    if not isinstance(node, ast.TransactionStmt):
        return False
    kind = str(getattr(node.kind, "name", node.kind)).removeprefix("TRANS_STMT_")
    return kind in _OWN_TRANSACTION


def not_in_transaction(node: ast.Node | None, server_version: int) -> str | None:
    """Why PostgreSQL will not run this statement inside a transaction block, or None."""
    if isinstance(node, ast.IndexStmt) and node.concurrent:
        return "CREATE INDEX CONCURRENTLY cannot run inside a transaction block"
    if isinstance(node, ast.DropStmt) and node.concurrent:
        return "DROP INDEX CONCURRENTLY cannot run inside a transaction block"
    if isinstance(node, ast.ReindexStmt) and "concurrently" in _defelem_names(node.params):
        return "REINDEX CONCURRENTLY cannot run inside a transaction block"
    if isinstance(node, ast.VacuumStmt) and node.is_vacuumcmd:
        return "VACUUM cannot run inside a transaction block"
    if isinstance(node, ast.CreatedbStmt | ast.DropdbStmt):
        return "CREATE/DROP DATABASE cannot run inside a transaction block"
    if isinstance(node, ast.AlterSystemStmt):
        return "ALTER SYSTEM cannot run inside a transaction block"
    if isinstance(node, ast.CreateTableSpaceStmt | ast.DropTableSpaceStmt):
        return "CREATE/DROP TABLESPACE cannot run inside a transaction block"
    if isinstance(node, ast.AlterEnumStmt) and node.newVal and server_version < 120000:
        return "ALTER TYPE ... ADD VALUE cannot run inside a transaction block before PostgreSQL 12"
    if isinstance(node, ast.AlterTableStmt):
        for cmd in node.cmds or ():
            partition = getattr(cmd, "def_", None)
            if isinstance(partition, ast.PartitionCmd) and partition.concurrent:
                return "DETACH PARTITION CONCURRENTLY cannot run inside a transaction block"
    if isinstance(node, ast.ClusterStmt) and node.relation is None:
        return "CLUSTER without a table cannot run inside a transaction block"
    return None


# SQLSTATEs that mean "this cannot run in the transaction the leg opened".
NOT_IN_TRANSACTION_STATES = {
    "25001": "it cannot run inside a transaction block",
    "2D000": "it ends or manages the transaction it runs in",
    "55P04": "a new enum value cannot be used in the transaction that added it",
}


def short(statement: str) -> str:
    one = " ".join(without_leading_comments(statement).split())
    return one if len(one) <= 80 else one[:77] + "..."
