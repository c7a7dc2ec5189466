"""`rollproof init`: a commented, governed `rollproof.toml` and a ledger with the validator pinned.

    init_workspace(directory, executor=..., operators={...}, production=[...], now=...)

Refuses to overwrite an existing policy file (exit 2): a policy is a decision someone made. Key
files are checked before anything is written, so a mistyped path leaves nothing behind. The
ledger is created with two events: `policy.set` (event 1), the first policy in force, the file's
canonical content (every later policy is adopted by a quorum of its operators, `rollproof policy
adopt`), and `validator.pinned`, holding the running validator's hash (preflight compares it
with the validator that runs later); an existing ledger is kept as it is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from rollproof.core.errors import UsageError
from rollproof.core.keys import load_public_key
from rollproof.core.policy import (
    DEFAULT_CHECKPOINT,
    DEFAULT_GATES,
    DEFAULT_LANES,
    DEFAULT_LEDGER,
    POLICY_FILE,
    load_policy,
    policy_document,
)
from rollproof.governance.rules_decisions import pin_validator
from rollproof.governance.rules_policy import set_policy
from rollproof.governance.store import open_ledger


@dataclass(frozen=True, slots=True)
class Workspace:
    policy: Path
    ledger: str
    pinned: str | None
    """The validator hash pinned in a new ledger; None when an existing ledger was kept."""


def _toml(value: str) -> str:
    return json.dumps(value)  # a TOML basic string is a JSON string for what we write here


def _relative(path: Path, base: Path) -> str:
    absolute = path.absolute()
    try:
        return absolute.relative_to(base.absolute()).as_posix()
    except ValueError:
        return str(absolute)


def policy_text(
    directory: Path,
    *,
    executor: Path | None,
    operators: Mapping[str, Path],
    production: Sequence[str],
    ci_triggers: Sequence[str] | None,
    ledger: str | None = None,
) -> str:
    """The commented policy `rollproof init` writes."""
    sources = ", ".join(_toml(s) for s in production)
    lines = [
        "# rollproof.toml: written by `rollproof init`. Paths are relative to this file.",
        "# Unknown tables and keys are refused, so a typo cannot silently weaken the policy.",
        "",
        "[production]",
        "# Sources registered as production: rehearsals only ever open them read-only.",
        f"sources = [{sources}]",
        "",
        "[forbidden]",
        '# objects = ["payments", "secret_*"]   # tables, views, triggers, indexes (names, globs)',
        '# files = ["deploy/*.sh"]               # globs; a rehearsal must leave them untouched',
        '# env = ["AWS_SECRET_ACCESS_KEY"]       # never passed to a subprocess rollproof starts',
        "",
        "[enforcement]",
        'undeclared_reads = "deny"   # or "report": allow undeclared reads, on the record',
        "",
        "[governance]",
        "# The hash-chained ledger of tickets, blockers, grants, decisions and holds.",
        f"ledger = {_toml(ledger or DEFAULT_LEDGER)}",
        "# The newest trusted ledger checkpoint (signed size + head), written by an operator with",
        "# `rollproof ledger checkpoint`; keep a copy where the executor cannot write.",
        f"checkpoint = {_toml(DEFAULT_CHECKPOINT)}",
        "# The executor's public key: every grant is addressed to it, and it can sign none.",
    ]
    if executor is not None:
        lines.append(f"executor = {_toml(_relative(executor, directory))}")
    else:
        lines.append('# executor = "keys/executor.pub"   # rollproof key generate --name executor')
    lines += [
        "",
        "[operators]",
        "# Who may sign grants, decisions and ledger checkpoints: name = public key file, or an",
        '# inline PEM ("""-----BEGIN PUBLIC KEY-----...""").',
    ]
    if operators:
        lines += [f"{name} = {_toml(_relative(p, directory))}" for name, p in operators.items()]
    else:
        lines.append('# alice = "keys/alice.pub"')
    lines += [
        "",
        "# The lane ladder, lowest rung first. kind: clone (rollproof rehearses on a clone) or",
        "# production (rollproof never runs it: `rollproof grant consume` checks and records its",
        "# grant and lifts HOLD). Every lane past the first needs its own grant and the evidence",
        "# of the lanes below. The first needs no grant: an executor may rehearse on a clone",
        "# freely, and a grant it is given is still checked and consumed. (Set grant = true on",
        "# it to require one; commands.sh then needs one too to reproduce a packet.)",
    ]
    for lane in DEFAULT_LANES:
        allow = ", ".join(_toml(str(c)) for c in lane.allow_unknown)
        lines += [
            "",
            "[[lanes]]",
            f"name = {_toml(lane.name)}",
            f"kind = {_toml(str(lane.kind))}",
            f"grant = {'true' if lane.grant else 'false'}",
            f"evidence = {'true' if lane.evidence else 'false'}",
            f"signatures = {lane.signatures}   # distinct operator signatures on its grant",
            f"allow_unknown = [{allow}]   # preflight checks that may be UNKNOWN in this lane",
        ]
    lines += [
        "",
        "[gates]",
        "# Each gate is NO unless a grant for the lane it names was consumed and is in its window.",
        *(f"{gate} = {_toml(lane)}" for gate, lane in DEFAULT_GATES.items()),
        "",
    ]
    if ci_triggers is None:
        lines += [
            "# The CI/deploy scope. Without this table the ci-scope preflight check is UNKNOWN:",
            "# a blocker records it, and nothing is triggered.",
            "# [ci]",
            '# triggers = [".github/workflows/deploy.yml"]   # forbidden files to rehearsals',
        ]
    else:
        lines += [
            "[ci]",
            "# Files that trigger CI or a deploy: forbidden to rehearsals; rollproof triggers none",
            f"triggers = [{', '.join(_toml(t) for t in ci_triggers)}]",
        ]
    return "\n".join(lines) + "\n"


def init_workspace(
    directory: Path,
    *,
    executor: Path | None,
    operators: Mapping[str, Path],
    production: Sequence[str],
    now: datetime,
    ci_triggers: Sequence[str] | None = None,
    ledger: str | None = None,
) -> Workspace:
    from rollproof.verify.pin import validator_sha256

    path = directory / POLICY_FILE
    exists = UsageError(f"{path} already exists; rollproof init never overwrites a policy")
    if path.exists():
        raise exists
    for key in ([executor] if executor is not None else []) + list(operators.values()):
        load_public_key(key)  # a mistyped path fails before anything is written
    text = policy_text(
        directory,
        executor=executor,
        operators=operators,
        production=production,
        ci_triggers=ci_triggers,
        ledger=ledger,
    )
    directory.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError:
        raise exists from None
    policy = load_policy(path)
    store = open_ledger(policy.governed().ledger)
    if store.exists() and store.read_verified().head.size > 0:
        return Workspace(path, store.where, None)
    pin = validator_sha256()
    store.append_events(
        [set_policy(policy_document(policy), previous=0), pin_validator(pin)], now=now
    )
    return Workspace(path, store.where, pin)
