/*
** BLAKE2s-256 (RFC 7693) for rollproof's C code: the portable compression, and eight
** messages at once with AVX2 where the compiler and the CPU have it. Included by
** csrc/rowcodec.c (a SQLite row's digest) and csrc/pgcopy.c (a PostgreSQL COPY tuple's
** digest); every function is static, so each file gets its own copy and no symbol is shared.
**
** Unkeyed, 32-byte digests, no salt or personalisation: the same bytes as Python's
** hashlib.blake2s(data).digest().
*/
#ifndef ROLLPROOF_BLAKE2S_H
#define ROLLPROOF_BLAKE2S_H

#include <stdint.h>
#include <string.h>

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
static void blake2s256(const unsigned char *data, uint64_t n, unsigned char out[32]) {
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

/* ---- eight digests at once (AVX2) -------------------------------------------------------
**
** Eight messages of the same number of blocks are hashed together, one per 32-bit lane of
** AVX2's registers: the same rounds, the message words transposed so that register j holds
** word j of every message, the byte counts (the messages' lengths) per lane in the final
** block. Where the CPU or the compiler has no AVX2, blake2s256 above hashes each message
** alone. The tests hold both to hashlib. */

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

/* BLAKE2s-256 of eight messages of `nblocks` blocks each (len[i] bytes, more than
** 64 * (nblocks - 1) and at most 64 * nblocks), each zero-padded to 64 * nblocks bytes in
** `blocks` (message i at blocks + 64 * nblocks * i), one compression per block, per lane.
** x86-64 is little-endian, so a block's words load as BLAKE2s reads them. */
X8_TARGET static void blake2s256_x8n(const unsigned char *blocks, int nblocks,
                                     const uint32_t len[LANES], unsigned char out[LANES][32]) {
  __m256i m[16], v[16], h[8], r[8];
  int i, b;
  const size_t stride = (size_t)64 * (size_t)nblocks;
  for (i = 0; i < 8; i++) h[i] = _mm256_set1_epi32((int)BLAKE2S_IV[i]);
  h[0] = _mm256_set1_epi32((int)(BLAKE2S_IV[0] ^ (0x01010000u | 32u)));
  for (b = 0; b < nblocks; b++) {
    const unsigned char *at = blocks + (size_t)64 * (size_t)b;
    for (i = 0; i < LANES; i++) r[i] = _mm256_loadu_si256((const __m256i *)(at + stride * i));
    x8_transpose(r);
    for (i = 0; i < 8; i++) m[i] = r[i];
    for (i = 0; i < LANES; i++)
      r[i] = _mm256_loadu_si256((const __m256i *)(at + stride * i + 32));
    x8_transpose(r);
    for (i = 0; i < 8; i++) m[i + 8] = r[i];
    for (i = 0; i < 8; i++) {
      v[i] = h[i];
      v[i + 8] = _mm256_set1_epi32((int)BLAKE2S_IV[i]);
    }
    if (b == nblocks - 1) {
      v[12] = _mm256_xor_si256(v[12], _mm256_loadu_si256((const __m256i *)len)); /* t0 */
      v[14] = _mm256_xor_si256(v[14], _mm256_set1_epi32(-1)); /* final block */
    } else {
      v[12] = _mm256_xor_si256(v[12], _mm256_set1_epi32(64 * (b + 1)));
    }
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
    for (i = 0; i < 8; i++) h[i] = _mm256_xor_si256(h[i], _mm256_xor_si256(v[i], v[i + 8]));
  }
  for (i = 0; i < 8; i++) r[i] = h[i];
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
static void blake2s256_x8n(const unsigned char *blocks, int nblocks, const uint32_t len[LANES],
                           unsigned char out[LANES][32]) {
  int i;
  for (i = 0; i < LANES; i++) blake2s256(blocks + (size_t)64 * (size_t)nblocks * i, len[i], out[i]);
}
#endif

/* Eight one-block messages (at most 64 bytes each; message i at blocks + 64 * i). */
static inline void blake2s256_x8(const unsigned char *blocks, const uint32_t len[LANES],
                                 unsigned char out[LANES][32]) {
  blake2s256_x8n(blocks, 1, len, out);
}

#endif /* ROLLPROOF_BLAKE2S_H */
