"""The packet layout rules and the strict JSON parser, case by case."""

from __future__ import annotations

import hashlib

import pytest

from rollproof.core.strictjson import StrictJsonError, loads_strict
from rollproof.verify.layout import (
    ATTESTATION,
    MANIFEST,
    TREE_HASH,
    case_collisions,
    is_known_payload,
    path_problem,
    seal,
    tree_hash,
    tree_lines,
)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("report.json", id="top-level"),
        pytest.param("change/deploy/V1__init.sql", id="nested"),
        pytest.param("fingerprints/" + "a" * 64 + ".json", id="fingerprint"),
        pytest.param("change/users@v2.sql", id="at-sign"),
    ],
)
def test_valid_paths(path: str) -> None:
    assert path_problem(path) is None


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        pytest.param("", "empty", id="empty"),
        pytest.param("../x", "'..' segment", id="dotdot"),
        pytest.param("change/../../x", "'..' segment", id="dotdot-inside"),
        pytest.param("./x", "'.' or", id="dot"),
        pytest.param("/etc/passwd", "absolute", id="absolute"),
        pytest.param("a//b", "empty", id="empty-segment"),
        pytest.param("a\\b", "backslash", id="backslash"),
        pytest.param("a\nb", "control character", id="newline"),
        pytest.param("a\x7fb", "control character", id="delete"),
        pytest.param("caf\u00e9", "non-ASCII", id="non-ascii"),
        pytest.param(".hidden", "outside", id="leading-dot"),
        pytest.param("-rf", "outside", id="leading-dash"),
        pytest.param("a b", "outside", id="space"),
        pytest.param("/".join(["d"] * 9), "deeper", id="too-deep"),
        pytest.param("x" * 513, "longer", id="too-long"),
    ],
)
def test_invalid_paths(path: str, problem: str) -> None:
    found = path_problem(path)
    assert found is not None
    assert problem in found


def test_case_collisions() -> None:
    assert case_collisions(["report.json", "Report.json"]) == [("Report.json", "report.json")]
    assert case_collisions(["change/a.sql", "Change/b.sql"]) == [("Change", "change")]
    assert case_collisions(["change/a.sql", "change/b.sql", MANIFEST]) == []


def test_layout_knows_its_files() -> None:
    assert is_known_payload("report.json")
    assert is_known_payload("change/anything/deep.sql")
    assert is_known_payload("fingerprints/" + "0" * 64 + ".json")
    assert not is_known_payload("fingerprints/x.json")
    assert not is_known_payload("notes.txt")


def test_tree_hash_is_sha256_of_sha256sum_lines() -> None:
    payload = {"b.txt": b"B", "a/z.txt": b"Z", "a.txt": b"A"}
    digests = {p: hashlib.sha256(d).hexdigest() for p, d in payload.items()}
    lines = tree_lines(digests)
    assert (
        lines
        == (
            f"{digests['a.txt']}  a.txt\n{digests['a/z.txt']}  a/z.txt\n{digests['b.txt']}  b.txt\n"
        ).encode()
    )
    assert tree_hash(digests) == hashlib.sha256(lines).hexdigest()
    sealed = seal(payload)
    assert sealed[TREE_HASH] == (tree_hash(digests) + "\n").encode()
    assert ATTESTATION not in sealed
    with pytest.raises(ValueError, match="control files"):
        seal({**payload, MANIFEST: b"{}"})


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(b'{"a": 1, "a": 2}', "duplicate key", id="duplicate-key"),
        pytest.param(b'{"a": {"b": 1, "b": 1}}', "duplicate key", id="nested-duplicate"),
        pytest.param(b'{"a": NaN}', "NaN", id="nan"),
        pytest.param(b'{"a": Infinity}', "Infinity", id="infinity"),
        pytest.param(b'{"a": -Infinity}', "-Infinity", id="minus-infinity"),
        pytest.param(b'{"a": "\\ud800"}', "lone surrogate", id="lone-surrogate"),
        pytest.param(b'{"\\udfff": 1}', "lone surrogate", id="lone-surrogate-key"),
        pytest.param(b'{"a": 1} {"b": 2}', "Extra data", id="trailing-document"),
        pytest.param(b'{"a": 1}x', "Extra data", id="trailing-garbage"),
        pytest.param(b'\xef\xbb\xbf{"a": 1}', "byte-order mark", id="bom"),
        pytest.param(b'{"a": "\xff"}', "not UTF-8", id="latin-1"),
        pytest.param(b"[" * 100 + b"]" * 100, "nested deeper", id="deep-nesting"),
        pytest.param(b"[" * 100_000, "cannot be parsed", id="recursion-bomb"),
        pytest.param(b"1" * 5000, "cannot be parsed", id="huge-integer"),
        pytest.param(b"", "Expecting value", id="empty"),
    ],
)
def test_strict_json_rejects(data: bytes, reason: str) -> None:
    with pytest.raises(StrictJsonError, match=reason):
        loads_strict(data)


def test_strict_json_accepts_ordinary_documents() -> None:
    assert loads_strict(b'{"a": [1, 2.5, "\\u00e9", null, true]}\n') == {
        "a": [1, 2.5, "\u00e9", None, True]
    }
    assert loads_strict('{"a": "\U0001f600"}'.encode()) == {"a": "\U0001f600"}
