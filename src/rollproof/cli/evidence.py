"""Commands about evidence: rehearse, validate, rerun, keys, surfaces, fingerprint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from rollproof.cli.app import cli
from rollproof.cli.console import markup, progress, render, show, show_lines
from rollproof.cli.options import (
    PATH,
    json_option,
    now,
    out_option,
    path_option,
    policy_option,
    read_grant,
    scratch_option,
    source_option,
    workdir_option,
)
from rollproof.cli.views import governed_lines, rehearsal_lines
from rollproof.core.errors import ExitCode

if TYPE_CHECKING:
    from rollproof.core.fingerprint import Fingerprint
    from rollproof.rehearse.flow import RehearsalResult
    from rollproof.surfaces.scope import Scoping
    from rollproof.verify.findings import ValidationReport


@cli.command()
@click.argument("change", type=PATH)
@source_option("The database the change is meant for: sqlite:///path.db (opened read-only).")
@out_option("Packet directory (new or empty). Default: .rollproof/packets/<change>-<utc stamp>.")
@click.option(
    "--legs",
    multiple=True,
    metavar="LEGS",
    help="Comma-separated legs: read-only, transaction, revert, restore, reapply. "
    "Default: read-only,transaction,revert,restore.",
)
@click.option("--keep-clone", is_flag=True, help="Keep the private clone directory afterwards.")
@workdir_option()
@policy_option("Policy file (default: ./rollproof.toml if it exists).")
@click.option(
    "--allow-undeclared",
    is_flag=True,
    help="Rehearse even though the change touches undeclared objects (recorded in the report).",
)
@scratch_option(
    "PostgreSQL only: the server to clone into, or 'ephemeral' (default) for a private "
    "cluster rollproof starts."
)
@click.option(
    "--full-fingerprints",
    is_flag=True,
    help="Read every table after each step, instead of only what the change wrote and only "
    "where its pages changed.",
)
@click.option(
    "--max-examples",
    type=click.IntRange(0, 1000),
    default=10,
    show_default=True,
    metavar="N",
    help="Rows shown per table when a rollback path left rows different: key and old -> new "
    "values (secret columns and forbidden objects never shown); the rest are counted.",
)
@path_option(
    "--sign",
    "sign_key",
    default=None,
    metavar="KEY",
    help="Sign the packet with this Ed25519 private key (from `rollproof key generate`).",
)
@path_option(
    "--grant",
    "grant_file",
    default=None,
    metavar="FILE",
    help="An operator's grant for the lane: checked and consumed (once) before any leg runs.",
)
@click.option(
    "--lane",
    default=None,
    metavar="LANE",
    help="Rehearse in this lane of the policy's ladder, on the record (default: the first).",
)
@click.option(
    "--reproduce",
    is_flag=True,
    help="Governed runs: run the packet's commands.sh and RERUN.sh and record their outcomes.",
)
@json_option("Print report.json to stdout instead of a table.")
def rehearse(
    change: Path,
    source: str,
    out: Path | None,
    legs: tuple[str, ...],
    keep_clone: bool,
    workdir: Path | None,
    policy_path: Path | None,
    allow_undeclared: bool,
    scratch: str | None,
    full_fingerprints: bool,
    max_examples: int,
    sign_key: Path | None,
    grant_file: Path | None,
    lane: str | None,
    reproduce: bool,
    as_json: bool,
) -> None:
    """Rehearse CHANGE (a directory with change.toml) on an isolated clone of --source and
    write its evidence packet.

    Under a governed policy, with --grant, --lane or --reproduce (or when the policy's first
    lane needs a grant), the run is governed: preflight, the grant consumed before any leg,
    the packet validated and recorded in the ledger, its decision packet and checkpoint added.
    """
    from rollproof.core.change import load_change
    from rollproof.core.keys import load_signing_key
    from rollproof.core.policy import POLICY_FILE, load_policy
    from rollproof.evidence.build import check_change_paths
    from rollproof.rehearse.flow import parse_legs
    from rollproof.rehearse.flow import rehearse as run
    from rollproof.rehearse.packet import default_out_dir, write_report
    from rollproof.rehearse.report import report_json

    loaded = load_change(change)
    check_change_paths(loaded)
    key = None if sign_key is None else load_signing_key(sign_key)
    # An absolute policy path, so the packet's commands.sh finds it from any directory.
    if policy_path is None and Path(POLICY_FILE).is_file():
        policy_path = Path(POLICY_FILE)
    policy = load_policy(None if policy_path is None else policy_path.absolute())
    invocation = ["rollproof", *click.get_current_context().find_root().obj["argv"]]
    first_needs_grant = policy.governance is not None and policy.governance.first.grant
    if grant_file is not None or lane is not None or reproduce or first_needs_grant:
        from rollproof.governance.flow import governed_rehearse

        with progress() as say:
            governed = governed_rehearse(
                loaded,
                source,
                policy=policy,
                out=out,
                grant=None if grant_file is None else read_grant(grant_file),
                lane=lane,
                legs=parse_legs(legs),
                workdir=workdir,
                keep_clone=keep_clone,
                allow_undeclared=allow_undeclared,
                scratch=scratch,
                full_fingerprints=full_fingerprints,
                max_examples=max_examples,
                signing_key=key,
                invocation=invocation,
                reproduce=reproduce,
                progress=say,
                clock=now,
            )
        show_lines(rehearsal_lines(governed.result, governed.packet))
        show_lines(governed_lines(governed))
        raise SystemExit(int(governed.exit_code))
    with progress() as say:
        result = run(
            loaded,
            source,
            legs=parse_legs(legs),
            workdir=workdir,
            keep_clone=keep_clone,
            progress=say,
            policy=policy,
            allow_undeclared=allow_undeclared,
            scratch=scratch,
            full_fingerprints=full_fingerprints,
            max_examples=max_examples,
        )
    out_dir = write_report(
        result,
        out or default_out_dir(result, Path(".rollproof/packets")),
        invocation=invocation,
        signing_key=key,
    )
    render(as_json, lambda: report_json(result), _packet_lines(result, out_dir, key is not None))
    raise SystemExit(int(result.exit_code))


def _packet_lines(result: RehearsalResult, out_dir: Path, signed: bool) -> Iterator[RenderableType]:
    yield from rehearsal_lines(result, out_dir)
    yield markup(f"packet: {out_dir} (tree {(out_dir / 'TREE_HASH').read_text().strip()})")
    if signed:
        yield markup(f"signed: {out_dir / 'attestation.dsse.json'}")
    if result.clone_kept:
        yield markup(f"clone kept: {result.clone_kept}")


@cli.command()
@click.argument("packet", type=PATH, required=False)
@click.option(
    "--expect-validator",
    metavar="SHA256",
    default=None,
    help="Refuse to give any verdict (exit 3) unless the running validator's hash "
    "(`rollproof validator-hash`) is this one.",
)
@click.option(
    "--require-signature",
    is_flag=True,
    help="Reject a packet without a valid attestation signed by a --trusted-key.",
)
@path_option(
    "--trusted-key",
    "trusted_keys",
    multiple=True,
    metavar="PUB",
    help="An Ed25519 public key (PEM) whose signature is trusted; may be repeated.",
)
@click.option("--verdicts", is_flag=True, help="On success, print the verified verdicts only.")
@json_option("Print the findings as JSON.")
@click.option("--selftest", is_flag=True, help="Run the built-in good and bad packet corpus.")
def validate(
    packet: Path | None,
    expect_validator: str | None,
    require_signature: bool,
    trusted_keys: tuple[Path, ...],
    verdicts: bool,
    as_json: bool,
    selftest: bool,
) -> None:
    """Check the evidence packet PACKET byte for byte; fail closed on anything wrong.

    Exit 0 valid, 1 invalid evidence, 2 unusable input, 3 validator pin mismatch.
    """
    from rollproof.core.keys import load_public_key
    from rollproof.verify.attest import TrustedKey
    from rollproof.verify.reader import check_packet, check_validator_pin

    if selftest:
        if packet is not None:
            raise click.UsageError("--selftest takes no PACKET")
        check_validator_pin(expect_validator)
        _selftest()
        return
    if packet is None:
        raise click.UsageError("missing argument PACKET (or give --selftest)")
    report = check_packet(
        packet,
        trusted_keys=[TrustedKey(load_public_key(k).raw) for k in trusted_keys],
        require_signature=require_signature,
        expect_validator=expect_validator,
    )
    render(
        as_json,
        lambda: _validation_json(packet, report),
        _validation_lines(packet, report, verdicts),
        ascii_json=True,
    )
    raise SystemExit(0 if report.ok else int(ExitCode.CHECK_FAILED))


def _validation_json(packet: Path, report: ValidationReport) -> dict[str, object]:
    return {
        "packet": str(packet),
        "valid": report.ok,
        "findings": [f.to_json() for f in report.findings],
        "stages_passed": [str(s) for s in report.stages_passed],
    }


def _validation_lines(packet: Path, report: ValidationReport, verdicts: bool) -> Iterator[str]:
    from rollproof.verify.scripts import verdict_lines

    v = report.packet
    if v is None:
        for finding in report.findings:
            yield f"INVALID {finding}"
        yield f"packet {packet} is not valid evidence"
    elif verdicts:
        yield from verdict_lines(v.report, v.exit_code)
    else:
        signed = f"; signed by {', '.join(k[:16] for k in v.signed_by)}" if v.signed_by else ""
        yield (
            f"VALID {packet}: {v.change_id} overall {v.overall}, exit code {v.exit_code}; "
            f"tree {v.tree_hash}{signed}"
        )
        if (d := v.decision) is not None:
            yield (
                f"governance layer sealed over this tree: decision default {d['default']}, "
                f"nothing selected, APPLY_NOW={d['apply_now']}"
            )


def _selftest() -> None:

    from rollproof.assurance.selftest import run_selftest
    from rollproof.engines.workspace import owned_temp_dir

    with owned_temp_dir("rollproof-selftest-") as tmp:
        results = run_selftest(tmp)
    show(
        *(
            f"{'ok  ' if r.ok else 'FAIL'} {r.name}: expected {r.expected}, got {r.got}"
            for r in results
        )
    )
    failed = [r.name for r in results if not r.ok]
    if failed:
        show(f"selftest FAILED: {', '.join(failed)}")
        raise SystemExit(int(ExitCode.CHECK_FAILED))
    show(f"selftest passed: {len(results)} cases")


@cli.command("validator-hash")
@click.option("--files", is_flag=True, help="List each validator file and its sha256.")
def validator_hash(files: bool) -> None:
    """Print the sha256 of the running validator's own source files."""
    from rollproof.verify.pin import validator_listing, validator_sha256

    if files:
        show(validator_listing(), end="")
        return
    show(validator_sha256())


@cli.command()
@click.argument("packet", type=PATH)
@click.option(
    "--source", metavar="DSN", default=None, help="Use this source instead of the recorded one."
)
@scratch_option("PostgreSQL only: the server to clone into (default: a private ephemeral cluster).")
@workdir_option()
def rerun(packet: Path, source: str | None, scratch: str | None, workdir: Path | None) -> None:
    """Re-run PACKET's rehearsal from its change/ copy and compare every fingerprint.

    Prints PASS/MATCH (exit 0), or each fingerprint that differs and whether the source
    drifted or the change is non-deterministic (exit 1).
    """
    from rollproof.rehearse.rerun import RerunOutcome, rerun_packet

    with progress() as say:
        result = rerun_packet(packet, source=source, scratch=scratch, workdir=workdir, progress=say)
    show(
        f"rerun of {result.change_id} against {result.source}: "
        f"{result.compared} fingerprint points compared"
    )
    show(*(f"MISMATCH {m}" for m in result.mismatches))
    verdict = "PASS/MATCH" if result.outcome is RerunOutcome.MATCH else "FAIL/MISMATCH"
    show(f"{verdict}: {result.explanation()}")
    raise SystemExit(int(result.exit_code))


@cli.group()
def key() -> None:
    """Ed25519 keys: operators sign grants and decisions, executors sign packets."""


@key.command("generate")
@path_option(
    "--out", "out_dir", required=True, help="Directory for NAME.key (mode 0600) and NAME.pub."
)
@click.option(
    "--name",
    default="rollproof-ed25519",
    show_default=True,
    help="File name stem: an operator's or the executor's name, say.",
)
def key_generate(out_dir: Path, name: str) -> None:
    """Make a new Ed25519 key pair. The private key is written, never printed."""
    from rollproof.governance.keys import generate_key

    made = generate_key(out_dir, name=name)
    show(
        f"private key: {made.private_path} (mode 0600; keep it secret)",
        f"public key:  {made.public_path}",
        f"key id:      {made.key_id}",
    )


@cli.command()
@click.argument("change", type=PATH)
@click.option(
    "--dialect",
    type=click.Choice(["sqlite", "postgresql"]),
    default=None,
    help="The SQL dialect the scripts are written in (default: the source's, else sqlite).",
)
@click.option(
    "--source",
    default=None,
    help="Read this database's catalog (read-only) for what it makes for declared objects: "
    "automatic indexes, owned sequences and sequences defaults call, foreign-key parents.",
)
@click.option(
    "--suggest",
    is_flag=True,
    help="Print a ready-to-paste [surfaces] block computed from the SQL (and the catalog).",
)
@json_option("Print the scoping evidence as JSON.")
def surfaces(
    change: Path, dialect: str | None, source: str | None, suggest: bool, as_json: bool
) -> None:
    """Show every object CHANGE's SQL touches, what is undeclared, and destructive statements.

    Exits 0 when scoping is READY, 3 when an object is undeclared or a statement's scope is
    unknown (the same rule `rehearse` applies before any leg runs), 1 when the database's
    parser refuses a statement (the change is wrong). With --suggest, prints the [surfaces]
    block that makes it READY (exit 3 when a statement's scope is unknown: it is not in it).
    """
    from rollproof.core.change import load_change
    from rollproof.core.surface import EMPTY_CATALOG
    from rollproof.surfaces.scope import ScopingStatus, check_scoping
    from rollproof.surfaces.scope import suggest as suggest_surfaces

    if dialect is None:
        postgres = source is not None and source.startswith(("postgresql://", "postgres://"))
        dialect = "postgresql" if postgres else "sqlite"
    if source is not None:
        from rollproof.engines import read_catalog

        catalog = read_catalog(source)
    else:
        catalog = EMPTY_CATALOG
    loaded = load_change(change)
    scoping = check_scoping(loaded, dialect=dialect, catalog=catalog)
    if suggest and not scoping.syntax_errors:
        proposal = suggest_surfaces(loaded, dialect=dialect, catalog=catalog)
        click.echo(proposal.toml(), nl=False)
        if proposal.unknown:
            raise SystemExit(int(ExitCode.HELD))
        return
    render(as_json, scoping.to_json, _scoping_lines(scoping))
    if scoping.syntax_errors:
        raise SystemExit(int(ExitCode.CHECK_FAILED))
    if scoping.status is not ScopingStatus.READY:
        raise SystemExit(int(ExitCode.HELD))


def _scoping_lines(scoping: Scoping) -> Iterator[RenderableType]:
    table = Table(title="statements and the objects they touch", title_justify="left")
    for column in ("script", "#", "statement", "touches"):
        table.add_column(column, overflow="fold")
    for role, scopes in scoping.statements.items():
        for s in scopes:
            touches = ", ".join(f"{a.kind.lower()} {a.object}" for a in s.accesses)
            if s.unknown is not None:
                touches = (touches + "; " if touches else "") + f"UNKNOWN: {s.unknown}"
            table.add_row(role, str(s.index), Text(s.text), Text(touches or "nothing"))
    yield table
    for role, risk in scoping.risks:
        yield f"risk ({role} statement {risk.statement}): {risk.message}; {risk.proven_by}"
    for item in scoping.implicit:
        yield f"covered implicitly: {item.object} by {item.owner} ({item.reason})"
    for line in scoping.syntax_errors:
        yield f"syntax error: {line}"
    for line in scoping.problems():
        yield f"not ready: {line}"
    yield f"scoping: {scoping.status}"


@cli.command()
@click.argument("database")
@scratch_option(
    "pgdump:PATH only: the PostgreSQL server the archive is restored on to be fingerprinted "
    "(a server DSN, or 'ephemeral' for a private cluster rollproof starts); required."
)
@json_option("Print the whole fingerprint as JSON.")
def fingerprint(database: str, scratch: str | None, as_json: bool) -> None:
    """Print the content fingerprint of DATABASE, opened read-only.

    DATABASE is a SQLite file (a path or sqlite:///path.db), a postgresql:// DSN, or an
    operator's dump: sqlitedump:PATH, or pgdump:PATH restored on --scratch first. A dump's
    sha256 is printed after the fingerprint.
    """
    from rollproof.core.dumps import PGDUMP, SQLITEDUMP, dump_scheme

    scheme = dump_scheme(database)
    dump_sha256 = None
    if scheme == PGDUMP:
        if scratch is None:
            raise click.UsageError(
                "fingerprint pgdump:PATH restores the archive onto a scratch PostgreSQL server "
                "first: give --scratch DSN (or --scratch ephemeral)"
            )
        from rollproof.engines.postgres.dump import fingerprint_dump

        with progress() as say:
            fp, dump_sha256 = fingerprint_dump(database, scratch=scratch, progress=say)
    elif scratch is not None:
        raise click.UsageError("--scratch is only for a pgdump:PATH database")
    elif scheme == SQLITEDUMP:
        from rollproof.engines.sqlite.dump import fingerprint_sqlite_dump

        with progress() as say:
            fp, dump_sha256 = fingerprint_sqlite_dump(database, say)
    elif database.startswith(("postgresql://", "postgres://")):
        from rollproof.engines.postgres.source import fingerprint_source

        with progress() as say:
            fp = fingerprint_source(database, say)
    else:
        from rollproof.engines.sqlite.source import fingerprint_file, parse_sqlite_dsn

        with progress() as say:
            fp = fingerprint_file(parse_sqlite_dsn(database), say)
    render(as_json, fp.to_json, _fingerprint_lines(fp, dump_sha256))


def _fingerprint_lines(fp: Fingerprint, dump_sha256: str | None = None) -> Iterator[str]:
    # Table names are the database's own bytes: printed as text, never as markup.
    yield fp.digest
    if dump_sha256 is not None:
        yield f"  dump sha256: {dump_sha256}"
    for name, t in sorted(fp.tables.items()):
        yield f"  table {name}: {t.digest} ({t.rows:,} rows, {t.order})"
    for name, seq in sorted(fp.sequences.items()):
        yield f"  sequence {name}: {seq}"
    yield f"  schema: {fp.schema_structural} (ddl text {fp.schema_ddl_text})"
    if fp.excluded:
        yield "  excluded: " + ", ".join(fp.excluded)
