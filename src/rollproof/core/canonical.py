"""The only producer of bytes that rollproof hashes or signs.

Two encodings live here:

* **Canonical JSON** (RFC 8785, via the `rfc8785` library) for every structured thing that is
  hashed: schema descriptions, fingerprint components, reports. Hashing `json.dumps` output
  would make a digest depend on key order and float formatting.
* **Row encoding** for database values. A table's rows, in canonical order, are encoded one
  after another with the grammar below: no chunk or batch header, so the bytes do not depend
  on how rows were fetched. The grammar is exactly CPython's `marshal` format version 2 for
  these types (a list's 5-byte header dropped), so the fast path is
  `marshal.dumps(batch, 2)[5:]`; `encode_rows_reference` is an independent pure-Python
  encoder of the same grammar. At import the two are compared on known-answer vectors and the
  reference is used if they ever disagree, so a fingerprint taken with one Python matches one
  taken with another. (Version 2 is the newest without object references and interning
  flags, which would make the bytes depend on object identity.)

Row grammar (all integers little-endian):

    rows    = row*
    row     = "(" u32(len(values)) value*
    value   = "N"                                   NULL
            | "i" i32(v)                            integer in [-2**31, 2**31)
            | "l" i32(±ndigits) u16(digit)*         other integers, base 2**15, sign on count
            | "g" f64(v)                            real, IEEE 754 binary64 (so -0.0 != 0.0)
            | "u" u32(len(b)) b                     text, b = UTF-8 (surrogatepass)
            | "s" u32(len(b)) b                     blob

Every value carries its type tag and every variable-length value its length, so `1`, `1.0`,
`'1'`, `x'31'` and NULL all encode differently, and `('a3','b')` cannot collide with
`('a','3b')`.

Table digests (fingerprint version 3) are built from that encoding in one of two ways, written
out here as a pure reference (`table_digest_reference`) that the engines are tested against:

* **primary-key** (rows totally ordered by a key): the rows in key order are cut into segments
  of `SEGMENT_ROWS` rows (the last one shorter); each segment's digest is BLAKE3 of its rows'
  encodings; the table digest is BLAKE3 of the table header followed by the 32-byte segment
  digests in order. Segments are fixed by row position, not by who reads them, so workers may
  read disjoint runs of segments and the digest does not depend on how many there were.
* **row-digests** (no total key): each row's encoding is hashed on its own to a 32-byte
  BLAKE2s-256 digest (`row_digest`), the digests are sorted as byte strings, duplicates kept,
  and the table digest is BLAKE3 of the header followed by the sorted digests. The sorted list
  is a canonical encoding of the multiset of row digests, so the digest is independent of row
  order and of how the rows were split, and two tables with different multisets of rows share
  it only through a BLAKE2s or BLAKE3 collision (docs/fingerprint.md has the argument).
"""

from __future__ import annotations

import hashlib
import itertools
import marshal
import operator
import struct
from collections.abc import Sequence
from typing import Any

import blake3
import rfc8785

ROW_CHUNK = 1024
"""Rows fetched per batch. Not part of the algorithm: the encoding has no batch header. It
divides SEGMENT_ROWS, so a batch never straddles two segments."""

SEGMENT_ROWS = 1 << 14
"""Rows per segment of a primary-key table digest: part of the algorithm (version 3)."""

ROW_DIGEST_SIZE = 32
"""Bytes of one row digest (BLAKE2s-256) in a row-digests table digest."""

SqlValue = int | float | str | bytes | None


def canonical_json(value: Any) -> bytes:
    """RFC 8785 canonical JSON bytes of `value`."""
    try:
        return bytes(rfc8785.dumps(value))
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as e:
        raise ValueError(f"value cannot be canonicalised: {e}") from e


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tagged(hex_digest: str) -> str:
    """The `sha256:<hex>` form used for every digest rollproof reports."""
    return f"sha256:{hex_digest}"


def content_hasher(header: bytes) -> blake3.blake3:
    """The hash of a table's content stream: BLAKE3, started with the table's header.

    Table content is the one large thing rollproof hashes, and BLAKE3 runs about four times as
    fast as SHA-256 (with SHA extensions) on the machines measured; its digests are labelled
    `blake3:` so nobody mistakes them for SHA-256. Everything small stays SHA-256.
    """
    return blake3.blake3(header)


def content_tagged(hex_digest: str) -> str:
    """The `blake3:<hex>` form of a table content digest."""
    return f"blake3:{hex_digest}"


def digest_json(value: Any) -> str:
    """`sha256:<hex>` of the canonical JSON of `value`."""
    return tagged(sha256_hex(canonical_json(value)))


def _encode_int(v: int) -> bytes:
    if -(2**31) <= v < 2**31:
        return b"i" + struct.pack("<i", v)
    magnitude = -v if v < 0 else v
    digits: list[int] = []
    while magnitude:
        digits.append(magnitude & 0x7FFF)
        magnitude >>= 15
    count = -len(digits) if v < 0 else len(digits)
    return b"l" + struct.pack("<i", count) + b"".join(struct.pack("<H", d) for d in digits)


def _encode_value(v: SqlValue) -> bytes:
    if v is None:
        return b"N"
    if isinstance(v, bool):  # never produced by sqlite3; refused rather than guessed
        raise TypeError("bool is not an SQL value")
    if isinstance(v, int):
        return _encode_int(v)
    if isinstance(v, float):
        return b"g" + struct.pack("<d", v)
    if isinstance(v, str):
        data = v.encode("utf-8", "surrogatepass")
        return b"u" + struct.pack("<I", len(data)) + data
    if isinstance(v, bytes):
        return b"s" + struct.pack("<I", len(v)) + v
    raise TypeError(f"unsupported SQL value type: {type(v).__name__}")


def encode_rows_reference(rows: Sequence[Sequence[SqlValue]]) -> bytes:
    """Encode rows with the grammar above, without `marshal`."""
    out = []
    for row in rows:
        out.append(b"(" + struct.pack("<I", len(row)))
        out.extend(_encode_value(v) for v in row)
    return b"".join(out)


def _encode_rows_marshal(rows: Sequence[Sequence[SqlValue]]) -> bytes:
    # A list of rows marshals as "[" u32(count) row*; the header is dropped so that the
    # bytes of a table do not depend on how its rows were batched.
    return marshal.dumps(list(rows), 2)[5:]


# Known-answer vectors: the bytes are written out so that a change in either encoder (or in a
# future Python's marshal) is caught here and by the test suite, not discovered as a mismatch
# between two machines' fingerprints.
KNOWN_ANSWERS: tuple[tuple[list[tuple[SqlValue, ...]], bytes], ...] = (
    (
        [(None, 1, 1.0, "1", b"1")],
        b"(\x05\x00\x00\x00Ni\x01\x00\x00\x00g\x00\x00\x00\x00\x00\x00\xf0?"
        b"u\x01\x00\x00\x001s\x01\x00\x00\x001",
    ),
    (
        [(2**31, -(2**63))],
        b"(\x02\x00\x00\x00l\x03\x00\x00\x00\x00\x00\x00\x00\x02\x00"
        b"l\xfb\xff\xff\xff\x00\x00\x00\x00\x00\x00\x00\x00\x08\x00",
    ),
    (
        [(0.1, -0.0, "\u00e9"), ()],
        b"(\x03\x00\x00\x00g\x9a\x99\x99\x99\x99\x99\xb9?g\x00\x00\x00\x00\x00\x00\x00\x80"
        b"u\x02\x00\x00\x00\xc3\xa9(\x00\x00\x00\x00",
    ),
)


def _marshal_agrees() -> bool:
    try:
        return all(
            _encode_rows_marshal(rows) == expected == encode_rows_reference(rows)
            for rows, expected in KNOWN_ANSWERS
        )
    except (ValueError, TypeError):
        return False


MARSHAL_AGREES = _marshal_agrees()
encode_rows = _encode_rows_marshal if MARSHAL_AGREES else encode_rows_reference
"""Encode a chunk of rows (a list of tuples): marshal when it agrees, else the reference."""


def encoded_rows(rows: list[tuple[SqlValue, ...]]) -> bytes | memoryview:
    """`encode_rows(rows)` as a buffer to hash, without copying marshal's output to drop its
    list header (a view skips it)."""
    if MARSHAL_AGREES:
        return memoryview(marshal.dumps(rows, 2))[5:]
    return encode_rows_reference(rows)


def row_digest(row: Sequence[SqlValue]) -> bytes:
    """The 32-byte digest of one row for the row-digests order: BLAKE2s-256 of its encoding.

    BLAKE2s rather than BLAKE3 here only because it is hashed once per row from Python, where
    the call costs more than the hashing: hashlib's BLAKE2s took 340 ns a call against
    BLAKE3's 530 ns on the benchmark machine; both are 256-bit hashes with 128-bit collision
    resistance (BLAKE3 is built on BLAKE2s's compression function).
    """
    return hashlib.blake2s(encode_rows_reference([row])).digest()


_digest_of = operator.methodcaller("digest")


def _row_digests_marshal(rows: Sequence[Sequence[SqlValue]]) -> bytes:
    # One C-level pipeline per batch: marshal each row, hash it, take its digest.
    encoded = map(marshal.dumps, rows, itertools.repeat(2))  # type: ignore[arg-type]
    return b"".join(map(_digest_of, map(hashlib.blake2s, encoded)))


def _row_digests_reference(rows: Sequence[Sequence[SqlValue]]) -> bytes:
    return b"".join(row_digest(r) for r in rows)


row_digests = _row_digests_marshal if MARSHAL_AGREES else _row_digests_reference
"""The row digests of a batch of rows, concatenated in the batch's order."""


def table_digest_reference(header: bytes, order: str, rows: Sequence[Sequence[SqlValue]]) -> str:
    """A table digest computed from all its rows at once, straight from the definition.

    `rows` are in key order for "primary-key" and in any order for "row-digests". The engines
    stream and split the same computation; this is what they are checked against.
    """
    h = content_hasher(header)
    if order == "primary-key":
        for start in range(0, len(rows), SEGMENT_ROWS):
            segment = rows[start : start + SEGMENT_ROWS]
            h.update(blake3.blake3(encode_rows_reference(segment)).digest())
    elif order == "row-digests":
        for digest in sorted(row_digest(r) for r in rows):
            h.update(digest)
    else:
        raise ValueError(f"unknown table order {order!r}")
    return content_tagged(h.hexdigest())
