"""`rollproof probe`: rollproof's own gates probed with bad inputs, and probes.json in packets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rollproof.assurance.selftest import sample_probes
from rollproof.core.canonical import canonical_json
from rollproof.verify.governance_layer import seal_json
from rollproof.verify.layout import GOVERNANCE_FILES, GOVERNANCE_SEAL, PROBES_JSON, TREE_HASH
from tests.test_governance_cli import Workspace, make_workspace

LINE = "Bad-input probes {n}/{n} fail closed; no token leaked; control allowed"


@pytest.fixture
def ws(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Workspace:
    return make_workspace(tmp_path, monkeypatch, capsys)


def test_probe_json_lists_every_probe_failing_closed_and_the_control_allowed(
    ws: Workspace,
) -> None:
    ledger_before = ws.ledger.read_bytes()
    result = ws.run("probe", "--json")
    doc = json.loads(result.out)
    failed = [p["name"] for p in doc["probes"] if not p["passed"]]
    assert result.code == 0, (failed, ws.run("probe", *(f"--only={n}" for n in failed)).out)
    probes = doc["probes"]
    assert len(probes) >= 25
    for probe in probes:
        assert set(probe) >= {"name", "expected", "observed", "passed", "leaked"}
        assert probe["passed"] is True, probe
        assert probe["leaked"] is False, probe
        assert probe["expected"]["exit"] not in (0, 70), probe
        assert probe["observed"] == {"exit": probe["expected"]["exit"], "contains": True}
    assert doc["control"]["allowed"] is True
    assert doc["control"]["observed"]["exit"] == 0
    assert doc["verdict"] == "PASS"
    names = {p["name"] for p in probes}
    assert {
        "grant-forged",
        "grant-expired",
        "grant-replayed",
        "grant-wrong-lane",
        "grant-wrong-change",
        "grant-self-signed",
        "grant-wrong-target",
        "undeclared-write",
        "forbidden-read",
        "packet-byte-flipped",
        "packet-file-added",
        "packet-file-removed",
        "packet-no-mutation-fabricated",
        "validator-pin-mismatch",
        "secret-dsn-unreachable",
        "change-path-escape",
        "symlinked-script",
        "fifo-script",
        "policy-edit-not-adopted",
        "decision-by-non-operator",
        "production-grant-without-evidence",
    } <= names
    assert ws.ledger.read_bytes() == ledger_before  # the workspace's own ledger is never touched


def test_a_wrong_expectation_is_reported_failed_and_the_command_exits_1(ws: Workspace) -> None:
    result = ws.run("probe", "--only", "fifo-script", "--expect-exit", "fifo-script=3", "--json")
    assert result.code == 1
    doc = json.loads(result.out)
    [probe] = doc["probes"]
    assert probe["name"] == "fifo-script"
    assert probe["passed"] is False
    assert probe["observed"]["exit"] == 2
    assert doc["verdict"] == "FAIL"
    text = ws.run("probe", "--only", "fifo-script", "--expect-exit", "fifo-script=3")
    assert text.code == 1
    assert "FAIL fifo-script: expected exit 3" in text.out
    assert "Bad-input probes 0/1 fail closed" in text.out


def test_an_unknown_probe_name_is_bad_input(ws: Workspace) -> None:
    result = ws.run("probe", "--only", "no-such-probe")
    assert result.code == 2
    assert "no such probe: no-such-probe" in result.err


def _governed_packet(ws: Workspace) -> Path:
    ws.ok("rehearse", ws.change, "--source", ws.dsn, "--out", "packets/p", "--lane",
          "rehearsal-clone")  # fmt: skip
    return ws.dir / "packets" / "p"


def test_a_governed_packet_carries_probes_json_validated_and_in_its_checkpoint(
    ws: Workspace,
) -> None:
    packet = _governed_packet(ws)
    seal = json.loads((packet / GOVERNANCE_SEAL).read_bytes())
    assert [f["path"] for f in seal["files"]] == list(GOVERNANCE_FILES)
    doc = json.loads((packet / PROBES_JSON).read_bytes())
    assert doc["schema"] == "rollproof/probes/v1"
    assert doc["verdict"] == "PASS"
    n = doc["summary"]["total"]
    assert n >= 25
    ws.ok("validate", "packets/p")
    checkpoint = (packet / "governance" / "checkpoint.md").read_text()
    assert LINE.format(n=n) in checkpoint
    assert LINE.format(n=n) in ws.ok("status", "add-item-note").out


def _reseal(packet: Path, probes: dict[str, object]) -> None:
    (packet / PROBES_JSON).write_bytes(canonical_json(probes))
    layer = {p: (packet / p).read_bytes() for p in GOVERNANCE_FILES}
    tree = (packet / TREE_HASH).read_text().strip()
    (packet / GOVERNANCE_SEAL).write_bytes(seal_json(layer, tree))


def test_a_forged_probes_json_is_rejected(ws: Workspace) -> None:
    packet = _governed_packet(ws)
    doc = json.loads((packet / PROBES_JSON).read_bytes())
    # a failed probe kept under a PASS summary and verdict, the layer resealed
    doc["probes"][0]["observed"]["exit"] = 0
    _reseal(packet, doc)
    result = ws.run("validate", "packets/p")
    assert result.code == 1
    assert "INVALID PROBES_CONTRADICT governance/probes.json" in result.out
    # a self-consistent FAIL probes.json under decision.json's overall PASS
    _reseal(packet, sample_probes(failed="grant-forged"))
    result = ws.run("validate", "packets/p")
    assert result.code == 1
    assert "PROBES_CONTRADICT" in result.out
    assert "decision.json's overall is PASS" in result.out


def test_a_probe_that_did_not_fail_closed_makes_the_governed_run_fail_by_name(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The catalogue a governed rehearsal runs reports a probe that did not fail closed (a real
    run whose expectation for fifo-script is wrong): the run is recorded FAIL, discharges
    nothing, names the probe, and exits 1, never 0 beside a FAIL record. It once exited 0
    and said nothing, so a probe failing under load was invisible until the ledger was read."""
    from rollproof.assurance.probes import run_probes
    from rollproof.governance import flow

    doc = run_probes(only=["fifo-script"], expect={"fifo-script": 3}).as_json()
    assert doc["verdict"] == "FAIL"
    monkeypatch.setitem(flow._PROBES_CACHE, flow._code_digest(), doc)
    assert flow.probe_failures(doc) == ("fifo-script (expected exit 3, observed 2)",)

    result = ws.run("rehearse", ws.change, "--source", ws.dsn, "--out", "packets/p", "--lane",
                    "rehearsal-clone")  # fmt: skip
    assert result.code == 1, result.err
    assert (
        "recorded FAIL: 1 probe(s) of rollproof's own gates did not fail closed "
        "(`rollproof probe` shows why): fifo-script (expected exit 3, observed 2)"
    ) in " ".join(result.out.split())
    [record] = ws.state().rehearsals.values()
    assert record.overall.value == "FAIL"
    decision = json.loads((ws.dir / "packets" / "p" / "governance" / "decision.json").read_bytes())
    assert decision["overall"] == "FAIL"
    ws.ok("validate", "packets/p")  # a true record of a FAIL is a valid packet


def test_the_same_governed_run_with_every_probe_failing_closed_exits_0(ws: Workspace) -> None:
    result = ws.run("rehearse", ws.change, "--source", ws.dsn, "--out", "packets/p", "--lane",
                    "rehearsal-clone")  # fmt: skip
    assert result.code == 0, result.err
    assert "recorded FAIL" not in result.out
    [record] = ws.state().rehearsals.values()
    assert record.overall.value == "PASS"
