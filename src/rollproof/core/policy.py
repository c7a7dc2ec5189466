"""The policy file, `rollproof.toml`: production sources, forbidden surfaces, and governance.

    [production]
    sources = ["sqlite:///data/prod.db"]      # only ever opened read-only by a rehearsal

    [forbidden]
    objects = ["payments", "secret_*"]        # tables, views, triggers, indexes: names or globs
    files = [".github/workflows/**", "deploy/*.sh"]   # globs relative to this file
    env = ["AWS_SECRET_ACCESS_KEY"]           # never passed to a subprocess rollproof starts

    [enforcement]
    undeclared_reads = "deny"                 # or "report": allow, but record, undeclared reads

    [secrets]
    columns = ["customers.email", "*.token"]  # "table.column" (globs): never shown in a report

    [governance]                              # present: the workspace is governed (rollproof init)
    ledger = ".rollproof/ledger.db"           # the hash-chained ledger (relative to this file)
    checkpoint = ".rollproof/ledger.checkpoint"   # the newest trusted signed ledger checkpoint
    executor = "keys/executor.pub"            # the executor's public key (path or inline PEM)
    signed_evidence = false                   # true: evidence counts only signed by the executor

    [operators]                               # who may sign grants, decisions, ledger checkpoints
    alice = "keys/alice.pub"                  # name = path, or an inline PEM public key

    [[lanes]]                                 # the ladder, lowest rung first (default below)
    name = "rehearsal-clone"
    kind = "clone"                            # "clone": rehearsed here; "production": never run
    grant = false                             # by rollproof, only its grant consumed
    evidence = false                          # needs the validated evidence of the lanes below
    signatures = 1                            # distinct operator signatures on its grant
    allow_unknown = ["ci-scope"]              # preflight checks that may be UNKNOWN for it

    [gates]                                   # each gate opens only with a consumed grant of
    production_mutation = "production-apply"  # the lane it names
    real_run = "production-apply"
    cutover = "cutover"
    ci_deploy_trigger = "cutover"
    secret_access = "production-apply"

    [ci]                                      # optional: the CI/deploy scope. Absent, the
    triggers = [".github/workflows/deploy.yml"]   # ci-scope check is UNKNOWN (a blocker records
                                              # it); listed files are forbidden files too

    [impact]                                  # optional: limits on a change's measured impact;
    max_access_exclusive_ms = 500             # a change over one is held for production lanes
    forbid_rewrite_over_rows = 100000         # (docs/impact.md lists every limit)

**The file proposes; the ledger decides.** A governed workspace's policy takes effect only
through a `policy.set` ledger event holding its canonical document (`policy_document`, every
key resolved to its bytes and every default filled in) and that document's sha256, signed by a
quorum of the operators in force (`rollproof.governance.rules_policy`); `rollproof init` records
the first. Every governance path reads the policy in force from the folded ledger; the file only
says where the ledger and its checkpoint are. Editing the file alone changes nothing but the
`policy-in-force` preflight check, which reports the difference as UNKNOWN.

Longer than 600 lines because the policy file's parser and the ledger's policy-document parser
(`policy_from_document`) share one set of checks (`_Reader`, `_lanes`, `_gates`): split apart,
the two could drift, and a document the ledger accepts could say what no file may.

Unknown tables and keys are refused with the file and key named: a misspelt `[forbiden]` must
not silently forbid nothing. A missing policy file is an empty policy (nothing registered,
nothing forbidden, not governed), and the report says which policy, if any, was in force.

The default ladder (`DEFAULT_LANES`) is rehearsal-clone -> production-shaped-clone ->
production-apply -> cutover. Its first rung needs no grant, so an executor may rehearse on a
clone freely (a grant it is given is still checked and consumed); every rung above needs its
own grant and the evidence of the rungs below; the production rungs need two operators.
Ladder rules: names are unique ids, the first rung is a clone lane that needs no evidence,
every rung above the first needs a grant, and no clone lane sits above a production lane.
"""

from __future__ import annotations

import base64
import binascii
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

from rollproof.core.canonical import canonical_json, sha256_hex
from rollproof.core.errors import UsageError
from rollproof.core.impact import Limit, LimitError, limits_json, parse_limits
from rollproof.core.inputs import InputFileError, read_input
from rollproof.core.keys import KeyFileError, PublicKey, load_public_key, public_key_from_pem

POLICY_FILE = "rollproof.toml"
MAX_SIGNATURES = 16
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_PEM_START = "-----BEGIN PUBLIC KEY-----"


class ReadMode(StrEnum):
    DENY = "deny"
    REPORT = "report"


class LaneKind(StrEnum):
    CLONE = "clone"
    """rollproof rehearses the change on an isolated clone in this lane."""
    PRODUCTION = "production"
    """rollproof never runs this lane; it consumes the lane's grant and lifts HOLD."""


class Gate(StrEnum):
    """The gates the checkpoint prints: each is NO unless a consumed grant of its lane says YES."""

    PRODUCTION_MUTATION = "production_mutation"
    REAL_RUN = "real_run"
    CUTOVER = "cutover"
    CI_DEPLOY_TRIGGER = "ci_deploy_trigger"
    SECRET_ACCESS = "secret_access"  # noqa: S105 (a gate's name, not a secret)


class Check(StrEnum):
    """The preflight checks (rollproof.governance.preflight), named in `allow_unknown`."""

    SURFACE_SCOPING = "surface-scoping"
    NO_PRODUCTION_EXECUTION = "no-production-execution"
    VALIDATOR_PIN = "validator-pin"
    LEDGER = "ledger"
    PRODUCTION_HOLD = "production-hold"
    CI_SCOPE = "ci-scope"
    POLICY_IN_FORCE = "policy-in-force"
    IMPACT_LIMITS = "impact-limits"


@dataclass(frozen=True, slots=True)
class Lane:
    name: str
    kind: LaneKind
    grant: bool
    evidence: bool
    signatures: int = 1
    allow_unknown: tuple[Check, ...] = ()


DEFAULT_LANES: tuple[Lane, ...] = (
    Lane(
        "rehearsal-clone",
        LaneKind.CLONE,
        grant=False,
        evidence=False,
        allow_unknown=(Check.CI_SCOPE,),
    ),
    Lane("production-shaped-clone", LaneKind.CLONE, grant=True, evidence=True),
    Lane("production-apply", LaneKind.PRODUCTION, grant=True, evidence=True, signatures=2),
    Lane("cutover", LaneKind.PRODUCTION, grant=True, evidence=True, signatures=2),
)
DEFAULT_GATES: Mapping[Gate, str] = MappingProxyType(
    {
        Gate.PRODUCTION_MUTATION: "production-apply",
        Gate.REAL_RUN: "production-apply",
        Gate.CUTOVER: "cutover",
        Gate.CI_DEPLOY_TRIGGER: "cutover",
        Gate.SECRET_ACCESS: "production-apply",
    }
)
MAX_POLICY_BYTES = 1024 * 1024
"""rollproof.toml is a short file; a larger one is refused before it is parsed."""
DEFAULT_LEDGER = ".rollproof/ledger.db"
DEFAULT_CHECKPOINT = ".rollproof/ledger.checkpoint"


class PolicyError(UsageError):
    def __init__(self, path: str, message: str, key: str | None = None) -> None:
        self.path = path
        self.key = key
        super().__init__(f"{path}: {key}: {message}" if key else f"{path}: {message}")


_SECTIONS: Mapping[str, frozenset[str]] = {
    "production": frozenset({"sources"}),
    "forbidden": frozenset({"objects", "files", "env"}),
    "enforcement": frozenset({"undeclared_reads"}),
    "secrets": frozenset({"columns"}),
    "governance": frozenset({"ledger", "checkpoint", "executor", "signed_evidence"}),
    "gates": frozenset(Gate),
    "ci": frozenset({"triggers"}),
    "impact": frozenset(Limit),
}
_FREE_SECTIONS = frozenset({"operators", "lanes"})  # checked below: names, or an array
_LANE_KEYS = frozenset({"name", "kind", "grant", "evidence", "signatures", "allow_unknown"})
_GOVERNED_ONLY = ("operators", "lanes", "gates", "ci")


@dataclass(frozen=True, slots=True)
class Governance:
    """The governed part of a policy; `None` on a `Policy` without a [governance] table."""

    ledger: str
    """The ledger: a path (absolute, resolved from the policy's folder) or a postgresql:// DSN."""
    checkpoint: Path
    executor: PublicKey | None
    operators: Mapping[str, PublicKey]
    lanes: tuple[Lane, ...]
    gates: Mapping[Gate, str]
    ci_triggers: tuple[str, ...] | None = None
    """None: the policy has no [ci] table, so the CI/deploy scope is UNKNOWN."""
    signed_evidence: bool = False
    """Evidence counts only when the executor's key signed the packet (governance/evidence.py)."""
    impact_limits: Mapping[Limit, int] = field(default_factory=dict)
    """The policy's `[impact]` limits (also `Policy.impact_limits`): a production lane holds a
    change whose measured impact is over one (governance/lanes.py)."""

    def lane(self, name: str) -> Lane:
        for lane in self.lanes:
            if lane.name == name:
                return lane
        raise UsageError(
            f"no lane {name!r} in the policy; lanes: {', '.join(x.name for x in self.lanes)}"
        )

    def below(self, name: str) -> tuple[Lane, ...]:
        """The lanes under `name` in the ladder, lowest first."""
        names = [x.name for x in self.lanes]
        return self.lanes[: names.index(self.lane(name).name)]

    def above(self, name: str) -> tuple[Lane, ...]:
        names = [x.name for x in self.lanes]
        return self.lanes[names.index(self.lane(name).name) + 1 :]

    @property
    def first(self) -> Lane:
        return self.lanes[0]

    def operator_name(self, key_id: str) -> str | None:
        return next((n for n, k in self.operators.items() if k.key_id == key_id), None)


@dataclass(frozen=True, slots=True)
class Policy:
    path: Path | None
    sha256: str | None
    production_sources: tuple[str, ...] = ()
    forbidden_objects: tuple[str, ...] = ()
    forbidden_files: tuple[str, ...] = ()
    forbidden_env: tuple[str, ...] = ()
    undeclared_reads: ReadMode = ReadMode.DENY
    governance: Governance | None = field(default=None, compare=False)
    secret_columns: tuple[str, ...] = ()
    """`[secrets] columns`: "table.column" patterns whose values a report never shows (it
    names them in `columns_redacted`). Read from the file even when the ledger decides the
    rest: withholding a value never changes a verdict."""
    impact_limits: Mapping[Limit, int] = field(default_factory=dict)
    """`[impact]`: limits on a change's measured impact (core.impact); a change over one is
    held for production lanes. Governed, they are the ledger's, like everything else."""

    @property
    def directory(self) -> Path:
        return Path.cwd() if self.path is None else self.path.parent

    def describe(self) -> dict[str, Any]:
        return {"path": None if self.path is None else str(self.path), "sha256": self.sha256}

    def governed(self) -> Governance:
        """The governance section, or a usage error naming what is missing."""
        if self.governance is None:
            where = self.path or f"./{POLICY_FILE} (none found)"
            raise UsageError(
                f"{where}: this needs a governed policy (a [governance] table); "
                "`rollproof init` writes one"
            )
        return self.governance


EMPTY_POLICY = Policy(path=None, sha256=None)


def _is_strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


class _Reader:
    """Typed access to the parsed TOML, every error naming the file and the key."""

    def __init__(self, shown: str, data: dict[str, Any], base: Path) -> None:
        self.shown = shown
        self.data = data
        self.base = base

    def fail(self, message: str, key: str | None = None) -> PolicyError:
        return PolicyError(self.shown, message, key)

    def strings(self, section: str, key: str) -> tuple[str, ...]:
        value = self.data.get(section, {}).get(key, [])
        if not _is_strings(value):
            raise self.fail("must be a list of non-empty strings", f"{section}.{key}")
        return tuple(value)

    def text(self, section: str, key: str, default: str) -> str:
        value = self.data.get(section, {}).get(key, default)
        if not isinstance(value, str) or not value:
            raise self.fail("must be a non-empty string", f"{section}.{key}")
        return value

    def public_key(self, value: Any, key: str) -> PublicKey:
        if not isinstance(value, str) or not value.strip():
            raise self.fail("must be a public key file path or an inline PEM public key", key)
        try:
            if value.lstrip().startswith(_PEM_START):
                return public_key_from_pem(value.strip().encode("ascii"), where=key)
            return load_public_key(self.base / value)
        except (KeyFileError, UnicodeEncodeError) as e:
            raise self.fail(str(e), key) from e


def _check_sections(r: _Reader) -> None:
    for section, value in r.data.items():
        if section not in _SECTIONS and section not in _FREE_SECTIONS:
            raise r.fail("unknown section", section)
        if section == "lanes":
            continue
        if not isinstance(value, dict):
            raise r.fail("must be a table", section)
        if section in _SECTIONS:
            for key in value:
                if key not in _SECTIONS[section]:
                    raise r.fail("unknown key", f"{section}.{key}")
    if "governance" not in r.data:
        present = [s for s in _GOVERNED_ONLY if s in r.data]
        if present:
            raise r.fail(f"[{present[0]}] needs a [governance] table (rollproof init)", present[0])


def _lane(r: _Reader, raw: Any, index: int) -> Lane:
    where = f"lanes[{index}]"
    if not isinstance(raw, dict):
        raise r.fail("must be a table ([[lanes]])", where)
    unknown = sorted(set(raw) - _LANE_KEYS)
    if unknown:
        raise r.fail("unknown key", f"{where}.{unknown[0]}")
    name = raw.get("name")
    if not isinstance(name, str) or not _ID.fullmatch(name):
        raise r.fail("must be an id (letters, digits, '.', '_', '-')", f"{where}.name")
    where = f"lanes.{name}"
    kind = raw.get("kind", "clone")
    if kind not in {k.value for k in LaneKind}:
        raise r.fail('must be "clone" or "production"', f"{where}.kind")
    flags: dict[str, bool] = {}
    for flag in ("grant", "evidence"):
        value = raw.get(flag, index > 0)
        if not isinstance(value, bool):
            raise r.fail("must be true or false", f"{where}.{flag}")
        flags[flag] = value
    signatures = raw.get("signatures", 1)
    if isinstance(signatures, bool) or not isinstance(signatures, int):
        raise r.fail("must be an integer", f"{where}.signatures")
    if not 1 <= signatures <= MAX_SIGNATURES:
        raise r.fail(f"must be 1 to {MAX_SIGNATURES}", f"{where}.signatures")
    allow = raw.get("allow_unknown", [])
    checks = {c.value for c in Check}
    if not _is_strings(allow) or not set(allow) <= checks:
        raise r.fail(f"must be a list of check names: {', '.join(sorted(checks))}", where)
    return Lane(
        name,
        LaneKind(kind),
        grant=flags["grant"],
        evidence=flags["evidence"],
        signatures=signatures,
        allow_unknown=tuple(Check(c) for c in allow),
    )


def _lanes(r: _Reader) -> tuple[Lane, ...]:
    raw = r.data.get("lanes")
    if raw is None:
        return DEFAULT_LANES
    if not isinstance(raw, list) or not raw:
        raise r.fail("must be one or more [[lanes]] tables", "lanes")
    lanes = tuple(_lane(r, item, i) for i, item in enumerate(raw))
    names = [lane.name for lane in lanes]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise r.fail("appears twice in the ladder", f"lanes.{dup}")
    first = lanes[0]
    if first.kind is not LaneKind.CLONE or first.evidence:
        # The ladder must start where there is nothing below it: a clone rehearsal.
        raise r.fail("the first lane must be a clone lane that needs no evidence", "lanes")
    ungranted = next((x for x in lanes[1:] if not x.grant), None)
    if ungranted is not None:
        # DESIGN: every lane past the first needs its own grant.
        raise r.fail("every lane past the first needs a grant", f"lanes.{ungranted.name}.grant")
    seen_production = False
    for lane in lanes:
        if lane.kind is LaneKind.CLONE and seen_production:
            raise r.fail("a clone lane cannot sit above a production lane", f"lanes.{lane.name}")
        seen_production |= lane.kind is LaneKind.PRODUCTION
    return lanes


def _gates(r: _Reader, lanes: tuple[Lane, ...]) -> Mapping[Gate, str]:
    names = {lane.name for lane in lanes}
    gates = dict(DEFAULT_GATES)
    for key, value in r.data.get("gates", {}).items():
        if not isinstance(value, str) or value not in names:
            raise r.fail(f"must name a lane of the ladder: {', '.join(sorted(names))}", key)
        gates[Gate(key)] = value
    return MappingProxyType(gates)


def _governance(r: _Reader, policy_dir: Path) -> Governance | None:
    if "governance" not in r.data:
        return None
    ledger = r.text("governance", "ledger", DEFAULT_LEDGER)
    if "://" not in ledger:
        ledger = str((policy_dir / ledger).resolve())
    elif not ledger.startswith(("postgresql://", "postgres://")):
        raise r.fail("must be a path or a postgresql:// DSN", "governance.ledger")
    checkpoint = (policy_dir / r.text("governance", "checkpoint", DEFAULT_CHECKPOINT)).resolve()
    executor_spec = r.data["governance"].get("executor")
    executor = None if executor_spec is None else r.public_key(executor_spec, "governance.executor")
    operators: dict[str, PublicKey] = {}
    for name, spec in r.data.get("operators", {}).items():
        if not _ID.fullmatch(name):
            raise r.fail("an operator name must be an id", f"operators.{name}")
        key = r.public_key(spec, f"operators.{name}")
        if executor is not None and key.key_id == executor.key_id:
            # Stops the executor from being listed as its own operator: it would mint grants.
            raise r.fail("is the executor's key; the executor cannot be an operator", name)
        if any(k.key_id == key.key_id for k in operators.values()):
            raise r.fail("is listed twice (one key counts once)", f"operators.{name}")
        operators[name] = key
    lanes = _lanes(r)
    ci = r.data.get("ci")
    signed = r.data["governance"].get("signed_evidence", False)
    if not isinstance(signed, bool):
        raise r.fail("must be true or false", "governance.signed_evidence")
    return Governance(
        ledger=ledger,
        checkpoint=checkpoint,
        executor=executor,
        operators=MappingProxyType(operators),
        lanes=lanes,
        gates=_gates(r, lanes),
        ci_triggers=None if ci is None else r.strings("ci", "triggers"),
        signed_evidence=signed,
    )


def load_policy(path: Path | None = None) -> Policy:
    """Load `path`, or `./rollproof.toml` if it exists, or the empty policy."""
    if path is None:
        default = Path(POLICY_FILE)
        if not default.is_file():
            return EMPTY_POLICY
        path = default
    shown = str(path)
    try:
        raw = read_input(path, limit=MAX_POLICY_BYTES)
    except InputFileError as e:
        raise PolicyError(shown, e.reason) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise PolicyError(shown, f"invalid TOML: {e}") from e
    except RecursionError:
        raise PolicyError(shown, "invalid TOML: nested too deeply") from None

    resolved = path.resolve()
    r = _Reader(shown, data, resolved.parent)
    _check_sections(r)
    mode = data.get("enforcement", {}).get("undeclared_reads", "deny")
    if mode not in {m.value for m in ReadMode}:
        raise PolicyError(shown, 'must be "deny" or "report"', "enforcement.undeclared_reads")
    governance = _governance(r, resolved.parent)
    try:
        impact_limits = parse_limits(data.get("impact", {}))
    except LimitError as e:
        raise PolicyError(shown, e.message, e.key) from None
    if governance is not None:
        governance = replace(governance, impact_limits=impact_limits)
    ci_files = () if governance is None else governance.ci_triggers or ()
    return Policy(
        path=resolved,
        sha256=sha256_hex(raw),
        production_sources=r.strings("production", "sources"),
        forbidden_objects=r.strings("forbidden", "objects"),
        # CI/deploy triggers are forbidden files too: a rehearsal must leave them untouched.
        forbidden_files=tuple(dict.fromkeys(r.strings("forbidden", "files") + ci_files)),
        forbidden_env=r.strings("forbidden", "env"),
        undeclared_reads=ReadMode(mode),
        governance=governance,
        secret_columns=r.strings("secrets", "columns"),
        impact_limits=impact_limits,
    )


# --- the policy as the ledger records it ----------------------------------------------------

POLICY_DOCUMENT_SCHEMA = "rollproof/policy/v1"
LEDGER_POLICY = "the ledger's policy"
_DOCUMENT_KEYS = frozenset(
    {
        "schema",
        "production_sources",
        "forbidden_objects",
        "forbidden_files",
        "forbidden_env",
        "undeclared_reads",
        "executor",
        "operators",
        "lanes",
        "gates",
        "ci_triggers",
        "signed_evidence",
    }
)
_OPTIONAL_DOCUMENT_KEYS = frozenset({"impact_limits"})
"""Written only when set, so a policy without them keeps the document (and sha256) it had."""


def _key_b64(key: PublicKey) -> str:
    return base64.b64encode(key.raw).decode("ascii")


def policy_document(policy: Policy) -> dict[str, Any]:
    """The canonical content of a governed policy, as a `policy.set` event records it.

    Everything that decides anything: production sources, forbidden surfaces, read mode, the
    executor and operator keys (their bytes, not the paths to them: a key file swapped under the
    policy is a different policy), the ladder and gates with every default filled in, the CI
    scope and `signed_evidence`, and the impact limits when there are any. Not the ledger's or
    checkpoint's location: those say where the policy in force is read from."""
    gov = policy.governed()
    optional: dict[str, Any] = {}
    if policy.impact_limits:
        optional["impact_limits"] = limits_json(policy.impact_limits)
    return optional | {
        "schema": POLICY_DOCUMENT_SCHEMA,
        "production_sources": list(policy.production_sources),
        "forbidden_objects": list(policy.forbidden_objects),
        "forbidden_files": list(policy.forbidden_files),
        "forbidden_env": list(policy.forbidden_env),
        "undeclared_reads": str(policy.undeclared_reads),
        "executor": None if gov.executor is None else _key_b64(gov.executor),
        "operators": {name: _key_b64(key) for name, key in gov.operators.items()},
        "lanes": [
            {
                "name": lane.name,
                "kind": str(lane.kind),
                "grant": lane.grant,
                "evidence": lane.evidence,
                "signatures": lane.signatures,
                "allow_unknown": [str(c) for c in lane.allow_unknown],
            }
            for lane in gov.lanes
        ],
        "gates": {str(gate): gov.gates[gate] for gate in Gate},
        "ci_triggers": None if gov.ci_triggers is None else list(gov.ci_triggers),
        "signed_evidence": gov.signed_evidence,
    }


def policy_document_sha256(document: Mapping[str, Any]) -> str:
    """The sha256 of a policy document's canonical JSON (RFC 8785)."""
    return sha256_hex(canonical_json(dict(document)))


def _raw_key(r: _Reader, value: Any, key: str) -> PublicKey:
    try:
        raw = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
        if base64.b64encode(raw).decode("ascii") != value:
            raise ValueError("not canonical base64")
        return PublicKey(raw)
    except (binascii.Error, ValueError):
        raise r.fail("must be base64 of a 32-byte Ed25519 public key", key) from None


def policy_from_document(
    document: Any, *, ledger: str, checkpoint: Path, file: Policy | None = None
) -> Policy:
    """The `Policy` a ledger's policy document says, checked as strictly as the file is.

    `ledger` and `checkpoint` (where the policy in force was read from) and the file's path and
    sha256 come from `file`, the policy file that named the ledger (None: no file)."""
    r = _Reader(LEDGER_POLICY, {}, Path())
    if (
        not isinstance(document, dict)
        or not _DOCUMENT_KEYS <= set(document) <= _DOCUMENT_KEYS | _OPTIONAL_DOCUMENT_KEYS
    ):
        raise r.fail(
            f"must be an object with exactly the keys {sorted(_DOCUMENT_KEYS)} "
            f"(and optionally {sorted(_OPTIONAL_DOCUMENT_KEYS)})"
        )
    if document["schema"] != POLICY_DOCUMENT_SCHEMA:
        raise r.fail(f"must be {POLICY_DOCUMENT_SCHEMA}", "schema")
    for name in ("production_sources", "forbidden_objects", "forbidden_files", "forbidden_env"):
        if not _is_strings(document[name]):
            raise r.fail("must be a list of non-empty strings", name)
    if document["undeclared_reads"] not in {m.value for m in ReadMode}:
        raise r.fail('must be "deny" or "report"', "undeclared_reads")
    executor = None
    if document["executor"] is not None:
        executor = _raw_key(r, document["executor"], "executor")
    raw_operators = document["operators"]
    if not isinstance(raw_operators, dict):
        raise r.fail("must be an object of name: key", "operators")
    operators: dict[str, PublicKey] = {}
    for name, value in raw_operators.items():
        if not _ID.fullmatch(name):
            raise r.fail("an operator name must be an id", f"operators.{name}")
        key = _raw_key(r, value, f"operators.{name}")
        if executor is not None and key.key_id == executor.key_id:
            raise r.fail("is the executor's key; the executor cannot be an operator", name)
        if any(k.key_id == key.key_id for k in operators.values()):
            raise r.fail("is listed twice (one key counts once)", f"operators.{name}")
        operators[name] = key
    raw_lanes = document["lanes"]
    if not isinstance(raw_lanes, list) or any(
        not isinstance(x, dict) or set(x) != _LANE_KEYS for x in raw_lanes
    ):
        raise r.fail(f"each lane must have exactly the keys {sorted(_LANE_KEYS)}", "lanes")
    gates_doc = document["gates"]
    if not isinstance(gates_doc, dict) or set(gates_doc) != {str(g) for g in Gate}:
        raise r.fail("must name a lane for every gate", "gates")
    if not all(isinstance(v, str) for v in gates_doc.values()):
        raise r.fail("must name a lane for every gate", "gates")
    # As in the file: a gate left at its default may name a lane the ladder lacks (it never
    # opens); a gate set to anything else must name a lane of the ladder.
    changed = {k: v for k, v in gates_doc.items() if v != DEFAULT_GATES[Gate(k)]}
    r.data = {"lanes": raw_lanes, "gates": changed}
    lanes = _lanes(r)
    ci = document["ci_triggers"]
    if ci is not None and not _is_strings(ci):
        raise r.fail("must be null or a list of non-empty strings", "ci_triggers")
    if not isinstance(document["signed_evidence"], bool):
        raise r.fail("must be true or false", "signed_evidence")
    try:
        impact_limits = parse_limits(document.get("impact_limits", {}), "impact_limits")
    except LimitError as e:
        raise r.fail(e.message, e.key) from None
    if "impact_limits" in document and not impact_limits:
        raise r.fail("is written only when it names a limit", "impact_limits")
    governance = Governance(
        ledger=ledger,
        checkpoint=checkpoint,
        executor=executor,
        operators=MappingProxyType(operators),
        lanes=lanes,
        gates=_gates(r, lanes),
        ci_triggers=None if ci is None else tuple(ci),
        signed_evidence=document["signed_evidence"],
        impact_limits=impact_limits,
    )
    return Policy(
        path=None if file is None else file.path,
        sha256=None if file is None else file.sha256,
        production_sources=tuple(document["production_sources"]),
        forbidden_objects=tuple(document["forbidden_objects"]),
        forbidden_files=tuple(document["forbidden_files"]),
        forbidden_env=tuple(document["forbidden_env"]),
        undeclared_reads=ReadMode(document["undeclared_reads"]),
        governance=governance,
        secret_columns=() if file is None else file.secret_columns,
        impact_limits=impact_limits,
    )
