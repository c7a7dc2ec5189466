"""What a change's SQL touches, asked of the engine that reads its dialect, and what the change
did not declare. Dialect-free: the readers live in `rollproof.engines` (`reader_for`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rollproof.core.surface import (
    Access,
    AccessKind,
    Coverage,
    Implicit,
    Risk,
    StatementScope,
    Surface,
    Undeclared,
    fold_name,
)
from rollproof.engines import reader_for


def static_scope(sql: str, *, dialect: str = "sqlite") -> tuple[StatementScope, ...]:
    """Every statement of `sql`, in order, with every object it touches.

    `dialect` is "postgresql" (PostgreSQL's own parser) or a sqlglot dialect name; an unknown
    one raises ValueError.
    """
    return reader_for(dialect).static_scope(sql)


def lint_destructive(sql: str, *, dialect: str = "sqlite") -> tuple[Risk, ...]:
    """Every statement of `sql` that destroys data or cannot be reverted losslessly.

    A statement `static_scope` reports UNKNOWN may be destructive and is not shown here: an
    empty result proves nothing about it. Trigger bodies are not linted: they run when the
    trigger fires, not when the change is applied.
    """
    return reader_for(dialect).lint_destructive(sql)


def undeclared(
    scopes: Iterable[StatementScope],
    reads: Iterable[str],
    writes: Iterable[str],
    implicit: Iterable[Implicit] = (),
) -> tuple[Undeclared, ...]:
    """Every access in `scopes` whose object the change did not declare.

    A write, create, alter or drop needs the object in `writes`; a read needs it in `reads` or
    `writes`. Names compare case-insensitively and a `main.` prefix on a declaration is
    ignored. An object the script itself creates earlier is declared only if it is declared:
    creating it is a write and needs `writes` as well, so nothing is inferred — except what the
    database makes for a declared object (`implicit`, and each statement's `implied`: a
    partition created under a declared parent, a foreign key's parent), which its declaration
    covers (`covered` lists them). A read is not listed when the same statement's write of the
    same object already is (declaring the write covers both). UNKNOWN statements are opaque
    here: their unlisted objects cannot be judged.
    """
    scopes = tuple(scopes)
    reads, writes = tuple(reads), tuple(writes)
    shared = coverage_of(scopes, reads, writes, implicit)
    base = [*implicit, *(i for s in scopes for i in s.implied if i.kind is not AccessKind.READ)]
    declared_writes = shared.writes
    declared_any = shared.declared
    out: list[Undeclared] = []
    for scope in scopes:
        coverage = _for_statement(scope, shared, reads, writes, base)
        missing_writes: set[str] = set()
        for access in scope.accesses:
            if access.kind is AccessKind.READ:
                continue
            name = fold_name(access.object)
            if name not in declared_writes and coverage.explain(name, access.kind) is None:
                missing_writes.add(name)
                out.append(_undeclared(scope, access, Surface.WRITES))
        for access in scope.accesses:
            name = fold_name(access.object)
            if access.kind is not AccessKind.READ or name in missing_writes:
                continue
            if name not in declared_any and coverage.explain(name, access.kind) is None:
                out.append(_undeclared(scope, access, Surface.READS))
    return tuple(out)


def coverage_of(
    scopes: Iterable[StatementScope],
    reads: Iterable[str],
    writes: Iterable[str],
    implicit: Iterable[Implicit] = (),
) -> Coverage:
    """The declared surfaces with every implicit object they cover: the catalog's (`implicit`)
    and what the statements themselves make (`StatementScope.implied`)."""
    implied = [i for scope in scopes for i in scope.implied if i.kind is not AccessKind.READ]
    return Coverage(reads, writes, [*implicit, *implied])


def _for_statement(
    scope: StatementScope,
    shared: Coverage,
    reads: Iterable[str],
    writes: Iterable[str],
    implicit: Sequence[Implicit],
) -> Coverage:
    """The coverage of one statement: the shared one, plus the reads its own foreign keys make
    (a REFERENCES clause reads the parent; a SELECT elsewhere of that parent is a real read)."""
    own = [i for i in scope.implied if i.kind is AccessKind.READ]
    if not own:
        return shared
    return Coverage(reads, writes, [*implicit, *own])


def covered(
    scopes: Iterable[StatementScope],
    reads: Iterable[str],
    writes: Iterable[str],
    implicit: Iterable[Implicit] = (),
) -> tuple[Implicit, ...]:
    """Every object the statements touch that is not declared by name but covered implicitly
    (an automatic index, a foreign key's parent, a partition under a declared parent)."""
    scopes = tuple(scopes)
    reads, writes = tuple(reads), tuple(writes)
    shared = coverage_of(scopes, reads, writes, implicit)
    base = [*implicit, *(i for s in scopes for i in s.implied if i.kind is not AccessKind.READ)]
    out: dict[str, Implicit] = {}
    for scope in scopes:
        coverage = _for_statement(scope, shared, reads, writes, base)
        for access in scope.accesses:
            name = fold_name(access.object)
            if name in (coverage.declared if access.kind is AccessKind.READ else coverage.writes):
                continue  # declared by name
            item = coverage.explain(name, access.kind)
            if item is not None:
                out.setdefault(name, item)
    return tuple(out.values())


def _undeclared(scope: StatementScope, access: Access, surface: Surface) -> Undeclared:
    return Undeclared(
        statement=scope.index,
        text=scope.text,
        object=access.object,
        kind=access.kind,
        object_type=access.object_type,
        missing_from=surface,
    )


def _declared(names: Iterable[str]) -> set[str]:
    out: set[str] = set()
    for name in names:
        lowered = fold_name(name.strip())
        out.add(lowered)
        out.add(lowered.removeprefix("main."))
    return out
