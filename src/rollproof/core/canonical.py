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
"""

from __future__ import annotations

import hashlib
import marshal
import struct
from collections.abc import Sequence
from typing import Any

import blake3
import rfc8785

ROW_CHUNK = 256
"""Rows fetched per batch. Not part of the algorithm: the encoding has no batch header."""

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
