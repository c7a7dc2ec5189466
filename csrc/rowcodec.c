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
#include "blake2s.h"
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
