"""The canonical encodings: the row-chunk grammar (marshal v0 fast path vs. pure reference) and
RFC 8785 canonical JSON. Every expected byte string here is written out by hand from the
grammar in `rollproof.core.canonical`, so a change in either encoder is caught, not just a mismatch.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import marshal
import math
import random
import struct
import sys

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollproof.core.canonical import (
    KNOWN_ANSWERS,
    MARSHAL_AGREES,
    ROW_CHUNK,
    SEGMENT_ROWS,
    SqlValue,
    canonical_json,
    digest_json,
    encode_rows,
    encode_rows_reference,
    encoded_rows,
    row_digest,
    row_digests,
    sha256_hex,
    table_digest_reference,
    tagged,
)

# -- strategies -------------------------------------------------------------------------------

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
INT_EDGES = st.sampled_from(
    [0, -1, 1, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**15, 2**30, 2**63 - 1, -(2**63)]
)
FLOAT_EDGES = st.sampled_from(
    [
        0.0,
        -0.0,
        math.inf,
        -math.inf,
        math.nan,
        -math.nan,
        5e-324,  # smallest subnormal
        -5e-324,
        2.2250738585072009e-308,  # largest subnormal
        sys.float_info.max,
        0.1,
        1e16,
        1e17,
    ]
)
# Strings as sqlite3 hands them to the encoder: any valid text, plus the lone surrogates the
# engine produces for invalid UTF-8 (surrogateescape), plus surrogates written directly.
ESCAPED_BYTES = st.binary(max_size=12).map(lambda b: b.decode("utf-8", "surrogateescape"))
SURROGATES = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=4)
TEXTS = st.one_of(
    st.text(max_size=12),
    ESCAPED_BYTES,
    SURROGATES,
    st.lists(st.one_of(st.text(max_size=3), SURROGATES), max_size=4).map("".join),
)
SQL_VALUES = st.one_of(
    st.none(),
    INT64,
    INT_EDGES,
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True),
    FLOAT_EDGES,
    TEXTS,
    st.binary(max_size=12),
)
ROWS = st.lists(st.lists(SQL_VALUES, max_size=6).map(tuple), max_size=12)


def _same_value(a: SqlValue, b: SqlValue) -> bool:
    """Type-exact equality, with NaN equal to NaN and -0.0 distinct from 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    return a == b


def _same_rows(a: list[tuple[SqlValue, ...]], b: list[tuple[SqlValue, ...]]) -> bool:
    return len(a) == len(b) and all(
        len(ra) == len(rb) and all(_same_value(x, y) for x, y in zip(ra, rb, strict=True))
        for ra, rb in zip(a, b, strict=True)
    )


# -- active encoder vs reference ------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(ROWS)
def test_active_encoder_equals_reference(rows: list[tuple[SqlValue, ...]]) -> None:
    assert encode_rows(rows) == encode_rows_reference(rows)


@settings(max_examples=60, deadline=None)
@given(ROWS)
def test_reference_is_marshal_v2_and_decodes_back(rows: list[tuple[SqlValue, ...]]) -> None:
    # marshal itself is an independent oracle for the grammar: the reference must produce
    # exactly what marshal v2 produces for a list (less its 5-byte header), and marshal must
    # read the exact rows back (so the encoding is injective on SQL values: -0.0, NaN and
    # lone surrogates included).
    encoded = encode_rows_reference(rows)
    header = b"[" + struct.pack("<I", len(rows))
    assert header + encoded == marshal.dumps(rows, 2)
    decoded = marshal.loads(header + encoded)
    assert isinstance(decoded, list)
    assert _same_rows(decoded, rows)


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="marshal is CPython's format")
def test_marshal_fast_path_is_active_on_cpython() -> None:
    assert MARSHAL_AGREES is True
    rows = [(None, 2**40, -0.0, "x", b"y")]
    assert encode_rows(rows) == marshal.dumps(rows, 2)[5:]


def test_encoding_does_not_depend_on_batching() -> None:
    rows = [(i, float(i), str(i), bytes([i % 256])) for i in range(ROW_CHUNK + 3)]
    whole = encode_rows(rows)
    assert encode_rows(rows[:7]) + encode_rows(rows[7:]) == whole
    assert b"".join(encode_rows([r]) for r in rows) == whole


# -- known answers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        pytest.param(rows, expected, id=f"module-vector-{i}")
        for i, (rows, expected) in enumerate(KNOWN_ANSWERS)
    ],
)
def test_module_known_answers(rows: list[tuple[SqlValue, ...]], expected: bytes) -> None:
    assert encode_rows_reference(rows) == expected
    assert encode_rows(rows) == expected


def _chunk(*rows: bytes) -> bytes:
    return b"".join(rows)


def _row(*values: bytes) -> bytes:
    return b"(" + struct.pack("<I", len(values)) + b"".join(values)


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        pytest.param([], b"", id="no-rows"),
        pytest.param([()], b"(\x00\x00\x00\x00", id="empty-row"),
        pytest.param([(None,)], _chunk(_row(b"N")), id="null"),
        pytest.param([(-1,)], _chunk(_row(b"i\xff\xff\xff\xff")), id="minus-one"),
        pytest.param([(2**31 - 1,)], _chunk(_row(b"i\xff\xff\xff\x7f")), id="i32-max"),
        pytest.param([(-(2**31),)], _chunk(_row(b"i\x00\x00\x00\x80")), id="i32-min"),
        pytest.param(
            # 2**31 + 1 = 1 + 0 * 2**15 + 2 * 2**30: three base-2**15 digits, negative count
            [(-(2**31) - 1,)],
            _chunk(_row(b"l\xfd\xff\xff\xff\x01\x00\x00\x00\x02\x00")),
            id="below-i32-min",
        ),
        pytest.param(
            # 2**63 - 1 is 63 one-bits: four digits 0x7fff and a top digit 7
            [(2**63 - 1,)],
            _chunk(_row(b"l\x05\x00\x00\x00" + b"\xff\x7f" * 4 + b"\x07\x00")),
            id="i64-max",
        ),
        pytest.param([(1.0,)], _chunk(_row(b"g\x00\x00\x00\x00\x00\x00\xf0\x3f")), id="real-one"),
        pytest.param(
            [(0.0, -0.0)],
            _chunk(
                _row(b"g\x00\x00\x00\x00\x00\x00\x00\x00", b"g\x00\x00\x00\x00\x00\x00\x00\x80")
            ),
            id="signed-zero",
        ),
        pytest.param(
            [(math.inf, -math.inf, math.nan)],
            _chunk(
                _row(
                    b"g\x00\x00\x00\x00\x00\x00\xf0\x7f",
                    b"g\x00\x00\x00\x00\x00\x00\xf0\xff",
                    b"g\x00\x00\x00\x00\x00\x00\xf8\x7f",
                )
            ),
            id="non-finite",
        ),
        pytest.param(
            [(5e-324,)], _chunk(_row(b"g\x01\x00\x00\x00\x00\x00\x00\x00")), id="subnormal"
        ),
        pytest.param([(1e17,)], _chunk(_row(b"g\x00\xa0\xd8\x85\x57\x34\x76\x43")), id="exponent"),
        pytest.param([("",)], _chunk(_row(b"u\x00\x00\x00\x00")), id="empty-text"),
        pytest.param([(b"",)], _chunk(_row(b"s\x00\x00\x00\x00")), id="empty-blob"),
        pytest.param([("\x00",)], _chunk(_row(b"u\x01\x00\x00\x00\x00")), id="nul-text"),
        pytest.param(
            # invalid UTF-8 0xff read with surrogateescape, written with surrogatepass
            [("\udcff",)],
            _chunk(_row(b"u\x03\x00\x00\x00\xed\xb3\xbf")),
            id="lone-surrogate",
        ),
        pytest.param(
            [("\U0001f600",)], _chunk(_row(b"u\x04\x00\x00\x00\xf0\x9f\x98\x80")), id="astral"
        ),
        pytest.param(
            [(1,), (b"\xff",)],
            _chunk(_row(b"i\x01\x00\x00\x00"), _row(b"s\x01\x00\x00\x00\xff")),
            id="two-rows",
        ),
    ],
)
def test_hand_written_known_answers(rows: list[tuple[SqlValue, ...]], expected: bytes) -> None:
    assert encode_rows_reference(rows) == expected
    assert encode_rows(rows) == expected


# -- typed, length-prefixed: no collisions between look-alike values ---------------------------


LOOKALIKES: list[SqlValue] = [1, 1.0, "1", b"1", None]


@pytest.mark.parametrize(
    ("a", "b"),
    [pytest.param(a, b, id=f"{a!r}-vs-{b!r}") for a, b in itertools.combinations(LOOKALIKES, 2)],
)
def test_lookalike_values_encode_differently(a: SqlValue, b: SqlValue) -> None:
    assert encode_rows_reference([(a,)]) != encode_rows_reference([(b,)])
    assert encode_rows([(a,)]) != encode_rows([(b,)])


def test_lookalike_values_have_their_own_tags() -> None:
    # the tag byte right after the row header "(" u32
    tags = [encode_rows([(v,)])[5:6] for v in LOOKALIKES]
    assert tags == [b"i", b"g", b"u", b"s", b"N"]


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param([("a3", "b")], [("a", "3b")], id="text-boundary"),
        pytest.param([(b"a3", b"b")], [(b"a", b"3b")], id="blob-boundary"),
        pytest.param([("a", "b")], [("a",), ("b",)], id="row-boundary"),
        pytest.param([(1, 2)], [(1,), (2,)], id="row-boundary-ints"),
        pytest.param([("", "x")], [("x", "")], id="empty-position"),
        pytest.param([(None,)], [()], id="null-vs-no-value"),
    ],
)
def test_boundaries_are_unambiguous(
    a: list[tuple[SqlValue, ...]], b: list[tuple[SqlValue, ...]]
) -> None:
    assert encode_rows_reference(a) != encode_rows_reference(b)
    assert encode_rows(a) != encode_rows(b)


def test_a3_b_vs_a_3b_exact_bytes() -> None:
    assert encode_rows([("a3", "b")]) == _chunk(_row(b"u\x02\x00\x00\x00a3", b"u\x01\x00\x00\x00b"))
    assert encode_rows([("a", "3b")]) == _chunk(_row(b"u\x01\x00\x00\x00a", b"u\x02\x00\x00\x003b"))


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(True, id="bool"),
        pytest.param(1.5j, id="complex"),
        pytest.param([1], id="list"),
        pytest.param(bytearray(b"x"), id="bytearray"),
    ],
)
def test_reference_refuses_non_sql_values(value: object) -> None:
    with pytest.raises(TypeError):
        encode_rows_reference([(value,)])  # type: ignore[list-item]


# -- canonical JSON -----------------------------------------------------------------------------


def test_canonical_json_rfc8785_example() -> None:
    # RFC 8785 section 3.2.2 example input, and its canonical form from section 3.2.3
    value = {
        "numbers": [333333333.33333329, 1e30, 4.50, 2e-3, 0.000000000000000000000000001],
        "string": "\u20ac$\u000f\u000aA'\u0042\u0022\u005c\\\"/",
        "literals": [None, True, False],
    }
    expected = (
        b'{"literals":[null,true,false],'
        b'"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        b'"string":"\xe2\x82\xac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert canonical_json(value) == expected


def test_canonical_json_sorts_keys_by_utf16_code_units_without_whitespace() -> None:
    # U+10000 is the surrogate pair D800 DC00 in UTF-16, so it sorts *before* U+FB01, although
    # its code point is larger: code-point order would give the opposite.
    value = {"\ufb01": 1, "\U00010000": 2, "b": {"z": -0.0, "y": 1e21, "x": 1.0}, "a": []}
    expected = b'{"a":[],"b":{"x":1,"y":1e+21,"z":0},"\xf0\x90\x80\x80":2,"\xef\xac\x81":1}'
    assert canonical_json(value) == expected


def test_canonical_json_ignores_insertion_order() -> None:
    a = {"table": "t", "columns": ["b", "a"], "order": "row-digests"}
    b = {"order": "row-digests", "columns": ["b", "a"], "table": "t"}
    assert canonical_json(a) == canonical_json(b)
    assert canonical_json(a) == b'{"columns":["b","a"],"order":"row-digests","table":"t"}'


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(math.nan, id="nan"),
        pytest.param(math.inf, id="inf"),
        pytest.param({"k": object()}, id="object"),
        pytest.param({1: "non-string key"}, id="int-key"),
    ],
)
def test_canonical_json_refuses_what_json_cannot_say(value: object) -> None:
    with pytest.raises(ValueError, match="cannot be canonicalised"):
        canonical_json(value)


def test_digest_json_is_tagged_sha256_of_canonical_bytes() -> None:
    value = {"b": [1, "x"], "a": None}
    expected_hex = hashlib.sha256(b'{"a":null,"b":[1,"x"]}').hexdigest()
    assert sha256_hex(b'{"a":null,"b":[1,"x"]}') == expected_hex
    assert tagged(expected_hex) == "sha256:" + expected_hex
    assert digest_json(value) == "sha256:" + expected_hex


JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**53) + 1, 2**53 - 1), st.text(max_size=6)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.text(max_size=4), JSON_VALUES, max_size=6))
def test_canonical_json_is_independent_of_key_order(value: dict[str, object]) -> None:
    reordered = dict(reversed(list(value.items())))
    encoded = canonical_json(value)
    assert canonical_json(reordered) == encoded
    assert b"\n" not in encoded
    # canonical form is a fixed point
    assert canonical_json(json.loads(encoded)) == encoded
    assert json.loads(encoded) == value


# -- table digests (fingerprint v3) -------------------------------------------------------------

PK_HEADER = canonical_json({"table": "t", "columns": ["a", "b"], "order": "primary-key"})
RD_HEADER = canonical_json({"table": "t", "columns": ["a", "b"], "order": "row-digests"})


@settings(max_examples=60, deadline=None)
@given(ROWS)
def test_fast_row_digests_equal_the_reference(rows: list[tuple[SqlValue, ...]]) -> None:
    expected = [hashlib.blake2s(encode_rows_reference([r])).digest() for r in rows]
    assert [row_digest(r) for r in rows] == expected
    assert row_digests(rows) == b"".join(expected)


def test_table_digest_known_answers() -> None:
    # Written out so that a change in the definition (segments, the row hash, the sort, the
    # header) is caught here, not found as two machines disagreeing.
    assert row_digest((None, 1, 1.0, "1", b"1")).hex() == (
        "8065094a37db6a863a754b3bf18e461d4b12a6f956a38fbc7c9d80045637ec49"
    )
    assert table_digest_reference(PK_HEADER, "primary-key", [(1, "x"), (2, None)]) == (
        "blake3:397bb4af80262bd4b91ab9515fa1ce06f6e77b43bce9d91b833ba50be104a11e"
    )
    assert table_digest_reference(RD_HEADER, "row-digests", [(1, "x"), (1.0, "x"), (1, "x")]) == (
        "blake3:5aa3718e68c671af726a999b7e6c833f39ac7ce9f62ad452b983e6adadfa487d"
    )
    empty = "blake3:" + blake3.blake3(RD_HEADER).hexdigest()
    assert table_digest_reference(RD_HEADER, "row-digests", []) == empty


def test_primary_key_digest_is_over_fixed_segments() -> None:
    rows = [(i, None) for i in range(SEGMENT_ROWS + 1)]
    segments = [
        blake3.blake3(encode_rows_reference(rows[:SEGMENT_ROWS])).digest(),
        blake3.blake3(encode_rows_reference(rows[SEGMENT_ROWS:])).digest(),
    ]
    expected = "blake3:" + blake3.blake3(PK_HEADER + b"".join(segments)).hexdigest()
    assert table_digest_reference(PK_HEADER, "primary-key", rows) == expected
    # not the version-2 digest, one stream over every row
    stream = "blake3:" + blake3.blake3(PK_HEADER + encode_rows_reference(rows)).hexdigest()
    assert expected != stream


@settings(max_examples=60, deadline=None)
@given(ROWS.filter(bool), st.randoms(use_true_random=False))
def test_row_digests_digest_the_multiset(
    rows: list[tuple[SqlValue, ...]], rnd: random.Random
) -> None:
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    digest = table_digest_reference(RD_HEADER, "row-digests", rows)
    assert table_digest_reference(RD_HEADER, "row-digests", shuffled) == digest
    # one more copy of a row, or one fewer, is another multiset
    assert table_digest_reference(RD_HEADER, "row-digests", [*rows, rows[0]]) != digest
    assert table_digest_reference(RD_HEADER, "row-digests", rows[1:]) != digest
    # and the key order's digest of the same rows is another thing again
    assert table_digest_reference(RD_HEADER, "primary-key", rows) != digest


def test_an_unknown_order_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown table order 'sorted-rows'"):
        table_digest_reference(RD_HEADER, "sorted-rows", [(1,)])


@settings(max_examples=30, deadline=None)
@given(ROWS)
def test_encoded_rows_is_the_encoding(rows: list[tuple[SqlValue, ...]]) -> None:
    assert bytes(encoded_rows(rows)) == encode_rows_reference(rows)
