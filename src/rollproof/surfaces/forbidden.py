"""Evidence about forbidden surfaces outside the database: files, environment, production sources.

Files are hashed before the rehearsal and again after it; a file that appears, disappears or
changes under a forbidden glob is TOUCHED. Environment variables named forbidden are removed
from the environment of every subprocess rollproof starts (`child_environment`), and rollproof
reads none of them, so each is reported `not-requested`. Registered production sources are
never opened by rollproof except as the rehearsal's own source, which the isolation proof
covers (opened read-only only, bytes unchanged); any other registered SQLite source is hashed
before and after to show it was not touched.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from rollproof.core.errors import SourceError
from rollproof.core.isolation import IsolationProof
from rollproof.core.policy import Policy
from rollproof.core.redact import redact_dsn
from rollproof.surfaces.scope import ForbiddenStatus, ForbiddenSurface

FileHashes = dict[str, dict[str, str]]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def hash_forbidden_files(policy: Policy) -> FileHashes:
    """pattern -> {relative path -> sha256} for every regular file each glob matches now."""
    base = policy.directory
    out: FileHashes = {}
    for pattern in policy.forbidden_files:
        matches: dict[str, str] = {}
        for p in sorted(base.glob(pattern)):
            if p.is_file() and not p.is_symlink():
                matches[p.relative_to(base).as_posix()] = _sha256(p)
        out[pattern] = matches
    return out


def file_statuses(before: FileHashes, after: FileHashes) -> list[ForbiddenSurface]:
    out = []
    for pattern in sorted(set(before) | set(after)):
        b, a = before.get(pattern, {}), after.get(pattern, {})
        changed = sorted(p for p in set(b) | set(a) if b.get(p) != a.get(p))
        if changed:
            what = ", ".join(
                f"{p} ({'created' if p not in b else 'deleted' if p not in a else 'modified'})"
                for p in changed
            )
            out.append(ForbiddenSurface("file", pattern, ForbiddenStatus.TOUCHED, what))
        elif b:
            out.append(
                ForbiddenSurface(
                    "file",
                    pattern,
                    ForbiddenStatus.UNTOUCHED,
                    f"{len(b)} file(s), sha256 identical before and after",
                )
            )
        else:
            out.append(
                ForbiddenSurface(
                    "file", pattern, ForbiddenStatus.UNTOUCHED, "no file matches, before or after"
                )
            )
    return out


def env_statuses(policy: Policy) -> list[ForbiddenSurface]:
    return [
        ForbiddenSurface(
            "env",
            name,
            ForbiddenStatus.NOT_REQUESTED,
            ("set in this environment; " if name in os.environ else "not set; ")
            + "rollproof reads no such variable and removes it from every subprocess it starts",
        )
        for name in policy.forbidden_env
    ]


def child_environment(policy: Policy, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a subprocess: the current one without any forbidden variable."""
    env = dict(os.environ if base is None else base)
    for name in policy.forbidden_env:
        env.pop(name, None)
    return env


def _sqlite_path(dsn: str, base: Path) -> Path | None:
    """The file a registered SQLite source names, relative paths taken from the policy's folder."""
    from rollproof.engines.sqlite.source import parse_sqlite_dsn

    if "://" in dsn and not dsn.startswith("sqlite:"):
        return None
    try:
        return (base / parse_sqlite_dsn(dsn)).resolve()
    except SourceError:
        return None


def hash_production_sources(policy: Policy) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dsn in policy.production_sources:
        path = _sqlite_path(dsn, policy.directory)
        out[dsn] = _sha256(path) if path is not None and path.is_file() else None
    return out


def production_statuses(
    policy: Policy,
    before: Mapping[str, str | None],
    after: Mapping[str, str | None],
    is_rehearsal_source: Callable[[str], bool],
    isolation: IsolationProof,
) -> list[ForbiddenSurface]:
    """Each registered production source: never opened, or opened only as the proof says.

    The rehearsal's own source is `untouched` only when every isolation check about what
    rollproof did on the source holds (opened read-only, wrote nothing): it is live, and what
    others write there meanwhile is said, not counted against rollproof. Any other registered
    source was never opened, and a SQLite one is hashed before and after to show it.
    """
    source_checks = [c for c in isolation.checks if c.name.startswith("source-")]
    out = []
    for dsn in policy.production_sources:
        shown = redact_dsn(dsn)
        if is_rehearsal_source(dsn):
            held = bool(source_checks) and all(c.holds is True for c in source_checks)
            moved = (
                "; its bytes changed meanwhile, written by others"
                if before.get(dsn) != after.get(dsn)
                else ""
            )
            out.append(
                ForbiddenSurface(
                    "production-source",
                    shown,
                    ForbiddenStatus.UNTOUCHED if held else ForbiddenStatus.TOUCHED,
                    (
                        "; ".join(f"{c.name}: {c.evidence}" for c in source_checks)
                        or "no record of how it was opened"
                    )
                    + moved,
                )
            )
        elif before.get(dsn) != after.get(dsn):
            out.append(
                ForbiddenSurface(
                    "production-source",
                    shown,
                    ForbiddenStatus.TOUCHED,
                    "bytes changed during the rehearsal",
                )
            )
        else:
            out.append(
                ForbiddenSurface(
                    "production-source",
                    shown,
                    ForbiddenStatus.NOT_REQUESTED,
                    "never opened by this rehearsal"
                    + ("; sha256 identical before and after" if before.get(dsn) else ""),
                )
            )
    return out
