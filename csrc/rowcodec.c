/*
** rollproof's row codec: a SQLite loadable extension that encodes and hashes table rows inside
** SQLite, so a fingerprint worker does not build a Python object for every value it reads.
**
** The bytes are exactly those of rollproof.core.canonical's row grammar (CPython's marshal
** format version 2 for the SQL value types, see that module and docs/fingerprint.md):
**
**     row   = "(" u32(n) value*
**     value = "N" | "i" i32 | "l" i32(+-ndigits) u16(digit)* | "g" f64
**           | "u" u32(len) utf8 | "s" u32(len) bytes            (all little-endian)
**
** Text is written as the Python reader sees it: valid UTF-8 byte for byte; a byte that is not
** part of a valid sequence as the lone surrogate U+DC00+byte (Python's "surrogateescape"),
** written in three bytes as marshal writes lone surrogates ("surrogatepass").
**
** Five aggregate functions and one scalar, registered SQLITE_DIRECTONLY so that no view or
** trigger of the database being read can call them:
**
**   rollproof_rows(c1, ..., cn)         the rows' encodings one after another (one BLOB)
**   rollproof_rows_after(r, c1, ..., cn)
**                                       rollproof_rows(c1, ..., cn), refused (an error)
**                                       unless every row's r is an INTEGER greater than the
**                                       row's before (rows read in increasing rowid order)
**   rollproof_rows_keyed(m, k1, ..., km, c1, ..., cn)
**                                       rollproof_rows(c1, ..., cn), refused unless every
**                                       row's key k1..km is greater than the row's before in
**                                       SQLite's order under BINARY collation
**   rollproof_row_digests(c1, ..., cn)  one 32-byte BLAKE2s-256 digest of each row's encoding
**   rollproof_last(k1, ..., km)         the encoding of the last row seen, for keyset
**                                       pagination; refused (an error) if its text is not
**                                       valid UTF-8, since the caller binds the values again
**   rollproof_collation(table, column)  the declared collation of a column of a table in
**                                       `main` (sqlite3_table_column_metadata), NULL where
**                                       this SQLite cannot say
**
** (The row digests of a key-less table are sorted and merged by csrc/digests.c, a Python
** module: a SQLite function would copy each run in and out.)
**
** Each keeps its state in SQLite's aggregate context: no global mutable state beyond the API
** pointer every loadable extension has. That pointer is static here (SQLITE_EXTENSION_INIT1
** would export it): the same source is built twice, one copy loaded by APSW's SQLite and one
** registered with the SQLite Python's own `sqlite3` module uses, and an exported pointer could
** bind both copies to whichever library loaded first.
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sqlite3ext.h"
static const sqlite3_api_routines *sqlite3_api = 0;

/* ---- growable byte buffer --------------------------------------------------------------- */

typedef struct {
  unsigned char *data;
  sqlite3_uint64 len;
  sqlite3_uint64 cap;
} Buf;

/* Make room for `extra` more bytes, never beyond `limit` in all (SQLite's length limit: a
** longer result could not be returned anyway). SQLITE_OK, SQLITE_TOOBIG or SQLITE_NOMEM. */
static int buf_reserve(Buf *b, sqlite3_uint64 extra, sqlite3_uint64 limit) {
  sqlite3_uint64 need, cap;
  unsigned char *grown;
  if (extra > limit || b->len > limit - extra) return SQLITE_TOOBIG;
  need = b->len + extra;
  if (need <= b->cap) return SQLITE_OK;
  cap = b->cap ? b->cap : 256;
  while (cap < need) cap = cap > limit / 2 ? limit : cap * 2;
  grown = sqlite3_realloc64(b->data, cap);
  if (grown == 0) return SQLITE_NOMEM;
  b->data = grown;
  b->cap = cap;
  return SQLITE_OK;
}

static void buf_free(Buf *b) {
  sqlite3_free(b->data);
  b->data = 0;
  b->len = b->cap = 0;
}

/* Unchecked writes: the caller has reserved the room. */
static void put_byte(Buf *b, unsigned char c) { b->data[b->len++] = c; }

static void put_u16(Buf *b, uint32_t v) {
  b->data[b->len++] = (unsigned char)(v & 0xff);
  b->data[b->len++] = (unsigned char)((v >> 8) & 0xff);
}

static void put_u32(Buf *b, uint32_t v) {
  put_u16(b, v & 0xffff);
  put_u16(b, v >> 16);
}

static void put_bytes(Buf *b, const unsigned char *p, sqlite3_uint64 n) {
  if (n) memcpy(b->data + b->len, p, (size_t)n);
  b->len += n;
}

/* ---- UTF-8 as Python decodes it --------------------------------------------------------- */

/* Length of the well-formed UTF-8 sequence starting at p (n > 0 bytes left), or 0 if none
** starts there. Well-formed is Unicode's table 3-7, which Python's strict decoder follows: no
** overlong forms, no surrogates, nothing above U+10FFFF. */
static int utf8_sequence(const unsigned char *p, sqlite3_uint64 n) {
  unsigned c = p[0], lo = 0x80, hi = 0xbf;
  int len, i;
  if (c < 0x80) return 1;
  if (c < 0xc2) return 0;
  if (c < 0xe0) {
    len = 2;
  } else if (c < 0xf0) {
    len = 3;
    if (c == 0xe0) lo = 0xa0;
    if (c == 0xed) hi = 0x9f;
  } else if (c < 0xf5) {
    len = 4;
    if (c == 0xf0) lo = 0x90;
    if (c == 0xf4) hi = 0x8f;
  } else {
    return 0;
  }
  if (n < (sqlite3_uint64)len || p[1] < lo || p[1] > hi) return 0;
  for (i = 2; i < len; i++) {
    if ((p[i] & 0xc0) != 0x80) return 0;
  }
  return len;
}

/* Bytes `p[0..n)` take once written (3 for each byte outside a valid sequence); sets *valid to
** whether every byte was in one. */
static sqlite3_uint64 utf8_written_size(const unsigned char *p, sqlite3_uint64 n, int *valid) {
  sqlite3_uint64 i = 0, size = 0;
  *valid = 1;
  while (i < n) {
    int len;
    if (n - i >= 8) { /* eight ASCII bytes at once, the common case */
      uint64_t word;
      memcpy(&word, p + i, sizeof word);
      if ((word & 0x8080808080808080u) == 0) {
        i += 8;
        size += 8;
        continue;
      }
    }
    len = utf8_sequence(p + i, n - i);
    if (len) {
      i += (sqlite3_uint64)len;
      size += (sqlite3_uint64)len;
    } else {
      i += 1;
      size += 3;
      *valid = 0;
    }
  }
  return size;
}

/* Write text that is not all valid: each stray byte as the UTF-8 form of U+DC00+byte. */
static void put_escaped_text(Buf *b, const unsigned char *p, sqlite3_uint64 n) {
  sqlite3_uint64 i = 0;
  while (i < n) {
    int len = utf8_sequence(p + i, n - i);
    if (len) {
      put_bytes(b, p + i, (sqlite3_uint64)len);
      i += (sqlite3_uint64)len;
    } else {
      put_byte(b, 0xed);
      put_byte(b, (unsigned char)(0xb0 | (p[i] >> 6)));
      put_byte(b, (unsigned char)(0x80 | (p[i] & 0x3f)));
      i += 1;
    }
  }
}

/* ---- the row encoding ------------------------------------------------------------------- */

enum { TEXT_ESCAPE, TEXT_STRICT };

static int put_int(Buf *b, sqlite3_int64 v, sqlite3_uint64 limit) {
  sqlite3_uint64 magnitude, m;
  uint32_t digits = 0;
  int rc;
  if (v >= INT32_MIN && v <= INT32_MAX) {
    if ((rc = buf_reserve(b, 5, limit)) != SQLITE_OK) return rc;
    put_byte(b, 'i');
    put_u32(b, (uint32_t)(int32_t)v);
    return SQLITE_OK;
  }
  /* base 2**15 digits of |v|, least significant first; -2**63 has no positive int64 */
  magnitude = v < 0 ? (sqlite3_uint64)0 - (sqlite3_uint64)v : (sqlite3_uint64)v;
  for (m = magnitude; m; m >>= 15) digits++;
  if ((rc = buf_reserve(b, 5 + 2 * (sqlite3_uint64)digits, limit)) != SQLITE_OK) return rc;
  put_byte(b, 'l');
  put_u32(b, v < 0 ? (uint32_t)0 - digits : digits);
  for (m = magnitude; m; m >>= 15) put_u16(b, (uint32_t)(m & 0x7fff));
  return SQLITE_OK;
}

static int put_real(Buf *b, double d, sqlite3_uint64 limit) {
  uint64_t bits;
  int rc;
  if ((rc = buf_reserve(b, 9, limit)) != SQLITE_OK) return rc;
  memcpy(&bits, &d, sizeof bits);
  put_byte(b, 'g');
  put_u32(b, (uint32_t)(bits & 0xffffffffu));
  put_u32(b, (uint32_t)(bits >> 32));
  return SQLITE_OK;
}

/* A length-prefixed value ('u' or 's'); marshal's length field is 32 bits. */
static int put_sized(Buf *b, unsigned char tag, const unsigned char *p, sqlite3_uint64 n,
                     sqlite3_uint64 size, int escape, sqlite3_uint64 limit) {
  int rc;
  if (size > 0xffffffffu) return SQLITE_TOOBIG;
  if ((rc = buf_reserve(b, 5 + size, limit)) != SQLITE_OK) return rc;
  put_byte(b, tag);
  put_u32(b, (uint32_t)size);
  if (escape) {
    put_escaped_text(b, p, n);
  } else {
    put_bytes(b, p, n);
  }
  return SQLITE_OK;
}

/* Append one row's encoding. SQLITE_OK, SQLITE_TOOBIG, SQLITE_NOMEM, or SQLITE_MISMATCH for
** text that is not valid UTF-8 under TEXT_STRICT. */
static int put_row(Buf *b, int argc, sqlite3_value **argv, int text, sqlite3_uint64 limit) {
  int i, rc = buf_reserve(b, 5, limit);
  if (rc != SQLITE_OK) return rc;
  put_byte(b, '(');
  put_u32(b, (uint32_t)argc);
  for (i = 0; i < argc && rc == SQLITE_OK; i++) {
    sqlite3_value *v = argv[i];
    switch (sqlite3_value_type(v)) {
      case SQLITE_INTEGER:
        rc = put_int(b, sqlite3_value_int64(v), limit);
        break;
      case SQLITE_FLOAT:
        rc = put_real(b, sqlite3_value_double(v), limit);
        break;
      case SQLITE_TEXT: {
        /* The stored bytes, as sqlite3_value_blob gives a TEXT value (no conversion): UTF-8,
        ** since these functions read UTF-8 databases only (the Python side gives a UTF-16
        ** database's text to its own reader). sqlite3_value_text would first copy a value
        ** read from a page to add a terminator: about 50 ns a value. The pointer first,
        ** then the length, the order SQLite's documentation calls safe. */
        const unsigned char *p = sqlite3_value_blob(v);
        sqlite3_uint64 n = (sqlite3_uint64)sqlite3_value_bytes(v), size;
        int valid;
        if (p == 0 && n) return SQLITE_NOMEM;
        size = utf8_written_size(p, n, &valid);
        if (!valid && text == TEXT_STRICT) return SQLITE_MISMATCH;
        rc = put_sized(b, 'u', p, n, size, !valid, limit);
        break;
      }
      case SQLITE_BLOB: {
        const unsigned char *p = sqlite3_value_blob(v);
        sqlite3_uint64 n = (sqlite3_uint64)sqlite3_value_bytes(v);
        if (p == 0 && n) return SQLITE_NOMEM;
        rc = put_sized(b, 's', p, n, n, 0, limit);
        break;
      }
      default:
        if ((rc = buf_reserve(b, 1, limit)) == SQLITE_OK) put_byte(b, 'N');
        break;
    }
  }
  return rc;
}

/* ---- BLAKE2s-256 (RFC 7693), unkeyed, as hashlib.blake2s() ----------------------------- */

static const uint32_t BLAKE2S_IV[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                       0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

static const unsigned char BLAKE2S_SIGMA[10][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
};

#define ROTR32(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
#define G(a, b, c, d, x, y)     \
  do {                          \
    a = a + b + (x);            \
    d = ROTR32(d ^ a, 16);      \
    c = c + d;                  \
    b = ROTR32(b ^ c, 12);      \
    a = a + b + (y);            \
    d = ROTR32(d ^ a, 8);       \
    c = c + d;                  \
    b = ROTR32(b ^ c, 7);       \
  } while (0)

static uint32_t load32(const unsigned char *p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* Compress one 64-byte block; `count` is the bytes hashed so far, this block included. */
static void blake2s_compress(uint32_t h[8], const unsigned char block[64], uint64_t count,
                             int last) {
  uint32_t v[16], m[16];
  int i;
  for (i = 0; i < 16; i++) m[i] = load32(block + 4 * i);
  for (i = 0; i < 8; i++) {
    v[i] = h[i];
    v[i + 8] = BLAKE2S_IV[i];
  }
  v[12] ^= (uint32_t)count;
  v[13] ^= (uint32_t)(count >> 32);
  if (last) v[14] = ~v[14];
  /* the ten rounds written out, so the message schedule is constant indices (registers) */
#define ROUND(r)                                                                       \
  do {                                                                                 \
    G(v[0], v[4], v[8], v[12], m[BLAKE2S_SIGMA[r][0]], m[BLAKE2S_SIGMA[r][1]]);        \
    G(v[1], v[5], v[9], v[13], m[BLAKE2S_SIGMA[r][2]], m[BLAKE2S_SIGMA[r][3]]);        \
    G(v[2], v[6], v[10], v[14], m[BLAKE2S_SIGMA[r][4]], m[BLAKE2S_SIGMA[r][5]]);       \
    G(v[3], v[7], v[11], v[15], m[BLAKE2S_SIGMA[r][6]], m[BLAKE2S_SIGMA[r][7]]);       \
    G(v[0], v[5], v[10], v[15], m[BLAKE2S_SIGMA[r][8]], m[BLAKE2S_SIGMA[r][9]]);       \
    G(v[1], v[6], v[11], v[12], m[BLAKE2S_SIGMA[r][10]], m[BLAKE2S_SIGMA[r][11]]);     \
    G(v[2], v[7], v[8], v[13], m[BLAKE2S_SIGMA[r][12]], m[BLAKE2S_SIGMA[r][13]]);      \
    G(v[3], v[4], v[9], v[14], m[BLAKE2S_SIGMA[r][14]], m[BLAKE2S_SIGMA[r][15]]);      \
  } while (0)
  ROUND(0);
  ROUND(1);
  ROUND(2);
  ROUND(3);
  ROUND(4);
  ROUND(5);
  ROUND(6);
  ROUND(7);
  ROUND(8);
  ROUND(9);
#undef ROUND
  for (i = 0; i < 8; i++) h[i] ^= v[i] ^ v[i + 8];
}

/* BLAKE2s with a 32-byte digest, no key, salt or personalisation: hashlib.blake2s(data). */
static void blake2s256(const unsigned char *data, sqlite3_uint64 n, unsigned char out[32]) {
  uint32_t h[8];
  unsigned char last[64];
  uint64_t count = 0;
  int i;
  memcpy(h, BLAKE2S_IV, sizeof h);
  h[0] ^= 0x01010000u | 32u; /* depth 1, fanout 1, no key, 32-byte digest */
  while (n > 64) { /* every full block but the last, which is flagged */
    count += 64;
    blake2s_compress(h, data, count, 0);
    data += 64;
    n -= 64;
  }
  memset(last, 0, sizeof last);
  if (n) memcpy(last, data, (size_t)n);
  count += n;
  blake2s_compress(h, last, count, 1);
  for (i = 0; i < 8; i++) {
    out[4 * i] = (unsigned char)(h[i] & 0xff);
    out[4 * i + 1] = (unsigned char)((h[i] >> 8) & 0xff);
    out[4 * i + 2] = (unsigned char)((h[i] >> 16) & 0xff);
    out[4 * i + 3] = (unsigned char)(h[i] >> 24);
  }
}

/* ---- eight one-block digests at once (AVX2) ----------------------------------------------
**
** Most rows encode in at most 64 bytes: their BLAKE2s is one compression of one final block.
** Eight such rows are hashed together, one per 32-bit lane of AVX2's registers: the same
** rounds, the message words transposed so that register j holds word j of every row, the
** byte counts (the rows' lengths) per lane. Where the CPU or the compiler has no AVX2, or a
** row is longer, blake2s256 above hashes the row alone. The tests hold both to hashlib. */

#define LANES 8

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#include <immintrin.h>
#define ROLLPROOF_X8 1

#define X8_TARGET __attribute__((target("avx2")))

X8_TARGET static inline __m256i x8_rotr16(__m256i x) {
  const __m256i r16 = _mm256_setr_epi8(2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13, 2,
                                       3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
  return _mm256_shuffle_epi8(x, r16);
}

X8_TARGET static inline __m256i x8_rotr8(__m256i x) {
  const __m256i r8 = _mm256_setr_epi8(1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12, 1, 2,
                                      3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12);
  return _mm256_shuffle_epi8(x, r8);
}

#define X8_ROTR(x, n) _mm256_or_si256(_mm256_srli_epi32((x), (n)), _mm256_slli_epi32((x), 32 - (n)))

#define X8_G(a, b, c, d, x, y)                                \
  do {                                                        \
    a = _mm256_add_epi32(_mm256_add_epi32(a, b), (x));        \
    d = x8_rotr16(_mm256_xor_si256(d, a));                    \
    c = _mm256_add_epi32(c, d);                               \
    b = X8_ROTR(_mm256_xor_si256(b, c), 12);                  \
    a = _mm256_add_epi32(_mm256_add_epi32(a, b), (y));        \
    d = x8_rotr8(_mm256_xor_si256(d, a));                     \
    c = _mm256_add_epi32(c, d);                               \
    b = X8_ROTR(_mm256_xor_si256(b, c), 7);                   \
  } while (0)

/* r[i] holds 8 words of row i; afterwards r[j] holds word j of rows 0..7 (and back again). */
X8_TARGET static inline void x8_transpose(__m256i r[8]) {
  __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]), t1 = _mm256_unpackhi_epi32(r[0], r[1]);
  __m256i t2 = _mm256_unpacklo_epi32(r[2], r[3]), t3 = _mm256_unpackhi_epi32(r[2], r[3]);
  __m256i t4 = _mm256_unpacklo_epi32(r[4], r[5]), t5 = _mm256_unpackhi_epi32(r[4], r[5]);
  __m256i t6 = _mm256_unpacklo_epi32(r[6], r[7]), t7 = _mm256_unpackhi_epi32(r[6], r[7]);
  __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
  __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
  __m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);
  __m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);
  r[0] = _mm256_permute2x128_si256(u0, u4, 0x20);
  r[1] = _mm256_permute2x128_si256(u1, u5, 0x20);
  r[2] = _mm256_permute2x128_si256(u2, u6, 0x20);
  r[3] = _mm256_permute2x128_si256(u3, u7, 0x20);
  r[4] = _mm256_permute2x128_si256(u0, u4, 0x31);
  r[5] = _mm256_permute2x128_si256(u1, u5, 0x31);
  r[6] = _mm256_permute2x128_si256(u2, u6, 0x31);
  r[7] = _mm256_permute2x128_si256(u3, u7, 0x31);
}

/* BLAKE2s-256 of eight messages of len[i] <= 64 bytes, each zero-padded to 64 bytes in
** `blocks` (row i at blocks + 64 * i): the final (and only) block's compression, per lane.
** x86-64 is little-endian, so a block's words load as BLAKE2s reads them. */
X8_TARGET static void blake2s256_x8(const unsigned char *blocks, const uint32_t len[LANES],
                                    unsigned char out[LANES][32]) {
  __m256i m[16], v[16], h[8], r[8];
  int i;
  for (i = 0; i < LANES; i++) r[i] = _mm256_loadu_si256((const __m256i *)(blocks + 64 * i));
  x8_transpose(r);
  for (i = 0; i < 8; i++) m[i] = r[i];
  for (i = 0; i < LANES; i++) r[i] = _mm256_loadu_si256((const __m256i *)(blocks + 64 * i + 32));
  x8_transpose(r);
  for (i = 0; i < 8; i++) m[i + 8] = r[i];
  for (i = 0; i < 8; i++) h[i] = _mm256_set1_epi32((int)BLAKE2S_IV[i]);
  h[0] = _mm256_set1_epi32((int)(BLAKE2S_IV[0] ^ (0x01010000u | 32u)));
  for (i = 0; i < 8; i++) {
    v[i] = h[i];
    v[i + 8] = _mm256_set1_epi32((int)BLAKE2S_IV[i]);
  }
  v[12] = _mm256_xor_si256(v[12], _mm256_loadu_si256((const __m256i *)len)); /* t0: bytes */
  v[14] = _mm256_xor_si256(v[14], _mm256_set1_epi32(-1));                    /* final block */
#define X8_ROUND(r)                                                                      \
  do {                                                                                   \
    X8_G(v[0], v[4], v[8], v[12], m[BLAKE2S_SIGMA[r][0]], m[BLAKE2S_SIGMA[r][1]]);       \
    X8_G(v[1], v[5], v[9], v[13], m[BLAKE2S_SIGMA[r][2]], m[BLAKE2S_SIGMA[r][3]]);       \
    X8_G(v[2], v[6], v[10], v[14], m[BLAKE2S_SIGMA[r][4]], m[BLAKE2S_SIGMA[r][5]]);      \
    X8_G(v[3], v[7], v[11], v[15], m[BLAKE2S_SIGMA[r][6]], m[BLAKE2S_SIGMA[r][7]]);      \
    X8_G(v[0], v[5], v[10], v[15], m[BLAKE2S_SIGMA[r][8]], m[BLAKE2S_SIGMA[r][9]]);      \
    X8_G(v[1], v[6], v[11], v[12], m[BLAKE2S_SIGMA[r][10]], m[BLAKE2S_SIGMA[r][11]]);    \
    X8_G(v[2], v[7], v[8], v[13], m[BLAKE2S_SIGMA[r][12]], m[BLAKE2S_SIGMA[r][13]]);     \
    X8_G(v[3], v[4], v[9], v[14], m[BLAKE2S_SIGMA[r][14]], m[BLAKE2S_SIGMA[r][15]]);     \
  } while (0)
  X8_ROUND(0);
  X8_ROUND(1);
  X8_ROUND(2);
  X8_ROUND(3);
  X8_ROUND(4);
  X8_ROUND(5);
  X8_ROUND(6);
  X8_ROUND(7);
  X8_ROUND(8);
  X8_ROUND(9);
#undef X8_ROUND
  for (i = 0; i < 8; i++) r[i] = _mm256_xor_si256(h[i], _mm256_xor_si256(v[i], v[i + 8]));
  x8_transpose(r);
  for (i = 0; i < LANES; i++) _mm256_storeu_si256((__m256i *)out[i], r[i]);
}

/* Whether this CPU runs AVX2 (asked once; a race between two threads asks twice, alike). */
static int x8_available(void) {
  static int known = -1;
  if (known < 0) {
    __builtin_cpu_init();
    known = __builtin_cpu_supports("avx2") ? 1 : 0;
  }
  return known;
}
#else
#define ROLLPROOF_X8 0
static int x8_available(void) { return 0; }
static void blake2s256_x8(const unsigned char *blocks, const uint32_t len[LANES],
                          unsigned char out[LANES][32]) {
  int i;
  for (i = 0; i < LANES; i++) blake2s256(blocks + 64 * i, len[i], out[i]);
}
#endif

/* ---- the aggregate functions ------------------------------------------------------------ */

typedef struct {
  Buf out;              /* the result being built */
  Buf row;              /* one row's encoding (row digests, last row); the key before
                        ** (rollproof_rows_keyed) */
  sqlite3_uint64 limit; /* the connection's length limit, read on the first row */
  sqlite3_int64 prev;   /* rollproof_rows_after: the rowid of the row before */
  int seen;             /* rollproof_rows_after: whether there was one */
  /* rollproof_row_digests: one-block rows waiting to be hashed eight at once, zero-padded,
  ** their lengths, and where in `out` each one's digest goes */
  int waiting;
  uint32_t lens[LANES];
  sqlite3_uint64 at[LANES];
  unsigned char stage[LANES * 64];
} Acc;

/* Hash the rows waiting (the lanes after them hash empty blocks, unused) into their places. */
static void flush_digests(Acc *acc) {
  unsigned char digests[LANES][32];
  int i;
  if (acc->waiting == 0) return;
  for (i = acc->waiting; i < LANES; i++) {
    acc->lens[i] = 0;
    memset(acc->stage + 64 * i, 0, 64);
  }
  blake2s256_x8(acc->stage, acc->lens, digests);
  for (i = 0; i < acc->waiting; i++) memcpy(acc->out.data + acc->at[i], digests[i], 32);
  acc->waiting = 0;
}

static Acc *acc_of(sqlite3_context *ctx) {
  Acc *acc = sqlite3_aggregate_context(ctx, (int)sizeof(Acc));
  if (acc != 0 && acc->limit == 0) {
    int limit = sqlite3_limit(sqlite3_context_db_handle(ctx), SQLITE_LIMIT_LENGTH, -1);
    acc->limit = limit > 0 ? (sqlite3_uint64)limit : 1;
  }
  return acc;
}

static void report(sqlite3_context *ctx, const char *name, int rc) {
  if (rc == SQLITE_NOMEM) {
    sqlite3_result_error_nomem(ctx);
  } else if (rc == SQLITE_TOOBIG) {
    sqlite3_result_error_toobig(ctx);
  } else if (rc == SQLITE_MISMATCH) {
    char *msg = sqlite3_mprintf("%s: text is not valid UTF-8", name);
    if (msg == 0) {
      sqlite3_result_error_nomem(ctx);
      return;
    }
    sqlite3_result_error(ctx, msg, -1);
    sqlite3_free(msg);
  } else {
    sqlite3_result_error_code(ctx, rc);
  }
}

static void rows_step(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  Acc *acc = acc_of(ctx);
  int rc;
  if (acc == 0) {
    sqlite3_result_error_nomem(ctx);
    return;
  }
  rc = put_row(&acc->out, argc, argv, TEXT_ESCAPE, acc->limit);
  if (rc != SQLITE_OK) report(ctx, "rollproof_rows", rc);
}

/* rollproof_rows over the arguments after the first, which must be an INTEGER greater than
** the one of the row before: the caller reads a rowid range without ORDER BY, and this makes
** the order it relies on a checked fact rather than the query planner's habit. */
static void rows_after_step(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  Acc *acc = acc_of(ctx);
  sqlite3_int64 id;
  int rc;
  if (acc == 0) {
    sqlite3_result_error_nomem(ctx);
    return;
  }
  if (argc < 1 || sqlite3_value_type(argv[0]) != SQLITE_INTEGER) {
    sqlite3_result_error(ctx, "rollproof_rows_after: the first argument is not an INTEGER", -1);
    return;
  }
  id = sqlite3_value_int64(argv[0]);
  if (acc->seen && id <= acc->prev) {
    sqlite3_result_error(ctx, "rollproof_rows_after: rows out of rowid order", -1);
    return;
  }
  acc->prev = id;
  acc->seen = 1;
  rc = put_row(&acc->out, argc - 1, argv + 1, TEXT_ESCAPE, acc->limit);
  if (rc != SQLITE_OK) report(ctx, "rollproof_rows_after", rc);
}

/* ---- rows in key order, checked -------------------------------------------------------- */

/* Compare a key (m values) with the one before, kept in `prev` as: per value a type byte, then
** 8 bytes (INTEGER, REAL) or u32 length + bytes (TEXT, BLOB). SQLite's order under BINARY
** collation: NULL < numbers < TEXT < BLOB, text and blobs by memcmp then length (TEXT as its
** stored UTF-8 bytes). Returns -1, 0 or 1, or 2 where this does not decide: an INTEGER beside a
** REAL in one key column (SQLite compares those exactly; this code does not try). */
static int value_rank(int type) {
  switch (type) {
    case SQLITE_NULL:
      return 0;
    case SQLITE_INTEGER:
    case SQLITE_FLOAT:
      return 1;
    case SQLITE_TEXT:
      return 2;
    default:
      return 3;
  }
}

static int key_cmp(const Buf *prev, int m, sqlite3_value **key) {
  sqlite3_uint64 at = 0;
  int j;
  for (j = 0; j < m; j++) {
    int tp = prev->data[at++], tn = sqlite3_value_type(key[j]);
    int rp = value_rank(tp), rn = value_rank(tn);
    if (rp != rn) return rn < rp ? -1 : 1;
    if (tp == SQLITE_INTEGER || tp == SQLITE_FLOAT) {
      if (tp != tn) return 2;
      if (tp == SQLITE_INTEGER) {
        sqlite3_int64 a, b = sqlite3_value_int64(key[j]);
        memcpy(&a, prev->data + at, 8);
        if (a != b) return b < a ? -1 : 1;
      } else {
        double a, b = sqlite3_value_double(key[j]);
        memcpy(&a, prev->data + at, 8);
        if (a != b) return b < a ? -1 : 1;
      }
      at += 8;
    } else if (tp == SQLITE_TEXT || tp == SQLITE_BLOB) {
      const unsigned char *q = sqlite3_value_blob(key[j]);
      sqlite3_uint64 nq = (sqlite3_uint64)sqlite3_value_bytes(key[j]), np;
      uint32_t len;
      int c;
      memcpy(&len, prev->data + at, 4);
      np = len;
      at += 4;
      c = memcmp(prev->data + at, q ? q : (const unsigned char *)"", (size_t)(np < nq ? np : nq));
      if (c != 0) return c > 0 ? -1 : 1;
      if (np != nq) return nq < np ? -1 : 1;
      at += np;
    }
  }
  return 0;
}

/* Keep the key as `prev` (the form key_cmp reads). */
static int key_keep(Buf *prev, int m, sqlite3_value **key, sqlite3_uint64 limit) {
  int j, rc;
  prev->len = 0;
  for (j = 0; j < m; j++) {
    int t = sqlite3_value_type(key[j]);
    if ((rc = buf_reserve(prev, 1, limit)) != SQLITE_OK) return rc;
    put_byte(prev, (unsigned char)t);
    if (t == SQLITE_INTEGER || t == SQLITE_FLOAT) {
      if ((rc = buf_reserve(prev, 8, limit)) != SQLITE_OK) return rc;
      if (t == SQLITE_INTEGER) {
        sqlite3_int64 v = sqlite3_value_int64(key[j]);
        memcpy(prev->data + prev->len, &v, 8);
      } else {
        double v = sqlite3_value_double(key[j]);
        memcpy(prev->data + prev->len, &v, 8);
      }
      prev->len += 8;
    } else if (t == SQLITE_TEXT || t == SQLITE_BLOB) {
      const unsigned char *p = sqlite3_value_blob(key[j]);
      sqlite3_uint64 n = (sqlite3_uint64)sqlite3_value_bytes(key[j]);
      uint32_t len = (uint32_t)n;
      if (p == 0 && n) return SQLITE_NOMEM;
      if (n > 0xffffffffu) return SQLITE_TOOBIG;
      if ((rc = buf_reserve(prev, 4 + n, limit)) != SQLITE_OK) return rc;
      memcpy(prev->data + prev->len, &len, 4);
      prev->len += 4;
      put_bytes(prev, p, n);
    }
  }
  return SQLITE_OK;
}

/* rollproof_rows_keyed(m, k1, ..., km, c1, ..., cn): rollproof_rows(c1, ..., cn), refused
** (an error) unless every row's key k1..km is greater than the row's before, in SQLite's order
** under BINARY collation: the caller reads a key range of a WITHOUT ROWID table without ORDER
** BY, and this makes the key order the segments need a checked fact. */
static void rows_keyed_step(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  Acc *acc = acc_of(ctx);
  int m, rc;
  if (acc == 0) {
    sqlite3_result_error_nomem(ctx);
    return;
  }
  m = argc > 0 && sqlite3_value_type(argv[0]) == SQLITE_INTEGER ? sqlite3_value_int(argv[0]) : 0;
  if (m < 1 || m >= argc) {
    sqlite3_result_error(ctx, "rollproof_rows_keyed: the first argument is not a key's width",
                         -1);
    return;
  }
  if (acc->seen) {
    int c = key_cmp(&acc->row, m, argv + 1);
    if (c != 1) {
      sqlite3_result_error(ctx,
                           c == 2 ? "rollproof_rows_keyed: an INTEGER and a REAL in one key column"
                                  : "rollproof_rows_keyed: rows out of key order",
                           -1);
      return;
    }
  }
  acc->seen = 1;
  rc = key_keep(&acc->row, m, argv + 1, acc->limit);
  if (rc == SQLITE_OK) rc = put_row(&acc->out, argc - 1 - m, argv + 1 + m, TEXT_ESCAPE, acc->limit);
  if (rc != SQLITE_OK) report(ctx, "rollproof_rows_keyed", rc);
}

static void row_digests_step(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  Acc *acc = acc_of(ctx);
  int rc;
  if (acc == 0) {
    sqlite3_result_error_nomem(ctx);
    return;
  }
  acc->row.len = 0;
  rc = put_row(&acc->row, argc, argv, TEXT_ESCAPE, acc->limit);
  if (rc == SQLITE_OK) rc = buf_reserve(&acc->out, 32, acc->limit);
  if (rc != SQLITE_OK) {
    report(ctx, "rollproof_row_digests", rc);
    return;
  }
  if (acc->row.len <= 64 && x8_available()) {
    unsigned char *slot = acc->stage + 64 * acc->waiting;
    memcpy(slot, acc->row.data, (size_t)acc->row.len);
    memset(slot + acc->row.len, 0, (size_t)(64 - acc->row.len));
    acc->lens[acc->waiting] = (uint32_t)acc->row.len;
    acc->at[acc->waiting] = acc->out.len; /* an offset: `out` may move before the flush */
    acc->out.len += 32;
    if (++acc->waiting == LANES) flush_digests(acc);
    return;
  }
  blake2s256(acc->row.data, acc->row.len, acc->out.data + acc->out.len);
  acc->out.len += 32;
}

static void last_step(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  Acc *acc = acc_of(ctx);
  int rc;
  if (acc == 0) {
    sqlite3_result_error_nomem(ctx);
    return;
  }
  acc->out.len = 0;
  rc = put_row(&acc->out, argc, argv, TEXT_STRICT, acc->limit);
  if (rc != SQLITE_OK) report(ctx, "rollproof_last", rc);
}

/* The result: what was built (an empty BLOB for no rows), handed to SQLite, which frees it;
** also called to clean up after an error, when the result is not used. */
static void acc_final(sqlite3_context *ctx) {
  Acc *acc = sqlite3_aggregate_context(ctx, 0);
  if (acc == 0) {
    sqlite3_result_zeroblob(ctx, 0);
    return;
  }
  flush_digests(acc);
  buf_free(&acc->row);
  if (acc->out.data == 0) {
    sqlite3_result_zeroblob(ctx, 0);
  } else {
    sqlite3_result_blob64(ctx, acc->out.data, acc->out.len, sqlite3_free);
  }
  acc->out.data = 0;
  acc->out.len = acc->out.cap = 0;
}

/* ---- a column's collation ---------------------------------------------------------------- */

static void collation_func(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  const char *table, *column, *type = 0, *collation = 0;
  int not_null = 0, primary_key = 0, autoinc = 0;
  (void)argc;
  table = (const char *)sqlite3_value_text(argv[0]);
  column = (const char *)sqlite3_value_text(argv[1]);
  if (table == 0 || column == 0 || sqlite3_api->table_column_metadata == 0) {
    return; /* NULL: unknown (the caller then does not page by this key) */
  }
  if (sqlite3_table_column_metadata(sqlite3_context_db_handle(ctx), "main", table, column, &type,
                                    &collation, &not_null, &primary_key, &autoinc) != SQLITE_OK ||
      collation == 0) {
    return;
  }
  sqlite3_result_text(ctx, collation, -1, SQLITE_TRANSIENT);
}

#ifdef _WIN32
__declspec(dllexport)
#endif
int sqlite3_rowcodec_init(sqlite3 *db, char **pzErrMsg, const sqlite3_api_routines *pApi) {
  static const struct {
    const char *name;
    void (*step)(sqlite3_context *, int, sqlite3_value **);
  } functions[] = {
      {"rollproof_rows", rows_step},
      {"rollproof_rows_after", rows_after_step},
      {"rollproof_rows_keyed", rows_keyed_step},
      {"rollproof_row_digests", row_digests_step},
      {"rollproof_last", last_step},
  };
  /* DIRECTONLY: callable from top-level SQL only, never from a view, trigger, CHECK or
  ** generated column of the database being read */
  const int flags = SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_DIRECTONLY;
  size_t i;
  SQLITE_EXTENSION_INIT2(pApi);
  (void)pzErrMsg;
  for (i = 0; i < sizeof functions / sizeof functions[0]; i++) {
    int rc = sqlite3_create_function(db, functions[i].name, -1, flags, 0, 0, functions[i].step,
                                     acc_final);
    if (rc != SQLITE_OK) return rc;
  }
  /* not deterministic: the schema it reads can change between two calls in one statement */
  return sqlite3_create_function(db, "rollproof_collation", 2, SQLITE_UTF8 | SQLITE_DIRECTONLY, 0,
                                 collation_func, 0, 0);
}
