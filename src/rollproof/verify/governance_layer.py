"""A packet's governance layer: the decision packet, the checkpoint and the addendum, sealed.

Pure: the writer (`rollproof.governance.flow`) builds the layer with `layer_files`, and the
validator checks it with `check_layer`; both use `render_decision_markdown`, so decision.md is
always exactly what decision.json says. Layout in `rollproof.verify.layout`.

Why a second seal: the layer cites the evidence's tree hash (the decision is about *that*
evidence, and the checkpoint names it), so the tree hash cannot cover the layer. GOVERNANCE.json
seals the layer's four files by sha256 and size and names the tree hash it sits on, so the layer
cannot be moved onto other evidence, and nothing in it can change unnoticed.

What `check_layer` refuses (fail closed, in this order):

* files under governance/ without a seal (`FILE_EXTRA`), a seal that is not strict canonical
  JSON of its schema (`JSON_INVALID`, `JSON_NOT_CANONICAL`, `SCHEMA_VIOLATION`), a seal over
  another tree hash or over other than exactly the four layer files (`GOVERNANCE_MISMATCH`);
* a layer file missing, extra, not a regular single-link file, or not of the sealed size and
  sha256 (`FILE_MISSING`, `FILE_EXTRA`, `SYMLINK`/`HARDLINK`/`SPECIAL_FILE`, `SIZE_MISMATCH`,
  `SHA256_MISMATCH`);
* decision.json or addendum.json not strict canonical JSON of their schemas; the schema keeps
  HOLD the first option and the default, `selected` null, and APPLY_NOW YES only with a grant
  named (`SCHEMA_VIOLATION`);
* a decision or addendum about another change or another tree, an addendum whose APPLY_NOW is
  not the decision's, a decision.md that is not decision.json rendered, a checkpoint.md whose
  title names another change (`GOVERNANCE_MISMATCH`);
* probes.json (`rollproof probe --json` of the run) not strict canonical JSON of its schema
  (`SCHEMA_VIOLATION`), or not saying what its own probes give: a probe's `passed` other than
  "observed exit == expected exit, message matched, nothing leaked", a probe expecting exit 0
  (that is no fail-closed gate), the control not expecting 0, a summary or verdict other than
  the recomputed one, or a failed probe (or a leak, or a refused control) under a decision whose
  overall is PASS (`PROBES_CONTRADICT`).

What it cannot know: whether the ledger holds the events the layer describes (`rollproof status`
re-derives the checkpoint from the ledger for that).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rollproof.core.canonical import canonical_json
from rollproof.core.strictjson import StrictJsonError, loads_strict
from rollproof.verify.findings import Finding, FindingCode
from rollproof.verify.layout import (
    ADDENDUM_JSON,
    CHECKPOINT_MD,
    DECISION_JSON,
    DECISION_MD,
    GOVERNANCE_FILES,
    GOVERNANCE_SEAL,
    PROBES_JSON,
    sha256_hex,
)

SEAL_SCHEMA = "rollproof/governance-seal/v1"
DECISION_SCHEMA = "rollproof/decision/v1"
ADDENDUM_SCHEMA = "rollproof/governance-addendum/v1"
PROBES_SCHEMA = "rollproof/probes/v1"
SchemaCheck = Callable[[str, Any, str], list[Finding]]
"""(schema file name, document, packet path) -> findings."""


def seal_json(layer: Mapping[str, bytes], tree_hash: str) -> bytes:
    return canonical_json(
        {
            "schema": SEAL_SCHEMA,
            "tree_hash": tree_hash,
            "files": [
                {"path": p, "sha256": sha256_hex(layer[p]), "size": len(layer[p])}
                for p in sorted(layer)
            ],
        }
    )


def checkpoint_title(change_id: str, date: str) -> str:
    """checkpoint.md's first line; the validator checks that it names the packet's change."""
    return f"# Checkpoint — {change_id} ({date})"


def _md(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def render_decision_markdown(decision: Mapping[str, Any]) -> str:
    """decision.md from decision.json (also what the validator compares decision.md with)."""
    lines = [
        f"# Decision packet — {_md(decision['change_id'])}",
        "",
        f"Evidence: lane {decision['lane']}, overall {decision['overall']}, tree "
        f"`{decision['packet_tree_hash']}`; ledger through event {decision['ledger']['through']} "
        f"(head `{decision['ledger']['head']}`).",
        "",
        f"Default: **{decision['default']}**. Nothing is selected: the operator decides "
        "(`rollproof decide`).",
        "",
        f"APPLY_NOW={decision['apply_now']}"
        + (
            f" (grant `{decision['apply_now_grant']}`)"
            if decision["apply_now_grant"] is not None
            else ""
        ),
        "",
        "## Options",
    ]
    for number, option in enumerate(decision["options"], 1):
        if option["option"] == "HOLD":
            heading = f"### {number}. HOLD (default)"
        else:
            now = "YES" if option["available_now"] else "NO"
            heading = f"### {number}. PROCEED to {option['lane']} — available now: {now}"
        lines += ["", heading, "", _md(option["summary"])]
        if option["needs"]:
            lines.append("")
        for need in option["needs"]:
            mark = "x" if need["met"] else " "
            refs = f" ({', '.join(f'`{_md(r)}`' for r in need['refs'])})" if need["refs"] else ""
            lines.append(f"- [{mark}] {need['need']}: {_md(need['text'])}{refs}")
    return "\n".join(lines) + "\n"


def probe_line(doc: Mapping[str, Any]) -> str:
    """The checkpoint's line about probes.json (its summary, as the validator re-derives it)."""
    s = doc["summary"]
    return (
        f"Bad-input probes {s['failed_closed']}/{s['total']} fail closed; "
        f"{'a token LEAKED' if s['leaked'] else 'no token leaked'}; "
        f"control {'allowed' if s['control_allowed'] else 'REFUSED'}"
    )


def probes_document(probes: list[dict[str, Any]], control: dict[str, Any]) -> dict[str, Any]:
    """The document `rollproof probe --json` prints (and governed packets carry)."""
    passed = sum(1 for p in probes if p["passed"])
    leaked = any(p["leaked"] for p in probes) or control["leaked"]
    ok = passed == len(probes) and control["allowed"]
    return {
        "schema": PROBES_SCHEMA,
        "probes": probes,
        "control": control,
        "summary": {
            "total": len(probes),
            "failed_closed": passed,
            "leaked": leaked,
            "control_allowed": control["allowed"],
        },
        "verdict": "PASS" if ok and not leaked else "FAIL",
    }


def probes_contradictions(doc: Mapping[str, Any]) -> list[str]:
    """What probes.json (already of its schema) says that its own probes do not give."""
    out: list[str] = []
    probes, control = doc["probes"], doc["control"]
    names = [p["name"] for p in probes]
    if len(set(names)) != len(names) or control["name"] in names:
        out.append("probe names repeat")
    for p in [*probes, control]:
        holds = (
            p["observed"]["exit"] == p["expected"]["exit"]
            and p["observed"]["contains"]
            and not p["leaked"]
        )
        if p["passed"] != holds:
            out.append(f"probe {p['name']}: passed={p['passed']} but its outcome gives {holds}")
    for p in probes:
        if p["expected"]["exit"] in (0, 70):
            out.append(f"probe {p['name']} expects exit {p['expected']['exit']}: not fail closed")
    if control["expected"]["exit"] != 0:
        out.append("the control does not expect exit 0")
    if control["allowed"] != control["passed"]:
        out.append("the control's allowed is not its passed")
    passed = sum(1 for p in probes if p["passed"])
    leaked = any(p["leaked"] for p in [*probes, control])
    summary = {
        "total": len(probes),
        "failed_closed": passed,
        "leaked": leaked,
        "control_allowed": control["allowed"],
    }
    if doc["summary"] != summary:
        out.append(f"summary {doc['summary']} is not the recomputed {summary}")
    verdict = "PASS" if passed == len(probes) and control["allowed"] and not leaked else "FAIL"
    if doc["verdict"] != verdict:
        out.append(f"verdict {doc['verdict']} is not the recomputed {verdict}")
    return out


def layer_files(
    decision: Mapping[str, Any],
    addendum: Mapping[str, Any],
    checkpoint_md: str,
    tree_hash: str,
    probes: Mapping[str, Any],
) -> dict[str, bytes]:
    """The governance layer's files and its seal, by packet path."""
    layer = {
        DECISION_JSON: canonical_json(dict(decision)),
        DECISION_MD: render_decision_markdown(decision).encode("utf-8"),
        CHECKPOINT_MD: checkpoint_md.encode("utf-8"),
        ADDENDUM_JSON: canonical_json(dict(addendum)),
        PROBES_JSON: canonical_json(dict(probes)),
    }
    return {**layer, GOVERNANCE_SEAL: seal_json(layer, tree_hash)}


def _mismatch(message: str, path: str) -> Finding:
    return Finding(FindingCode.GOVERNANCE_MISMATCH, message, path)


def _strict(data: bytes, path: str, schema: str, schema_check: SchemaCheck) -> Any | Finding:
    try:
        doc = loads_strict(data)
    except StrictJsonError as e:
        return Finding(FindingCode.JSON_INVALID, str(e), path)
    if canonical_json(doc) != data:
        return Finding(FindingCode.JSON_NOT_CANONICAL, "not RFC 8785 canonical", path)
    found = schema_check(schema, doc, path)
    return found[0] if found else doc


def check_seal(
    seal: bytes, tree_hash: str, schema_check: SchemaCheck
) -> tuple[list[Finding], dict[str, tuple[str, int]]]:
    """The seal's findings, and the sealed files (path -> sha256, size) when it is sound."""
    doc = _strict(seal, GOVERNANCE_SEAL, "governance-seal-v1.schema.json", schema_check)
    if isinstance(doc, Finding):
        return [doc], {}
    if doc["tree_hash"] != tree_hash:
        return [_mismatch(f"seals tree {doc['tree_hash']}, not this packet's", GOVERNANCE_SEAL)], {}
    sealed = {f["path"]: (f["sha256"], f["size"]) for f in doc["files"]}
    paths = [f["path"] for f in doc["files"]]
    if paths != list(GOVERNANCE_FILES):
        return [
            _mismatch(
                f"must seal exactly {', '.join(GOVERNANCE_FILES)}, in that order", GOVERNANCE_SEAL
            )
        ], {}
    return [], sealed


def check_layer_documents(
    files: Mapping[str, bytes],
    *,
    change_id: str,
    tree_hash: str,
    schema_check: SchemaCheck,
) -> tuple[list[Finding], dict[str, Any] | None]:
    """The layer's documents, each file already matching the seal; returns the decision."""
    decision = _strict(files[DECISION_JSON], DECISION_JSON, "decision-v1.schema.json", schema_check)
    if isinstance(decision, Finding):
        return [decision], None
    addendum = _strict(
        files[ADDENDUM_JSON], ADDENDUM_JSON, "governance-addendum-v1.schema.json", schema_check
    )
    if isinstance(addendum, Finding):
        return [addendum], None
    probes = _strict(files[PROBES_JSON], PROBES_JSON, "probes-v1.schema.json", schema_check)
    if isinstance(probes, Finding):
        return [probes], None
    out: list[Finding] = [
        Finding(FindingCode.PROBES_CONTRADICT, why, PROBES_JSON)
        for why in probes_contradictions(probes)
    ]
    if not out and probes["verdict"] != "PASS" and decision["overall"] == "PASS":
        out.append(
            Finding(
                FindingCode.PROBES_CONTRADICT,
                "a probe did not fail closed, yet decision.json's overall is PASS",
                PROBES_JSON,
            )
        )
    for path, doc in ((DECISION_JSON, decision), (ADDENDUM_JSON, addendum)):
        if doc["change_id"] != change_id:
            out.append(_mismatch(f"is about change {doc['change_id']!r}", path))
        if doc["packet_tree_hash"] != tree_hash:
            out.append(_mismatch("is about another evidence tree", path))
    if addendum["apply_now"] != decision["apply_now"]:
        out.append(_mismatch("APPLY_NOW differs from decision.json's", ADDENDUM_JSON))
    if addendum["lane"] != decision["lane"]:
        out.append(_mismatch("names another lane than decision.json", ADDENDUM_JSON))
    if files[DECISION_MD] != render_decision_markdown(decision).encode("utf-8"):
        out.append(_mismatch("is not decision.json rendered", DECISION_MD))
    try:
        first = files[CHECKPOINT_MD].decode("utf-8").split("\n", 1)[0]
    except UnicodeDecodeError:
        out.append(_mismatch("is not UTF-8 text", CHECKPOINT_MD))
    else:
        if not first.startswith(f"# Checkpoint — {change_id} ("):
            out.append(_mismatch("its title does not name this packet's change", CHECKPOINT_MD))
    return out, (decision if not out else None)
