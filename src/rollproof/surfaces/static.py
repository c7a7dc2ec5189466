"""What a change's SQL touches, asked of the engine that reads its dialect, and what the change
did not declare. Dialect-free: the readers live in `rollproof.engines` (`reader_for`).
"""

from __future__ import annotations

from collections.abc import Iterable

from rollproof.core.surface import Access, AccessKind, Risk, StatementScope, Surface, Undeclared
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
    scopes: Iterable[StatementScope], reads: Iterable[str], writes: Iterable[str]
) -> tuple[Undeclared, ...]:
    """Every access in `scopes` whose object the change did not declare.

    A write, create, alter or drop needs the object in `writes`; a read needs it in `reads` or
    `writes`. Names compare case-insensitively and a `main.` prefix on a declaration is
    ignored. An object the script itself creates earlier is declared only if it is declared:
    creating it is a write and needs `writes` as well, so nothing is inferred. A read is not
    listed when the same statement's write of the same object already is (declaring the write
    covers both). UNKNOWN statements are opaque here: their unlisted objects cannot be judged.
    """
    declared_writes = _declared(writes)
    declared_any = _declared(reads) | declared_writes
    out: list[Undeclared] = []
    for scope in scopes:
        missing_writes: set[str] = set()
        for access in scope.accesses:
            if access.kind is AccessKind.READ:
                continue
            if access.object.lower() not in declared_writes:
                missing_writes.add(access.object.lower())
                out.append(_undeclared(scope, access, Surface.WRITES))
        for access in scope.accesses:
            name = access.object.lower()
            if access.kind is not AccessKind.READ or name in missing_writes:
                continue
            if name not in declared_any:
                out.append(_undeclared(scope, access, Surface.READS))
    return tuple(out)


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
        lowered = name.strip().lower()
        out.add(lowered)
        out.add(lowered.removeprefix("main."))
    return out
