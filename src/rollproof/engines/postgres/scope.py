"""Static scope and destructive-change lint of PostgreSQL SQL, read with PostgreSQL's own parser.

pglast is the server's parser as a library, so every statement PostgreSQL accepts is read the
way the server will read it. This module answers `rollproof.engines.sqlglot_scope.static_scope` and
`lint_destructive` for the dialect "postgresql" with the same types and the same rules as the
sqlglot reader (see that module's docstring), plus what PostgreSQL adds:

* Names: lower-cased (PostgreSQL folds unquoted names; a quoted mixed-case name is compared
  lower-cased like every declaration), `public.` dropped, other schemas kept; objects in
  `pg_catalog` and `information_schema` are the system's and never listed.
* CREATE INDEX creates the index (in its table's schema) and READs its table; CREATE TRIGGER
  creates the trigger, READs its table and the function it executes. A trigger's, rule's or
  function's *body* is not read: what it writes when it runs is enforced at run time by the
  server (the change runs as a role granted only the declared objects), not guessed here.
* A function or procedure call (in any statement, or CALL) is listed as a READ of the routine;
  `nextval`/`setval` of a literal sequence name is a WRITE of that sequence.
* DO blocks are UNKNOWN: their body is code, not a statement.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pglast import ast, enums
from pglast.stream import RawStream
from pglast.visitors import Visitor

from rollproof.core.sqltext import without_leading_comments
from rollproof.core.surface import (
    PROVEN_BY,
    TEXT_WIDTH,
    Access,
    AccessKind,
    Implicit,
    ObjectType,
    Risk,
    RiskCode,
    StatementScope,
    fold_name,
)
from rollproof.engines.postgres.sql import parse_error, parse_one, split_postgres

_SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema"})
_SEQUENCE_WRITERS = frozenset({"nextval", "setval"})
_OT = enums.ObjectType
_RELATION_TYPES = {
    _OT.OBJECT_TABLE: ObjectType.TABLE,
    _OT.OBJECT_FOREIGN_TABLE: ObjectType.TABLE,
    _OT.OBJECT_VIEW: ObjectType.VIEW,
    _OT.OBJECT_MATVIEW: ObjectType.VIEW,
    _OT.OBJECT_INDEX: ObjectType.INDEX,
    _OT.OBJECT_TRIGGER: ObjectType.TRIGGER,
}


def _display(piece: str) -> str:
    one = " ".join(without_leading_comments(piece).split()).removesuffix(";").rstrip()
    return one if len(one) <= TEXT_WIDTH else one[: TEXT_WIDTH - 3] + "..."


def name_of(parts: Iterable[str | None]) -> str | None:
    """A dotted name, normalised: lower case, `public.` dropped; None for a system object."""
    clean = [fold_name(p) for p in parts if p]
    if not clean:
        return None
    if len(clean) > 2:  # catalog.schema.name: the catalog is this database
        clean = clean[-2:]
    if len(clean) == 2:
        if clean[0] in _SYSTEM_SCHEMAS or clean[0].startswith("pg_"):
            return None
        if clean[0] == "public":
            clean = clean[1:]
    return ".".join(clean)


def _rv(node: ast.RangeVar | None) -> str | None:
    if node is None:
        return None
    return name_of((node.schemaname, node.relname))


def _strings(items: Any) -> list[str]:
    return [str(i.sval) for i in items or () if isinstance(i, ast.String)]


class _Reads(Visitor):
    """Every relation and routine named anywhere in a statement, except the skipped ones."""

    def __init__(self, skip: set[int]) -> None:
        super().__init__()
        self.skip = skip
        self.ctes: set[str] = set()
        self.accesses: list[Access] = []

    def visit_CommonTableExpr(self, _ancestors: Any, node: ast.CommonTableExpr) -> None:
        self.ctes.add(fold_name(str(node.ctename)))

    def visit_RangeVar(self, _ancestors: Any, node: ast.RangeVar) -> None:
        if id(node) in self.skip:
            return
        name = _rv(node)
        if name is None or (node.schemaname is None and name in self.ctes):
            return
        self.accesses.append(Access(name, AccessKind.READ, ObjectType.UNKNOWN))

    def visit_FuncCall(self, _ancestors: Any, node: ast.FuncCall) -> None:
        parts = _strings(node.funcname)
        name = name_of(parts)
        if parts and parts[-1].lower() in _SEQUENCE_WRITERS and node.args:
            first = node.args[0]
            if isinstance(first, ast.A_Const) and isinstance(first.val, ast.String):
                seq = name_of(str(first.val.sval).split("."))
                if seq is not None:
                    self.accesses.append(Access(seq, AccessKind.WRITE, ObjectType.UNKNOWN))
            return
        if name is not None and len(parts) > 1:
            # A schema-qualified call outside pg_catalog is certainly a user routine; an
            # unqualified one may be built in, and listing every `count(*)` would be noise.
            self.accesses.append(Access(name, AccessKind.READ, ObjectType.UNKNOWN))


def _reads(node: Any, skip: set[int]) -> list[Access]:
    visitor = _Reads(skip)
    visitor(node)
    ctes = visitor.ctes
    return [a for a in visitor.accesses if a.object not in ctes or "." in a.object]


def _ordered(accesses: Sequence[Access]) -> tuple[Access, ...]:
    actions = [a for a in accesses if a.kind is not AccessKind.READ]
    reads = sorted(
        (a for a in accesses if a.kind is AccessKind.READ), key=lambda a: (a.object, a.object_type)
    )
    return tuple(dict.fromkeys([*actions, *reads]))


def _read_statement(node: Any) -> tuple[list[Access], str | None]:
    """(accesses, unknown reason) for one parsed statement."""
    acts: list[Access] = []
    skip: set[int] = set()

    def act(rv: ast.RangeVar | None, kind: AccessKind, otype: ObjectType) -> None:
        name = _rv(rv)
        if rv is not None:
            skip.add(id(rv))
        if name is not None:
            acts.append(Access(name, kind, otype))

    def named(parts: Iterable[str | None], kind: AccessKind, otype: ObjectType) -> None:
        name = name_of(parts)
        if name is not None:
            acts.append(Access(name, kind, otype))

    unknown: str | None = None
    if isinstance(node, ast.SelectStmt | ast.TransactionStmt | ast.VariableSetStmt):
        pass
    elif isinstance(node, ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt | ast.MergeStmt):
        act(node.relation, AccessKind.WRITE, ObjectType.UNKNOWN)
    elif isinstance(node, ast.TruncateStmt):
        for rv in node.relations or ():
            act(rv, AccessKind.WRITE, ObjectType.TABLE)
    elif isinstance(node, ast.CopyStmt):
        act(node.relation, AccessKind.WRITE if node.is_from else AccessKind.READ, ObjectType.TABLE)
    elif isinstance(node, ast.CreateStmt):
        act(node.relation, AccessKind.CREATE, ObjectType.TABLE)
        if node.partbound is not None:
            for rv in node.inhRelations or ():
                act(rv, AccessKind.ALTER, ObjectType.TABLE)  # a partition attaches to it
    elif isinstance(node, ast.CreatePolicyStmt | ast.AlterPolicyStmt):
        # A policy is part of its table's definition (the fingerprint keeps it there).
        act(node.table, AccessKind.ALTER, ObjectType.TABLE)
    elif isinstance(node, ast.RefreshMatViewStmt):
        act(node.relation, AccessKind.WRITE, ObjectType.VIEW)
    elif isinstance(node, ast.CreateTableAsStmt):
        matview = node.objtype == _OT.OBJECT_MATVIEW
        into = node.into.rel if node.into is not None else None
        act(into, AccessKind.CREATE, ObjectType.VIEW if matview else ObjectType.TABLE)
    elif isinstance(node, ast.ViewStmt):
        act(node.view, AccessKind.CREATE, ObjectType.VIEW)
    elif isinstance(node, ast.IndexStmt):
        if not node.idxname:
            unknown = "CREATE INDEX without a name: the name PostgreSQL picks is not known"
        else:
            schema = node.relation.schemaname if node.relation is not None else None
            named((schema, node.idxname), AccessKind.CREATE, ObjectType.INDEX)
        act(node.relation, AccessKind.READ, ObjectType.TABLE)
    elif isinstance(node, ast.CreateTrigStmt):
        schema = node.relation.schemaname if node.relation is not None else None
        named((schema, node.trigname), AccessKind.CREATE, ObjectType.TRIGGER)
        act(node.relation, AccessKind.READ, ObjectType.TABLE)
        named(_strings(node.funcname), AccessKind.READ, ObjectType.UNKNOWN)
    elif isinstance(node, ast.CreateFunctionStmt):
        named(_strings(node.funcname), AccessKind.CREATE, ObjectType.UNKNOWN)
        return _finish(acts, node, skip, unknown, read_body=False)
    elif isinstance(node, ast.CreateSeqStmt):
        act(node.sequence, AccessKind.CREATE, ObjectType.UNKNOWN)
    elif isinstance(node, ast.AlterSeqStmt):
        act(node.sequence, AccessKind.ALTER, ObjectType.UNKNOWN)
    elif isinstance(node, ast.CreateEnumStmt):
        named(_strings(node.typeName), AccessKind.CREATE, ObjectType.UNKNOWN)
    elif isinstance(node, ast.CreateDomainStmt):
        named(_strings(node.domainname), AccessKind.CREATE, ObjectType.UNKNOWN)
    elif isinstance(node, ast.CompositeTypeStmt):
        act(node.typevar, AccessKind.CREATE, ObjectType.UNKNOWN)
    elif isinstance(node, ast.AlterEnumStmt):
        named(_strings(node.typeName), AccessKind.ALTER, ObjectType.UNKNOWN)
    elif isinstance(node, ast.CreateSchemaStmt):
        named([node.schemaname], AccessKind.CREATE, ObjectType.UNKNOWN)
    elif isinstance(node, ast.CreateExtensionStmt):
        named([node.extname], AccessKind.CREATE, ObjectType.UNKNOWN)
    elif isinstance(node, ast.AlterTableStmt):
        otype = (
            _RELATION_TYPES.get(node.objtype, ObjectType.UNKNOWN)
            if node.objtype is not None
            else ObjectType.UNKNOWN
        )
        act(node.relation, AccessKind.ALTER, otype)
        for cmd in node.cmds or ():
            part = getattr(cmd, "def_", None)
            if isinstance(part, ast.PartitionCmd):
                act(part.name, AccessKind.ALTER, ObjectType.TABLE)
    elif isinstance(node, ast.RenameStmt):
        otype = (
            _RELATION_TYPES.get(node.renameType, ObjectType.UNKNOWN)
            if node.renameType is not None
            else ObjectType.UNKNOWN
        )
        if node.relation is not None:
            kind = node.renameType
            if kind in (
                _OT.OBJECT_TABLE,
                _OT.OBJECT_VIEW,
                _OT.OBJECT_MATVIEW,
                _OT.OBJECT_INDEX,
                _OT.OBJECT_SEQUENCE,
                _OT.OBJECT_FOREIGN_TABLE,
            ):
                act(node.relation, AccessKind.ALTER, otype)
                named((node.relation.schemaname, node.newname), AccessKind.CREATE, otype)
            elif kind == _OT.OBJECT_TRIGGER:
                act(node.relation, AccessKind.ALTER, ObjectType.TABLE)
            else:
                act(node.relation, AccessKind.ALTER, ObjectType.TABLE)
        else:
            unknown = "a RENAME of an object rollproof does not model"
    elif isinstance(node, ast.DropStmt):
        return _drop(node)
    elif isinstance(node, ast.CommentStmt | ast.GrantStmt):
        pass  # comments and privileges are not content; the DDL-text digest covers comments
    elif isinstance(node, ast.VacuumStmt | ast.ReindexStmt | ast.ClusterStmt):
        pass  # maintenance: the relations are read below; content does not change
    elif isinstance(node, ast.CallStmt):
        pass  # the procedure is listed as a read by the call itself
    elif isinstance(node, ast.ExplainStmt):
        analyze = any(
            isinstance(o, ast.DefElem) and o.defname == "analyze" for o in node.options or ()
        )
        if analyze:
            return _read_statement(node.query)  # EXPLAIN ANALYZE runs the statement
    elif isinstance(node, ast.DoStmt):
        return [], (
            "a DO block's body is code, not a statement rollproof can read; declare what it "
            "touches and rehearse with --allow-undeclared (the server still enforces the "
            "declaration), or write its statements out"
        )
    elif isinstance(node, ast.RuleStmt):
        act(node.relation, AccessKind.ALTER, ObjectType.TABLE)
        unknown = (
            "a rule's actions are not read; declare what they write and rehearse with "
            "--allow-undeclared (the server still enforces the declaration)"
        )
    elif isinstance(node, _NOT_CONTENT):
        pass  # session state, notifications, owners and privileges: not the database's content
    elif isinstance(node, _CLUSTER_WIDE):
        return [], (
            f"{_label(node)} changes the server, not the database rehearsed (roles, databases, "
            "tablespaces and server settings are cluster-wide); run it outside the change"
        )
    elif isinstance(node, ast.AlterObjectSchemaStmt) and node.relation is not None:
        act(node.relation, AccessKind.ALTER, ObjectType.UNKNOWN)
        named((node.newschema, node.relation.relname), AccessKind.CREATE, ObjectType.UNKNOWN)
    elif isinstance(node, ast.CreateStatsStmt | ast.DefineStmt):
        named(_strings(node.defnames), AccessKind.CREATE, ObjectType.UNKNOWN)
    elif isinstance(node, ast.AlterFunctionStmt) and node.func is not None:
        named(_strings(node.func.objname), AccessKind.ALTER, ObjectType.UNKNOWN)
    elif isinstance(node, ast.AlterDomainStmt):
        named(_strings(node.typeName), AccessKind.ALTER, ObjectType.UNKNOWN)
    elif isinstance(node, ast.CreateRangeStmt):
        named(_strings(node.typeName), AccessKind.CREATE, ObjectType.UNKNOWN)
    elif isinstance(node, ast.AlterExtensionStmt):
        named([node.extname], AccessKind.ALTER, ObjectType.UNKNOWN)
    elif isinstance(node, ast.CreateEventTrigStmt):
        return [], (
            "an event trigger runs its function for every later DDL statement, whatever it "
            "touches; rehearse it as a change of its own and declare what the function writes"
        )
    else:
        return [], (
            f"rollproof does not classify {_label(node)} statements; declare the objects it "
            "touches and rehearse with --allow-undeclared (run-time enforcement still holds), "
            "or move it to a change of its own"
        )
    return _finish(acts, node, skip, unknown)


_NOT_CONTENT = (
    ast.AlterOwnerStmt,
    ast.AlterDefaultPrivilegesStmt,
    ast.SecLabelStmt,
    ast.VariableShowStmt,
    ast.DiscardStmt,
    ast.ListenStmt,
    ast.NotifyStmt,
    ast.UnlistenStmt,
    ast.CheckPointStmt,
    ast.LockStmt,
    ast.DeallocateStmt,
    ast.PrepareStmt,
    ast.ConstraintsSetStmt,
)
_CLUSTER_WIDE = (
    ast.CreateRoleStmt,
    ast.AlterRoleStmt,
    ast.AlterRoleSetStmt,
    ast.DropRoleStmt,
    ast.GrantRoleStmt,
    ast.CreatedbStmt,
    ast.AlterDatabaseStmt,
    ast.AlterDatabaseSetStmt,
    ast.DropdbStmt,
    ast.CreateTableSpaceStmt,
    ast.DropTableSpaceStmt,
    ast.AlterTableSpaceOptionsStmt,
    ast.AlterSystemStmt,
    ast.ReassignOwnedStmt,
    ast.CreateSubscriptionStmt,
    ast.AlterSubscriptionStmt,
    ast.DropSubscriptionStmt,
)


def _label(node: Any) -> str:
    """A statement node's name as a reader knows it: CreateRoleStmt -> CREATE ROLE."""
    name = type(node).__name__.removesuffix("Stmt")
    words = "".join(f" {c}" if c.isupper() else c for c in name).split()
    return " ".join(words).upper()


def _finish(
    acts: list[Access], node: Any, skip: set[int], unknown: str | None, *, read_body: bool = True
) -> tuple[list[Access], str | None]:
    return acts + (_reads(node, skip) if read_body else []), unknown


def _drop(node: ast.DropStmt) -> tuple[list[Access], str | None]:
    kind = node.removeType
    otype = (
        _RELATION_TYPES.get(kind, ObjectType.UNKNOWN) if kind is not None else ObjectType.UNKNOWN
    )
    out: list[Access] = []
    for obj in node.objects or ():
        if isinstance(obj, ast.ObjectWithArgs):
            parts = _strings(obj.objname)
        elif isinstance(obj, ast.TypeName):
            parts = _strings(obj.names)
        elif isinstance(obj, ast.String):
            parts = [str(obj.sval)]
        else:
            parts = _strings(obj)
        if kind is _OT.OBJECT_POLICY and len(parts) >= 2:
            # A policy is part of its table (as CREATE POLICY is): declaring the table covers it.
            table = name_of(parts[:-1])
            if table is not None:
                out.append(Access(table, AccessKind.ALTER, ObjectType.TABLE))
            continue
        if kind in (_OT.OBJECT_TRIGGER, _OT.OBJECT_RULE) and len(parts) >= 2:
            table = name_of(parts[:-1])
            if table is not None:
                out.append(Access(table, AccessKind.ALTER, ObjectType.TABLE))
            parts = parts[-1:]
        name = name_of(parts)
        if name is not None:
            out.append(Access(name, AccessKind.DROP, otype))
    if not out:
        return [], "DROP: the object's name could not be read"
    return out, None


def static_scope(sql: str) -> tuple[StatementScope, ...]:
    out = []
    for index, piece in enumerate(split_postgres(sql), start=1):
        node = parse_one(piece)
        if node is None:
            error = parse_error(piece)
            reason = (
                f"PostgreSQL's parser refuses it: {error}"
                if error is not None
                else "PostgreSQL's parser read more than one statement here"
            )
            out.append(StatementScope(index, _display(piece), (), reason, error=error))
            continue
        accesses, unknown = _read_statement(node)
        out.append(
            StatementScope(index, _display(piece), _ordered(accesses), unknown, _implied(node))
        )
    return tuple(out)


def _implied(node: Any) -> tuple[Implicit, ...]:
    """What the database makes or reads for the objects this statement creates or alters: a
    partition created under its parent (covered by the parent), a foreign key's parent (read
    by the key's check, covered by the table that has the key)."""
    out: list[Implicit] = []
    table: str | None = None
    if isinstance(node, ast.CreateStmt):
        table = _rv(node.relation)
        if table is not None and node.partbound is not None:
            for rv in node.inhRelations or ():
                parent = _rv(rv)
                if parent is not None:
                    reason = f"partition of {parent} created by the change"
                    out.append(Implicit(table, parent, AccessKind.WRITE, reason))
    elif isinstance(node, ast.AlterTableStmt):
        table = _rv(node.relation)
    if table is not None:
        for constraint in _ForeignKeys.of(node):
            parent = _rv(constraint.pktable)
            if parent is not None:
                reason = f"foreign-key parent of {table}, read by its check"
                out.append(Implicit(parent, table, AccessKind.READ, reason))
    return tuple(dict.fromkeys(out))


class _ForeignKeys(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[ast.Constraint] = []

    def visit_Constraint(self, _ancestors: Any, node: ast.Constraint) -> None:
        if node.contype == enums.ConstrType.CONSTR_FOREIGN and node.pktable is not None:
            self.found.append(node)

    @classmethod
    def of(cls, node: Any) -> list[ast.Constraint]:
        visitor = cls()
        visitor(node)
        return visitor.found


def _type_text(node: Any) -> str:
    text = str(RawStream()(node))
    return text.upper()


def lint_destructive(sql: str) -> tuple[Risk, ...]:
    risks: list[Risk] = []
    for index, piece in enumerate(split_postgres(sql), start=1):
        node = parse_one(piece)
        for code, obj, message in _findings(node):
            risks.append(Risk(index, _display(piece), code, obj, message, PROVEN_BY[code]))
    return tuple(risks)


def _findings(node: Any) -> list[tuple[RiskCode, str, str]]:
    out: list[tuple[RiskCode, str, str]] = []
    if isinstance(node, ast.DropStmt) and node.removeType == _OT.OBJECT_TABLE:
        for obj in node.objects or ():
            name = name_of(_strings(obj))
            if name is not None:
                out.append((RiskCode.DROP_TABLE, name, f"drops table {name} and every row in it"))
    elif isinstance(node, ast.AlterTableStmt) and node.objtype == _OT.OBJECT_TABLE:
        table = _rv(node.relation)
        if table is None:
            return out
        for cmd in node.cmds or ():
            subtype = getattr(cmd, "subtype", None)
            if subtype == enums.AlterTableType.AT_DropColumn:
                message = f"drops column {cmd.name} of table {table} and its value in every row"
                out.append((RiskCode.DROP_COLUMN, table, message))
            elif subtype == enums.AlterTableType.AT_AlterColumnType:
                new_type = _type_text(cmd.def_.typeName)
                message = (
                    f"changes column {cmd.name} of table {table} to type {new_type}; this may "
                    "narrow it and truncate, round or reject values (the old width is not known "
                    "statically)"
                )
                out.append((RiskCode.TYPE_CHANGE, table, message))
    elif isinstance(node, ast.DeleteStmt) and node.whereClause is None:
        name = _rv(node.relation)
        if name is not None:
            message = f"deletes every row of {name} (no WHERE clause): a truncate in effect"
            out.append((RiskCode.DELETE_ALL, name, message))
    elif isinstance(node, ast.UpdateStmt) and node.whereClause is None:
        name = _rv(node.relation)
        if name is not None:
            message = f"updates every row of {name} (no WHERE clause), overwriting the old values"
            out.append((RiskCode.UPDATE_ALL, name, message))
    elif isinstance(node, ast.TruncateStmt):
        for rv in node.relations or ():
            name = _rv(rv)
            if name is not None:
                out.append((RiskCode.TRUNCATE, name, f"truncates table {name}, removing every row"))
    return out
