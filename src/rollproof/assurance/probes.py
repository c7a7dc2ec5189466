"""Probes of rollproof's own gates: adversarial inputs run against the live command line.

    run_probes(policy_path=None, jobs=...) -> ProbeRun     (`rollproof probe [--json]`)

Each probe is a real subprocess (`sys.executable -m rollproof ...`) run in a disposable copy of a
private workspace (a temporary directory: its own keys, `rollproof init`'s policy and ledger, a
SQLite "production" source it made, a sample change), never the caller's ledger or sources. A
probe has an expected outcome (a fail-closed exit code and a message fragment) and an observed
one; it passes only when it failed closed exactly as expected **and** leaked nothing.

**Canaries.** Every workspace plants two secrets: a password in a DSN (every probe's command line
carries a `postgresql://probe:<canary>@...` DSN where it can, and the plain workspace's policy
lists it as a production source) and a secret-marked column value (`[secrets] columns`, in the
source). After a probe, every byte it printed (stdout, stderr) and every byte under its
workspace copy (packets, ledger, policy, change; the planted source itself excepted) is searched
for both, raw, URL-encoded, base64 (all three alignments) and hex: any hit is a leak.

**Control.** An ordinary rehearsal of a sound change on a clone must be allowed (exit 0): gates
that refuse everything prove nothing.

Nested governed rehearsals are refused while probes run (`ROLLPROOF_PROBE_NESTED`): a probe never
starts another catalogue.

Longer than 600 lines because the catalogue is one table of ~30 probes, each with the small
`prepare` step that plants its bad input; split apart, a probe and what it plants could drift.
"""

from __future__ import annotations

import base64
import binascii
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from secrets import token_hex
from typing import Any
from urllib.parse import quote

from rollproof.assurance.selftest import SOUND_CHANGE, TINY_SOURCE, write_change
from rollproof.verify.governance_layer import PROBES_SCHEMA, probe_line, probes_document

__all__ = ["PROBES_SCHEMA", "ProbeRun", "probe_line", "probes_document", "run_probes"]

NESTED_ENV = "ROLLPROOF_PROBE_NESTED"
PROBE_TIMEOUT_S = 120.0
CHANGE_ID = "add-item-note"


@dataclass(frozen=True, slots=True)
class Expect:
    exit: int
    contains: str


@dataclass(frozen=True, slots=True)
class Probe:
    """One adversarial input: `steps` are argv tails run in order in the probe's own copy of
    `base` (every step but the last must exit 0); the last is judged against `expect`.
    `prepare` edits the copy first (plants a file, forges a grant)."""

    name: str
    what: str
    base: str  # "plain" or "governed"
    argv: tuple[str, ...]
    expect: Expect
    prepare: Callable[[Path, Subject], None] | None = None
    control: bool = False


@dataclass(frozen=True, slots=True)
class ProbeResult:
    name: str
    what: str
    expected: Expect
    observed_exit: int
    matched: bool
    leaked: bool
    control: bool
    detail: str = ""
    """The last line the probe printed (empty when it leaked): for people, not in the JSON."""

    @property
    def passed(self) -> bool:
        return self.observed_exit == self.expected.exit and self.matched and not self.leaked

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "what": self.what,
            "expected": {"exit": self.expected.exit, "contains": self.expected.contains},
            "observed": {"exit": self.observed_exit, "contains": self.matched},
            "passed": self.passed,
            "leaked": self.leaked,
        }


@dataclass(frozen=True, slots=True)
class ProbeRun:
    probes: tuple[ProbeResult, ...]
    control: ProbeResult
    seconds: float = 0.0

    @property
    def failed_closed(self) -> int:
        return sum(p.passed for p in self.probes)

    @property
    def leaked(self) -> bool:
        return any(p.leaked for p in (*self.probes, self.control))

    @property
    def ok(self) -> bool:
        return self.failed_closed == len(self.probes) and self.control.passed

    def as_json(self) -> dict[str, Any]:
        return probes_document(
            [p.as_json() for p in self.probes],
            {**self.control.as_json(), "allowed": self.control.passed},
        )

    def line(self) -> str:
        return probe_line(self.as_json())


# --- the subject: private workspaces ----------------------------------------------------------


@dataclass
class Subject:
    root: Path
    password: str
    secret_value: str
    planted: set[str] = field(default_factory=set)  # relative paths holding canaries by design

    @property
    def canaries(self) -> tuple[str, ...]:
        return (self.password, self.secret_value)

    @property
    def secret_dsn(self) -> str:
        return f"postgresql://probe:{self.password}@127.0.0.1:9/probe?connect_timeout=2"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROLLPROOF_", "PG"))}
    env[NESTED_ENV] = "1"
    return env


def _rollproof(argv: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            [sys.executable, "-m", "rollproof", *argv],
            cwd=cwd,
            env=_env(),
            capture_output=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        return subprocess.CompletedProcess(list(argv), -1, e.stdout or b"", e.stderr or b"")


def _must(argv: Sequence[str], cwd: Path) -> None:
    proc = _rollproof(argv, cwd)
    if proc.returncode != 0:
        raise RuntimeError(
            f"probe setup `rollproof {' '.join(argv[:2])}` exited {proc.returncode}: "
            + proc.stderr.decode("utf-8", "replace").strip()[-300:]
        )


def _source(path: Path, secret_value: str) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.executescript(TINY_SOURCE)
        conn.execute("CREATE TABLE payments (id INTEGER PRIMARY KEY, card TEXT)")
        conn.execute("INSERT INTO payments (card) VALUES (?)", (secret_value,))
        conn.commit()
    finally:
        conn.close()


def build_subject(root: Path) -> Subject:
    """Two private workspaces under `root`: `plain` (a policy with production sources, a
    forbidden object, a secret column) and `governed` (`rollproof init` with generated keys)."""
    subject = Subject(root, "pw" + token_hex(12), "card" + token_hex(12))
    secrets_toml = '[secrets]\ncolumns = ["payments.card"]\n'
    plain = root / "plain"
    plain.mkdir()
    _source(plain / "production.db", subject.secret_value)
    _source(plain / "staging.db", subject.secret_value)
    write_change(plain / "changes" / CHANGE_ID, SOUND_CHANGE)
    (plain / "rollproof.toml").write_text(
        "[production]\n"
        f'sources = ["sqlite:///production.db", "{subject.secret_dsn}"]\n\n'
        '[forbidden]\nobjects = ["payments"]\n\n' + secrets_toml,
        encoding="utf-8",
    )
    _must(
        [
            "rehearse",
            f"changes/{CHANGE_ID}",
            "--source",
            "sqlite:///staging.db",
            "--out",
            "packets/good",
        ],
        plain,
    )
    gov = root / "governed"
    gov.mkdir()
    _source(gov / "production.db", subject.secret_value)
    _source(gov / "other.db", subject.secret_value)
    with sqlite3.connect(gov / "other.db") as conn:
        conn.execute("INSERT INTO items (name, qty) VALUES ('other', 1)")
    conn.close()
    write_change(gov / "changes" / CHANGE_ID, SOUND_CHANGE)
    for name in ("alice", "bob", "executor", "outsider"):
        _must(["key", "generate", "--out", "keys", "--name", name], gov)
    _must(
        [
            "init",
            "--executor-key",
            "keys/executor.pub",
            "--operator",
            "alice=keys/alice.pub",
            "--operator",
            "bob=keys/bob.pub",
            "--production",
            "sqlite:///production.db",
            "--ci-trigger",
            ".ci/deploy.sh",
        ],
        gov,
    )
    subject.planted = {
        f"{ws}/{db}"
        for ws, db in (
            ("plain", "production.db"),
            ("plain", "staging.db"),
            ("governed", "production.db"),
            ("governed", "other.db"),
        )
    } | {"plain/rollproof.toml"}  # the policy lists the password-bearing DSN by design
    return subject


# --- prepare steps ----------------------------------------------------------------------------


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _grant(
    keys: Sequence[str], *, out: str = "grants/probe.grant", **fields: Any
) -> Callable[[Path, Subject], None]:
    """Write a grant signed by `keys` (of the governed workspace), its fields overridden."""

    def prepare(ws: Path, _subject: Subject) -> None:
        from rollproof.core.canonical import canonical_json
        from rollproof.governance import load_signing_key
        from rollproof.governance.envelope import encode_envelope, sign_envelope
        from rollproof.governance.grants import GRANT_PAYLOAD_TYPE
        from rollproof.governance.issuance import fingerprint_source

        def key(name: str) -> Any:
            return load_signing_key(ws / "keys" / f"{name}.key")

        now = datetime.now(UTC)
        payload: dict[str, Any] = {
            "schema": "rollproof/grant/v1",
            "grant_id": token_hex(16),
            "nonce": token_hex(16),
            "lane": "rehearsal-clone",
            "change_id": CHANGE_ID,
            "source_fingerprint": fingerprint_source(f"sqlite:///{ws / 'production.db'}").digest,
            "packet_tree_hash": None,
            "audience": key("executor").key_id,
            "issuer": key(keys[0]).key_id,
            "not_before": _utc(now - timedelta(minutes=5)),
            "expires": _utc(now + timedelta(hours=1)),
        }
        for name, value in fields.items():
            payload[name] = value(ws, key) if callable(value) else value
        envelope = sign_envelope(
            GRANT_PAYLOAD_TYPE, canonical_json(payload), [key(k) for k in keys]
        )
        path = ws / out
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(encode_envelope(envelope))

    return prepare


def _consumed_grant(ws: Path, subject: Subject) -> None:
    """A valid grant, consumed once (in the copy's ledger) before the probe presents it."""
    from rollproof.core.policy import load_policy
    from rollproof.governance.grants import consume_grant
    from rollproof.governance.in_force import load_in_force
    from rollproof.governance.issuance import fingerprint_source
    from rollproof.governance.store import open_ledger

    _grant(["alice"])(ws, subject)
    policy = load_policy(ws / "rollproof.toml")
    store = open_ledger(policy.governed().ledger)
    gov = load_in_force(policy, store).policy.governed()
    assert gov.executor is not None
    consume_grant(
        store,
        (ws / "grants" / "probe.grant").read_bytes(),
        trusted_keys=list(gov.operators.values()),
        lane="rehearsal-clone",
        change_id=CHANGE_ID,
        source_fingerprint=fingerprint_source(f"sqlite:///{ws / 'production.db'}").digest,
        executor_key_id=gov.executor.key_id,
        now=datetime.now(UTC),
        required_signatures=1,
        packet_tree_hash=None,
        require_evidence=False,
    )


def _edit_change(edit: Callable[[Path], None]) -> Callable[[Path, Subject], None]:
    def prepare(ws: Path, _subject: Subject) -> None:
        edit(ws / "changes" / CHANGE_ID)

    return prepare


def _toml(text: str) -> Callable[[Path], None]:
    def edit(change: Path) -> None:
        (change / "change.toml").write_text(text, encoding="utf-8")

    return edit


def _undeclared_write(change: Path) -> None:
    (change / "apply.sql").write_text(
        "ALTER TABLE items ADD COLUMN note TEXT;\nDELETE FROM payments;\n", encoding="utf-8"
    )


def _symlinked_script(change: Path) -> None:
    outside = change.parent.parent / "outside.sql"
    outside.write_text("ALTER TABLE items ADD COLUMN note TEXT;\n", encoding="utf-8")
    (change / "apply.sql").unlink()
    (change / "apply.sql").symlink_to(outside)


def _fifo_script(change: Path) -> None:
    (change / "apply.sql").unlink()
    os.mkfifo(change / "apply.sql")


def _escaping_script(change: Path) -> None:
    (change.parent / "escape.sql").write_text("SELECT 1;\n", encoding="utf-8")
    text = (change / "change.toml").read_text(encoding="utf-8")
    (change / "change.toml").write_text(
        text.replace('apply = "apply.sql"', 'apply = "../escape.sql"'), encoding="utf-8"
    )


def _packet_files(packet: Path) -> dict[str, bytes]:
    return {
        p.relative_to(packet).as_posix(): p.read_bytes()
        for p in sorted(packet.rglob("*"))
        if p.is_file()
    }


def _rewrite_packet(packet: Path, files: Mapping[str, bytes]) -> None:
    shutil.rmtree(packet)
    for rel, data in files.items():
        target = packet / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def _tamper(kind: str) -> Callable[[Path, Subject], None]:
    def prepare(ws: Path, _subject: Subject) -> None:
        from rollproof.assurance.selftest import (
            _fabricated_no_mutation,
            edit_report,
            flip_byte,
            leg,
        )

        packet = ws / "packets" / "good"
        files = _packet_files(packet)
        if kind == "byte":
            files["report.md"] = flip_byte(files["report.md"], 10)
        elif kind == "added":
            files["extra.txt"] = b"planted\n"
        elif kind == "removed":
            del files["RERUN.sh"]
        elif kind == "no-mutation":
            files = dict(edit_report(files, _fabricated_no_mutation))
        elif kind == "verdict":

            def fail_leg(report: dict[str, Any]) -> None:
                leg(report, "revert")["verdict"] = "FAIL"

            files = dict(edit_report(files, fail_leg))
        _rewrite_packet(packet, files)

    return prepare


def _edit_policy_file(ws: Path, _subject: Subject) -> None:
    policy = ws / "rollproof.toml"
    text = policy.read_text(encoding="utf-8")
    policy.write_text(
        text.replace("[operators]\n", '[operators]\noutsider = "keys/outsider.pub"\n', 1),
        encoding="utf-8",
    )


def _stripped_ledger_triggers(ws: Path, _subject: Subject) -> None:
    """Rewrite a ledger row's body in place (triggers dropped first): a tampered chain."""
    conn = sqlite3.connect(ws / ".rollproof" / "ledger.db")
    try:
        triggers = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"
        ).fetchall()
        for name, _sql in triggers:
            conn.execute(f'DROP TRIGGER "{name}"')
        conn.execute(
            "UPDATE events SET body = CAST(replace(CAST(body AS TEXT), 'rehearsal', 'rehearsaX')"
            " AS BLOB) WHERE seq = 1"
        )
        for _name, sql in triggers:  # put the triggers back: only the bytes were rewritten
            conn.execute(sql)
        conn.commit()
    finally:
        conn.close()


# --- the catalogue ----------------------------------------------------------------------------

_REHEARSE = ("rehearse", f"changes/{CHANGE_ID}", "--out", "packets/probe")
_STAGING = ("--source", "sqlite:///staging.db")
_GRANTED = (*_REHEARSE, "--source", "sqlite:///production.db", "--grant", "grants/probe.grant")


def _forbidden_read(change: Path) -> None:
    """Declare and read the forbidden table, copying its secret into a declared one."""
    text = (change / "change.toml").read_text(encoding="utf-8")
    (change / "change.toml").write_text(
        text.replace("reads = []", 'reads = ["payments"]'), encoding="utf-8"
    )
    (change / "apply.sql").write_text(
        "ALTER TABLE items ADD COLUMN note TEXT;\n"
        "UPDATE items SET note = (SELECT card FROM payments LIMIT 1);\n",
        encoding="utf-8",
    )


def catalogue(subject: Subject) -> tuple[Probe, ...]:
    """Every probe (the control last)."""
    p, g = "plain", "governed"
    consume = (
        "grant",
        "consume",
        "--grant",
        "grants/probe.grant",
        "--change",
        CHANGE_ID,
        "--source",
        "sqlite:///production.db",
    )
    return (
        Probe(
            "production-clone-beside-source",
            "the clone asked for in the production source's own directory",
            p,
            (*_REHEARSE, "--source", "sqlite:///production.db", "--workdir", "."),
            Expect(3, "clone-outside-source-dir"),
        ),
        Probe(
            "production-dsn-as-scratch",
            "a password-bearing production DSN of the policy as the clone target",
            p,
            (*_REHEARSE, *_STAGING, "--scratch", subject.secret_dsn),
            Expect(2, "scratch server"),
        ),
        Probe(
            "secret-dsn-unreachable",
            "a password-bearing DSN of a server that is down",
            p,
            (*_REHEARSE, "--source", subject.secret_dsn),
            Expect(4, "cannot connect"),
        ),
        Probe(
            "undeclared-write",
            "the change writes a table it did not declare",
            p,
            (*_REHEARSE, *_STAGING),
            Expect(3, "write of undeclared payments"),
            _edit_change(_undeclared_write),
        ),
        Probe(
            "forbidden-read",
            "the change declares and reads a forbidden object",
            p,
            (*_REHEARSE, *_STAGING),
            Expect(1, "denied at run time"),
            _edit_change(_forbidden_read),
        ),
        Probe(
            "change-path-escape",
            "a script path leaving the change directory (../)",
            p,
            (*_REHEARSE, *_STAGING),
            Expect(2, "outside the change directory"),
            _edit_change(_escaping_script),
        ),
        Probe(
            "symlinked-script",
            "apply.sql is a symlink to a file outside",
            p,
            (*_REHEARSE, *_STAGING),
            Expect(2, "apply.sql"),
            _edit_change(_symlinked_script),
        ),
        Probe(
            "fifo-script",
            "apply.sql is a FIFO (must not hang)",
            p,
            (*_REHEARSE, *_STAGING),
            Expect(2, "is a FIFO"),
            _edit_change(_fifo_script),
        ),
        Probe(
            "packet-byte-flipped",
            "one byte of report.md flipped",
            p,
            ("validate", "packets/good"),
            Expect(1, "SHA256_MISMATCH"),
            _tamper("byte"),
        ),
        Probe(
            "packet-file-added",
            "a file added to a packet",
            p,
            ("validate", "packets/good"),
            Expect(1, "FILE_EXTRA"),
            _tamper("added"),
        ),
        Probe(
            "packet-file-removed",
            "RERUN.sh removed from a packet",
            p,
            ("validate", "packets/good"),
            Expect(1, "FILE_MISSING"),
            _tamper("removed"),
        ),
        Probe(
            "packet-no-mutation-fabricated",
            "after_apply == before recorded as PASS, resealed",
            p,
            ("validate", "packets/good"),
            Expect(1, "NO_MUTATION_FABRICATED"),
            _tamper("no-mutation"),
        ),
        Probe(
            "packet-verdict-rewritten",
            "a leg's verdict rewritten, resealed",
            p,
            ("validate", "packets/good"),
            Expect(1, "LEG_VERDICT_CONTRADICTS"),
            _tamper("verdict"),
        ),
        Probe(
            "validator-pin-mismatch",
            "--expect-validator with another validator's hash",
            p,
            ("validate", "packets/good", "--expect-validator", "0" * 64),
            Expect(3, "validator"),
        ),
        Probe(
            "grant-forged",
            "a grant signed by a key that is no operator's",
            g,
            _GRANTED,
            Expect(3, "grant"),
            _grant(["outsider"]),
        ),
        Probe(
            "grant-expired",
            "an operator's grant past its expiry",
            g,
            _GRANTED,
            Expect(3, "expired"),
            _grant(
                ["alice"],
                not_before=_utc(datetime.now(UTC) - timedelta(hours=3)),
                expires=_utc(datetime.now(UTC) - timedelta(hours=1)),
            ),
        ),
        Probe(
            "grant-not-yet-valid",
            "an operator's grant whose window has not begun",
            g,
            _GRANTED,
            Expect(3, "grant"),
            _grant(
                ["alice"],
                not_before=_utc(datetime.now(UTC) + timedelta(hours=1)),
                expires=_utc(datetime.now(UTC) + timedelta(hours=2)),
            ),
        ),
        Probe(
            "grant-replayed",
            "a grant already consumed, presented again",
            g,
            _GRANTED,
            Expect(3, "grant"),
            _consumed_grant,
        ),
        Probe(
            "grant-wrong-lane",
            "a grant for another lane",
            g,
            _GRANTED,
            Expect(3, "lane"),
            _grant(["alice"], lane="production-shaped-clone"),
        ),
        Probe(
            "grant-wrong-change",
            "a grant for another change",
            g,
            _GRANTED,
            Expect(3, "change"),
            _grant(["alice"], change_id="other-change"),
        ),
        Probe(
            "grant-self-signed",
            "a grant signed by the executor's own key",
            g,
            _GRANTED,
            Expect(3, "executor"),
            _grant(["executor"]),
        ),
        Probe(
            "grant-wrong-target",
            "a grant for another source's fingerprint",
            g,
            _GRANTED,
            Expect(3, "source"),
            _grant(["alice"], source_fingerprint=lambda ws, _k: _fingerprint(ws / "other.db")),
        ),
        Probe(
            "grant-wrong-audience",
            "a grant addressed to another executor",
            g,
            _GRANTED,
            Expect(3, "audience"),
            _grant(["alice"], audience=lambda _ws, k: k("outsider").key_id),
        ),
        Probe(
            "production-lane-rehearsed",
            "a production lane asked of `rehearse`",
            g,
            (*_GRANTED, "--lane", "production-apply"),
            Expect(3, "production lane"),
            _grant(["alice", "bob"], lane="production-apply"),
        ),
        Probe(
            "production-grant-without-evidence",
            "a production lane's grant, no evidence below",
            g,
            (*consume, "--lane", "production-apply"),
            Expect(3, "refused"),
            _grant(["alice", "bob"], lane="production-apply"),
        ),
        Probe(
            "policy-edit-not-adopted",
            "an operator added in the file only signs a grant",
            g,
            (
                "grant",
                "issue",
                "--lane",
                "rehearsal-clone",
                "--change",
                CHANGE_ID,
                "--source",
                "sqlite:///production.db",
                "--expires",
                "1h",
                "--key",
                "keys/outsider.key",
                "--out",
                "grants/x.grant",
            ),
            Expect(2, "not an operator key"),
            _edit_policy_file,
        ),
        Probe(
            "policy-adopt-by-non-operator",
            "`policy adopt` signed by a non-operator",
            g,
            ("policy", "adopt", "--key", "keys/outsider.key"),
            Expect(3, "operator"),
            _edit_policy_file,
        ),
        Probe(
            "decision-by-non-operator",
            "a decision signed by a key that is no operator's",
            g,
            ("decide", CHANGE_ID, "--hold", "--reason", "probe", "--key", "keys/outsider.key"),
            Expect(3, "operator"),
        ),
        Probe(
            "decision-by-executor",
            "a decision signed by the executor's key",
            g,
            (
                "decide",
                CHANGE_ID,
                "--proceed",
                "production-apply",
                "--reason",
                "probe",
                "--key",
                "keys/executor.key",
            ),
            Expect(3, "operator"),
        ),
        Probe(
            "ledger-row-rewritten",
            "a ledger event's body rewritten in place",
            g,
            ("ledger", "verify"),
            Expect(1, "hash"),
            _stripped_ledger_triggers,
        ),
        Probe(
            "control",
            "an ordinary rehearsal of a sound change on a clone",
            p,
            (*_REHEARSE, *_STAGING),
            Expect(0, "PASS"),
            control=True,
        ),
    )


def _fingerprint(path: Path) -> str:
    from rollproof.governance.issuance import fingerprint_source

    return fingerprint_source(f"sqlite:///{path}").digest


# --- running ----------------------------------------------------------------------------------


def _forms(canary: str) -> set[bytes]:
    raw = canary.encode("utf-8")
    forms = {raw, quote(canary, safe="").encode("ascii"), binascii.hexlify(raw)}
    forms.add(binascii.hexlify(raw).upper())
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw)
        skip = (shift * 4 + 2) // 3 + (1 if shift else 0)
        forms.add(encoded[skip : len(encoded) - 4])  # the stable middle of every alignment
    return {f for f in forms if len(f) >= 8}


def _files(root: Path) -> Iterator[Path]:
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                yield path


def leaks(subject: Subject, blobs: Sequence[bytes], workspace: Path) -> bool:
    forms = {f for c in subject.canaries for f in _forms(c)}
    for blob in blobs:
        if any(f in blob for f in forms):
            return True
    for path in _files(workspace):
        rel = path.relative_to(subject.root).as_posix()
        if rel in subject.planted:
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if any(f in data for f in forms):
            return True
    return False


def run_probe(probe: Probe, subject: Subject, scratch: Path) -> ProbeResult:
    """Run one probe in its own copy of its workspace."""
    ws = scratch / probe.name / probe.base
    shutil.copytree(subject.root / probe.base, ws, symlinks=True)
    local = replace(subject, root=scratch / probe.name)
    try:
        if probe.prepare is not None:
            probe.prepare(ws, subject)
        proc = _rollproof(probe.argv, ws)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    except Exception as e:  # a probe that could not be set up has not passed
        code, out, err = -2, b"", f"probe setup failed: {type(e).__name__}: {e}".encode()
    text = (out + b"\n" + err).decode("utf-8", "replace")
    leaked = leaks(local, (out, err), ws)
    return ProbeResult(
        probe.name,
        probe.what,
        probe.expect,
        code,
        probe.expect.contains in text,
        leaked,
        probe.control,
        "" if leaked else (text.strip().splitlines() or [""])[-1][:300],
    )


def default_jobs() -> int:
    return max(4, min(12, 2 * (os.cpu_count() or 1)))


def run_probes(
    *,
    jobs: int | None = None,
    only: Sequence[str] = (),
    expect: Mapping[str, int] | None = None,
) -> ProbeRun:
    """Build a private subject and run the catalogue in parallel subprocesses.

    `only` keeps the named probes (and the control); `expect` overrides expected exit codes
    (a probe whose expectation is wrong must be reported failed)."""
    import time

    start = time.monotonic()
    from rollproof.engines.workspace import owned_temp_dir

    with owned_temp_dir("rollproof-probe-") as root:
        (root / "subject").mkdir()
        subject = build_subject(root / "subject")
        probes = list(catalogue(subject))
        known = {p.name for p in probes}
        unknown = sorted({*only, *(expect or {})} - known)
        if unknown:
            raise KeyError(f"no such probe: {', '.join(unknown)}")
        if only:
            probes = [p for p in probes if p.name in only or p.control]
        probes = [
            replace(p, expect=Expect(expect[p.name], p.expect.contains))
            if expect and p.name in expect
            else p
            for p in probes
        ]
        scratch = root / "runs"
        scratch.mkdir()
        with ThreadPoolExecutor(max_workers=jobs or default_jobs()) as pool:
            results = list(pool.map(lambda p: run_probe(p, subject, scratch), probes))
    control = next(r for r in results if r.control)
    return ProbeRun(tuple(r for r in results if not r.control), control, time.monotonic() - start)
