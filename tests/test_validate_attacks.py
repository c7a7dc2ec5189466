"""The attack corpus: forgeries made without the signing key, each rejected with its exact code.

Every forgery is built as an attacker would build it (`rollproof.assurance.selftest.forge`:
edit report.json or exit_codes.json, re-render isolation.json, surfaces.json, report.md,
commands.sh and RERUN.sh with the public renderers, rehash MANIFEST.json and TREE_HASH), so only
the check under test can catch it. The positive twins (`expected` None) are the same process
with an honest edit, and must validate: the re-rendering alone is not what gets caught.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rollproof.assurance.selftest import ATTACKS, Corpus, build_corpus, forge, run_case
from rollproof.core.isolation import ISOLATION_CHECKS
from rollproof.verify.findings import FindingCode
from rollproof.verify.validate import PacketTree, check_tree


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return build_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in ATTACKS])
def test_attack(case: object, corpus: Corpus, tmp_path: Path) -> None:
    result = run_case(case, corpus, tmp_path)  # type: ignore[arg-type]
    assert result.got.split(" ")[0] == result.expected, result.got


def test_the_corpus_is_large_and_has_positive_twins() -> None:
    bad = [c for c in ATTACKS if c.expected is not None]
    good = [c for c in ATTACKS if c.expected is None]
    assert len(bad) >= 30
    assert len(good) >= 2
    assert len({c.name for c in ATTACKS}) == len(ATTACKS)


def test_forging_without_an_edit_reproduces_the_packet_byte_for_byte(corpus: Corpus) -> None:
    """The forger's re-rendering is exactly rollproof's writing: a forgery differs from an
    honest packet only by its edit."""
    assert forge(corpus.sound) == corpus.sound
    assert forge(corpus.lossy) == corpus.lossy


def test_honest_isolation_checks_are_the_engines_documented_set(corpus: Corpus) -> None:
    names = [c.name for c in corpus.results["sound"].isolation.checks]
    assert tuple(names) == ISOLATION_CHECKS["sqlite"]
    assert check_tree(PacketTree.from_files(corpus.sound)).ok


def test_dropping_the_failing_leg_reports_legs_not_requested(corpus: Corpus) -> None:
    from rollproof.assurance.selftest import _drop_leg

    forged = _drop_leg(corpus.lossy, "revert")
    report = check_tree(PacketTree.from_files(forged))
    assert report.codes[0] is FindingCode.LEGS_NOT_REQUESTED
    # twin: the same deletion with the recorded command changed to match is a different,
    # self-consistent rehearsal (one that never asked for the revert leg): valid without a key
    twin = _drop_leg(corpus.lossy, "revert", argv_too=True)
    assert check_tree(PacketTree.from_files(twin)).ok
