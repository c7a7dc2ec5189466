"""Tamper tests for the validator's pure core: one change each, the exact finding asserted.

The packets are real: two tiny rehearsals on a real SQLite file (`rollproof.assurance.selftest`).
Every negative case has a positive twin (the untouched packet validates); cases that test the
logic recompute the manifest and tree hash first, so only the logic can catch them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rollproof.assurance.selftest import (
    CASES,
    Corpus,
    build_corpus,
    edit_canonical,
    edit_report,
    flip_byte,
    leg,
    reseal,
    run_case,
    sign,
)
from rollproof.core.isolation import IsolationCheck, IsolationProof
from rollproof.core.model import Verdict
from rollproof.verify.findings import FindingCode, PacketInvalidError, Stage
from rollproof.verify.layout import (
    ATTESTATION,
    CONTROL_FILES,
    EXIT_CODES_JSON,
    MANIFEST,
    REPORT_JSON,
    Limits,
)
from rollproof.verify.recompute import expected_exit_code, surfaces_verdict_of
from rollproof.verify.validate import PacketTree, check_tree, verify_tree

Files = dict[str, bytes]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return build_corpus(tmp_path_factory.mktemp("corpus"))


def check(files: Files, corpus: Corpus, *, signed: bool = False, **kw: Any) -> list[FindingCode]:
    trusted = (corpus.trusted,) if signed else ()
    report = check_tree(
        PacketTree.from_files(files), trusted_keys=trusted, require_signature=signed, **kw
    )
    assert report.ok == (not report.findings)
    return list(report.codes)


# -- the good packets --------------------------------------------------------------------------


def test_sound_packet_is_valid_and_verdicts_are_the_rehearsals(corpus: Corpus) -> None:
    verified = verify_tree(PacketTree.from_files(corpus.sound))
    result = corpus.results["sound"]
    assert str(verified.overall) == "PASS"
    assert verified.legs == tuple((leg.name, leg.verdict) for leg in result.legs)
    assert verified.exit_code == int(result.exit_code) == 0
    assert verified.signed_by == ()


def test_lossy_packet_is_valid_evidence_of_a_fail(corpus: Corpus) -> None:
    verified = verify_tree(PacketTree.from_files(corpus.lossy))
    assert str(verified.overall) == "FAIL"
    assert dict(verified.legs)["revert"] == "FAIL"
    assert verified.exit_code == 1


def test_signed_packet_is_valid_with_its_key(corpus: Corpus) -> None:
    verified = verify_tree(
        PacketTree.from_files(corpus.signed),
        trusted_keys=(corpus.trusted,),
        require_signature=True,
    )
    assert verified.signed_by == (corpus.trusted.keyid,)


def test_every_stage_runs_on_a_valid_packet(corpus: Corpus) -> None:
    report = check_tree(PacketTree.from_files(corpus.sound))
    assert report.stages_passed == tuple(Stage)


def test_reseal_alone_changes_nothing(corpus: Corpus) -> None:
    assert reseal(corpus.sound) == corpus.sound


# -- the selftest corpus, one named case per check ----------------------------------------------


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in CASES])
def test_selftest_case(case: Any, corpus: Corpus, tmp_path: Path) -> None:
    result = run_case(case, corpus, tmp_path)
    assert result.got.split(" ")[0] == result.expected
    assert result.ok


# -- recomputed verdicts: named tamper cases (one field, then resealed) ---------------------


def _set_verdict(name: str, verdict: str) -> Callable[[dict[str, Any]], None]:
    def change(report: dict[str, Any]) -> None:
        leg(report, name)["verdict"] = verdict

    return change


def _no_mutation_everywhere(report: dict[str, Any]) -> None:
    for x in report["legs"]:
        if "after_apply" in x["fingerprints"]:
            x["fingerprints"]["after_apply"] = report["source"]["fingerprint"]


def _drop_lossy_revert_points(report: dict[str, Any]) -> None:
    r = leg(report, "revert")
    del r["fingerprints"]["after_revert"]
    r.update(verdict="NOT_APPLICABLE", invariants=[], differences=[], reason="hidden")


RECOMPUTE_CASES = [
    pytest.param(
        "sound",
        _no_mutation_everywhere,
        FindingCode.NO_MUTATION_FABRICATED,
        id="no-mutation-in-every-leg",
    ),
    pytest.param(
        "sound",
        _set_verdict("restore", "FAIL"),
        FindingCode.LEG_VERDICT_CONTRADICTS,
        id="fail-recorded-over-passing-fingerprints",
    ),
    pytest.param(
        "lossy",
        _set_verdict("revert", "PASS"),
        FindingCode.LEG_VERDICT_CONTRADICTS,
        id="pass-recorded-over-failing-fingerprints",
    ),
    pytest.param(
        "lossy",
        _set_verdict("revert", "NOT_APPLICABLE"),
        FindingCode.LEG_VERDICT_CONTRADICTS,
        id="failed-leg-relabelled-not-applicable",
    ),
    pytest.param(
        "sound",
        lambda r: leg(r, "transaction")["invariants"][0].update(holds=False),
        FindingCode.LEG_INVARIANTS_MISMATCH,
        id="invariant-recorded-as-broken",
    ),
    pytest.param(
        "sound",
        lambda r: leg(r, "read-only")["fingerprints"].update(
            after_apply=r["source"]["fingerprint"]
        ),
        FindingCode.LEG_POINTS_INCOMPLETE,
        id="point-of-another-leg",
    ),
    pytest.param(
        "sound", lambda r: r["legs"].reverse(), FindingCode.LEGS_MALFORMED, id="legs-out-of-order"
    ),
    pytest.param(
        "sound",
        lambda r: r["legs"].append(r["legs"][-1]),
        FindingCode.LEGS_MALFORMED,
        id="leg-duplicated",
    ),
    pytest.param(
        "sound",
        lambda r: r.update(overall="UNKNOWN"),
        FindingCode.OVERALL_CONTRADICTS,
        id="overall-unknown-over-passing-legs",
    ),
    pytest.param(
        "sound",
        lambda r: r["surfaces"]["observed"].update(undeclared=["items"]),
        FindingCode.OVERALL_CONTRADICTS,
        id="surfaces-fail-but-pass-recorded",
    ),
    pytest.param(
        "sound",
        lambda r: r["source"].update(
            fingerprint=leg(r, "transaction")["fingerprints"]["after_apply"]
        ),
        FindingCode.LEG_BEFORE_NOT_SOURCE,
        id="source-fingerprint-swapped",
    ),
    pytest.param(
        "lossy",
        lambda r: r.update(overall="PASS", summary=r["summary"].replace(": FAIL (", ": PASS (")),
        FindingCode.OVERALL_CONTRADICTS,
        id="overall-and-summary-pass",
    ),
]


@pytest.mark.parametrize(("packet", "change", "expected"), RECOMPUTE_CASES)
def test_recomputed_verdict_tamper(
    corpus: Corpus, packet: str, change: Callable[[dict[str, Any]], None], expected: FindingCode
) -> None:
    original: Files = getattr(corpus, packet)
    assert check(original, corpus) == []  # the positive twin
    tampered = edit_report(original, change)
    codes = check(tampered, corpus)
    assert codes
    assert codes[0] is expected
    with pytest.raises(PacketInvalidError) as info:
        verify_tree(PacketTree.from_files(tampered))
    assert info.value.findings[0].code is expected


def test_hiding_a_failed_leg_as_not_applicable(corpus: Corpus) -> None:
    """Dropping the revert leg's last fingerprint and calling it NOT_APPLICABLE leaves its
    fingerprint file unreferenced; removing that too leaves an overall FAIL that the
    remaining legs no longer give."""
    tampered = edit_report(corpus.lossy, _drop_lossy_revert_points)
    assert check(tampered, corpus)[0] is FindingCode.FINGERPRINT_UNREFERENCED
    orphan = json.loads(corpus.lossy[REPORT_JSON])
    digest = leg(orphan, "revert")["fingerprints"]["after_revert"].removeprefix("sha256:")
    tampered = reseal({p: d for p, d in tampered.items() if p != f"fingerprints/{digest}.json"})
    assert check(tampered, corpus)[0] is FindingCode.OVERALL_CONTRADICTS


def test_a_fabricated_packet_fails_even_with_a_fresh_signature(corpus: Corpus) -> None:
    """Signing does not launder fabricated evidence: the logic runs before the signature."""
    tampered = sign(edit_report(corpus.sound, _no_mutation_everywhere), corpus.key)
    assert check(tampered, corpus, signed=True)[0] is FindingCode.NO_MUTATION_FABRICATED


def test_exit_code_of_a_held_rehearsal(corpus: Corpus) -> None:
    """Isolation not proven gives exit 3 whatever the legs say; the record must say 3."""

    def unprove(report: dict[str, Any]) -> None:
        report["isolation"]["checks"][0]["holds"] = False
        report["isolation"]["verdict"] = "NOT_PROVEN"
        report["summary"] = report["summary"].replace(
            "PROVEN_ISOLATED_NOT_PRODUCTION", "NOT_PROVEN"
        )

    held = edit_report(corpus.sound, unprove)
    assert check(held, corpus)[0] is FindingCode.EXIT_CODE_CONTRADICTS
    fixed = edit_canonical(held, EXIT_CODES_JSON, lambda d: d["commands"][0].update(exit_code=3))
    assert check(fixed, corpus)[0] is FindingCode.SCRIPT_MISMATCH  # commands.sh expects 0


# -- exhaustive: every byte of every file, every file deleted, added, renamed ----------------


def test_every_single_byte_flip_is_rejected(corpus: Corpus) -> None:
    packet = corpus.signed
    accepted = []
    for path, data in sorted(packet.items()):
        for i in range(len(data)):
            files = {**packet, path: flip_byte(data, i)}
            if check(files, corpus, signed=True) == []:
                accepted.append((path, i))
    assert accepted == []
    assert check(packet, corpus, signed=True) == []


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_deleting_any_file_is_rejected(corpus: Corpus, signed: bool) -> None:
    packet = corpus.signed if signed else corpus.sound
    for path in sorted(packet):
        files = {p: d for p, d in packet.items() if p != path}
        codes = check(files, corpus, signed=signed)
        assert codes, path
        expected = {
            MANIFEST: FindingCode.MANIFEST_MISSING,
            ATTESTATION: FindingCode.SIGNATURE_MISSING,
        }.get(path, FindingCode.FILE_MISSING)
        assert codes[0] is expected, path


def test_adding_a_file_anywhere_is_rejected(corpus: Corpus) -> None:
    dirs = sorted({p.rpartition("/")[0] for p in corpus.sound})
    for d in dirs:
        for name in ("extra.txt", "report.json.orig", "x.json"):
            path = f"{d}/{name}" if d else name
            files = {**corpus.sound, path: b"added\n"}
            assert check(files, corpus)[:1] == [FindingCode.FILE_EXTRA], path
    attestation_without_key = {**corpus.sound, ATTESTATION: b"{}"}
    assert check(attestation_without_key, corpus)[0] is FindingCode.ATTESTATION_MALFORMED


def test_renaming_any_file_is_rejected(corpus: Corpus) -> None:
    for path in sorted(corpus.sound):
        files = {p: d for p, d in corpus.sound.items() if p != path}
        files[path + ".renamed"] = corpus.sound[path]
        codes = check(files, corpus)
        expected = (
            FindingCode.MANIFEST_MISSING
            if path == MANIFEST
            else (FindingCode.FILE_MISSING if path in CONTROL_FILES else FindingCode.FILE_RENAMED)
        )
        assert codes[:1] == [expected], path


def test_renaming_any_file_and_resealing_is_rejected(corpus: Corpus) -> None:
    for path in sorted(corpus.sound):
        if path in CONTROL_FILES:
            continue
        files = {p: d for p, d in corpus.sound.items() if p != path}
        head, _, name = path.rpartition("/")
        files[f"{head}/renamed-{name}" if head else f"renamed-{name}"] = corpus.sound[path]
        assert check(reseal(files), corpus) != [], path


# -- limits and findings as data -------------------------------------------------------------


@pytest.mark.parametrize(
    "limits",
    [
        pytest.param(Limits(max_files=3), id="count"),
        pytest.param(Limits(max_depth=1), id="depth"),
        pytest.param(Limits(max_file_bytes=100), id="file-size"),
        pytest.param(Limits(max_total_bytes=1000), id="total-size"),
    ],
)
def test_limits(corpus: Corpus, limits: Limits) -> None:
    assert check(corpus.sound, corpus, limits=limits)[0] is FindingCode.LIMIT_EXCEEDED


def test_an_exception_inside_is_a_rejection_not_a_crash(corpus: Corpus) -> None:
    """A stage that raises (here: a bad argument reaching the limits stage) rejects."""
    report = check_tree(PacketTree.from_files(corpus.sound), limits=None)  # type: ignore[arg-type]
    assert report.codes == (FindingCode.VALIDATOR_EXCEPTION,)
    assert report.packet is None


def test_findings_are_printable_and_serialisable(corpus: Corpus) -> None:
    tampered = edit_report(corpus.lossy, lambda r: r.update(overall="PASS"))
    report = check_tree(PacketTree.from_files(tampered))
    assert str(report.findings[0]).startswith("OVERALL_CONTRADICTS report.json: ")
    assert json.loads(json.dumps([f.to_json() for f in report.findings]))[0]["code"] == (
        "OVERALL_CONTRADICTS"
    )


@pytest.mark.parametrize(
    ("change", "path"),
    [
        pytest.param(
            lambda r: r.update(started_at="2026-13-45T99:00:00Z"),
            REPORT_JSON,
            id="date-out-of-range",
        ),
        pytest.param(lambda r: r.update(finished_at="yesterday"), REPORT_JSON, id="not-a-date"),
        pytest.param(
            lambda r: leg(r, "revert").update(verdict="PASSED"), REPORT_JSON, id="verdict-misspelt"
        ),
        pytest.param(
            lambda r: leg(r, "revert").update(approved=True), REPORT_JSON, id="unknown-leg-field"
        ),
        pytest.param(
            lambda r: r["surfaces"].update(waived=True), REPORT_JSON, id="unknown-surfaces-field"
        ),
        pytest.param(
            lambda r: r.update(validator_sha256="sha256:abc"),
            REPORT_JSON,
            id="validator-hash-malformed",
        ),
    ],
)
def test_report_schema_violations(
    corpus: Corpus, change: Callable[[dict[str, Any]], None], path: str
) -> None:
    report = check_tree(PacketTree.from_files(edit_report(corpus.sound, change)))
    assert report.codes[0] is FindingCode.SCHEMA_VIOLATION
    assert report.findings[0].path == path


def test_exit_codes_schema(corpus: Corpus) -> None:
    tampered = edit_canonical(
        corpus.sound, EXIT_CODES_JSON, lambda d: d["commands"][0].update(signed_off=True)
    )
    report = check_tree(PacketTree.from_files(tampered))
    assert report.codes[0] is FindingCode.SCHEMA_VIOLATION
    assert report.findings[0].path == EXIT_CODES_JSON


@pytest.mark.parametrize("overall", list(Verdict), ids=str)
@pytest.mark.parametrize("proven", [True, False], ids=["proven", "not-proven"])
def test_recomputed_exit_code_agrees_with_the_rehearsal(
    corpus: Corpus, overall: Verdict, proven: bool
) -> None:
    """The validator's exit-code rule (a pure copy) gives what RehearsalResult.exit_code gives."""
    result = corpus.results["sound"]
    checks = tuple(
        IsolationCheck(c.name, c.holds if proven else None, c.evidence)
        for c in result.isolation.checks
    )
    changed = dataclasses.replace(result, overall=overall, isolation=IsolationProof(checks))
    assert expected_exit_code(changed.isolation.verdict, overall) == changed.exit_code


@pytest.mark.parametrize("packet", ["sound", "lossy"])
def test_recomputed_surfaces_verdict_agrees_with_the_rehearsal(corpus: Corpus, packet: str) -> None:
    result = corpus.results[packet]
    assert surfaces_verdict_of(result.surfaces.to_json()) is result.surfaces.verdict
    failing = dataclasses.replace(result.surfaces, observed_undeclared=("items",))
    assert surfaces_verdict_of(failing.to_json()) is failing.verdict is Verdict.FAIL
