"""The `rollproof` command: parse, call one public function, render, exit.

This is the only module that prints or exits. Each command is a thin layer over a library
function; `main` holds the one `try` that turns a RollproofError into its documented exit code
and one line on stderr, and anything unexpected into exit 70, never 0 and never a traceback
(unless --debug asks for one).
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from rollproof import __version__
from rollproof.errors import ExitCode, RollproofError
from rollproof.packet.redact import scrub, secrets_in

if TYPE_CHECKING:
    from rollproof.governance.events import NewEvent
    from rollproof.governance.flow import GovernedRehearsal
    from rollproof.governance.store import LedgerStore
    from rollproof.policy import Policy

_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)

VERDICT_STYLE = {
    "PASS": "green",
    "FAIL": "bold red",
    "NOT_APPLICABLE": "yellow",
    "UNKNOWN": "bold yellow",
}


@contextmanager
def _progress() -> Iterator[Callable[[str], None]]:
    """Show the current step on an interactive stderr; stay silent when piped or in CI."""
    if not _err.is_terminal:
        yield lambda _msg: None
        return
    with _err.status("starting…") as status:
        yield lambda msg: status.update(msg)


def _render_result(result: object, out_dir: Path) -> None:
    from rollproof.rehearsal import RehearsalResult

    assert isinstance(result, RehearsalResult)
    table = Table(title=f"{result.change.id} — rollback rehearsal", title_justify="left")
    table.add_column("leg")
    table.add_column("verdict")
    table.add_column("reason", overflow="fold")
    for leg in result.legs:
        style = VERDICT_STYLE[str(leg.verdict)]
        # Reasons quote the change's SQL: shown as text, never interpreted as markup.
        table.add_row(str(leg.name), Text(str(leg.verdict), style=style), Text(leg.reason or ""))
    _out.print(table)
    for leg in result.legs:
        for d in leg.tolerated:
            _out.print(f"  tolerated in {leg.name}: {d.summary}", markup=False)
    surfaces = result.surfaces
    for role, risk in surfaces.scoping.risks:
        _out.print(
            f"  risk ({role} statement {risk.statement}): {risk.message}; {risk.proven_by}",
            markup=False,
        )
    for event in surfaces.events:
        _out.print(
            f"  {event.decision} at {event.script} statement {event.statement}: {event.reason}",
            markup=False,
        )
    if surfaces.observed_undeclared:
        _out.print(
            "  changed but not declared: " + ", ".join(surfaces.observed_undeclared), markup=False
        )
    scoping = str(surfaces.scoping.status)
    if surfaces.allow_undeclared:
        scoping += " (rehearsed with --allow-undeclared)"
    _out.print(f"surfaces: scoping {scoping}; {surfaces.forbidden_line()}", markup=False)
    iso = str(result.isolation.verdict)
    _out.print(f"isolation: {iso}")
    style = VERDICT_STYLE[str(result.overall)]
    _out.print(f"overall: [{style}]{result.overall}[/]")
    _out.print(f"report: {out_dir / 'report.md'}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rollproof")
@click.option("--debug", is_flag=True, help="Show a traceback for unexpected errors.")
def cli(debug: bool) -> None:
    """Prove a database change can be undone before it may run against production.

    Exit codes: 0 passed, 1 a check failed, 2 bad input, 3 held (isolation not proven,
    result unknown, HOLD, a grant missing or refused), 4 environment problem, 70 internal error.
    """


@cli.command()
@click.argument("change", type=click.Path(path_type=Path))
@click.option(
    "--source",
    required=True,
    metavar="DSN",
    help="The database the change is meant for: sqlite:///path.db (opened read-only).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Packet directory (new or empty). Default: .rollproof/packets/<change>-<utc stamp>.",
)
@click.option(
    "--legs",
    multiple=True,
    metavar="LEGS",
    help="Comma-separated legs: read-only, transaction, revert, restore, reapply. "
    "Default: read-only,transaction,revert,restore.",
)
@click.option("--keep-clone", is_flag=True, help="Keep the private clone directory afterwards.")
@click.option(
    "--workdir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to make the private clone directory (default: the system temp dir).",
)
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Policy file (default: ./rollproof.toml if it exists).",
)
@click.option(
    "--allow-undeclared",
    is_flag=True,
    help="Rehearse even though the change touches undeclared objects (recorded in the report).",
)
@click.option(
    "--scratch",
    metavar="DSN",
    default=None,
    help="PostgreSQL only: the server to clone into, or 'ephemeral' (default) for a private "
    "cluster rollproof starts.",
)
@click.option(
    "--full-fingerprints",
    is_flag=True,
    help="Fingerprint every table after each step instead of only what the change wrote.",
)
@click.option(
    "--sign",
    "sign_key",
    type=click.Path(path_type=Path),
    default=None,
    metavar="KEY",
    help="Sign the packet with this Ed25519 private key (from `rollproof key generate`).",
)
@click.option(
    "--grant",
    "grant_file",
    type=click.Path(path_type=Path),
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
@click.option(
    "--json", "as_json", is_flag=True, help="Print report.json to stdout instead of a table."
)
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
    from rollproof.change import load_change
    from rollproof.governance.keys import load_signing_key
    from rollproof.packet.build import check_change_paths
    from rollproof.policy import POLICY_FILE, load_policy
    from rollproof.rehearsal import parse_legs
    from rollproof.rehearsal import rehearse as run
    from rollproof.report import default_out_dir, report_json, write_report

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

        with _progress() as say:
            governed = governed_rehearse(
                loaded,
                source,
                policy=policy,
                out=out,
                grant=None if grant_file is None else _read_grant(grant_file),
                lane=lane,
                legs=parse_legs(legs),
                workdir=workdir,
                keep_clone=keep_clone,
                allow_undeclared=allow_undeclared,
                scratch=scratch,
                full_fingerprints=full_fingerprints,
                signing_key=key,
                invocation=invocation,
                reproduce=reproduce,
                progress=say,
                clock=_now,
            )
        _render_result(governed.result, governed.packet)
        _render_governed(governed)
        raise SystemExit(int(governed.result.exit_code))
    with _progress() as say:
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
        )
    out_dir = write_report(
        result,
        out or default_out_dir(result, Path(".rollproof/packets")),
        invocation=invocation,
        signing_key=key,
    )
    if as_json:
        _out.print_json(json.dumps(report_json(result)))
    else:
        _render_result(result, out_dir)
        _out.print(f"packet: {out_dir} (tree {(out_dir / 'TREE_HASH').read_text().strip()})")
        if key is not None:
            _out.print(f"signed: {out_dir / 'attestation.dsse.json'}")
        if result.clone_kept:
            _out.print(f"clone kept: {result.clone_kept}")
    raise SystemExit(int(result.exit_code))


@cli.command()
@click.argument("packet", type=click.Path(path_type=Path), required=False)
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
@click.option(
    "--trusted-key",
    "trusted_keys",
    multiple=True,
    type=click.Path(path_type=Path),
    metavar="PUB",
    help="An Ed25519 public key (PEM) whose signature is trusted; may be repeated.",
)
@click.option("--verdicts", is_flag=True, help="On success, print the verified verdicts only.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
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
    from rollproof.governance.keys import load_public_key
    from rollproof.packet.attest import TrustedKey
    from rollproof.packet.reader import check_packet, check_validator_pin
    from rollproof.packet.scripts import verdict_lines

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
    if as_json:
        body = {
            "packet": str(packet),
            "valid": report.ok,
            "findings": [f.to_json() for f in report.findings],
            "stages_passed": [str(s) for s in report.stages_passed],
        }
        _out.print(json.dumps(body, indent=2), markup=False, highlight=False)
    elif report.packet is not None:
        v = report.packet
        if verdicts:
            for line in verdict_lines(v.report, v.exit_code):
                _out.print(line, markup=False)
        else:
            signed = f"; signed by {', '.join(k[:16] for k in v.signed_by)}" if v.signed_by else ""
            _out.print(
                f"VALID {packet}: {v.change_id} overall {v.overall}, exit code {v.exit_code}; "
                f"tree {v.tree_hash}{signed}",
                markup=False,
            )
            if v.decision is not None:
                d = v.decision
                _out.print(
                    f"governance layer sealed over this tree: decision default {d['default']}, "
                    f"nothing selected, APPLY_NOW={d['apply_now']}",
                    markup=False,
                )
    else:
        for finding in report.findings:
            _out.print(f"INVALID {finding}", markup=False)
        _out.print(f"packet {packet} is not valid evidence", markup=False)
    raise SystemExit(0 if report.ok else int(ExitCode.CHECK_FAILED))


def _selftest() -> None:
    import tempfile

    from rollproof.packet.selftest import run_selftest

    with tempfile.TemporaryDirectory(prefix="rollproof-selftest-") as tmp:
        results = run_selftest(Path(tmp))
    for r in results:
        mark = "ok  " if r.ok else "FAIL"
        _out.print(f"{mark} {r.name}: expected {r.expected}, got {r.got}", markup=False)
    failed = [r.name for r in results if not r.ok]
    if failed:
        _out.print(f"selftest FAILED: {', '.join(failed)}", markup=False)
        raise SystemExit(int(ExitCode.CHECK_FAILED))
    _out.print(f"selftest passed: {len(results)} cases", markup=False)


@cli.command("validator-hash")
@click.option("--files", is_flag=True, help="List each validator file and its sha256.")
def validator_hash(files: bool) -> None:
    """Print the sha256 of the running validator's own source files."""
    from rollproof.packet.pin import validator_listing, validator_sha256

    if files:
        _out.print(validator_listing(), end="", markup=False)
        return
    _out.print(validator_sha256(), markup=False)


@cli.command()
@click.argument("packet", type=click.Path(path_type=Path))
@click.option(
    "--source", metavar="DSN", default=None, help="Use this source instead of the recorded one."
)
@click.option(
    "--scratch",
    metavar="DSN",
    default=None,
    help="PostgreSQL only: the server to clone into (default: a private ephemeral cluster).",
)
@click.option(
    "--workdir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to make the private clone directory (default: the system temp dir).",
)
def rerun(packet: Path, source: str | None, scratch: str | None, workdir: Path | None) -> None:
    """Re-run PACKET's rehearsal from its change/ copy and compare every fingerprint.

    Prints PASS/MATCH (exit 0), or each fingerprint that differs and whether the source
    drifted or the change is non-deterministic (exit 1).
    """
    from rollproof.packet.rerun import RerunOutcome, rerun_packet

    with _progress() as say:
        result = rerun_packet(packet, source=source, scratch=scratch, workdir=workdir, progress=say)
    _out.print(
        f"rerun of {result.change_id} against {result.source}: "
        f"{result.compared} fingerprint points compared",
        markup=False,
    )
    for m in result.mismatches:
        _out.print(f"MISMATCH {m}", markup=False)
    if result.outcome is RerunOutcome.MATCH:
        _out.print(f"PASS/MATCH: {result.explanation()}", markup=False)
    else:
        _out.print(f"FAIL/MISMATCH: {result.explanation()}", markup=False)
    raise SystemExit(int(result.exit_code))


@cli.group()
def key() -> None:
    """Ed25519 keys: operators sign grants and decisions, executors sign packets."""


@key.command("generate")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Directory for NAME.key (mode 0600) and NAME.pub.",
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
    _out.print(f"private key: {made.private_path} (mode 0600; keep it secret)", markup=False)
    _out.print(f"public key:  {made.public_path}", markup=False)
    _out.print(f"key id:      {made.key_id}", markup=False)


@cli.command()
@click.argument("change", type=click.Path(path_type=Path))
@click.option(
    "--dialect",
    type=click.Choice(["sqlite", "postgresql"]),
    default="sqlite",
    show_default=True,
    help="The SQL dialect the scripts are written in.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the scoping evidence as JSON.")
def surfaces(change: Path, dialect: str, as_json: bool) -> None:
    """Show every object CHANGE's SQL touches, what is undeclared, and destructive statements.

    Exits 0 when scoping is READY, 3 when an object is undeclared or a statement's scope is
    unknown (the same rule `rehearse` applies before any leg runs).
    """
    from rollproof.change import load_change
    from rollproof.scope import ScopingStatus, check_scoping

    scoping = check_scoping(load_change(change), dialect=dialect)
    if as_json:
        _out.print_json(json.dumps(scoping.to_json()))
    else:
        table = Table(title="statements and the objects they touch", title_justify="left")
        for column in ("script", "#", "statement", "touches"):
            table.add_column(column, overflow="fold")
        for role, scopes in scoping.statements.items():
            for s in scopes:
                touches = ", ".join(f"{a.kind.lower()} {a.object}" for a in s.accesses)
                if s.unknown is not None:
                    touches = (touches + "; " if touches else "") + f"UNKNOWN: {s.unknown}"
                table.add_row(role, str(s.index), Text(s.text), Text(touches or "nothing"))
        _out.print(table)
        for role, risk in scoping.risks:
            _out.print(
                f"risk ({role} statement {risk.statement}): {risk.message}; {risk.proven_by}",
                markup=False,
            )
        for line in scoping.problems():
            _out.print(f"not ready: {line}", markup=False)
        _out.print(f"scoping: {scoping.status}", markup=False)
    if scoping.status is not ScopingStatus.READY:
        raise SystemExit(int(ExitCode.HELD))


@cli.command()
@click.argument("database")
@click.option("--json", "as_json", is_flag=True, help="Print the whole fingerprint as JSON.")
def fingerprint(database: str, as_json: bool) -> None:
    """Print the content fingerprint of DATABASE, opened read-only.

    DATABASE is a SQLite file (a path or sqlite:///path.db) or a postgresql:// DSN.
    """
    if database.startswith(("postgresql://", "postgres://")):
        from rollproof.engines.postgres import fingerprint_source

        with _progress() as say:
            fp = fingerprint_source(database, say)
    else:
        from rollproof.engines.sqlite import fingerprint_file, parse_sqlite_dsn

        with _progress() as say:
            fp = fingerprint_file(parse_sqlite_dsn(database), say)
    if as_json:
        _out.print_json(json.dumps(fp.to_json()))
        return
    # Table names are the database's own bytes: printed as text, never as markup.
    _out.print(fp.digest, markup=False)
    for name, t in sorted(fp.tables.items()):
        _out.print(f"  table {name}: {t.digest} ({t.rows:,} rows, {t.order})", markup=False)
    for name, seq in sorted(fp.sequences.items()):
        _out.print(f"  sequence {name}: {seq}", markup=False)
    _out.print(f"  schema: {fp.schema_structural} (ddl text {fp.schema_ddl_text})", markup=False)
    if fp.excluded:
        _out.print("  excluded: " + ", ".join(fp.excluded), markup=False)


# -- governance ----------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def _policy_option(f: Callable[..., None]) -> Callable[..., None]:
    return click.option(
        "--policy",
        "policy_path",
        type=click.Path(path_type=Path),
        default=None,
        help="Policy file (default: ./rollproof.toml).",
    )(f)


def _governed_policy(policy_path: Path | None) -> Policy:
    from rollproof.policy import load_policy

    policy = load_policy(policy_path)
    policy.governed()  # a usage error naming what is missing
    return policy


def _store(policy: Policy) -> LedgerStore:
    from rollproof.governance.store import open_ledger

    return open_ledger(policy.governed().ledger)


def _pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key.strip() or not text.strip():
            raise click.UsageError(f"{what} must be ID=TEXT, got {value!r}")
        if key.strip() in out:
            raise click.UsageError(f"{what} {key.strip()!r} given twice")
        out[key.strip()] = text.strip()
    return out


def _read_grant(path: Path) -> bytes:
    from rollproof.errors import UsageError

    try:
        return path.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read grant {path}: {e.strerror}") from e


def _append(policy: Policy, events: list[NewEvent]) -> None:
    appended = _store(policy).append_events(events, now=_now())
    for event in appended:
        _out.print(f"ledger event {event.seq}: {event.kind}", markup=False)


def _render_governed(run: GovernedRehearsal) -> None:
    if run.grant is not None:
        g = run.grant
        _out.print(
            f"grant {g.grant.grant_id} (lane {g.grant.lane}) consumed at ledger event "
            f"{g.event.seq}, before any leg ran",
            markup=False,
        )
    _out.print(f"recorded: ledger event {run.recorded.seq} (tree {run.verified.tree_hash})")
    for name, (outcome, code) in run.reproduced.items():
        _out.print(f"{name}: {outcome} (exit {code})", markup=False)
    _out.print(f"packet: {run.packet} (validated, with its governance layer)", markup=False)
    _out.print(f"checkpoint: {run.packet / 'governance' / 'checkpoint.md'}", markup=False)
    _out.print(f"status: {run.checkpoint['status']}", markup=False)


@cli.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path),
    default=Path(),
    help="Where to write rollproof.toml (default: here).",
)
@click.option(
    "--executor-key",
    type=click.Path(path_type=Path),
    default=None,
    metavar="PUB",
    help="The executor's public key: grants are addressed to it.",
)
@click.option(
    "--operator",
    "operators",
    multiple=True,
    metavar="NAME=PUB",
    help="An operator and their public key file; may be repeated.",
)
@click.option(
    "--production", multiple=True, metavar="DSN", help="A production source; may be repeated."
)
@click.option(
    "--ci-trigger",
    "ci_triggers",
    multiple=True,
    metavar="GLOB",
    help="A file that triggers CI or a deploy (declares the CI scope); may be repeated.",
)
def init(
    directory: Path,
    executor_key: Path | None,
    operators: tuple[str, ...],
    production: tuple[str, ...],
    ci_triggers: tuple[str, ...],
) -> None:
    """Write a commented, governed rollproof.toml and create its ledger (never overwrites)."""
    from rollproof.governance.workspace import init_workspace

    made = init_workspace(
        directory,
        executor=executor_key,
        operators={k: Path(v) for k, v in _pairs(operators, "--operator").items()},
        production=list(production),
        ci_triggers=list(ci_triggers) or None,
        now=_now(),
    )
    _out.print(f"policy: {made.policy}", markup=False)
    pinned = f"validator pinned {made.pinned}" if made.pinned else "existing ledger kept"
    _out.print(f"ledger: {made.ledger} ({pinned})", markup=False)


@cli.group()
def ledger() -> None:
    """The hash-chained governance ledger: verify, fold, checkpoint, pin."""


@ledger.command("verify")
@_policy_option
def ledger_verify(policy_path: Path | None) -> None:
    """Re-derive every hash from the stored bytes; refuse a ledger that does not extend the
    newest trusted signed checkpoint (exit 1)."""
    from rollproof.governance.preflight import trusted_checkpoint
    from rollproof.governance.state import fold

    policy = _governed_policy(policy_path)
    checkpoint = trusted_checkpoint(policy.governed())
    verified = _store(policy).read_verified(trusted_checkpoint=checkpoint)
    state = fold(verified.events)
    anchored = (
        f"extends the signed checkpoint at {checkpoint.size}"
        if checkpoint is not None
        else "no signed checkpoint yet (rollproof ledger checkpoint)"
    )
    _out.print(
        f"VERIFIED {_store(policy).where}: {verified.head.size} events, head "
        f"{verified.head.hash}; folds through {state.through}; {anchored}",
        markup=False,
    )


@ledger.command("fold")
@click.option("--through", type=int, default=None, metavar="N", help="Fold events 1..N only.")
@click.option("--json", "as_json", is_flag=True, help="Print the state as JSON.")
@_policy_option
def ledger_fold(through: int | None, as_json: bool, policy_path: Path | None) -> None:
    """Print the governance state after events 1..N (default: the head)."""
    from rollproof.governance.preflight import trusted_checkpoint
    from rollproof.governance.state import fold
    from rollproof.governance.views import state_json, state_lines

    policy = _governed_policy(policy_path)
    verified = _store(policy).read_verified(
        trusted_checkpoint=trusted_checkpoint(policy.governed())
    )
    state = fold(verified.events, through=through)
    if as_json:
        _out.print(json.dumps(state_json(state), indent=2), markup=False)
        return
    for line in state_lines(state):
        _out.print(line, markup=False)


@ledger.command("checkpoint")
@click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(path_type=Path),
    metavar="OPKEY",
    help="An operator's private key.",
)
@_policy_option
def ledger_checkpoint(key_path: Path, policy_path: Path | None) -> None:
    """Sign the verified head (size and hash) into the policy's checkpoint file."""
    from rollproof.governance.issuance import operator_key

    policy = _governed_policy(policy_path)
    gov = policy.governed()
    key, name = operator_key(gov, key_path)
    made = _store(policy).write_checkpoint(key, gov.checkpoint, now=_now())
    _out.print(
        f"checkpoint {gov.checkpoint}: size {made.size}, head {made.head}, signed by {name}",
        markup=False,
    )


@ledger.command("pin")
@click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(path_type=Path),
    metavar="OPKEY",
    help="An operator's private key (the pin is signed).",
)
@_policy_option
def ledger_pin(key_path: Path, policy_path: Path | None) -> None:
    """Pin the running validator's hash in the ledger (after an upgrade), signed."""
    from rollproof.governance.issuance import operator_key
    from rollproof.governance.state import pin_validator
    from rollproof.packet.pin import validator_sha256

    policy = _governed_policy(policy_path)
    key, name = operator_key(policy.governed(), key_path)
    _append(policy, [pin_validator(validator_sha256(), key=key)])
    _out.print(f"validator {validator_sha256()} pinned by {name}", markup=False)


@cli.group()
def ticket() -> None:
    """Tickets in the ledger: open, update, close."""


@ticket.command("open")
@click.argument("ticket_id", metavar="ID")
@click.option("--title", required=True)
@click.option("--change", "change_id", default=None, metavar="CHANGE")
@_policy_option
def ticket_open(
    ticket_id: str, title: str, change_id: str | None, policy_path: Path | None
) -> None:
    """Open ticket ID."""
    from rollproof.governance.state import open_ticket

    _append(_governed_policy(policy_path), [open_ticket(ticket_id, title, change_id=change_id)])


@ticket.command("update")
@click.argument("ticket_id", metavar="ID")
@click.option("--title", default=None)
@click.option("--note", default=None)
@_policy_option
def ticket_update(
    ticket_id: str, title: str | None, note: str | None, policy_path: Path | None
) -> None:
    """Retitle ticket ID or add a note to it."""
    from rollproof.governance.state import update_ticket

    if title is None and note is None:
        raise click.UsageError("give --title or --note")
    _append(_governed_policy(policy_path), [update_ticket(ticket_id, title=title, note=note)])


@ticket.command("close")
@click.argument("ticket_id", metavar="ID")
@click.option("--reason", required=True)
@_policy_option
def ticket_close(ticket_id: str, reason: str, policy_path: Path | None) -> None:
    """Close ticket ID (only once every blocker filed against it is closed)."""
    from rollproof.governance.state import close_ticket

    _append(_governed_policy(policy_path), [close_ticket(ticket_id, reason=reason)])


@cli.group()
def blocker() -> None:
    """Blockers in the ledger. States move only with evidence: there is no --state."""


@blocker.command("open")
@click.argument("blocker_id", metavar="ID")
@click.option("--title", required=True)
@click.option(
    "--condition",
    "conditions",
    multiple=True,
    required=True,
    metavar="ID=TEXT",
    help="A discharge condition; an ID naming a lane is discharged by that lane's evidence.",
)
@click.option("--ticket", "ticket_id", default=None, metavar="TICKET")
@click.option("--change", "change_id", default=None, metavar="CHANGE")
@_policy_option
def blocker_open(
    blocker_id: str,
    title: str,
    conditions: tuple[str, ...],
    ticket_id: str | None,
    change_id: str | None,
    policy_path: Path | None,
) -> None:
    """Open blocker ID with its discharge conditions."""
    from rollproof.governance.state import open_blocker

    event = open_blocker(
        blocker_id,
        title,
        _pairs(conditions, "--condition"),
        ticket_id=ticket_id,
        change_id=change_id,
    )
    _append(_governed_policy(policy_path), [event])


@blocker.command("update")
@click.argument("blocker_id", metavar="ID")
@click.option("--title", default=None)
@click.option("--add-condition", "added", multiple=True, metavar="ID=TEXT")
@click.option("--note", default=None)
@click.option("--discharge", "condition", default=None, metavar="CONDITION")
@click.option(
    "--evidence",
    type=click.Path(path_type=Path),
    default=None,
    metavar="PACKET",
    help="With --discharge: the validated packet (recorded PASS in the ledger) that discharges it.",
)
@_policy_option
def blocker_update(
    blocker_id: str,
    title: str | None,
    added: tuple[str, ...],
    note: str | None,
    condition: str | None,
    evidence: Path | None,
    policy_path: Path | None,
) -> None:
    """Retitle blocker ID, add conditions or a note, or discharge a condition with evidence."""
    from rollproof.governance.state import discharge_condition, update_blocker
    from rollproof.packet.reader import validate_packet

    if (condition is None) != (evidence is None):
        raise click.UsageError("--discharge and --evidence go together")
    policy = _governed_policy(policy_path)
    events = []
    if title is not None or added or note is not None:
        events.append(
            update_blocker(
                blocker_id, title=title, add_conditions=_pairs(added, "--add-condition"), note=note
            )
        )
    if condition is not None and evidence is not None:
        tree = validate_packet(evidence).tree_hash
        events.append(discharge_condition(blocker_id, condition, packet_tree_hash=tree))
    if not events:
        raise click.UsageError("nothing to update")
    _append(policy, events)


@blocker.command("close")
@click.argument("blocker_id", metavar="ID")
@click.option("--reason", required=True)
@_policy_option
def blocker_close(blocker_id: str, reason: str, policy_path: Path | None) -> None:
    """Close blocker ID (only once every condition is discharged with evidence)."""
    from rollproof.governance.state import close_blocker

    _append(_governed_policy(policy_path), [close_blocker(blocker_id, reason=reason)])


@cli.group()
def grant() -> None:
    """Operator-signed, single-use grants: issue, co-sign, consume."""


@grant.command("issue")
@click.option("--lane", required=True)
@click.option("--change", "change_id", required=True, metavar="CHANGE")
@click.option("--source", required=True, metavar="DSN", help="Fingerprinted now, read-only.")
@click.option("--expires", required=True, metavar="DURATION", help="e.g. 2h, 90m, 1d.")
@click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(path_type=Path),
    metavar="OPKEY",
    help="The operator's private key.",
)
@click.option(
    "--evidence",
    type=click.Path(path_type=Path),
    default=None,
    metavar="PACKET",
    help="The validated packet the lane stands on (lanes above the first).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Grant file (mode 0600; default: <change>.<lane>.grant.json).",
)
@_policy_option
def grant_issue(
    lane: str,
    change_id: str,
    source: str,
    expires: str,
    key_path: Path,
    evidence: Path | None,
    out: Path | None,
    policy_path: Path | None,
) -> None:
    """Sign a grant for one lane of one change, addressed to the policy's executor."""
    from rollproof.governance.issuance import issue_grant_file, parse_duration

    issued = issue_grant_file(
        _governed_policy(policy_path),
        key_path=key_path,
        lane=lane,
        change_id=change_id,
        source=source,
        expires=parse_duration(expires),
        out=out or Path(f"{change_id}.{lane}.grant.json"),
        now=_now(),
        evidence=evidence,
    )
    _out.print(
        f"grant {issued.grant_id}: lane {issued.lane}, change {issued.change_id}, "
        f"expires {issued.expires}, {issued.signers} signature(s)",
        markup=False,
    )
    _out.print(f"written to {issued.path} (mode 0600; hand it to the executor)", markup=False)


@grant.command("cosign")
@click.argument("grant_file", metavar="FILE", type=click.Path(path_type=Path))
@click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(path_type=Path),
    metavar="OPKEY",
    help="Another operator's private key.",
)
@_policy_option
def grant_cosign(grant_file: Path, key_path: Path, policy_path: Path | None) -> None:
    """Add another operator's signature to a grant (lanes that need several)."""
    from rollproof.governance.issuance import cosign_grant_file

    issued = cosign_grant_file(_governed_policy(policy_path), grant_file, key_path=key_path)
    _out.print(f"grant {issued.grant_id}: {issued.signers} signature(s)", markup=False)


@grant.command("consume")
@click.option("--grant", "grant_file", type=click.Path(path_type=Path), default=None)
@click.option("--lane", required=True)
@click.option("--change", "change_id", required=True, metavar="CHANGE")
@click.option("--source", required=True, metavar="DSN")
@_policy_option
def grant_consume(
    grant_file: Path | None, lane: str, change_id: str, source: str, policy_path: Path | None
) -> None:
    """Enter a production lane: consume its grant (once) and lift HOLD for the change.

    rollproof never runs the change against production; the deploy that follows is yours.
    Refusals exit 3 and are recorded in the ledger.
    """
    from rollproof.governance.flow import enter_lane

    consumed = enter_lane(
        _governed_policy(policy_path),
        lane=lane,
        change_id=change_id,
        source=source,
        grant=None if grant_file is None else _read_grant(grant_file),
        clock=_now,
    )
    _out.print(
        f"grant {consumed.grant.grant_id} consumed at ledger event {consumed.event.seq}; "
        f"HOLD lifted for {change_id} in lane {lane} until {consumed.grant.expires}",
        markup=False,
    )


@cli.command()
@click.argument("change", type=click.Path(path_type=Path))
@click.option("--source", required=True, metavar="DSN")
@click.option("--lane", default=None, help="The lane the run is for (default: the first).")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@_policy_option
def preflight(
    change: Path, source: str, lane: str | None, as_json: bool, policy_path: Path | None
) -> None:
    """Check CHANGE against the ledger before a run: each check PASS, FAIL or UNKNOWN.

    Exit 0 when the run may go ahead, 1 on a FAIL, 3 on an UNKNOWN the lane does not allow.
    Results are recorded in the ledger; every UNKNOWN opens or classifies a blocker.
    """
    from rollproof.change import load_change
    from rollproof.governance.preflight import run_preflight

    result = run_preflight(
        _governed_policy(policy_path), load_change(change), source, lane=lane, now=_now()
    )
    if as_json:
        checks = [
            {"check": str(c.check), "verdict": str(c.verdict), "detail": c.detail}
            for c in result.checks
        ]
        body = {"overall": str(result.overall), "recorded_at": result.recorded_at}
        _out.print(json.dumps({**body, "checks": checks}, indent=2), markup=False)
    else:
        where = (
            f"recorded at ledger event {result.recorded_at}"
            if result.recorded_at is not None
            else "NOT recorded (the ledger does not verify)"
        )
        _out.print(f"preflight {result.change_id} (lane {result.lane.name}), {where}")
        for c in result.checks:
            style = VERDICT_STYLE[str(c.verdict)]
            _out.print(Text(f"  {c.verdict!s:<8}", style=style), Text(f"{c.check}: {c.detail}"))
        allowed = [str(c.check) for c in result.checks if c.verdict.value == "UNKNOWN"]
        go = "may proceed" if result.may_proceed else "may NOT proceed"
        note = f" (UNKNOWN allowed in this lane: {', '.join(allowed)})" if allowed else ""
        _out.print(f"overall: {result.overall}; {go}{note if result.may_proceed else ''}")
    raise SystemExit(int(result.exit_code))


@cli.command()
@click.argument("change_id", metavar="CHANGE")
@click.option("--hold", "hold", is_flag=True, help="Keep production on HOLD.")
@click.option("--proceed", "proceed", default=None, metavar="LANE", help="Proceed to LANE.")
@click.option("--reason", required=True)
@click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(path_type=Path),
    metavar="OPKEY",
    help="The operator's private key: the decision is signed.",
)
@_policy_option
def decide(
    change_id: str,
    hold: bool,
    proceed: str | None,
    reason: str,
    key_path: Path,
    policy_path: Path | None,
) -> None:
    """Record an operator's signed decision: --hold or --proceed LANE. Nothing is chosen for
    the operator: exactly one of the two is required."""
    from rollproof.governance.decision import decide as record
    from rollproof.governance.keys import load_signing_key
    from rollproof.governance.state import Decision

    if hold == (proceed is not None):
        raise click.UsageError("choose exactly one: --hold or --proceed LANE")
    event = record(
        _governed_policy(policy_path),
        change_id,
        Decision.HOLD if hold else Decision.PROCEED,
        key=load_signing_key(key_path),
        reason=reason,
        lane=proceed,
        now=_now(),
    )
    what = "HOLD" if hold else f"PROCEED to {proceed}"
    _out.print(f"ledger event {event.seq}: decision {what} for {change_id}, signed", markup=False)


@cli.command()
@click.argument("change_id", metavar="CHANGE", required=False)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to write the .md and .json (default: .rollproof/status beside the policy).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the JSON instead of the Markdown.")
@_policy_option
def status(
    change_id: str | None, out: Path | None, as_json: bool, policy_path: Path | None
) -> None:
    """Print the checkpoint of CHANGE, or the current state of every change in the ledger.

    Every line is derived from the ledger (verified from its bytes) and the packets
    (validated now). Written as checkpoint-<CHANGE>.md/.json or current-state.md/.json.
    """
    from rollproof.governance.status import all_status, change_status, write_status

    policy = _governed_policy(policy_path)
    result = (
        all_status(policy, now=_now())
        if change_id is None
        else change_status(policy, change_id, now=_now())
    )
    md, js = write_status(result, out or policy.directory / ".rollproof" / "status")
    if as_json:
        _out.print(json.dumps(result.doc, indent=2, sort_keys=True), markup=False)
    else:
        _out.print(result.markdown, markup=False, end="")
    _err.print(f"written: {md} and {js}", markup=False)


@cli.command()
@click.option(
    "--dir",
    "workdir",
    type=click.Path(path_type=Path),
    default=Path("rollproof-demo"),
    show_default=True,
    help="Work directory for the sample database and reports.",
)
@click.option(
    "--governed",
    is_flag=True,
    help="The governed story instead: keys, policy, tickets, blockers, grants, preflight, "
    "rehearsal, decision (HOLD), checkpoint, and production lanes refused.",
)
def demo(workdir: Path, governed: bool) -> None:
    """Build a sample production database and rehearse two changes against it."""
    from rollproof.demo import run_demo

    if governed:
        _governed_demo(workdir)
        return

    with _progress() as say:
        outcome = run_demo(workdir, progress=say)
    for (result, out_dir), story in zip(outcome.results, outcome.stories, strict=True):
        _out.rule(story.title)
        _out.print(story.intro)
        _render_result(result, out_dir)
        _out.print(story.explain(result))
        _out.print()
    _out.print(outcome.conclusion)
    _out.print(f"reports are in {outcome.packets_dir}")
    raise SystemExit(0 if outcome.as_expected else int(ExitCode.CHECK_FAILED))


def _governed_demo(workdir: Path) -> None:
    """Run the governed story's commands from `workdir`, as a user would type them."""
    import os

    from rollproof.demo import prepare_governed_demo

    with _progress() as say:
        steps = prepare_governed_demo(workdir, progress=say)
    unexpected = []
    home = Path.cwd()
    os.chdir(workdir)
    try:
        for number, step in enumerate(steps, 1):
            _out.rule(f"{number}. {step.title}")
            _out.print("$ rollproof " + " ".join(_shell_word(a) for a in step.argv), markup=False)
            code = main(list(step.argv))
            if step.why:
                _out.print(f"→ exit {code}: {step.why}", markup=False)
            if code != step.expect:
                unexpected.append(f"step {number} exited {code}, expected {step.expect}")
    finally:
        os.chdir(home)
    _out.rule()
    if unexpected:
        _out.print("demo: UNEXPECTED: " + "; ".join(unexpected), markup=False)
        raise SystemExit(int(ExitCode.CHECK_FAILED))
    _out.print(
        "demo: as expected: the change was rehearsed under a consumed rehearsal-only grant, "
        "production stays on HOLD (the operator's decision), and every production lane was "
        f"refused without its own grant. Everything is in {workdir}.",
        markup=False,
    )


def _shell_word(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (tests call this directly)."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    # A password given in a DSN is scrubbed from every error line, even one a lower layer
    # built by echoing its input.
    secrets = secrets_in(args)
    try:
        rv = cli.main(
            args=args, prog_name="rollproof", standalone_mode=False, obj={"argv": list(args)}
        )
        return int(rv or 0)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else int(ExitCode.INTERNAL)
    except click.exceptions.NoArgsIsHelpError as e:
        _err.print(scrub(e.format_message(), secrets), markup=False)
        return int(ExitCode.USAGE)
    except click.ClickException as e:
        _err.print(scrub(f"rollproof: error: {e.format_message()}", secrets), markup=False)
        return int(ExitCode.USAGE)
    except click.exceptions.Abort:
        _err.print("rollproof: interrupted", markup=False)
        return 130
    except RollproofError as e:
        if debug:
            _err.print(scrub(traceback.format_exc(), secrets), markup=False, end="")
        _err.print(scrub(f"rollproof: {e}", secrets), markup=False)
        return int(e.exit_code)
    except KeyboardInterrupt:
        _err.print("rollproof: interrupted", markup=False)
        return 130
    except Exception as e:
        if debug:
            _err.print(scrub(traceback.format_exc(), secrets), markup=False, end="")
        _err.print(
            scrub(
                f"rollproof: internal error ({type(e).__name__}: {e}); "
                "please report it; rerun with --debug for a traceback",
                secrets,
            ),
            markup=False,
        )
        return int(ExitCode.INTERNAL)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
