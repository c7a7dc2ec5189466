"""The PostgreSQL engine: read-only source, a clone on a different server, and its isolation proof.

Longer than 600 lines because it is one `EngineSession`: the snapshot, the clones, every leg
operation and the isolation proof share the session's state (source and clone connections,
the private workspace, the guard, what was read and written), and cutting the class would
scatter that state over modules that all need it. Everything else about the dialect
(connections, tools, roles, reach, catalog, fingerprint, scope and SQL helpers) is already a
module of its own beside it.

Layout of one rehearsal:

    source server   read only: one REPEATABLE READ READ ONLY transaction fingerprints the source
                    and exports its snapshot, while pg_dump dumps exactly that snapshot
                    (directory format, parallel jobs, no compression), in a read-only session
    scratch server  a server the user names (`scratch="postgresql://…"`) or a private cluster
                    rollproof starts (`scratch="ephemeral"`); it holds databases made for
                    this rehearsal:
                      rollproof_<id>_snap  the dump restored, then surface grants applied, then
                                           sealed (closed to connections) and fingerprinted: a
                                           template nobody connects to while clones are made
                      rollproof_<id>_work  the working clone: a server copy of the snapshot
                                           (CREATE DATABASE ... TEMPLATE), which carries the
                                           snapshot's fingerprint instead of being read again
                      rollproof_<id>_next  the restore leg's copy, made while the transaction
                                           leg runs and renamed into place
                      rollproof_<id>_branch  a copy of the restore leg's committed apply, which
                                           the revert leg continues from
                      rollproof_<id>_oldN  clones set aside by a rename, dropped at the end
    workspace       a private directory (0700) for the dump (removed once restored) and the
                    ephemeral cluster

Isolation items (all must hold for PROVEN_ISOLATED_NOT_PRODUCTION). They prove what rollproof
did, not that nobody else wrote the source: a live primary is proven isolated too.
* scratch-server-distinct: the scratch server's `system_identifier` differs from the source's
  (a scratch DSN that reaches the source server, or a physical replica of it, is refused
  with exit 3 before anything is created or restored);
* clone-database-fresh: both scratch databases were created by this rehearsal (CREATE DATABASE
  succeeded, so neither existed before) on that other server;
* source-session-read-only: every source session had `default_transaction_read_only` and
  `transaction_read_only` confirmed on by the server, and pg_dump ran with the same option;
* clone-matches-source: the restored snapshot fingerprints the same as the source did inside
  the exported snapshot pg_dump dumped (its id is recorded); sequence counters are the one
  exception, an advance only: they are not transactional, so another client's nextval between
  the fingerprint's read and pg_dump's shows, and the clone holds what pg_dump read;
* source-wrote-nothing: every rollproof transaction on the source (the exporting one, the
  fingerprint workers', the look after the rehearsal) ended with no transaction id assigned and
  no row inserted, updated or deleted.

Whether the source moved on (others wrote it during or after the rehearsal) is an observation
recorded in `describe_source()["after"]`, not a check: it is fingerprinted again at the end.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
from pglast import ast
from psycopg import sql

from rollproof.core.change import Script
from rollproof.core.errors import EnvironmentProblemError, IsolationError, SourceError, UsageError
from rollproof.core.fingerprint import Difference, Fingerprint, Reuse, compare
from rollproof.core.guard import SurfaceGuard, script_error
from rollproof.core.isolation import (
    CLONE_DATABASE_FRESH,
    CLONE_MATCHES_SOURCE,
    SCRATCH_SERVER_DISTINCT,
    SOURCE_SESSION_READ_ONLY,
    SOURCE_WROTE_NOTHING,
    IsolationCheck,
    IsolationProof,
    source_after,
)
from rollproof.core.redact import redact_dsn
from rollproof.core.steps import ENGINE_STEPS, marks_steps
from rollproof.core.surface import AccessKind, Implicit
from rollproof.engines.base import (
    Progress,
    ReadOnlyOutcome,
    ScriptOutcome,
    StatementRows,
    TransactionOutcome,
)
from rollproof.engines.postgres import snapcache
from rollproof.engines.postgres.conn import (
    READ_ONLY_OPTION,
    PgTarget,
    connect,
    connect_source,
    describe_error,
    describe_script_error,
    parse_pg_dsn,
    resolved,
    script_error_parts,
    subprocess_env,
)
from rollproof.engines.postgres.errors import is_machine_error, server_fault, translated
from rollproof.engines.postgres.explain import explain_differences
from rollproof.engines.postgres.fingerprint import (
    ENGINE,
    Connect,
    describe_schema,
    fingerprint_connection,
    prepare_session,
    privilege_state,
)
from rollproof.engines.postgres.impact import PgMeter
from rollproof.engines.postgres.implicit import implicit_objects
from rollproof.engines.postgres.owner import Lender, OwnerRefusedError, lend
from rollproof.engines.postgres.privileges import PrivilegeMask
from rollproof.engines.postgres.reach import normalize
from rollproof.engines.postgres.roles import (
    Grants,
    copy_roles,
    denied_kind,
    denied_object,
    denied_via,
    grant_declared,
    lend_read_all,
    own_table,
    read_through_views,
    tables_for_declared,
    writable_tables,
)
from rollproof.engines.postgres.scope import static_scope
from rollproof.engines.postgres.sql import (
    NOT_IN_TRANSACTION_STATES,
    manages_transaction,
    not_in_transaction,
    parse_one,
    short,
    split_postgres,
)
from rollproof.engines.postgres.sweep import mark_database, mark_role, owner_of, sweep_scratch
from rollproof.engines.postgres.tools import (
    EPHEMERAL,
    EphemeralCluster,
    find_tool,
    run_tool,
    start_ephemeral,
)
from rollproof.engines.workspace import make_workspace

_SERVER = """
SELECT (SELECT system_identifier FROM pg_catalog.pg_control_system())::text,
       current_database(), current_setting('server_version_num')::int,
       pg_catalog.pg_encoding_to_char(d.encoding), d.datcollate, d.datctype
FROM pg_catalog.pg_database d WHERE d.datname = current_database()
"""
# Whether the current transaction wrote anything: any write is given a transaction id, and the
# transaction's own row counters say whether it inserted, updated or deleted a row.
_WROTE_NOTHING = """
SELECT pg_catalog.txid_current_if_assigned() IS NULL
       AND coalesce((SELECT sum(n_tup_ins + n_tup_upd + n_tup_del)
                     FROM pg_catalog.pg_stat_xact_all_tables), 0) = 0
"""


# Who else is on a database being sealed: any backend but ours (autovacuum changes no content),
# and any prepared transaction (it could be committed later).
_OTHERS_ON = """
SELECT (SELECT count(*) FROM pg_catalog.pg_stat_activity
        WHERE datname = %(db)s AND NOT pid = ANY(%(pids)s)
          AND backend_type IS DISTINCT FROM 'autovacuum worker')
     + (SELECT count(*) FROM pg_catalog.pg_prepared_xacts WHERE database = %(db)s)
"""


def _lend_from(pool: list[psycopg.Connection[Any]]) -> Connect:
    """A `Connect` that lends the given open sessions (a sealed database takes no new ones)."""
    lock = threading.Lock()

    @contextlib.contextmanager
    def lend() -> Iterator[psycopg.Connection[Any]]:
        with lock:
            if not pool:
                raise EnvironmentProblemError("no reading session left for the sealed snapshot")
            conn = pool.pop()
        try:
            yield conn
        finally:
            with lock:
                pool.append(conn)

    return lend


def _wrote_nothing(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(_WROTE_NOTHING).fetchone()
    return row is not None and row[0] is True


@contextlib.contextmanager
def _server_errors(what: str) -> Iterator[None]:
    """Driver errors become environment problems (exit 4) at this boundary, never exit 70."""
    try:
        yield
    except psycopg.Error as e:
        if is_machine_error(e):
            raise  # named by the session's `translated` boundary
        raise EnvironmentProblemError(f"{what}: {describe_error(e)}") from None


@translated(lambda s: s._servers())
@marks_steps(ENGINE_STEPS)
class PostgresSession:
    """An `EngineSession` for a PostgreSQL source, cloned onto a scratch server."""

    engine = ENGINE

    def __init__(
        self,
        dsn: str,
        *,
        scratch: str = EPHEMERAL,
        workdir: Path | None = None,
        progress: Progress | None = None,
        guard: SurfaceGuard | None = None,
        jobs: int | None = None,
    ) -> None:
        self._progress = progress or (lambda _msg: None)
        self.guard = guard
        self.source = parse_pg_dsn(dsn, what="source")
        if scratch != EPHEMERAL and not scratch.startswith(("postgresql://", "postgres://")):
            raise UsageError(
                f"scratch {scratch!r}: name a PostgreSQL server (postgresql://…) or 'ephemeral'"
            )
        self._scratch_spec = scratch
        self._jobs = jobs or max(1, min(4, os.cpu_count() or 1))
        self._source_sessions: list[str] = []
        self._source_txns: list[bool] = []
        """Each rollproof transaction on the source: True when it wrote nothing."""
        self._snapshot_id = ""
        self._after: dict[str, Any] | None = None
        """Whether the source moved on since the snapshot, once the rehearsal is over."""
        self._cluster: EphemeralCluster | None = None
        self._created: list[str] = []
        self._role: str | None = None
        self._role_password = secrets.token_urlsafe(24)
        self._grants: Grants | None = None
        self._mask: PrivilegeMask | None = None
        """Owners and privileges as before rollproof's setup in the snapshot (PrivilegeMask)."""
        self._clone_mask: PrivilegeMask | None = None
        """The same for the working clone, which may have had more handed to the role."""
        self._roles_note = ""
        self._restore_note = ""
        self._clone_owned: set[str] = set()
        self._lender: Lender | None = None
        """What an owner-changing statement is lent (owner.py); set with the change role."""
        self._source_before: Fingerprint | None = None
        self._snapshot_fp: Fingerprint | None = None
        self._sealed = False
        """The snapshot was closed to connections before it was fingerprinted (_seal_snapshot)
        and has not been opened since: a server copy of it carries its fingerprint."""
        self._seal_note = ""
        self._cache: str | None = None
        """The snapshot cache database for this source (snapcache.py), when reuse is asked."""
        self._reuse_note = ""
        self._carried: Fingerprint | None = None
        """What the working clone holds by construction (a copy of the sealed snapshot that
        nothing has run on since), or None when only a read can say."""
        self._branch: tuple[set[str], PrivilegeMask | None] | None = None
        """A copy of the clone kept by `branch`: what was handed to the role in it, and its mask."""
        self._prepared: tuple[Future[None], bool] | None = None
        """The background copy of the snapshot `prepare_clone` started, and whether the
        snapshot was sealed when it began."""
        self._chores: ThreadPoolExecutor | None = None
        self._pending: list[Future[None]] = []
        self._discarded = 0
        self._trash: list[str] = []
        self._dropped: list[str] = []
        """A copy of the clone kept by `branch`: what was handed to the role in it, and its mask."""
        tag = secrets.token_hex(4)
        self.snapshot_db = f"rollproof_{tag}_snap"
        self.clone_db = f"rollproof_{tag}_work"
        self._tag = tag
        self._claim = make_workspace("rollproof-pg-", workdir)
        self.workspace = self._claim.directory
        try:
            self._check_workspace()
            self.scratch = self._open_scratch()
            with _server_errors("preparing the clone"):
                self._prepare()
        except BaseException:
            self._cleanup(keep=False)
            raise

    # -- setup ----------------------------------------------------------------------------------

    def _servers(self) -> list[tuple[str, str, str]]:
        """(role and shown DSN, host, port) of the two servers, for `errors.translated`."""
        out = []
        for role, name in (("source", "_source_child"), ("scratch", "_scratch_child")):
            target = getattr(self, name, None) or getattr(self, role, None)
            if isinstance(target, PgTarget):
                p = target.params
                out.append((f"{role} {target.shown}", p.get("host", ""), p.get("port", "")))
        return out

    def _check_workspace(self) -> None:
        st = self.workspace.stat()
        if stat.S_IMODE(st.st_mode) != 0o700 or st.st_uid != os.getuid():
            raise EnvironmentProblemError(f"workspace {self.workspace} is not private (0700, ours)")

    def _open_scratch(self) -> PgTarget:
        if self._scratch_spec == EPHEMERAL:
            self._cluster = start_ephemeral(self.workspace, self._progress, self._child_base())
            return parse_pg_dsn(self._cluster.dsn, what="scratch")
        return parse_pg_dsn(self._scratch_spec, what="scratch")

    def _source_session(self) -> psycopg.Connection[Any]:
        conn = connect_source(self.source)
        self._source_sessions.append("default_transaction_read_only=on, transaction_read_only=on")
        return conn

    @contextlib.contextmanager
    def _source_worker(self, snapshot_id: str) -> Iterator[psycopg.Connection[Any]]:
        """Another read-only source session that sees exactly the exported snapshot."""
        conn = self._source_session()
        try:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_id)))
            yield conn
            self._source_txns.append(_wrote_nothing(conn))
        finally:
            conn.close()

    def _admin_worker(self, dbname: str) -> Connect:
        return lambda: contextlib.closing(self._admin(dbname))

    def _admin(self, dbname: str | None = None) -> psycopg.Connection[Any]:
        target = self.scratch if dbname is None else self.scratch.with_db(dbname)
        return connect(target, what="scratch")

    def _prepare(self) -> None:
        say = self._progress
        say("opening the source read-only")
        with contextlib.closing(self._source_session()) as src:
            # What libpq resolved for these connections (PGPASSWORD, a passfile, a service, the
            # PGSSL* settings): the client programs connect with exactly that.
            self._source_child = resolved(src, self.source)
            src_id, src_db, src_version, encoding, collate, ctype = self._server(src, "source")
            self.source_db = src_db
            with contextlib.closing(self._admin()) as admin:
                self._scratch_child = resolved(admin, self.scratch)
                scr_id, _db, scr_version, *_ = self._server(admin, "scratch")
                self._ids = (src_id, scr_id)
                if src_id == scr_id:
                    # Checked before anything is created or restored: a scratch DSN that reaches
                    # the source server would make the rehearsal write production.
                    raise IsolationError(
                        [
                            f"scratch-server-distinct (the scratch server {self.scratch.shown} "
                            f"has the source's system_identifier {src_id}: it is the source "
                            "server, or a replica of it; name a different scratch server)"
                        ]
                    )
                if scr_version // 10000 < src_version // 10000:
                    say(
                        f"warning: scratch server version {scr_version} is older than the "
                        f"source's {src_version}"
                    )
                self._sweep(admin)
                cached: str | None = None
                if snapcache.enabled() and self._cluster is None:
                    self._cache = snapcache.cache_name(str(src_id), src_db)
                    cached = snapcache.sealed_digest(admin, self._cache)
                if cached is None:
                    self._create_database(admin, self.snapshot_db, encoding, collate, ctype)
                self._roles_note = copy_roles(src, admin)
            locale = (encoding, collate, ctype)
            src.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            row = src.execute(
                "SELECT pg_catalog.pg_export_snapshot(), "
                "pg_catalog.pg_size_pretty(pg_catalog.pg_database_size(current_database()))"
            ).fetchone()
            assert row is not None
            snapshot_id = self._snapshot_id = str(row[0])
            if cached is not None:
                # The source is read first: only its fingerprint says whether the cache is it.
                say("fingerprinting the source (read-only); a sealed snapshot cache is kept")
                self._source_before = self._fingerprint(
                    src, "source", lambda: self._source_worker(snapshot_id)
                )
                if self._reuse(cached, locale):
                    self._source_txns.append(_wrote_nothing(src))
                    src.execute("ROLLBACK")
                    return
                # Not reused: dump this same exported snapshot, still open, as without a cache.
                self._dump(snapshot_id, str(row[1]))
                self._source_txns.append(_wrote_nothing(src))
                src.execute("ROLLBACK")
                self._restore_and_seal()
                return
            say("fingerprinting the source (read-only) while pg_dump dumps the same snapshot")
            # Both read the one exported snapshot, so they may run at once: the fingerprint on
            # this session (and its workers) on another thread, pg_dump in its own processes.
            pool = ThreadPoolExecutor(max_workers=1)
            reading = pool.submit(
                self._fingerprint, src, "source", lambda: self._source_worker(snapshot_id)
            )
            try:
                self._dump(snapshot_id, str(row[1]))
            finally:
                pool.shutdown(wait=True)  # the session is the fingerprint's until it is done
            self._source_before = reading.result()
            self._source_txns.append(_wrote_nothing(src))
            src.execute("ROLLBACK")
        self._restore_and_seal()

    def _restore_and_seal(self) -> None:
        """Restore the dump, copy it aside for the cache (when asked), enforce and seal."""
        self._restore()
        pending = self._cache is not None and not self._restore_note
        if pending and self._cache is not None:
            with contextlib.closing(self._admin()) as admin:
                snapcache.drop(admin, self._cache)
                snapcache.copy_pending(admin, self._cache, self.snapshot_db)
        self._enforce()
        self._seal_snapshot()
        if pending and self._cache is not None:
            before, snap = self._source_before, self._snapshot_fp
            with contextlib.closing(self._admin()) as admin:
                if before is not None and snap is not None and before.digest == snap.digest:
                    snapcache.seal_pending(admin, self._cache, before.digest)
                else:
                    snapcache.drop(admin, self._cache)

    def _reuse(self, cached: str, locale: tuple[str, str, str]) -> bool:
        """Make the snapshot a server copy of the cache, when the source's fingerprint is the
        one the cache was sealed with; the copy is sealed and really read, and it is kept only
        when that read equals the source's. False (cache and copy dropped, the snapshot
        database created empty): dump and restore."""
        assert self._cache is not None
        assert self._source_before is not None
        source = self._source_before.digest
        if source == cached:
            self._progress(
                f"copying the cached snapshot {self._cache} (CREATE DATABASE ... TEMPLATE)"
            )
            with contextlib.closing(self._admin()) as admin:
                admin.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                        sql.Identifier(self.snapshot_db), sql.Identifier(self._cache)
                    )
                )
                self._created.append(self.snapshot_db)
                mark_database(admin, self.snapshot_db, owner_of(self._claim))
            self._enforce()
            self._seal_snapshot()
            snap = self._snapshot_fp
            if snap is not None and snap.digest == source:
                self._reuse_note = (
                    f"not dumped again: the snapshot is a server copy of {self._cache}, sealed "
                    f"by an earlier rehearsal for source fingerprint {cached}, which the source "
                    "has now too; the copy's own fingerprint was read after the copy"
                )
                return True
            self._progress(f"the cached snapshot {self._cache} differs from the source: not used")
            self._reuse_note = (
                f"the cached snapshot {self._cache} was copied but its fingerprint "
                f"{snap.digest if snap else None} differs from the source's: dropped, "
                "dumped and restored instead"
            )
        else:
            self._reuse_note = (
                f"the cached snapshot {self._cache} was sealed for another source "
                "fingerprint: dumped and restored instead"
            )
        self._undo_reuse(locale)
        return False

    def _undo_reuse(self, locale: tuple[str, str, str]) -> None:
        """Drop the cache and any copy of it with its role, and start the snapshot empty."""
        assert self._cache is not None
        with contextlib.closing(self._admin()) as admin:
            snapcache.drop(admin, self._cache)
            if self.snapshot_db in self._created:
                ident = sql.Identifier(self.snapshot_db)
                admin.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(ident))
                admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(ident))
                self._created.remove(self.snapshot_db)
            if self._role is not None:
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(self._role)))
            self._role = None
            self._grants = self._mask = self._clone_mask = None
            self._sealed, self._seal_note, self._snapshot_fp = False, "", None
            self._create_database(admin, self.snapshot_db, *locale)

    def _seal_snapshot(self) -> None:
        """Close the restored (and enforced) snapshot to connections, then fingerprint it.

        Its reading sessions are opened first, made read-only, and then ALLOW_CONNECTIONS false
        refuses every new connection (a superuser's too); the server is asked who is connected,
        before the fingerprint and after it, and anyone but those sessions (or a prepared
        transaction) refuses the snapshot. The fingerprint is read after the last write (the
        surface grants) and the readers are closed before any copy is made. So a server copy
        of the snapshot (CREATE DATABASE ... TEMPLATE, which refuses while anyone is connected
        to it) holds what that fingerprint read, and carries it instead of being read again.
        """
        ident = sql.Identifier(self.snapshot_db)
        readers: list[psycopg.Connection[Any]] = []
        try:
            for _ in range(self._jobs + 1):
                reader = self._admin(self.snapshot_db)
                readers.append(reader)
                reader.execute("SET default_transaction_read_only = on")
            pids = [r.info.backend_pid for r in readers]
            with contextlib.closing(self._admin()) as admin:
                admin.execute(
                    sql.SQL(
                        "ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"
                    ).format(ident)
                )
                self._only_readers(admin, pids)
                self._progress("fingerprinting the snapshot")
                self._snapshot_fp = self._fingerprint(
                    readers[0], "scratch", _lend_from(readers[1:]), mask=self._mask
                )
                self._only_readers(admin, pids)
        finally:
            for reader in readers:
                reader.close()
        self._sealed = True
        self._seal_note = (
            f"the snapshot {self.snapshot_db} was closed to new connections (ALLOW_CONNECTIONS "
            f"false) before its fingerprint, which {len(pids)} read-only rollproof session(s) "
            "read with no other session connected before or after; each working clone is a "
            "server copy of it (CREATE DATABASE ... TEMPLATE) and carries that fingerprint"
        )

    def _only_readers(self, admin: psycopg.Connection[Any], pids: list[int]) -> None:
        """Refuse a snapshot anyone but rollproof's readers is connected to (autovacuum apart,
        which changes no content), or that holds a prepared transaction."""
        row = admin.execute(_OTHERS_ON, {"db": self.snapshot_db, "pids": pids}).fetchone()
        others = 0 if row is None else int(row[0])
        if others:
            raise EnvironmentProblemError(
                f"scratch {self.scratch.shown}: {others} other session(s) or prepared "
                f"transaction(s) on the snapshot database {self.snapshot_db}; it cannot be sealed"
            )

    def _server(self, conn: psycopg.Connection[Any], what: str) -> tuple[Any, ...]:
        try:
            row = conn.execute(_SERVER).fetchone()
        except psycopg.Error as e:
            raise EnvironmentProblemError(
                f"{what}: cannot read the server's identity: {describe_error(e)}"
            ) from None
        assert row is not None
        return tuple(row)

    def _fingerprint(
        self,
        conn: psycopg.Connection[Any],
        what: str,
        more: Connect | None = None,
        reuse: Reuse | None = None,
        mask: PrivilegeMask | None = None,
    ) -> Fingerprint:
        try:
            return fingerprint_connection(
                conn, self._progress, more=more, jobs=self._jobs, reuse=reuse, mask=mask
            )
        except psycopg.Error as e:
            server = self.source if what == "source" else self.scratch
            fault = server_fault(e, f"{what} {server.shown}")
            if fault is not None:
                raise fault from None
            # The clone holds what a change script made: its errors are told without values.
            told = describe_error(e) if what == "source" else describe_script_error(e)
            raise EnvironmentProblemError(f"{what}: cannot fingerprint: {told}") from None

    def _create_database(
        self,
        admin: psycopg.Connection[Any],
        name: str,
        encoding: str,
        collate: str,
        ctype: str,
    ) -> None:
        ident = sql.Identifier(name)
        try:
            admin.execute(
                sql.SQL(
                    "CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}"
                ).format(ident, sql.Literal(encoding), sql.Literal(collate), sql.Literal(ctype))
            )
        except psycopg.errors.InsufficientPrivilege as e:
            raise EnvironmentProblemError(
                f"scratch {self.scratch.shown}: cannot create a database: {describe_error(e)} "
                "(the scratch login needs CREATEDB)"
            ) from None
        except psycopg.errors.DuplicateDatabase:
            raise
        except psycopg.Error:
            # The source's locale may not exist on the scratch server; the fingerprint orders
            # rows by bytes, so only the database default differs.
            admin.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING {}").format(
                    ident, sql.Literal(encoding)
                )
            )
            self._restore_note = (
                f"locale {collate}/{ctype} not available on the scratch server; "
                "its default was used"
            )
        self._created.append(name)
        mark_database(admin, name, owner_of(self._claim))  # whose it is, for a later sweep

    def _dump(self, snapshot_id: str, size: str) -> None:
        dump_dir = self.workspace / "dump"
        target = self._source_child
        params = dict(target.params)
        params["options"] = f"{params.get('options', '')} {READ_ONLY_OPTION}".strip()
        ro_target = PgTarget(params=params, password=target.password, shown=target.shown)
        argv = [
            find_tool("pg_dump"),
            "--format=directory",
            f"--jobs={self._jobs}",
            "--compress=0",
            f"--snapshot={snapshot_id}",
            "--no-password",
            "--verbose",
            f"--file={dump_dir}",
            f"--dbname={ro_target.conninfo}",
        ]
        self._progress(f"dumping the source ({size}; pg_dump, {self._jobs} jobs, read-only)")
        run = run_tool(
            argv,
            env=subprocess_env(ro_target, self._child_base(), read_only=True),
            secrets=target.secrets(),
            progress=self._progress,
            label="pg_dump",
        )
        failure = run.failure("pg_dump of the source")
        if failure is not None:
            raise EnvironmentProblemError(failure)

    def _restore(self) -> None:
        dump_dir = self.workspace / "dump"
        target = self._scratch_child.with_db(self.snapshot_db)
        argv = [
            find_tool("pg_restore"),
            f"--jobs={self._jobs}",
            "--no-password",
            "--verbose",
            f"--dbname={target.conninfo}",
            str(dump_dir),
        ]
        self._progress("restoring the dump on the scratch server (pg_restore)")
        try:
            run = run_tool(
                argv,
                env=subprocess_env(target, self._child_base()),
                secrets=target.secrets() | self._source_child.secrets(),
                progress=self._progress,
                label="pg_restore",
            )
        finally:
            # The dump holds production data: it does not outlive the restore.
            shutil.rmtree(dump_dir, ignore_errors=True)
        if run.returncode < 0:
            # Killed (not a restore that reported errors and finished): no complete snapshot.
            raise EnvironmentProblemError(str(run.failure("pg_restore on the scratch server")))
        if run.returncode != 0:
            errors = [e for e in run.errors if "error" in e.lower()]
            note = f"pg_restore reported {len(errors)} error(s): " + "; ".join(errors[:5])
            self._restore_note = "; ".join(p for p in (self._restore_note, note) if p)

    def _enforce(self) -> None:
        if self.guard is None:
            return
        self._role = f"rollproof_{self._tag}_change"
        with contextlib.closing(self._admin(self.snapshot_db)) as snap:
            try:
                with snap.transaction():
                    # Read in the same transaction as the setup: the mask is exactly its undoing.
                    before = privilege_state(snap)
                    self._grants = grant_declared(snap, self._role, self._role_password, self.guard)
                    mark_role(snap, self._role, owner_of(self._claim))
                    self._mask = PrivilegeMask(self._role).then(before, privilege_state(snap))
                    self._clone_mask = self._mask
            except psycopg.Error as e:
                self._role = None
                raise EnvironmentProblemError(
                    "cannot set up run-time surface enforcement on the scratch server "
                    f"({describe_error(e)}); the scratch login needs to create roles and own "
                    "objects (a superuser, or CREATEROLE with ownership of the restored objects)"
                ) from None

    # -- evidence -------------------------------------------------------------------------------

    def _child_base(self) -> dict[str, str]:
        """The environment subprocesses start from: forbidden variables never reach them."""
        return dict(os.environ) if self.guard is None else self.guard.child_environment()

    def describe_source(self) -> dict[str, Any]:
        # The scratch server is recorded (password removed) so commands.sh and RERUN.sh
        # rehearse again on the same kind of scratch server.
        scratch = self._scratch_spec
        return {
            "engine": ENGINE,
            "dsn": self.source.shown,
            "scratch": scratch if scratch == EPHEMERAL else redact_dsn(scratch),
        } | ({} if self._after is None else {"after": self._after})

    def is_source(self, dsn: str, base: Path) -> bool:
        """Same server address and database (base is unused: a DSN is never relative)."""
        if not dsn.startswith(("postgresql://", "postgres://")):
            return False
        try:
            other = parse_pg_dsn(dsn)
        except SourceError:
            return False

        def where(t: PgTarget) -> tuple[str, str, str]:
            return (t.params.get("host", ""), t.params.get("port", "5432"), t.dbname)

        return where(other) == where(self.source)

    def snapshot_fingerprint(self) -> Fingerprint:
        assert self._snapshot_fp is not None
        return self._snapshot_fp

    def _static_checks(self) -> list[IsolationCheck]:
        src_id, scr_id = self._ids
        checks = [
            IsolationCheck(
                SCRATCH_SERVER_DISTINCT,
                src_id != scr_id,
                f"source system_identifier {src_id}, scratch server {self.scratch.shown} "
                f"system_identifier {scr_id}"
                + (" (an ephemeral cluster rollproof started)" if self._cluster else ""),
            ),
            IsolationCheck(
                CLONE_DATABASE_FRESH,
                self.snapshot_db in self._created and self.snapshot_db != self.source_db,
                f"scratch databases {self.snapshot_db} (snapshot) and {self.clone_db} (clone) "
                "were created by this rehearsal; the source database is "
                f"{self.source_db} on the other server",
            ),
            IsolationCheck(
                SOURCE_SESSION_READ_ONLY,
                bool(self._source_sessions),
                f"{len(self._source_sessions)} source session(s), each confirmed by the server "
                "default_transaction_read_only=on and transaction_read_only=on; pg_dump ran "
                "with default_transaction_read_only=on",
            ),
        ]
        checks.append(self._instant_check())
        return checks

    def _instant_check(self) -> IsolationCheck:
        """clone-matches-source: the clone is the source as of the exported snapshot."""
        before, snap = self._source_before, self._snapshot_fp
        moved: tuple[Difference, ...] = ()
        if before is not None and snap is not None and before.digest != snap.digest:
            # Sequence counters live outside transactions: another client's nextval between
            # the fingerprint's read and pg_dump's shows as an advance, and only as one.
            cmp = compare(before, snap, strict_sequences=False)
            same = cmp.equal
            moved = cmp.tolerated
        else:
            same = before is not None and snap is not None
        notes = "; ".join(
            n
            for n in (
                self._reuse_note,
                self._seal_note,
                self._roles_note,
                self._restore_note,
                self._grants_note(),
            )
            if n
        )
        advanced = "; ".join(d.summary for d in moved)
        return IsolationCheck(
            CLONE_MATCHES_SOURCE,
            same,
            (
                f"the source was read in snapshot {self._snapshot_id}"
                if self._reuse_note.startswith("not dumped")
                else f"pg_dump dumped snapshot {self._snapshot_id}"
            )
            + ", exported by a read-only REPEATABLE "
            f"READ transaction on the source; restored snapshot fingerprint "
            f"{snap.digest if snap else None} "
            + ("equals" if same else "DIFFERS FROM")
            + f" the source's in that snapshot, {before.digest if before else None}"
            + (
                f" (sequences apart, which move outside transactions: {advanced} between the "
                "fingerprint's read and pg_dump's)"
                if advanced
                else ""
            )
            + (f"; {notes}" if notes else ""),
        )

    def _writes_check(self) -> IsolationCheck:
        """source-wrote-nothing, over every rollproof transaction on the source so far."""
        txns, finished = self._source_txns, self._after is not None
        clean = sum(txns)
        holds = bool(txns) and clean == len(txns) if finished else None
        return IsolationCheck(
            SOURCE_WROTE_NOTHING,
            holds,
            f"{clean} of {len(txns)} rollproof transaction(s) on the source (the one that "
            "exported the snapshot, its fingerprint workers'"
            + (", the look after the rehearsal" if finished else "")
            + ") ended with no transaction id assigned (txid_current_if_assigned() IS NULL) "
            "and no row inserted, updated or deleted (pg_stat_xact_all_tables); pg_dump read "
            f"snapshot {self._snapshot_id} with default_transaction_read_only=on"
            + ("" if finished else "; the look after the rehearsal is still to come"),
        )

    def _grants_note(self) -> str:
        return "" if self._grants is None else self._grants.describe()

    def isolation(self) -> IsolationProof:
        return IsolationProof((*self._static_checks(), self._writes_check()))

    def finish_isolation(self) -> IsolationProof:
        """The proof, and whether the source moved on since the snapshot (an observation:
        the source is fingerprinted again, in a read-only transaction that is checked too)."""
        self._drop_trash()  # on the scratch server, while the source is read
        with (
            _server_errors("source"),
            contextlib.closing(self._source_session()) as src,
        ):
            src.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            row = src.execute("SELECT pg_catalog.pg_export_snapshot()").fetchone()
            assert row is not None
            snapshot_id = str(row[0])
            now = self._fingerprint(src, "source", lambda: self._source_worker(snapshot_id))
            self._source_txns.append(_wrote_nothing(src))
            src.execute("ROLLBACK")
        self._settle()
        before = self._source_before
        moved = before is None or now.digest != before.digest
        self._after = source_after(
            moved, self.snapshot_fingerprint().digest, f"source fingerprint {now.digest}"
        ).to_json()
        return self.isolation()

    # -- clones ---------------------------------------------------------------------------------

    def _remake_clone(self) -> None:
        """Make the working clone a server copy of the snapshot: the one `prepare_clone` made
        in the background when there is one (a rename), else one made now."""
        ready = self._take_prepared()
        with _server_errors("re-making the clone"), contextlib.closing(self._admin()) as admin:
            ident = sql.Identifier(self.clone_db)
            self._discard(admin, self.clone_db)
            if ready is None:
                self._progress(
                    "copying the snapshot into the working clone (CREATE DATABASE ... TEMPLATE)"
                )
                admin.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                        ident, sql.Identifier(self.snapshot_db)
                    )
                )
            else:
                self._progress("the working clone is the snapshot's copy made in the background")
                admin.execute(
                    sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                        sql.Identifier(self._next_db), ident
                    )
                )
                self._created.remove(self._next_db)
                admin.execute(
                    sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(ident)
                )
            if self.clone_db not in self._created:
                self._created.append(self.clone_db)
            mark_database(admin, self.clone_db, owner_of(self._claim))
        self._clone_owned = set()
        self._clone_mask = self._mask
        sealed = self._sealed if ready is None else ready
        self._carried = self._snapshot_fp if sealed else None

    @property
    def _next_db(self) -> str:
        return f"rollproof_{self._tag}_next"

    def _discard(self, admin: psycopg.Connection[Any], name: str) -> None:
        """Take a database of this run out of the way now; it is dropped later (`_drop_trash`,
        while the source is read again at the end), or by the cleanup.

        A DROP DATABASE waits for a checkpoint and the files' removal (0.05-0.5 s for 100 MB);
        a rename is immediate. The renamed database keeps its owner record, so a sweep still
        finds it if the run dies before the drop; one still connected is dropped here."""
        if name not in self._created:
            return
        self._created.remove(name)
        self._discarded += 1
        trash = f"rollproof_{self._tag}_old{self._discarded}"
        try:
            admin.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                    sql.Identifier(name), sql.Identifier(trash)
                )
            )
        except psycopg.errors.ObjectInUse:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            return
        self._created.append(trash)
        self._trash.append(trash)

    def _drop_trash(self) -> None:
        """Start dropping what `_discard` set aside, on the background thread (settled before
        the rehearsal's end, so no drop is still running when a later step is reached)."""
        trash, self._trash = self._trash, []

        def drop() -> None:
            with contextlib.closing(self._admin()) as other:
                for name in trash:
                    other.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(name)
                        )
                    )
                    self._dropped.append(name)

        if trash:
            self._later(drop)

    def _later(self, chore: Callable[[], None]) -> Future[None]:
        """Run `chore` on the session's one background thread, after the chores before it."""
        if self._chores is None:
            self._chores = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rollproof-pg")
        done = self._chores.submit(chore)
        self._pending.append(done)
        return done

    def _take_prepared(self) -> bool | None:
        """Wait for the copy `prepare_clone` started: whether the snapshot was sealed when it
        was made, or None when there is none or it failed (the caller then copies now)."""
        if self._prepared is None:
            return None
        made, sealed = self._prepared
        self._prepared = None
        return None if made.exception() is not None else sealed

    def _settle(self, *, last: bool = False) -> None:
        """Let the background chores finish (before the snapshot is opened, or at the end). A
        drop that failed leaves its database to the cleanup, which drops it again."""
        pending, self._pending = self._pending, []
        for chore in pending:
            chore.exception()
        dropped, self._dropped = self._dropped, []
        self._created = [name for name in self._created if name not in dropped]
        if last and self._chores is not None:
            self._chores.shutdown(wait=True)
            self._chores = None

    def fresh_clone(self) -> None:
        self._remake_clone()
        if self._carried is not None:
            return  # a server copy of the sealed snapshot: it carries the snapshot's fingerprint
        # The clone must be the snapshot: every leg's `before` is the snapshot's fingerprint.
        if self.fingerprint_clone().digest != self.snapshot_fingerprint().digest:
            raise EnvironmentProblemError("working clone does not match the snapshot")

    def carried_fingerprint(self) -> Fingerprint | None:
        """The clone's fingerprint when it holds it by construction, without a read: a server
        copy of the sealed snapshot (fresh or restored) that nothing has run on since."""
        return self._carried

    def branch(self) -> None:
        """Keep a server copy of the clone as it is now, closed to connections, for a later leg
        to continue from (`take_branch`): one apply serves the restore and revert legs."""
        name = f"rollproof_{self._tag}_branch"
        self._progress(
            "copying the applied clone for the revert leg (CREATE DATABASE ... TEMPLATE)"
        )
        with _server_errors("copying the clone"), contextlib.closing(self._admin()) as admin:
            ident = sql.Identifier(name)
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
            if name not in self._created:
                self._created.append(name)
            admin.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {} ALLOW_CONNECTIONS false").format(
                    ident, sql.Identifier(self.clone_db)
                )
            )
            mark_database(admin, name, owner_of(self._claim))
        self._branch = (set(self._clone_owned), self._clone_mask)

    def take_branch(self) -> None:
        """Make the copy `branch` kept the working clone (it was closed to connections since)."""
        assert self._branch is not None
        name = f"rollproof_{self._tag}_branch"
        with _server_errors("re-making the clone"), contextlib.closing(self._admin()) as admin:
            ident = sql.Identifier(self.clone_db)
            self._discard(admin, self.clone_db)
            admin.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(name), ident)
            )
            self._created.remove(name)
            self._created.append(self.clone_db)
            admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(ident))
        self._clone_owned, self._clone_mask = self._branch
        self._branch = None
        self._carried = None

    def prepare_clone(self) -> None:
        """Start the next clone: a server copy of the snapshot made on another connection while
        a leg runs, closed to connections until `_remake_clone` takes it (a rename)."""
        if self._prepared is not None or self._snapshot_fp is None:
            return
        name = self._next_db
        if name not in self._created:
            self._created.append(name)
        owner = owner_of(self._claim)

        def copy() -> None:
            with contextlib.closing(self._admin()) as admin:
                ident = sql.Identifier(name)
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
                admin.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {} ALLOW_CONNECTIONS false").format(
                        ident, sql.Identifier(self.snapshot_db)
                    )
                )
                mark_database(admin, name, owner)

        self._prepared = (self._later(copy), self._sealed)

    def restore_clone(self) -> None:
        self._remake_clone()

    def fingerprint_clone(self, reuse: Reuse | None = None) -> Fingerprint:
        """Fingerprint the clone; with `reuse`, only tables the change's role can have altered
        are read again.

        No client-side record sees every write a PostgreSQL script makes (rules, SECURITY
        DEFINER functions, dynamic SQL), so what the rehearsal saw written is not trusted here.
        The role's privileges are: every table it can write or owns, closed under foreign-key
        actions and inheritance, is read again; if the database has any path that runs with
        someone else's privileges (a rule, a user trigger, a SECURITY DEFINER function, an
        event trigger, a writable view), every table is (postgres_roles.writable_tables). The
        schema and the sequences are always read. Without an enforcing role, all tables are.
        """
        with contextlib.closing(self._admin(self.clone_db)) as conn:
            narrowed: Reuse | None = None
            if reuse is not None and self._role is not None:
                try:
                    writable = writable_tables(conn, self._role)
                except psycopg.Error as e:
                    raise EnvironmentProblemError(
                        f"clone: cannot read the change role's privileges: {describe_error(e)}"
                    ) from None
                if writable is not None:
                    narrowed = Reuse(reuse.base, writable)
            return self._fingerprint(
                conn,
                "clone",
                self._admin_worker(self.clone_db),
                reuse=narrowed,
                mask=self._clone_mask,
            )

    # -- scripts --------------------------------------------------------------------------------

    def _own_for(self, script: Script) -> None:
        """Give the change role the tables a declared CREATE INDEX/TRIGGER is built on."""
        if self.guard is None or self._role is None:
            return
        scopes = static_scope(script.text)
        closed = (*self.guard.forbidden, *self._reaching())
        needed = tables_for_declared(scopes, self.guard.writes, closed)
        needed -= self._clone_owned
        if not needed:
            return
        self._carried = None
        with contextlib.closing(self._admin(self.clone_db)) as conn:
            # What is handed over here is rollproof's doing too: the clone's mask undoes it.
            before = privilege_state(conn)
            for table in sorted(needed):
                schema, _, relname = table.rpartition(".")
                with contextlib.suppress(psycopg.Error):  # a table the script itself creates
                    own_table(conn, self._role, schema or "public", relname)
                    self._clone_owned.add(table)
            if self._clone_mask is not None:
                self._clone_mask = self._clone_mask.then(before, privilege_state(conn))

    def implicit_objects(self) -> list[Implicit]:
        """What the clone's catalog says PostgreSQL made for its tables, now (after apply: a
        new partition's automatic index, a sequence a new default calls)."""
        with contextlib.closing(self._admin(self.clone_db)) as conn:
            try:
                return implicit_objects(conn)
            except psycopg.Error as e:
                raise EnvironmentProblemError(
                    f"clone: cannot read the catalog: {describe_error(e)}"
                ) from None

    def _reaching(self) -> dict[str, str]:
        return {} if self._grants is None else self._grants.reaching

    def _change_target(self) -> PgTarget:
        target = self.scratch.with_db(self.clone_db)
        if self._role is None:
            return target
        return target.with_user(self._role, self._role_password)

    @contextlib.contextmanager
    def _change_connection(self, *, read_only: bool = False) -> Iterator[psycopg.Connection[Any]]:
        self._carried = None  # a script runs: only a read can say what the clone holds now
        conn = connect(self._change_target(), read_only=read_only, what="clone")
        try:
            yield conn
        finally:
            conn.close()

    def _settings(self, settings: Mapping[str, bool]) -> dict[str, Any]:
        # PostgreSQL always enforces foreign keys and fires triggers recursively; the SQLite
        # pragmas a change may set have nothing to switch here, so what is recorded is what ran.
        return {key: True for key in settings}

    def _kinds(self, role: str, script: Script) -> dict[int, dict[str, AccessKind]]:
        out: dict[int, dict[str, AccessKind]] = {}
        for scope in static_scope(script.text):
            kinds: dict[str, AccessKind] = {}
            for access in scope.accesses:
                name = normalize(access.object)
                if access.kind is not AccessKind.READ or name not in kinds:
                    kinds[name] = access.kind
            out[scope.index] = kinds
        return out

    def _denial(
        self,
        role: str,
        index: int,
        e: psycopg.Error,
        kinds: dict[str, AccessKind],
        *,
        refresh: bool = False,
    ) -> str | None:
        if self.guard is None or not isinstance(e, psycopg.errors.InsufficientPrivilege):
            return None
        message = e.diag.message_primary or ""
        obj = denied_object(message)
        if obj is None:
            return None
        kind = denied_kind(message, kinds, obj)
        if refresh and obj not in kinds and not message.startswith("must be owner"):
            kind = AccessKind.READ  # REFRESH reads the view's tables and writes only the view
        root = None if self._grants is None else self._grants.reached_through(obj)
        if root is not None:
            # A view, function or table that reaches a forbidden object with someone else's
            # privileges: the attempt is on the forbidden object, through the one named.
            if obj not in kinds:
                kind = AccessKind.READ
            return self.guard.check(kind, root, obj)
        via = denied_via(e.diag.context)
        if obj not in kinds and via is None and not message.startswith("must be owner"):
            readers = [n for n, k in kinds.items() if k is AccessKind.READ]
            with (
                contextlib.suppress(psycopg.Error, EnvironmentProblemError),
                contextlib.closing(self._admin(self.clone_db)) as conn,
            ):
                if read_through_views(conn, readers, obj):
                    kind = AccessKind.READ
        return self.guard.check(kind, obj, via)

    def _execute(
        self,
        conn: psycopg.Connection[Any],
        role: str,
        script: Script,
        *,
        in_txn: bool,
        server_version: int,
        meter: PgMeter | None = None,
    ) -> ScriptOutcome:
        """Run the script's statements; `meter` (the transaction leg's apply) measures each
        statement that runs, between statements, on this connection (postgres.impact)."""
        statements = split_postgres(script.text)
        kinds = self._kinds(role, script) if self.guard is not None else {}
        # A denied statement fails; the script goes on past it only to collect every other
        # denial (the leg fails either way; in a transaction the rest fails as aborted, and
        # errors after a denial are its consequences, not reported). A verify statement's rows
        # are counted (the client receives them all), never kept.
        denials: list[str] = []
        rows: list[StatementRows] = []
        ran = 0
        for i, stmt in enumerate(statements, 1):
            if self.guard is not None:
                self.guard.at(role, i)
            if in_txn:
                node = parse_one(stmt)
                if manages_transaction(node):
                    return ScriptOutcome(
                        i - 1,
                        not_applicable=(
                            "the script manages its own transaction "
                            f"(statement {i}: `{short(stmt)}`); a BEGIN..ROLLBACK around it "
                            "would not be the transaction it runs in"
                        ),
                    )
                why = not_in_transaction(node, server_version)
                if why is not None:
                    return ScriptOutcome(
                        i - 1, not_applicable=f"statement {i} `{short(stmt)}`: {why}"
                    )
            elapsed_us = 0
            try:
                with self._lent(conn, stmt) as run:
                    if meter is not None and not denials:
                        meter.before(conn)
                    started = time.perf_counter_ns()
                    cursor = conn.execute(run.encode("utf-8"), prepare=False)
                    elapsed_us = (time.perf_counter_ns() - started) // 1000
                if role == "verify" and cursor.description is not None and cursor.rowcount > 0:
                    rows.append(StatementRows(i, short(stmt), cursor.rowcount))
            except OwnerRefusedError as e:
                return ScriptOutcome(i - 1, error=f"statement {i} `{short(stmt)}`: {e}")
            except psycopg.Error as e:
                fault = server_fault(e, f"scratch {self.scratch.shown}")
                if fault is not None:
                    # The server or the machine failed under the script (a lost connection, a
                    # full disk, out of memory): not the change's failure. Raised, so it ends as
                    # exit 4 and no packet says FAIL.
                    raise fault from None
                state = e.diag.sqlstate or ""
                if in_txn and state in NOT_IN_TRANSACTION_STATES:
                    return ScriptOutcome(
                        i - 1,
                        not_applicable=(
                            f"statement {i} `{short(stmt)}` cannot run in the leg's "
                            f"transaction: {NOT_IN_TRANSACTION_STATES[state]} "
                            f"({describe_script_error(e)})"
                        ),
                    )
                denied = self._denial(role, i, e, kinds.get(i, {}), refresh=_refreshes(stmt))
                if denied is not None:
                    denials.append(
                        f"statement {i} `{short(stmt)}` was denied by the server: {denied}"
                    )
                    continue
                if denials:
                    continue
                code, message, names = script_error_parts(e)
                return ScriptOutcome(
                    i - 1,
                    error=script_error(i, short(stmt), code, message, names=names),
                    rows=tuple(rows),
                )
            if not denials:
                ran = i
                if meter is not None:
                    meter.after(conn, i, stmt, elapsed_us)
        if denials:
            return ScriptOutcome(ran, error="; ".join(denials), rows=tuple(rows))
        return ScriptOutcome(len(statements), rows=tuple(rows))

    @contextlib.contextmanager
    def _lent(self, conn: psycopg.Connection[Any], stmt: str) -> Iterator[str]:
        """The statement to run, with what an owner change needs lent for it only (owner.py)."""
        lender = self._lender_for()
        if lender is None or (not lender.vetted and "owner" not in stmt.lower()):
            yield stmt
            return
        accesses = [
            (normalize(a.object), a.kind) for scope in static_scope(stmt) for a in scope.accesses
        ]
        with (
            contextlib.closing(self._admin(self.clone_db)) as admin,
            contextlib.ExitStack() as lent,
        ):
            try:
                run, loan = lender.plan(conn, admin, stmt, parse_one(stmt), accesses)
                if loan:
                    lent.enter_context(lend(admin, lender.role, loan))
            except psycopg.Error as e:
                raise EnvironmentProblemError(
                    f"clone: cannot lend the change role an owner: {describe_error(e)}"
                ) from None
            yield run

    def _lender_for(self) -> Lender | None:
        if self.guard is None or self._role is None:
            return None
        if self._lender is None:
            guard = self.guard
            self._lender = Lender(
                self._role,
                tuple(guard.writes),
                lambda: (*guard.forbidden, *self._reaching()),
                lambda ident: (
                    None if self._clone_mask is None else self._clone_mask.owners.get(ident)
                ),
            )
        return self._lender

    def _server_version(self, conn: psycopg.Connection[Any]) -> int:
        return int(conn.info.server_version)

    def run_script(self, role: str, script: Script, settings: Mapping[str, bool]) -> ScriptOutcome:
        applied = self._settings(settings)
        self._own_for(script)
        with self._change_connection() as conn:
            outcome = self._execute(
                conn, role, script, in_txn=False, server_version=self._server_version(conn)
            )
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.rollback()
                if outcome.ok:
                    return ScriptOutcome(
                        outcome.statements_run,
                        settings=applied,
                        error="the script left a transaction open; it was rolled back",
                    )
        return ScriptOutcome(outcome.statements_run, outcome.error, outcome.not_applicable, applied)

    def run_in_transaction(
        self, script: Script, settings: Mapping[str, bool], reuse_from: Fingerprint | None = None
    ) -> TransactionOutcome:
        applied = self._settings(settings)
        after: Fingerprint | None = None
        self._own_for(script)
        meter = PgMeter()
        with self._change_connection() as conn:
            conn.execute("BEGIN")
            outcome = self._execute(
                conn,
                "apply",
                script,
                in_txn=True,
                server_version=self._server_version(conn),
                meter=meter,
            )
            status = conn.info.transaction_status
            if outcome.ok:
                if status != psycopg.pq.TransactionStatus.INTRANS:
                    outcome = ScriptOutcome(
                        outcome.statements_run,
                        not_applicable="the transaction ended while the script ran",
                    )
                else:
                    # rollproof's own read, inside the still-open transaction: as a role that
                    # may read everything, which the change's own statements could not.
                    try:
                        with self._read_all(conn):
                            after = fingerprint_connection(conn, mask=self._clone_mask)
                    except psycopg.Error as e:
                        fault = server_fault(e, f"scratch {self.scratch.shown}")
                        if fault is not None:
                            raise fault from None
                        # e.g. row-level security, which pg_read_all_data does not bypass:
                        # no honest fingerprint inside the transaction, so no verdict from it.
                        outcome = ScriptOutcome(
                            outcome.statements_run,
                            not_applicable=(
                                "the clone cannot be fingerprinted inside the still-open "
                                f"transaction: {describe_script_error(e)}"
                            ),
                        )
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.execute("ROLLBACK")
        # The next clone, copied while this leg ran, is finished before the leg is over: no
        # server work of this run is in flight between its steps.
        self._settle()
        return TransactionOutcome(
            ScriptOutcome(outcome.statements_run, outcome.error, outcome.not_applicable, applied),
            after,
            meter.result() if outcome.ok else None,
        )

    @contextlib.contextmanager
    def _read_all(self, conn: psycopg.Connection[Any]) -> Iterator[None]:
        """rollproof's own read on the change's connection, after its script: as
        pg_read_all_data, lent to the change role for this read only (roles.lend_read_all)."""
        if self._role is None:
            prepare_session(conn)
            yield
            return
        with contextlib.closing(self._admin()) as admin, lend_read_all(admin, self._role):
            conn.execute("SET LOCAL ROLE pg_read_all_data")
            prepare_session(conn)
            yield

    def run_read_only(
        self, script: Script | None, entry_reuse: Reuse | None = None
    ) -> ReadOnlyOutcome:
        entry = self.fingerprint_clone(entry_reuse)
        outcome: ScriptOutcome | None = None
        if script is not None:
            with self._change_connection(read_only=True) as conn:
                outcome = self._execute(
                    conn, "verify", script, in_txn=False, server_version=self._server_version(conn)
                )
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    conn.rollback()
        exit_reuse = None if entry_reuse is None else Reuse(entry, frozenset())
        return ReadOnlyOutcome(entry, outcome, self.fingerprint_clone(exit_reuse))

    def explain(self, differences: Sequence[Difference]) -> list[Difference]:
        if not any(d.component.startswith(("table:", "schema:")) for d in differences):
            return list(differences)
        with _server_errors("explaining differences"):
            # Open to connections, the snapshot is no longer sealed: from here on a copy of it
            # is read like anything else, never assumed to carry its fingerprint.
            self._sealed = False
            self._settle()
            self._snapshot_connections(allow=True)
            try:
                with (
                    contextlib.closing(self._admin(self.snapshot_db)) as before,
                    contextlib.closing(self._admin(self.clone_db)) as now,
                ):
                    before.read_only = True
                    now.read_only = True
                    schema = None
                    if any(d.component.startswith("schema:") for d in differences):
                        # The descriptions the fingerprints hashed, through the same masks.
                        schema = (
                            describe_schema(before, self._mask),
                            describe_schema(now, self._clone_mask),
                        )
                    return explain_differences(before, now, differences, schema)
            finally:
                self._snapshot_connections(allow=False)

    def set_aside(self) -> None:
        """Keep a copy of the clone as it is now (a template copy on the scratch server), for
        `explain_set_aside` (rehearse.rerun compares two applies of a non-deterministic change)."""
        aside = f"rollproof_{self._tag}_aside"
        ident = sql.Identifier(aside)
        with _server_errors("setting the clone aside"), contextlib.closing(self._admin()) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
            if aside not in self._created:
                self._created.append(aside)
            admin.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    ident, sql.Identifier(self.clone_db)
                )
            )

    def explain_set_aside(self, differences: Sequence[Difference]) -> list[Difference]:
        """Row-level detail of table differences between the copy `set_aside` kept (`before`)
        and the clone as it is now."""
        with (
            _server_errors("explaining differences"),
            contextlib.closing(self._admin(f"rollproof_{self._tag}_aside")) as before,
            contextlib.closing(self._admin(self.clone_db)) as now,
        ):
            before.read_only = True
            now.read_only = True
            return explain_differences(before, now, differences)

    def _snapshot_connections(self, *, allow: bool) -> None:
        with contextlib.closing(self._admin()) as admin:
            admin.execute(
                sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
                    sql.Identifier(self.snapshot_db), sql.SQL("true" if allow else "false")
                )
            )

    # -- teardown -------------------------------------------------------------------------------

    def _cleanup(self, *, keep: bool) -> None:
        self._settle(last=True)
        if keep:
            return
        if self._created or self._role is not None:
            with (
                contextlib.suppress(EnvironmentProblemError, psycopg.Error),
                contextlib.closing(self._admin()) as admin,
            ):
                for name in reversed(self._created):
                    ident = sql.Identifier(name)
                    with contextlib.suppress(psycopg.Error):
                        admin.execute(
                            sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(ident)
                        )
                    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
                if self._role is not None:
                    admin.execute(
                        sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(self._role))
                    )
        if self._cluster is not None:
            self._cluster.stop()
        shutil.rmtree(self.workspace, ignore_errors=True)
        self._claim.release()

    def _sweep(self, admin: psycopg.Connection[Any]) -> None:
        """Drop what dead runs left on a named scratch server (engines/postgres/sweep.py)."""
        if self._cluster is not None:
            return  # a private cluster rollproof just started holds nothing of anyone's
        for left in sweep_scratch(admin):
            if left.removed:
                self._progress(f"scratch {self.scratch.shown}: {left}")

    def _mark_kept(self) -> None:
        """A kept clone's databases and role say so: no sweep drops them."""
        kept = owner_of(self._claim, kept=True)
        with (
            contextlib.suppress(EnvironmentProblemError, psycopg.Error),
            contextlib.closing(self._admin()) as admin,
        ):
            for name in self._created:
                mark_database(admin, name, kept)
            if self._role is not None:
                mark_role(admin, self._role, kept)

    def close(self, *, keep: bool) -> Path | None:
        self._drop_trash()
        self._settle(last=True)
        if keep:
            (self.workspace / "CLONE.txt").write_text(
                f"scratch server: {self.scratch.shown}\n"
                f"snapshot database: {self.snapshot_db}\n"
                f"working clone database: {self.clone_db}\n"
                + (
                    f"ephemeral cluster: {self._cluster.data} "
                    f"(stop with: pg_ctl -D {self._cluster.data} stop)\n"
                    if self._cluster
                    else ""
                ),
                encoding="utf-8",
            )
            self._mark_kept()
            self._claim.keep()
            return self.workspace
        self._cleanup(keep=False)
        return None


def _refreshes(statement: str) -> bool:
    """Whether the statement is REFRESH MATERIALIZED VIEW (its query's reads are reads)."""
    return isinstance(parse_one(statement), ast.RefreshMatViewStmt)
