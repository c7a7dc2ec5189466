"""The validator's byte pin and its self-test."""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path

import pytest

from rollproof.assurance.selftest import ATTACKS, CASES, PIN_CASE, Corpus, build_corpus
from rollproof.cli import main
from rollproof.evidence.write import write_tree_atomically
from rollproof.verify.pin import PACKAGE_DIR, VALIDATOR_FILES, validator_listing, validator_sha256

ENTRY_POINTS = ("verify/validate.py", "verify/reader.py")


def _rollproof_imports(rel: str) -> set[str]:
    """Modules of rollproof that `rel` imports, as paths relative to the package."""
    tree = ast.parse((PACKAGE_DIR / rel).read_text("utf-8"))
    out = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rollproof"):
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("rollproof")]
        for name in names:
            path = name.removeprefix("rollproof").lstrip(".").replace(".", "/")
            if path and (PACKAGE_DIR / f"{path}.py").is_file():
                out.add(f"{path}.py")
    return out


def test_validator_files_are_the_import_closure() -> None:
    """Every rollproof module the validator imports is pinned, and nothing else is."""
    seen: set[str] = set()
    todo = list(ENTRY_POINTS)
    while todo:
        rel = todo.pop()
        if rel in seen:
            continue
        seen.add(rel)
        todo.extend(_rollproof_imports(rel) - seen)
    seen.add("verify/pin.py")  # the rule itself
    modules = {f for f in VALIDATOR_FILES if f.endswith(".py")}
    assert modules == seen
    schemas = {f for f in VALIDATOR_FILES if f.startswith("schemas/")}
    assert schemas == {f"schemas/{p.name}" for p in (PACKAGE_DIR / "schemas").glob("*.json")}
    assert list(VALIDATOR_FILES) == sorted(VALIDATOR_FILES)


def test_validator_hash_is_recomputable_with_sha256sum(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["validator-hash"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == validator_sha256()
    assert main(["validator-hash", "--files"]) == 0
    assert capsys.readouterr().out == validator_listing()
    files = [line.split("  ", 1)[1] for line in validator_listing().splitlines()]
    shell = subprocess.run(
        ["sh", "-c", 'sha256sum "$@" | sha256sum', "sh", *files],
        cwd=PACKAGE_DIR,
        capture_output=True,
        text=True,
        check=True,
    )
    assert shell.stdout.split()[0] == printed


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return build_corpus(tmp_path_factory.mktemp("corpus"))


def test_packets_record_the_running_validator(corpus: Corpus) -> None:
    report = json.loads(corpus.sound["report.json"])
    assert report["validator_sha256"] == validator_sha256()


@pytest.mark.parametrize(
    ("pin", "code"),
    [
        pytest.param(None, 0, id="no-pin"),
        pytest.param("running", 0, id="matching-pin"),
        pytest.param("sha256:running", 0, id="matching-tagged-pin"),
        pytest.param("0" * 64, 3, id="other-validator"),
        pytest.param("not-a-hash", 2, id="malformed-pin"),
    ],
)
def test_expect_validator(
    corpus: Corpus,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    pin: str | None,
    code: int,
) -> None:
    packet = write_tree_atomically(tmp_path / "packet", corpus.sound)
    argv = ["validate", str(packet)]
    if pin is not None:
        argv += ["--expect-validator", pin.replace("running", validator_sha256())]
    assert main(argv) == code
    captured = capsys.readouterr()
    if code == 3:
        assert "refusing to give a verdict" in captured.err
        assert "VALID" not in captured.out  # no verdict at all


def test_selftest_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--selftest"]) == 0
    out = capsys.readouterr().out
    for case in (*CASES, *ATTACKS):
        assert f"ok   {case.name}: expected " in out
    assert f"ok   {PIN_CASE}: expected refused" in out
    assert f"selftest passed: {len(CASES) + len(ATTACKS) + 1} cases" in out


def test_selftest_covers_every_finding_a_packet_can_earn() -> None:
    """One named bad case per check: every finding code but the validator's own exception."""
    from rollproof.verify.findings import FindingCode

    covered = {c.expected for c in (*CASES, *ATTACKS) if c.expected is not None}
    uncovered = set(FindingCode) - covered - {FindingCode.VALIDATOR_EXCEPTION}
    assert uncovered == set()


def test_selftest_refuses_with_a_pin_mismatch(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--selftest", "--expect-validator", "0" * 64]) == 3
    assert main(["validate", "--selftest", "somewhere"]) == 2
