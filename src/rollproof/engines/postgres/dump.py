"""A pg_dump archive as the source (`pgdump:PATH`): no connection to production at all.

An operator's dump, custom (`pg_dump -Fc`) or directory (`pg_dump -Fd`) format, is the input of
the production-shaped-clone lane. The session is a `PostgresSession` whose snapshot is restored
from the dump instead of dumped from a live server:

1. The dump is hashed before anything is made (a custom archive: the sha256 of its bytes; a
   directory: the sha256 of the sorted `<sha256>  <relative path>` listing of its files, the
   packet's own tree-hash rule; `dump_digest`). A source string that names a digest
   (`pgdump:PATH#sha256=HEX`, how every packet records it) refuses a dump that hashes
   differently (exit 2): RERUN.sh and commands.sh reproduce from the same dump or not at all.
2. `pg_restore --list` and `--create --schema-only` read the archive without a server: the
   format (a file that is not a custom or directory archive is exit 2 with pg_restore's
   reason), the database's encoding and locale, and every role the dump names (owners,
   grantees, policies), which are created NOLOGIN on the scratch server when it lacks them,
   as for a live source.
3. `pg_restore --jobs=N` restores it into `rollproof_<tag>_snap`. When that fails, pg_restore
   reads the whole archive once more without a server (`--file=/dev/null`): if that fails
   too, the dump is damaged (exit 2, pg_restore's reason); otherwise the scratch server
   refused part of it and the isolation check `dump-restored-cleanly` fails with the errors.
4. The rehearsal reads the implicit objects of declared tables from the restored copy
   (`catalog`), scopes the change, and only then arms the session with its guard (`arm`):
   the change role, the snapshot fingerprint, the closed template. Clones, legs, restore and
   teardown are the live engine's.

Isolation (`core.isolation.DUMP_ISOLATION_CHECKS["pgdump"]`): no-source-connection (nothing
but the scratch server was connected to: the source session of the live engine refuses to
open here), clone-database-fresh, dump-restored-cleanly, dump-digest-unchanged (hashed again
after the rehearsal). There is no scratch-server-distinct check: there is no source server to
compare identities with.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from pglast import parse_sql
from pglast.ast import RoleSpec
from pglast.enums import RoleSpecType
from pglast.parser import ParseError
from pglast.visitors import Visitor
from psycopg import sql

from rollproof.core.dumps import DUMP_LANE, PG_CUSTOM, PG_DIRECTORY, PGDUMP, DumpDsn
from rollproof.core.dumps import parse_dump_dsn as parse_dsn
from rollproof.core.errors import EnvironmentProblemError, InternalError, SourceError
from rollproof.core.fingerprint import Fingerprint
from rollproof.core.guard import SurfaceGuard
from rollproof.core.isolation import (
    CLONE_DATABASE_FRESH,
    DUMP_DIGEST_UNCHANGED,
    DUMP_RESTORED_CLEANLY,
    NO_SOURCE_CONNECTION,
    IsolationCheck,
    IsolationProof,
)
from rollproof.core.redact import redact_dsn
from rollproof.core.surface import Catalog
from rollproof.engines.base import Progress
from rollproof.engines.postgres.conn import PgTarget, describe_error, resolved, subprocess_env
from rollproof.engines.postgres.errors import is_machine_error, translated
from rollproof.engines.postgres.fingerprint import ENGINE
from rollproof.engines.postgres.implicit import catalog_from
from rollproof.engines.postgres.session import PostgresSession
from rollproof.engines.postgres.tools import EPHEMERAL, ToolRun, find_tool, run_tool

NO_SOURCE = "postgresql://no-source.invalid/dump"
"""The live engine's source target, never connected to (`_source_session` refuses; `.invalid`
names no host, RFC 2606)."""

_FORMAT = re.compile(r"^;\s+Format:\s+(\S+)", re.M)
_CREATE_DB = re.compile(r"^CREATE DATABASE .*$", re.M)
_DB_OPTION = re.compile(r"\b(ENCODING|LOCALE|LC_COLLATE|LC_CTYPE) = '([^']*)'")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
_ERROR_PREFIX = re.compile(r"^pg_restore: (error|fatal): ")


def dump_digest(path: Path) -> tuple[str, str]:
    """(`file` or `directory`, sha256) of a dump. A directory's digest is the sha256 of the
    lines `<sha256 hex>  <relative path>\\n` of every file under it, sorted by path bytes."""
    try:
        st = path.stat()
        if stat.S_ISREG(st.st_mode):
            return "file", _file_sha256(path)
        if not stat.S_ISDIR(st.st_mode):
            raise SourceError(f"source pgdump:{path}: not a file or a directory")
        lines: list[tuple[bytes, str]] = []
        for root, dirs, files in os.walk(path):
            for name in sorted(dirs + files):
                entry = Path(root) / name
                est = entry.lstat()
                rel = entry.relative_to(path).as_posix()
                if stat.S_ISDIR(est.st_mode):
                    continue
                if not stat.S_ISREG(est.st_mode):
                    raise SourceError(
                        f"source pgdump:{path}: {rel} is not a regular file (a dump directory "
                        "holds only files)"
                    )
                if not rel.isprintable():
                    raise SourceError(f"source pgdump:{path}: a file name holds control characters")
                lines.append((rel.encode("utf-8", "surrogateescape"), _file_sha256(entry)))
    except FileNotFoundError:
        raise SourceError(f"source pgdump:{path}: no such file or directory") from None
    except PermissionError as e:
        raise SourceError(f"source pgdump:{path}: cannot read: {e.strerror}") from None
    except OSError as e:
        raise EnvironmentProblemError(f"source pgdump:{path}: cannot read: {e.strerror}") from e
    listing = b"".join(digest.encode() + b"  " + rel + b"\n" for rel, digest in sorted(lines))
    return "directory", hashlib.sha256(listing).hexdigest()


def _file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@dataclass(frozen=True, slots=True)
class Archive:
    """What pg_restore reads from a dump without a server."""

    format: str  # PG_CUSTOM or PG_DIRECTORY
    encoding: str
    collate: str
    ctype: str
    roles: frozenset[str] = field(default_factory=frozenset)
    note: str = ""


class _Roles(Visitor):
    """Every role a dump's SQL names (owners, grantees, policy roles, default privileges)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def visit_RoleSpec(self, _ancestors: Any, node: RoleSpec) -> None:
        if node.roletype == RoleSpecType.ROLESPEC_CSTRING and node.rolename:
            self.names.add(str(node.rolename))


def _reason(run: ToolRun) -> str:
    lines = [_ERROR_PREFIX.sub("", e) for e in run.errors if "error" in e.lower()]
    return "; ".join(lines[-2:]) or f"exit {run.returncode}"


def read_archive(
    path: Path, workspace: Path, env: dict[str, str], progress: Progress, shown: str
) -> Archive:
    """The dump's format, database encoding and locale and the roles it names (pg_restore
    --list and --create --schema-only, no server). One it cannot read is exit 2."""
    pg_restore = find_tool("pg_restore")
    listing, schema = workspace / "dump.list", workspace / "dump-schema.sql"
    try:
        for argv in (
            [pg_restore, "--list", f"--file={listing}", str(path)],
            [pg_restore, "--create", "--schema-only", f"--file={schema}", str(path)],
        ):
            run = run_tool(argv, env=env, secrets=(), progress=progress, label="pg_restore")
            if run.returncode < 0:
                raise EnvironmentProblemError(str(run.failure("pg_restore reading the dump")))
            if run.returncode != 0:
                raise SourceError(
                    f"source {shown}: pg_restore cannot read the dump: {_reason(run)}"
                )
        toc = listing.read_text(encoding="utf-8", errors="replace")
        text = schema.read_text(encoding="utf-8", errors="replace")
    finally:
        listing.unlink(missing_ok=True)
        schema.unlink(missing_ok=True)
    m = _FORMAT.search(toc)
    kind = m.group(1) if m else "unknown"
    formats = {"CUSTOM": PG_CUSTOM, "DIRECTORY": PG_DIRECTORY}
    if kind not in formats:
        raise SourceError(
            f"source {shown}: a {kind.lower()}-format archive; rollproof restores pg_dump's "
            "custom (-Fc) and directory (-Fd) formats"
        )
    options: dict[str, str] = {}
    create = _CREATE_DB.search(text)
    if create is not None:
        options = {k.upper(): v for k, v in _DB_OPTION.findall(create.group(0))}
    note = ""
    locale = options.get("LOCALE")
    collate = options.get("LC_COLLATE") or locale
    ctype = options.get("LC_CTYPE") or locale
    if not (collate and ctype):
        collate = ctype = "C"
        note = "the dump names no locale for its database; C was used"
    return Archive(
        formats[kind],
        options.get("ENCODING", "UTF8"),
        collate,
        ctype,
        frozenset(_roles_named(text, toc)),
        note,
    )


def _roles_named(schema: str, toc: str) -> set[str]:
    """Roles named in the schema's SQL (read by PostgreSQL's own parser); if it does not parse,
    the owners the archive's table of contents lists."""
    statements = "\n".join(line for line in schema.splitlines() if not line.startswith("\\"))
    try:
        visitor = _Roles()
        visitor(parse_sql(statements))
        return visitor.names
    except ParseError:
        owners = set()
        for line in toc.splitlines():
            if line and not line.startswith(";"):
                owner = line.rsplit(" ", 1)[-1]
                if _IDENT.match(owner):
                    owners.add(owner)
        return owners


def create_roles(admin: psycopg.Connection[Any], names: Iterable[str]) -> tuple[str, ...]:
    """Create, NOLOGIN and without a password, each role the scratch server lacks; return the
    names created. A role that cannot be created is left for pg_restore to report."""
    wanted = sorted(set(names))
    rows = admin.execute(
        "SELECT rolname FROM pg_catalog.pg_roles WHERE rolname = ANY(%s)", (wanted,)
    ).fetchall()
    have = {str(r[0]) for r in rows}
    created = []
    for name in wanted:
        if name in have:
            continue
        with contextlib.suppress(psycopg.Error):
            admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(name)))
            created.append(name)
    return tuple(created)


@translated(lambda s: s._servers())
class PgDumpSession(PostgresSession):
    """An `EngineSession` whose snapshot is a pg_dump archive restored on the scratch server."""

    def __init__(
        self,
        dsn: str,
        *,
        scratch: str = EPHEMERAL,
        workdir: Path | None = None,
        progress: Progress | None = None,
        forbidden_env: Iterable[str] = (),
        jobs: int | None = None,
    ) -> None:
        parsed = parse_dsn(dsn)
        if parsed.scheme != PGDUMP:
            raise SourceError(f"source {dsn!r}: not a pg_dump archive (pgdump:PATH)")
        try:
            self.dump_path = Path(parsed.path).resolve(strict=True)
        except FileNotFoundError:
            raise SourceError(f"source {dsn}: no such file or directory") from None
        except OSError as e:
            raise SourceError(f"source {dsn}: {e.strerror}") from None
        self._shown = f"{PGDUMP}:{self.dump_path}"
        self._forbidden_env = frozenset(forbidden_env)
        say = progress or (lambda _msg: None)
        say(f"hashing the dump {self.dump_path}")
        self._dump_kind, self._dump_sha256 = dump_digest(self.dump_path)
        if parsed.sha256 is not None and parsed.sha256 != self._dump_sha256:
            # Before anything is made: a reproduction from another dump proves nothing.
            raise SourceError(
                f"source {self._shown}: the dump's sha256 is {self._dump_sha256}, not the "
                f"{parsed.sha256} it must have: it is not the dump named (changed, or another)"
            )
        self._archive: Archive | None = None
        self._dump_roles: tuple[str, ...] = ()
        self._restore_errors: tuple[str, ...] = ()
        self._scratch_id = ""
        super().__init__(
            NO_SOURCE, scratch=scratch, workdir=workdir, progress=progress, guard=None, jobs=jobs
        )

    # -- the live engine's source, which a dump has not -----------------------------------------

    def _source_session(self) -> psycopg.Connection[Any]:
        raise InternalError("a dump source has no source server; nothing may connect to one")

    def _servers(self) -> list[tuple[str, str, str]]:
        return [s for s in super()._servers() if s[0].startswith("scratch")]

    def _child_base(self) -> dict[str, str]:
        if self.guard is not None:
            return self.guard.child_environment()
        return {k: v for k, v in os.environ.items() if k not in self._forbidden_env}

    def _tool_env(self) -> dict[str, str]:
        """pg_restore's environment when it reads the dump alone: no libpq variable at all."""
        return subprocess_env(PgTarget(params={}), self._child_base())

    # -- restore --------------------------------------------------------------------------------

    def _prepare(self) -> None:
        say = self._progress
        say("reading the dump's table of contents (pg_restore --list)")
        archive = read_archive(self.dump_path, self.workspace, self._tool_env(), say, self._shown)
        expected = PG_DIRECTORY if self._dump_kind == "directory" else PG_CUSTOM
        if archive.format != expected:
            raise SourceError(f"source {self._shown}: a {self._dump_kind} holding {archive.format}")
        self._archive = archive
        with contextlib.closing(self._admin()) as admin:
            self._scratch_child = resolved(admin, self.scratch)
            self._scratch_id = str(self._server(admin, "scratch")[0])
            self._sweep(admin)
            self._create_database(
                admin, self.snapshot_db, archive.encoding, archive.collate, archive.ctype
            )
            self._dump_roles = create_roles(admin, archive.roles)
        self._restore_dump()

    def _restore_dump(self) -> None:
        target = self._scratch_child.with_db(self.snapshot_db)
        pg_restore = find_tool("pg_restore")
        argv = [
            pg_restore,
            f"--jobs={self._jobs}",
            "--no-password",
            "--verbose",
            f"--dbname={target.conninfo}",
            str(self.dump_path),
        ]
        self._progress("restoring the dump on the scratch server (pg_restore)")
        run = run_tool(
            argv,
            env=subprocess_env(target, self._child_base()),
            secrets=target.secrets(),
            progress=self._progress,
            label="pg_restore",
        )
        if run.returncode < 0:
            raise EnvironmentProblemError(str(run.failure("pg_restore on the scratch server")))
        if run.returncode == 0:
            return
        # The dump, or the scratch server? A whole read without a server tells them apart.
        read = run_tool(
            [pg_restore, f"--file={os.devnull}", str(self.dump_path)],
            env=self._tool_env(),
            secrets=(),
            progress=lambda _msg: None,
            label="pg_restore",
        )
        if read.returncode < 0:
            raise EnvironmentProblemError(str(read.failure("pg_restore reading the dump")))
        if read.returncode != 0:
            raise SourceError(
                f"source {self._shown}: pg_restore cannot read the dump: {_reason(read)}"
            )
        self._restore_errors = tuple(e for e in run.errors if "error" in e.lower())

    def catalog(self) -> Catalog:
        """What the restored dump makes for its tables (indexes, sequences, foreign keys), read
        from the snapshot before the change role exists: the catalog scoping needs."""
        with contextlib.closing(self._admin(self.snapshot_db)) as conn:
            conn.read_only = True
            try:
                return catalog_from(conn)
            except psycopg.Error as e:
                if is_machine_error(e):
                    raise
                raise EnvironmentProblemError(
                    f"scratch {self.scratch.shown}: cannot read the restored dump's catalog: "
                    f"{describe_error(e)}"
                ) from None

    def arm(self, guard: SurfaceGuard | None) -> PgDumpSession:
        """Give the session its guard: the change role, then the snapshot sealed."""
        self.guard = guard
        try:
            self._enforce()
            self._seal_snapshot()
        except psycopg.Error as e:
            if is_machine_error(e):
                raise
            raise EnvironmentProblemError(f"preparing the clone: {describe_error(e)}") from None
        return self

    # -- evidence -------------------------------------------------------------------------------

    def describe_source(self) -> dict[str, Any]:
        scratch = self._scratch_spec
        assert self._archive is not None
        return {
            "engine": ENGINE,
            "dsn": DumpDsn(PGDUMP, str(self.dump_path), None).dsn(self._dump_sha256),
            "scratch": scratch if scratch == EPHEMERAL else redact_dsn(scratch),
            "dump": {
                "format": self._archive.format,
                "sha256": self._dump_sha256,
                "lane": DUMP_LANE,
            },
        }

    def is_source(self, dsn: str, base: Path) -> bool:
        """The same dump (base is unused: a recorded dump path is absolute)."""
        try:
            return Path(parse_dsn(dsn).path).resolve() == self.dump_path
        except (SourceError, OSError):
            return False

    def _static_checks(self) -> list[IsolationCheck]:
        archive = self._archive
        notes = [
            n
            for n in (
                f"roles the dump names created NOLOGIN: {', '.join(self._dump_roles)}"
                if self._dump_roles
                else "",
                archive.note if archive else "",
                self._restore_note,
                self._grants_note(),
            )
            if n
        ]
        errors = self._restore_errors
        restored = (
            f"pg_restore reported {len(errors)} error(s): " + "; ".join(errors[:5])
            if errors
            else "pg_restore restored every entry of the dump (exit 0)"
        )
        return [
            IsolationCheck(
                NO_SOURCE_CONNECTION,
                not self._source_sessions,
                f"the source is a pg_dump archive ({archive.format if archive else '?'}) at "
                f"{self.dump_path}, read only by pg_restore; rollproof connected to no server "
                f"but the scratch server {self.scratch.shown} (system_identifier "
                f"{self._scratch_id})"
                + (" (an ephemeral cluster rollproof started)" if self._cluster else ""),
            ),
            IsolationCheck(
                CLONE_DATABASE_FRESH,
                self.snapshot_db in self._created,
                f"scratch databases {self.snapshot_db} (snapshot) and {self.clone_db} (clone) "
                "were created by this rehearsal",
            ),
            IsolationCheck(
                DUMP_RESTORED_CLEANLY,
                not errors,
                "; ".join([restored, *notes]),
            ),
        ]

    def isolation(self) -> IsolationProof:
        pending = IsolationCheck(DUMP_DIGEST_UNCHANGED, None, "decided after the rehearsal")
        return IsolationProof((*self._static_checks(), pending))

    def finish_isolation(self) -> IsolationProof:
        _kind, after = dump_digest(self.dump_path)
        same = after == self._dump_sha256
        evidence = (
            f"sha256 {after} before the restore and after the rehearsal"
            if same
            else f"the dump CHANGED during the rehearsal (before {self._dump_sha256}, "
            f"after {after})"
        )
        check = IsolationCheck(DUMP_DIGEST_UNCHANGED, same, evidence)
        return IsolationProof((*self._static_checks(), check))


def fingerprint_dump(
    dsn: str, *, scratch: str, progress: Progress | None = None
) -> tuple[Fingerprint, str]:
    """The content fingerprint of a pg_dump archive, and its sha256 (`rollproof fingerprint
    pgdump:PATH`): restored on `scratch` (a server DSN, or "ephemeral") exactly as a rehearsal
    restores it, fingerprinted there, and every scratch database dropped again."""
    session = PgDumpSession(dsn, scratch=scratch, progress=progress)
    try:
        session.arm(None)
        return session.snapshot_fingerprint(), session._dump_sha256
    finally:
        session.close(keep=False)
