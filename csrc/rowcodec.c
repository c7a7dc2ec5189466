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
** Three aggregate functions and three scalars, registered SQLITE_DIRECTONLY so that no view or
** trigger of the database being read can call them:
**
**   rollproof_rows(c1, ..., cn)         the rows' encodings one after another (one BLOB)
**   rollproof_row_digests(c1, ..., cn)  one 32-byte BLAKE2s-256 digest of each row's encoding
**   rollproof_last(k1, ..., km)         the encoding of the last row seen, for keyset
**                                       pagination; refused (an error) if its text is not
**                                       valid UTF-8, since the caller binds the values again
**   rollproof_sort_digests(blob)        the blob's 32-byte records sorted bytewise (memcmp
**                                       order), for a key-less table's row digests; refused
**                                       unless its length is a multiple of 32
**   rollproof_merge_digests(b1, ...)    sorted blobs of 32-byte records merged into one
**                                       sorted blob (same refusal)
**   rollproof_collation(table, column)  the declared collation of a column of a table in
**                                       `main` (sqlite3_table_column_metadata), NULL where
**                                       this SQLite cannot say
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
        const unsigned char *p = sqlite3_value_text(v);
        sqlite3_uint64 n = (sqlite3_uint64)sqlite3_value_bytes(v), size;
        int valid;
        if (p == 0) return SQLITE_NOMEM; /* the conversion to UTF-8 failed */
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

/* ---- the aggregate functions ------------------------------------------------------------ */

typedef struct {
  Buf out;              /* the result being built */
  Buf row;              /* one row's encoding (row digests, last row) */
  sqlite3_uint64 limit; /* the connection's length limit, read on the first row */
} Acc;

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
  buf_free(&acc->row);
  if (acc->out.data == 0) {
    sqlite3_result_zeroblob(ctx, 0);
  } else {
    sqlite3_result_blob64(ctx, acc->out.data, acc->out.len, sqlite3_free);
  }
  acc->out.data = 0;
  acc->out.len = acc->out.cap = 0;
}

/* ---- sorting row digests ---------------------------------------------------------------- */

#define DIGEST 32
#define INSERTION_MAX 24

static int digest_cmp(const void *a, const void *b) { return memcmp(a, b, DIGEST); }

static void insertion_sort(unsigned char *base, sqlite3_uint64 n) {
  unsigned char held[DIGEST];
  sqlite3_uint64 i, j;
  for (i = 1; i < n; i++) {
    memcpy(held, base + i * DIGEST, DIGEST);
    for (j = i; j > 0 && memcmp(base + (j - 1) * DIGEST, held, DIGEST) > 0; j--) {
      memcpy(base + j * DIGEST, base + (j - 1) * DIGEST, DIGEST);
    }
    memcpy(base + j * DIGEST, held, DIGEST);
  }
}

/* Distribute `count` records of `from` into `to` by their byte `at` (a stable counting sort);
** `start` receives where each of the 256 buckets begins, start[256] the end. */
static void distribute(const unsigned char *from, unsigned char *to, sqlite3_uint64 count, int at,
                       sqlite3_uint64 start[257]) {
  sqlite3_uint64 next[256], i;
  int b;
  memset(next, 0, sizeof next);
  for (i = 0; i < count; i++) next[from[i * DIGEST + at]]++;
  start[0] = 0;
  for (b = 0; b < 256; b++) {
    start[b + 1] = start[b] + next[b];
    next[b] = start[b];
  }
  for (i = 0; i < count; i++) {
    memcpy(to + next[from[i * DIGEST + at]]++ * DIGEST, from + i * DIGEST, DIGEST);
  }
}

/* The records sorted bytewise: distributed by their first byte, each of those buckets by its
** second byte (two passes of 256 buckets each, so every pass writes to few places at once and
** the second stays in cache), then each small bucket sorted on its own. Digests are uniform, so a
** final bucket holds about n / 65536 records. The order is memcmp's over the whole record, the
** order the Python path's sort gives. */
static void sort_digests_func(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  const unsigned char *in;
  unsigned char *out, *tmp;
  sqlite3_uint64 n, count, outer[257], inner[257];
  int b, c;
  (void)argc;
  if (sqlite3_value_type(argv[0]) != SQLITE_BLOB) {
    sqlite3_result_error(ctx, "rollproof_sort_digests: expects a BLOB", -1);
    return;
  }
  n = (sqlite3_uint64)sqlite3_value_bytes(argv[0]);
  in = sqlite3_value_blob(argv[0]);
  if (n % DIGEST != 0) {
    sqlite3_result_error(ctx, "rollproof_sort_digests: length is not a multiple of 32", -1);
    return;
  }
  if (n == 0) {
    sqlite3_result_zeroblob(ctx, 0);
    return;
  }
  if (in == 0) { /* a non-empty BLOB SQLite could not give (out of memory) */
    sqlite3_result_error_nomem(ctx);
    return;
  }
  count = n / DIGEST;
  out = sqlite3_malloc64(n);
  tmp = sqlite3_malloc64(n);
  if (out == 0 || tmp == 0) {
    sqlite3_free(out);
    sqlite3_free(tmp);
    sqlite3_result_error_nomem(ctx);
    return;
  }
  distribute(in, tmp, count, 0, outer);
  for (b = 0; b < 256; b++) {
    sqlite3_uint64 first = outer[b], size = outer[b + 1] - outer[b];
    if (size == 0) continue;
    distribute(tmp + first * DIGEST, out + first * DIGEST, size, 1, inner);
    for (c = 0; c < 256; c++) {
      sqlite3_uint64 m = inner[c + 1] - inner[c];
      unsigned char *base = out + (first + inner[c]) * DIGEST;
      if (m > INSERTION_MAX) {
        qsort(base, (size_t)m, DIGEST, digest_cmp);
      } else if (m > 1) {
        insertion_sort(base, m);
      }
    }
  }
  sqlite3_free(tmp);
  sqlite3_result_blob64(ctx, out, n, sqlite3_free);
}

/* Sorted runs of records merged into one sorted blob: at each step the smallest head (ties go
** to the earlier run, though equal records are equal bytes either way). */
static void merge_digests_func(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  const unsigned char *head[64];
  sqlite3_uint64 left[64], n = 0, done = 0;
  unsigned char *out;
  int i;
  if (argc > 64) {
    sqlite3_result_error(ctx, "rollproof_merge_digests: at most 64 runs", -1);
    return;
  }
  for (i = 0; i < argc; i++) {
    sqlite3_uint64 bytes;
    if (sqlite3_value_type(argv[i]) != SQLITE_BLOB) {
      sqlite3_result_error(ctx, "rollproof_merge_digests: expects BLOBs", -1);
      return;
    }
    bytes = (sqlite3_uint64)sqlite3_value_bytes(argv[i]);
    head[i] = sqlite3_value_blob(argv[i]);
    if (bytes % DIGEST != 0) {
      sqlite3_result_error(ctx, "rollproof_merge_digests: length is not a multiple of 32", -1);
      return;
    }
    if (bytes > 0 && head[i] == 0) { /* a non-empty BLOB SQLite could not give */
      sqlite3_result_error_nomem(ctx);
      return;
    }
    left[i] = bytes / DIGEST;
    n += left[i] * DIGEST;
  }
  if (n == 0) {
    sqlite3_result_zeroblob(ctx, 0);
    return;
  }
  out = sqlite3_malloc64(n);
  if (out == 0) {
    sqlite3_result_error_nomem(ctx);
    return;
  }
  while (done < n) {
    int best = -1;
    for (i = 0; i < argc; i++) {
      if (left[i] > 0 && (best < 0 || memcmp(head[i], head[best], DIGEST) < 0)) best = i;
    }
    memcpy(out + done, head[best], DIGEST);
    done += DIGEST;
    head[best] += DIGEST;
    left[best]--;
  }
  sqlite3_result_blob64(ctx, out, n, sqlite3_free);
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
  {
    int rc = sqlite3_create_function(db, "rollproof_sort_digests", 1, flags, 0, sort_digests_func,
                                     0, 0);
    if (rc != SQLITE_OK) return rc;
    /* not deterministic: the schema it reads can change between two calls in one statement */
    rc = sqlite3_create_function(db, "rollproof_collation", 2, SQLITE_UTF8 | SQLITE_DIRECTONLY, 0,
                                 collation_func, 0, 0);
    if (rc != SQLITE_OK) return rc;
  }
  return sqlite3_create_function(db, "rollproof_merge_digests", -1, flags, 0, merge_digests_func,
                                 0, 0);
}
