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
  title names another change (`GOVERNANCE_MISMATCH`).

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
    sha256_hex,
)

SEAL_SCHEMA = "rollproof/governance-seal/v1"
DECISION_SCHEMA = "rollproof/decision/v1"
ADDENDUM_SCHEMA = "rollproof/governance-addendum/v1"
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


def layer_files(
    decision: Mapping[str, Any], addendum: Mapping[str, Any], checkpoint_md: str, tree_hash: str
) -> dict[str, bytes]:
    """The governance layer's files and its seal, by packet path."""
    layer = {
        DECISION_JSON: canonical_json(dict(decision)),
        DECISION_MD: render_decision_markdown(decision).encode("utf-8"),
        CHECKPOINT_MD: checkpoint_md.encode("utf-8"),
        ADDENDUM_JSON: canonical_json(dict(addendum)),
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
    out: list[Finding] = []
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
