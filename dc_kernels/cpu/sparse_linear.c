/* CPU kernels of the sparse form: y = x W^T + b straight from the packed relative-index entries.
 *
 * Layout (dc_kernels/cpu/layout.py): every row is the paper's relative-index form, one entry per
 * kept weight plus fillers, each entry code | z << bits (z: pruned columns skipped since the
 * previous entry; z = escape = 2**index_bits - 1 is a filler that advances `escape` columns and
 * holds no weight), the row padded with fillers to a multiple of 16 entries. The entries are one
 * bit-plane stream (planes.h) and entry_ptr[r] is row r's first entry. A kept weight costs
 * bits + index_bits bits (plus fillers), and is decoded in registers, never written back.
 *
 * dc_sparse_linear: y = x W^T + b for a layer's descriptor (layers.h), x (batch, in_features):
 *   - batches of up to GEMV_MAX_BATCH rows, one row at a time. With AVX-512, 16 entries per step:
 *     unpack, a prefix sum of the column advances gives the columns, the codes select their
 *     weights from the codebook in registers (planes.h) and x is gathered at the columns (only
 *     where the entry holds a weight);
 *   - larger batches, in passes of batch columns: x transposed to xt (in_features, bp), bp a
 *     multiple of BATCH_TILE (16 with AVX-512, else 8), the kept weights of 16 entries decoded
 *     once and each multiplying a contiguous tile of up to 64 batch columns held in registers.
 * With AVX2 (and FMA) but no AVX-512 the same steps of 16 entries run as two vectors of 8 lanes:
 * the prefix sum per half, x read at every lane (a filler's column is in range and its weight 0)
 * by scalar loads (on AMD EPYC (Zen 3) 12% faster than vgatherdps on Alex-7 at batch 1), the
 * decode's stores lane by lane; at batch 1, streams of 8- to 11-bit entries with codes of up to 5
 * bits (the paper's FC layers) take steps of 32 entries decoded in bytes instead (row_bytes: on
 * AMD EPYC Zen 3, 1.3-1.6x faster on the paper's layers), as do larger batches of such streams.
 * dc_sparse_decode: dense float32 rows, for batches where a dense GEMM beats the sparse loop.
 *
 * Columns are clamped to in_features - 1, so even damaged entries never read outside x.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "layers.h"
#include "planes.h"
#include "pool.h"

typedef struct {
  dc_planes_t planes;
  int64_t rows, cols, batch, bp;
  const int64_t *entry_ptr;
  int bits, escape;
  const float *table; /* the codebook, zero-padded (planes.h) */
  const float *x;     /* x (in_features) for gemv, xt (in_features, bp) for gemm */
  const float *bias;
  float *y; /* y (rows) for gemv, (batch, rows) for gemm, (rows, cols) for decode */
} job_t;

static inline void store_tile(const job_t *j, int64_t r, int64_t b0, const float *acc, int64_t tb) {
  const float b = j->bias ? j->bias[r] : 0.f;
  const int64_t n = j->batch - b0 < tb ? j->batch - b0 : tb;
  for (int64_t t = 0; t < n; ++t) j->y[(b0 + t) * j->rows + r] = acc[t] + b;
}

#ifdef DC_AVX512
/* Prefix sums of 16 lanes: lane i gets v[0] + ... + v[i]. */
DC_INLINE __m512i prefix16(__m512i v) {
  const __m512i zero = _mm512_setzero_si512();
  v = _mm512_add_epi32(v, _mm512_alignr_epi32(v, zero, 15));
  v = _mm512_add_epi32(v, _mm512_alignr_epi32(v, zero, 14));
  v = _mm512_add_epi32(v, _mm512_alignr_epi32(v, zero, 12));
  return _mm512_add_epi32(v, _mm512_alignr_epi32(v, zero, 8));
}

typedef struct {
  __m512i escape, one, fifteen, code_mask, last;
  __m128i bits;
  __m512 lo, hi;
} decoder_t;

DC_INLINE decoder_t decoder(const job_t *j) {
  const decoder_t d = {_mm512_set1_epi32(j->escape), _mm512_set1_epi32(1), _mm512_set1_epi32(15),
                       _mm512_set1_epi32((1 << j->bits) - 1), _mm512_set1_epi32((int)j->cols - 1),
                       _mm_cvtsi32_si128(j->bits), _mm512_loadu_ps(j->table), _mm512_loadu_ps(j->table + 16)};
  return d;
}

/* Entries e .. e + 15 of a stream of `width`-bit entries: their columns (`base`: each lane the
 * column before them, updated; clamped to the row), weights, and which of them hold a weight. */
DC_INLINE __mmask16 decode16(const job_t *j, const decoder_t *d, int64_t e, __m512i *base, __m512i *cols,
                             __m512 *w, const int width) {
  const __m512i v = dc_get16(&j->planes, e, width, 1);
  const __m512i z = _mm512_srl_epi32(v, d->bits);
  const __mmask16 real = _mm512_cmpneq_epi32_mask(z, d->escape);
  *cols = _mm512_add_epi32(*base, prefix16(_mm512_mask_add_epi32(d->escape, real, z, d->one)));
  *base = _mm512_permutexvar_epi32(d->fifteen, *cols);
  *cols = _mm512_min_epi32(*cols, d->last);
  const int exact = j->bits == 4 || j->bits == 5; /* else clear z above the code */
  *w = dc_lookup16(j->table, j->bits, d->lo, d->hi, exact ? v : _mm512_and_si512(v, d->code_mask));
  return real;
}

DC_INLINE void gemv_body(const job_t *j, int64_t begin, int64_t end, const int width) {
  const decoder_t d = decoder(j);
  for (int64_t r = begin; r < end; ++r) {
    __m512i base = _mm512_set1_epi32(-1), cols;
    __m512 acc = _mm512_setzero_ps(), w;
    for (int64_t e = j->entry_ptr[r]; e < j->entry_ptr[r + 1]; e += 16) {
      const __mmask16 real = decode16(j, &d, e, &base, &cols, &w, width);
      acc = _mm512_fmadd_ps(w, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), real, cols, j->x, 4), acc);
    }
    j->y[r] = _mm512_reduce_add_ps(acc) + (j->bias ? j->bias[r] : 0.f);
  }
}

#define BATCH_TILE 16
/* TB batch columns of row r in TB / 16 registers (TB a constant: the loops over v unroll). */
DC_INLINE void tile(const job_t *j, const decoder_t *d, int64_t r, int64_t b0, const int TB, const int width) {
  __m512 acc[4];
  for (int v = 0; v < TB / 16; ++v) acc[v] = _mm512_setzero_ps();
  __m512i base = _mm512_set1_epi32(-1), cols;
  __m512 w;
  int32_t col[16];
  float weight[16];
  for (int64_t e = j->entry_ptr[r]; e < j->entry_ptr[r + 1]; e += 16) {
    unsigned real = decode16(j, d, e, &base, &cols, &w, width);
    _mm512_storeu_si512(col, cols);
    _mm512_storeu_ps(weight, w);
    for (; real; real &= real - 1) { /* the entries that hold a weight */
      const int t = __builtin_ctz(real);
      const __m512 wt = _mm512_set1_ps(weight[t]);
      const float *xr = j->x + (int64_t)col[t] * j->bp + b0;
      for (int v = 0; v < TB / 16; ++v) acc[v] = _mm512_fmadd_ps(wt, _mm512_loadu_ps(xr + 16 * v), acc[v]);
    }
  }
  float out[64];
  for (int v = 0; v < TB / 16; ++v) _mm512_storeu_ps(out + 16 * v, acc[v]);
  store_tile(j, r, b0, out, TB);
}

DC_INLINE void decode_body(const job_t *j, int64_t begin, int64_t end, const int width) {
  const decoder_t d = decoder(j);
  for (int64_t r = begin; r < end; ++r) {
    float *row = j->y + r * j->cols;
    memset(row, 0, (size_t)j->cols * sizeof(float));
    __m512i base = _mm512_set1_epi32(-1), cols;
    __m512 w;
    for (int64_t e = j->entry_ptr[r]; e < j->entry_ptr[r + 1]; e += 16) {
      const __mmask16 real = decode16(j, &d, e, &base, &cols, &w, width);
      _mm512_mask_i32scatter_ps(row, real, cols, w, 4);
    }
  }
}
#elif defined(DC_AVX2)
/* Prefix sums of 8 lanes: lane i gets v[0] + ... + v[i]. */
DC_INLINE __m256i prefix8(__m256i v) {
  v = _mm256_add_epi32(v, _mm256_slli_si256(v, 4));
  v = _mm256_add_epi32(v, _mm256_slli_si256(v, 8)); /* each 128-bit half summed */
  /* the low half's total (lane 3) added to the high half */
  return _mm256_add_epi32(v, _mm256_permute2x128_si256(_mm256_shuffle_epi32(v, 0xFF), v, 0x08));
}

/* The sum of 8 lanes. */
DC_INLINE float sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

typedef struct {
  __m256i escape, one, seven, code_mask, last;
  __m128i bits;
  __m256 lo, hi;
} decoder_t;

DC_INLINE decoder_t decoder(const job_t *j) {
  const decoder_t d = {_mm256_set1_epi32(j->escape), _mm256_set1_epi32(1), _mm256_set1_epi32(7),
                       _mm256_set1_epi32((1 << j->bits) - 1), _mm256_set1_epi32((int)j->cols - 1),
                       _mm_cvtsi32_si128(j->bits), _mm256_loadu_ps(j->table), _mm256_loadu_ps(j->table + 8)};
  return d;
}

/* As the AVX-512 decode16, entries e .. e + 15 as two vectors of 8 lanes: their columns, weights
 * (0 for fillers, so that x may be read at every lane) and the bits of the entries that hold a
 * weight. */
DC_INLINE unsigned decode16(const job_t *j, const decoder_t *d, int64_t e, __m256i *base, __m256i cols[2],
                            __m256 w[2], const int width) {
  __m256i v[2], step[2];
  dc_get16x8(&j->planes, e, width, 1, v);
  const int exact = j->bits >= 3 && j->bits <= 5; /* else clear z above the code */
  unsigned real = 0;
  for (int h = 0; h < 2; ++h) {
    const __m256i z = _mm256_srl_epi32(v[h], d->bits);
    const __m256i filler = _mm256_cmpeq_epi32(z, d->escape); /* all ones: advance `escape`, no weight */
    step[h] = prefix8(_mm256_add_epi32(_mm256_add_epi32(z, d->one), filler));
    const __m256 weight = dc_lookup8(j->table, j->bits, d->lo, d->hi, exact ? v[h] : _mm256_and_si256(v[h], d->code_mask));
    w[h] = _mm256_andnot_ps(_mm256_castsi256_ps(filler), weight);
    real |= (~(unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(filler)) & 0xFFu) << (8 * h);
  }
  /* the columns past base, summed apart from it: from step to step the chain is one add */
  step[1] = _mm256_add_epi32(step[1], _mm256_permutevar8x32_epi32(step[0], d->seven));
  for (int h = 0; h < 2; ++h) cols[h] = _mm256_min_epi32(_mm256_add_epi32(*base, step[h]), d->last);
  *base = _mm256_add_epi32(*base, _mm256_permutevar8x32_epi32(step[1], d->seven));
  return real;
}

/* decode16 with the columns and weights stored lane by lane, for loops over the entries that hold
 * a weight (the returned bits). */
DC_INLINE unsigned decode16_lanes(const job_t *j, const decoder_t *d, int64_t e, __m256i *base, int32_t col[16],
                                  float weight[16], const int width) {
  __m256i cols[2];
  __m256 w[2];
  const unsigned real = decode16(j, d, e, base, cols, w, width);
  for (int h = 0; h < 2; ++h) {
    _mm256_storeu_si256((__m256i *)(col + 8 * h), cols[h]);
    _mm256_storeu_ps(weight + 8 * h, w[h]);
  }
  return real;
}

/* Byte steps: streams of 8- to 11-bit entries with codes of up to 5 bits and z of up to 8 bits
 * (the paper's 5-bit codes with 4- and 5-bit indices among them) have a byte plane and up to three
 * bit planes, so a step decodes 32 entries in bytes. The column advances are summed per half
 * (column_sums) and stored, the weights looked up in the codebook's byte planes (dc_table_bytes: 4
 * lookups, for 5-bit codes 8 and 4 blends, then 8 unpacks for 32 weights; a filler's lookup index
 * has bit 7 set, which makes its weight 0) and stored. x is read at the stored columns only after
 * BYTE_CHUNK steps are decoded: read right after their store, the columns had cost as much as the
 * rest of the step (on AMD EPYC Zen 3, 12-13 ns per 16 entries against 9 ns this way; the decode
 * alone takes 2.7). Batches of 1 and 2 read x as given, larger ones its transpose xt. */
#define BYTE_STEP 32
#define BYTE_CHUNK 8
#define BYTE_STEPS(j, width) ((width) >= 8 && (width) <= 11 && (j)->bits <= 5 && (width) - (j)->bits <= 8)
#define BYTE_ROWS 2 /* rows of x the batch-1 kernel takes at once (3 or 4 spilled: 1.7x slower) */

typedef struct {
  __m256i table[8], low, zmask, escape, one, spread, lane_bit, high[3];
  __m128i bits;
} byte_decoder_t;

DC_INLINE byte_decoder_t byte_decoder(const job_t *j) {
  byte_decoder_t d;
  dc_table_bytes(j->table, d.table, 2); /* codes of up to 5 bits */
  d.low = _mm256_set1_epi8((char)(j->bits >= 4 ? 0x0F : (1 << j->bits) - 1)); /* the lookup's index bits */
  d.zmask = _mm256_set1_epi8((char)(0xFF >> j->bits));
  d.escape = _mm256_set1_epi8((char)j->escape);
  d.one = _mm256_set1_epi8(1);
  /* the bit plane: byte i of the step tests bit i % 8 of the plane's byte i / 8 */
  d.spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
                              3, 3);
  d.lane_bit = _mm256_set1_epi64x(0x8040201008040201LL);
  for (int k = 0; k < 3; ++k) /* the entry's bit 8 + k, as a bit of z */
    d.high[k] = _mm256_set1_epi8((char)(8 - j->bits + k <= 7 ? 1 << (8 - j->bits + k) : 0));
  d.bits = _mm_cvtsi32_si128(j->bits);
  return d;
}

/* rel[16 h + i] = step[16 h] + ... + step[16 h + i]: the column advances (bytes) summed per half.
 * With indices of up to 4 bits an advance is at most 15, so a half's sums fit in bytes and each
 * 128-bit lane sums its half in 4 shifts and adds (on AMD EPYC Zen 3 12% faster at batch 1 than
 * the sums in 16 bits, which wider indices need: their halves cross the lanes). */
DC_INLINE void column_sums(__m256i step, uint16_t rel[32], const int index_bits) {
  if (index_bits <= 4) {
    step = _mm256_add_epi8(step, _mm256_slli_si256(step, 1));
    step = _mm256_add_epi8(step, _mm256_slli_si256(step, 2));
    step = _mm256_add_epi8(step, _mm256_slli_si256(step, 4));
    step = _mm256_add_epi8(step, _mm256_slli_si256(step, 8));
    _mm256_storeu_si256((__m256i *)rel, _mm256_cvtepu8_epi16(_mm256_castsi256_si128(step)));
    _mm256_storeu_si256((__m256i *)(rel + 16), _mm256_cvtepu8_epi16(_mm256_extracti128_si256(step, 1)));
    return;
  }
  const __m128i halves[2] = {_mm256_castsi256_si128(step), _mm256_extracti128_si256(step, 1)};
  for (int h = 0; h < 2; ++h) {
    __m256i s = _mm256_cvtepu8_epi16(halves[h]);
    s = _mm256_add_epi16(s, _mm256_slli_si256(s, 2));
    s = _mm256_add_epi16(s, _mm256_slli_si256(s, 4));
    s = _mm256_add_epi16(s, _mm256_slli_si256(s, 8));
    /* lane 7's sum added to the upper 128 bits */
    const __m256i low_total = _mm256_permute4x64_epi64(_mm256_shufflehi_epi16(s, 0xFF), 0x50);
    s = _mm256_add_epi16(s, _mm256_blend_epi32(low_total, _mm256_setzero_si256(), 0x0F));
    _mm256_storeu_si256((__m256i *)(rel + 16 * h), s);
  }
}

/* Entries e .. e + 31 (e .. e + 15 with `half`) of a stream of `width` (8 to 11) bits: rel[16 h + i]
 * the column of entry 16 h + i past the column before entry 16 h, w the weights in lookup order
 * (w[8 m + l] of entry 4 m + l for l < 4, 16 + 4 m + l - 4 above; those of `half`'s missing
 * entries 0, their columns those of the 16th). */
DC_INLINE void decode_bytes(const job_t *j, const byte_decoder_t *d, int64_t e, int half, uint16_t rel[32],
                            float w[32], const int width) {
  const uint8_t *bytes = j->planes.base[0] + e;
  const __m256i b = half ? _mm256_zextsi128_si256(_mm_loadu_si128((const __m128i *)bytes))
                         : _mm256_loadu_si256((const __m256i *)bytes);
  __m256i z = _mm256_and_si256(_mm256_srl_epi16(b, d->bits), d->zmask);
  for (int k = 1; k < width - 7; ++k) { /* the bit planes */
    const uint8_t *plane = j->planes.base[k] + ((uint64_t)e >> 3);
    uint16_t lo, hi = 0; /* two fixed-size loads: a copy of 2 or 4 bytes compiled to a byte loop */
    memcpy(&lo, plane, 2);
    if (!half) memcpy(&hi, plane + 2, 2);
    const uint32_t word = lo | (uint32_t)hi << 16;
    const __m256i set = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32((int)word), d->spread), d->lane_bit);
    z = _mm256_or_si256(z, _mm256_and_si256(_mm256_cmpeq_epi8(set, d->lane_bit), d->high[k - 1]));
  }
  __m256i filler = _mm256_cmpeq_epi8(z, d->escape); /* all ones: advance `escape`, no weight */
  if (half) filler = _mm256_or_si256(filler, _mm256_setr_epi64x(0, 0, -1, -1)); /* and advance 0 */
  column_sums(_mm256_add_epi8(_mm256_add_epi8(z, d->one), filler), rel, width - j->bits);
  const __m256i code = _mm256_or_si256(_mm256_and_si256(b, d->low), filler);
  __m256i t[4];
  for (int k = 0; k < 4; ++k) t[k] = _mm256_shuffle_epi8(d->table[k], code);
  if (j->bits == 5) {
    const __m256i bit4 = _mm256_slli_epi16(b, 3); /* to each byte's bit 7, which the blend reads */
    for (int k = 0; k < 4; ++k) t[k] = _mm256_blendv_epi8(t[k], _mm256_shuffle_epi8(d->table[4 + k], code), bit4);
  }
  const __m256i lo01 = _mm256_unpacklo_epi8(t[0], t[1]), hi01 = _mm256_unpackhi_epi8(t[0], t[1]);
  const __m256i lo23 = _mm256_unpacklo_epi8(t[2], t[3]), hi23 = _mm256_unpackhi_epi8(t[2], t[3]);
  _mm256_storeu_si256((__m256i *)w, _mm256_unpacklo_epi16(lo01, lo23));
  _mm256_storeu_si256((__m256i *)(w + 8), _mm256_unpackhi_epi16(lo01, lo23));
  _mm256_storeu_si256((__m256i *)(w + 16), _mm256_unpacklo_epi16(hi01, hi23));
  _mm256_storeu_si256((__m256i *)(w + 24), _mm256_unpackhi_epi16(hi01, hi23));
}

/* x at columns lo[0..3] past xa (lanes 0-3) and hi[0..3] past xb (lanes 4-7), with `clamp` at
 * most la and lb past them: broadcast loads and blends, which every FP pipe runs (inserts queue on
 * the two shuffle pipes); each four columns one 64-bit load taken apart by shifts, which leaves
 * the load ports to x (6% faster than a load per column). The empty asm keeps xa and xb as the
 * loads' base registers: GCC otherwise added their column to every index (an add per entry; 5%
 * slower at batch 1 on AMD EPYC Zen 3). */
DC_INLINE __m256 x_lanes(const float *xa, const uint16_t *lo, const float *xb, const uint16_t *hi, int64_t la,
                         int64_t lb, const int clamp) {
  uint64_t four_lo, four_hi;
  memcpy(&four_lo, lo, sizeof four_lo);
  memcpy(&four_hi, hi, sizeof four_hi);
  __asm__("" : "+r"(xa), "+r"(xb));
  __m256 v[8];
  for (int i = 0; i < 4; ++i) {
    const int64_t a = (four_lo >> (16 * i)) & 0xFFFF, b = (four_hi >> (16 * i)) & 0xFFFF;
    v[i] = _mm256_broadcast_ss(xa + (clamp && a > la ? la : a));
    v[4 + i] = _mm256_broadcast_ss(xb + (clamp && b > lb ? lb : b));
  }
  for (int i = 0; i < 8; i += 2) v[i] = _mm256_blend_ps(v[i], v[i + 1], 2 << i);
  for (int i = 0; i < 8; i += 4) v[i] = _mm256_blend_ps(v[i], v[i + 2], 12 << i);
  return _mm256_blend_ps(v[0], v[4], 0xF0);
}

/* acc[A b + m % A] += the products of one decoded step (columns c0 + rel[i] and c1 + rel[16 + i],
 * with `clamp` at most c0 + la and c1 + lb) with row b of x (B rows, A = 4 / B accumulators each).
 * The loop over m unrolls: with m % A computed at run time the accumulators lived on the stack
 * (batch 2 on AMD EPYC Zen 3: 1.0 -> 0.82 ns per entry). */
DC_INLINE void step_products(const job_t *j, const uint16_t rel[32], const float w[32], int64_t c0, int64_t c1,
                             int64_t la, int64_t lb, const int clamp, const int B, __m256 acc[4]) {
  const int A = 4 / B;
  _Pragma("GCC unroll 4") for (int m = 0; m < 4; ++m)
    for (int b = 0; b < B; ++b) {
      const float *xr = j->x + b * j->cols;
      const __m256 xm = x_lanes(xr + c0, rel + 4 * m, xr + c1, rel + 16 + 4 * m, la, lb, clamp);
      acc[A * b + m % A] = _mm256_fmadd_ps(_mm256_loadu_ps(w + 8 * m), xm, acc[A * b + m % A]);
    }
}

/* step_products of one decoded step; *base: the column before it (updated). */
DC_INLINE void multiply_bytes(const job_t *j, const uint16_t rel[32], const float w[32], int64_t *base, const int B,
                              __m256 acc[4]) {
  const int64_t last = j->cols - 1, c0 = *base, c1 = c0 + rel[15];
  *base = c1 + rel[31];
  if (*base <= last) /* every column in the row: the columns grow from entry to entry */
    step_products(j, rel, w, c0, c1, 0, 0, 0, B, acc);
  else
    step_products(j, rel, w, c0, c1, last - c0, last - c1, 1, B, acc);
}

/* Partial sums of each vector of a tile of TB batch columns: at least 4 chains of FMAs in all
 * (a chain waits 4-5 cycles an entry for its FMA). */
#define TILE_CHAINS(TB) ((TB) >= 32 ? 1 : 32 / (TB))

/* Row r's tile of TB batch columns from b0, its chains summed, into y. */
DC_INLINE void store_chains(const job_t *j, int64_t r, int64_t b0, __m256 acc[8], const int TB) {
  float out[64];
  for (int v = 0; v < TB / 8; ++v) {
    for (int k = 1; k < TILE_CHAINS(TB); ++k) acc[v] = _mm256_add_ps(acc[v], acc[v + TB / 8 * k]);
    _mm256_storeu_ps(out + 8 * v, acc[v]);
  }
  store_tile(j, r, b0, out, TB);
}

/* acc += one decoded step's products with TB batch columns of xt: entry 16 h + i reads xt's row
 * rel[16 h + i] past xa (h = 0) or xb (h = 1), with `clamp` at most la and lb past them; vector v
 * of the tile in acc[v + TB / 8 * k], chain k taking every TILE_CHAINS-th entry. The loops over a
 * step's 32 entries unroll (a rolled loop with the entry's half picked by a branch took about 20
 * instructions an entry). Without clamps (a step inside its row) an entry is a load of rel, a
 * multiply by bp, the broadcast of its weight and the multiply-adds: 4 instructions at TB = 8,
 * where a column added to the step's base and clamped by two selects took 11. */
DC_INLINE void tile_step(const uint16_t rel[32], const float w[32], const float *xa, const float *xb, int64_t bp,
                         int64_t la, int64_t lb, const int clamp, const int TB, __m256 acc[8]) {
  __asm__("" : "+r"(xa), "+r"(xb)); /* kept as the loads' bases (as in x_lanes) */
  for (int m = 0; m < 4; ++m)
    _Pragma("GCC unroll 8") for (int l = 0; l < 8; ++l) { /* lookup order; fillers too (weight 0) */
      const int h = l / 4;
      int64_t row = rel[16 * h + 4 * m + l % 4];
      if (clamp && row > (h ? lb : la)) row = h ? lb : la;
      const __m256 wt = _mm256_broadcast_ss(w + 8 * m + l);
      const float *xr = (h ? xb : xa) + row * bp;
      __m256 *chain = acc + TB / 8 * (l % TILE_CHAINS(TB));
      for (int v = 0; v < TB / 8; ++v) chain[v] = _mm256_fmadd_ps(wt, _mm256_loadu_ps(xr + 8 * v), chain[v]);
    }
}

/* acc += one decoded step's weights times TB batch columns of xt from b0; *base: the column before
 * the step (updated). */
DC_INLINE void tile_bytes(const job_t *j, const uint16_t rel[32], const float w[32], int64_t *base, int64_t b0,
                          const int TB, __m256 acc[8]) {
  const int64_t last = j->cols - 1, bp = j->bp, c0 = *base, c1 = c0 + rel[15];
  const float *xt = j->x + b0;
  *base = c1 + rel[31];
  if (*base <= last) /* every column in the row: the columns grow from entry to entry */
    tile_step(rel, w, xt + c0 * bp, xt + c1 * bp, bp, 0, 0, 0, TB, acc);
  else
    tile_step(rel, w, xt + c0 * bp, xt + c1 * bp, bp, last - c0, last - c1, 1, TB, acc);
}

/* Row r through byte steps: with TB <= BYTE_ROWS, for TB rows of x (batch 1 to BYTE_ROWS, x as
 * given), else for TB batch columns of xt from b0 (8 to 64). */
DC_INLINE void row_bytes(const job_t *j, const byte_decoder_t *d, int64_t r, int64_t b0, const int TB,
                         const int width) {
  __m256 acc[8];
  for (int v = 0; v < 8; ++v) acc[v] = _mm256_setzero_ps();
  int64_t base = -1;
  for (int64_t e = j->entry_ptr[r], stop = j->entry_ptr[r + 1]; e < stop;) {
    uint16_t rel[BYTE_CHUNK][BYTE_STEP];
    float w[BYTE_CHUNK][BYTE_STEP];
    int n = 0;
    for (; n < BYTE_CHUNK && e < stop; ++n, e += BYTE_STEP)
      decode_bytes(j, d, e, stop - e < BYTE_STEP, rel[n], w[n], width);
    for (int k = 0; k < n; ++k)
      if (TB <= BYTE_ROWS)
        multiply_bytes(j, rel[k], w[k], &base, TB, acc);
      else
        tile_bytes(j, rel[k], w[k], &base, b0, TB, acc);
  }
  if (TB <= BYTE_ROWS) {
    for (int b = 0; b < TB; ++b) {
      __m256 sum = acc[4 / TB * b];
      for (int a = 1; a < 4 / TB; ++a) sum = _mm256_add_ps(sum, acc[4 / TB * b + a]);
      j->y[b * j->rows + r] = sum8(sum) + (j->bias ? j->bias[r] : 0.f);
    }
  } else {
    store_chains(j, r, b0, acc, TB);
  }
}

DC_INLINE void gemv_body(const job_t *j, int64_t begin, int64_t end, const int width) {
  if (BYTE_STEPS(j, width)) {
    const byte_decoder_t d = byte_decoder(j);
    for (int64_t r = begin; r < end; ++r)
      if (j->batch == 1)
        row_bytes(j, &d, r, 0, 1, width);
      else
        row_bytes(j, &d, r, 0, BYTE_ROWS, width);
    return;
  }
  const decoder_t d = decoder(j);
  for (int64_t r = begin; r < end; ++r) {
    __m256i base = _mm256_set1_epi32(-1), cols[2];
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()}, w[2];
    for (int64_t e = j->entry_ptr[r]; e < j->entry_ptr[r + 1]; e += 16) {
      decode16(j, &d, e, &base, cols, w, width);
      int32_t col[16];
      for (int h = 0; h < 2; ++h) _mm256_storeu_si256((__m256i *)(col + 8 * h), cols[h]);
      for (int h = 0; h < 2; ++h) {
        const int32_t *c = col + 8 * h;
        const __m256 xs = _mm256_setr_ps(j->x[c[0]], j->x[c[1]], j->x[c[2]], j->x[c[3]], j->x[c[4]], j->x[c[5]],
                                         j->x[c[6]], j->x[c[7]]);
        acc[h] = _mm256_fmadd_ps(w[h], xs, acc[h]);
      }
    }
    j->y[r] = sum8(_mm256_add_ps(acc[0], acc[1])) + (j->bias ? j->bias[r] : 0.f);
  }
}

#define BATCH_TILE 8
/* TB batch columns of row r in TB / 8 registers (TB a constant: the loops over v unroll), all 16
 * entries of a step unrolled, fillers too (weight 0, column in range), in TILE_CHAINS chains. */
DC_INLINE void tile(const job_t *j, const decoder_t *d, int64_t r, int64_t b0, const int TB, const int width) {
  __m256 acc[8];
  for (int v = 0; v < 8; ++v) acc[v] = _mm256_setzero_ps();
  __m256i base = _mm256_set1_epi32(-1);
  int32_t col[16];
  float weight[16];
  const int64_t bp = j->bp;
  const float *xt = j->x + b0;
  for (int64_t e = j->entry_ptr[r]; e < j->entry_ptr[r + 1]; e += 16) {
    decode16_lanes(j, d, e, &base, col, weight, width);
    _Pragma("GCC unroll 16") for (int t = 0; t < 16; ++t) {
      const __m256 wt = _mm256_broadcast_ss(weight + t);
      const float *xr = xt + (int64_t)col[t] * bp;
      __m256 *chain = acc + TB / 8 * (t % TILE_CHAINS(TB));
      for (int v = 0; v < TB / 8; ++v) chain[v] = _mm256_fmadd_ps(wt, _mm256_loadu_ps(xr + 8 * v), chain[v]);
    }
  }
  store_chains(j, r, b0, acc, TB);
}

DC_INLINE void decode_body(const job_t *j, int64_t begin, int64_t end, const int width) {
  const decoder_t d = decoder(j);
  for (int64_t r = begin; r < end; ++r) {
    float *row = j->y + r * j->cols;
    memset(row, 0, (size_t)j->cols * sizeof(float));
    __m256i base = _mm256_set1_epi32(-1);
    int32_t col[16];
    float weight[16];
    for (int64_t e = j->entry_ptr[r]; e < j->entry_ptr[r + 1]; e += 16)
      for (unsigned real = decode16_lanes(j, &d, e, &base, col, weight, width); real; real &= real - 1) {
        const int t = __builtin_ctz(real);
        row[col[t]] = weight[t];
      }
  }
}
#else
/* Portable C: one entry at a time; `col` is the column before it (updated), 1 if it holds a weight. */
static inline int decode1(const job_t *j, int64_t e, int64_t *col, float *w) {
  const uint32_t v = dc_get1(&j->planes, e);
  const int z = (int)(v >> j->bits);
  const int real = z != j->escape;
  *col += real ? z + 1 : z;
  *w = j->table[v & ((1u << j->bits) - 1)];
  return real && *col < j->cols;
}

static void gemv_body(const job_t *j, int64_t begin, int64_t end, const int width) {
  (void)width;
  for (int64_t r = begin; r < end; ++r) {
    float acc = 0.f, w;
    int64_t col = -1;
    for (int64_t e = j->entry_ptr[r]; e < j->entry_ptr[r + 1]; ++e)
      if (decode1(j, e, &col, &w)) acc += w * j->x[col];
    j->y[r] = acc + (j->bias ? j->bias[r] : 0.f);
  }
}

#define BATCH_TILE 8
#define DEFINE_TILE(TB)                                                                                 \
  static void tile##TB(const job_t *j, int64_t r, int64_t b0) {                                         \
    float acc[TB];                                                                                      \
    for (int t = 0; t < TB; ++t) acc[t] = 0.f;                                                          \
    int64_t col = -1;                                                                                   \
    float w;                                                                                            \
    for (int64_t e = j->entry_ptr[r]; e < j->entry_ptr[r + 1]; ++e) {                                   \
      if (!decode1(j, e, &col, &w)) continue;                                                           \
      const float *xr = j->x + col * j->bp + b0;                                                        \
      _Pragma("omp simd") for (int t = 0; t < TB; ++t) acc[t] += w * xr[t];                             \
    }                                                                                                   \
    store_tile(j, r, b0, acc, TB);                                                                      \
  }
DEFINE_TILE(8)
DEFINE_TILE(64)

static void gemm_body(const job_t *j, int64_t begin, int64_t end, const int width) {
  (void)width;
  for (int64_t r = begin; r < end; ++r) {
    int64_t b0 = 0;
    for (; j->bp - b0 >= 64; b0 += 64) tile64(j, r, b0);
    for (; j->bp - b0 >= 8; b0 += 8) tile8(j, r, b0);
  }
}

static void decode_body(const job_t *j, int64_t begin, int64_t end, const int width) {
  (void)width;
  for (int64_t r = begin; r < end; ++r) {
    float *row = j->y + r * j->cols, w;
    memset(row, 0, (size_t)j->cols * sizeof(float));
    int64_t col = -1;
    for (int64_t e = j->entry_ptr[r]; e < j->entry_ptr[r + 1]; ++e)
      if (decode1(j, e, &col, &w)) row[col] = w;
  }
}
#endif

#if defined(DC_AVX512) || defined(DC_AVX2)
/* TILE(b0, TB) over row r's batch columns in register tiles of 64, then 32, 16 and (AVX2) 8: bp
 * is a multiple of BATCH_TILE. */
#if BATCH_TILE == 8
#define LAST_TILE(TILE) \
  if (j->bp - b0 >= 8) TILE(b0, 8);
#else
#define LAST_TILE(TILE)
#endif
#define FOR_TILES(TILE)                                            \
  do {                                                             \
    int64_t b0 = 0;                                                \
    for (; j->bp - b0 >= 64; b0 += 64) TILE(b0, 64);               \
    if (j->bp - b0 >= 32) TILE(b0, 32), b0 += 32;                  \
    if (j->bp - b0 >= 16) TILE(b0, 16), b0 += 16;                  \
    LAST_TILE(TILE)                                                \
  } while (0)

DC_INLINE void gemm_body(const job_t *j, int64_t begin, int64_t end, const int width) {
#ifdef DC_AVX2
  if (BYTE_STEPS(j, width)) {
    const byte_decoder_t bd = byte_decoder(j);
#define BYTE_TILE(b0, TB) row_bytes(j, &bd, r, b0, TB, width)
    for (int64_t r = begin; r < end; ++r) FOR_TILES(BYTE_TILE);
    return;
  }
#endif
  const decoder_t d = decoder(j);
#define ENTRY_TILE(b0, TB) tile(j, &d, r, b0, TB, width)
  for (int64_t r = begin; r < end; ++r) FOR_TILES(ENTRY_TILE);
}
#endif

/* The row functions for each entry width (a constant in each: see planes.h). */
#define DEFINE_WIDTH(W)                                                                                 \
  static void gemv_rows_##W(const void *j, int64_t b, int64_t e) { gemv_body(j, b, e, W); }             \
  static void gemm_rows_##W(const void *j, int64_t b, int64_t e) { gemm_body(j, b, e, W); }             \
  static void decode_rows_##W(const void *j, int64_t b, int64_t e) { decode_body(j, b, e, W); }
DC_FOR_WIDTHS(DEFINE_WIDTH)
#define GEMV_ROWS(W) gemv_rows_##W,
#define GEMM_ROWS(W) gemm_rows_##W,
#define DECODE_ROWS(W) decode_rows_##W,
static const dc_rows_fn gemv_rows[] = {NULL, DC_FOR_WIDTHS(GEMV_ROWS)};
static const dc_rows_fn gemm_rows[] = {NULL, DC_FOR_WIDTHS(GEMM_ROWS)};
static const dc_rows_fn decode_rows[] = {NULL, DC_FOR_WIDTHS(DECODE_ROWS)};

/* -------------------------------------------------------------------------------- entry points */
#define GEMV_MAX_BATCH 2 /* batches the batch-1 kernel runs (gemm pads to a register tile) */
/* Bytes of xt per pass of the batched kernel over the rows: half of a core's L2 cache, but at
 * least MIN_PASS batch columns (a full register tile). Past L2 the gathered rows of xt come from
 * L3: on a 4096-input layer at density 0.09 the time per batch row grew from 0.085 ms (batch 64)
 * to 0.121 ms (128) and 0.198 ms (256) in one pass, and stayed at 0.078-0.081 ms in passes of 64.
 * Passes of 16 columns (the L2 rule alone on 9216 inputs) cost 15% on Alex-6 at batch 64. */
#define XT_BYTES (1 << 20)
#define MIN_PASS 64

static job_t make_job(const dc_sparse_layer_t *layer, const int64_t *entry_ptr, int64_t rows, const float *table) {
  job_t job;
  memset(&job, 0, sizeof job);
  dc_planes_init(&job.planes, layer->planes, layer->length, layer->bits + layer->index_bits);
  job.rows = rows;
  job.cols = layer->cols;
  job.entry_ptr = entry_ptr;
  job.bits = layer->bits;
  job.escape = (1 << layer->index_bits) - 1;
  job.table = table;
  return job;
}

/* Rows of x the batch-1 kernel takes in one pass over the entries: BYTE_ROWS with byte steps
 * (AVX2), else 1. */
static int gemv_rows_at_once(const job_t *j, int width) {
#ifdef DC_AVX2
  _Static_assert(BYTE_ROWS <= GEMV_MAX_BATCH, "the batch-1 kernel's batches hold whole passes");
  if (BYTE_STEPS(j, width)) return BYTE_ROWS;
#endif
  (void)j, (void)width;
  return 1;
}

/* x (batch, cols) transposed into xt (cols, bp), batch columns n .. bp zero. */
static void transpose(const float *x, int64_t n, int64_t cols, float *xt, int64_t bp) {
  for (int64_t c = 0; c < cols; ++c) {
    float *row = xt + c * bp;
    for (int64_t b = 0; b < n; ++b) row[b] = x[b * cols + c];
    for (int64_t b = n; b < bp; ++b) row[b] = 0.f;
  }
}

/* y (batch, rows) = x (batch, cols, contiguous) W^T + bias: the batch-1 kernel for batches of up
 * to GEMV_MAX_BATCH rows (BYTE_ROWS with byte steps), else the batched kernel on passes of batch
 * columns whose transposed x
 * fits XT_BYTES. Returns 0, or -1 when the buffer of transposed x cannot be allocated. */
int dc_sparse_linear(const dc_sparse_layer_t *layer, int64_t batch, const float *x, const float *bias, float *y,
                     int nthreads) {
  const int64_t rows = layer->rows, cols = layer->cols, entries = layer->entry_ptr[rows] - layer->entry_ptr[0];
  const int width = layer->bits + layer->index_bits;
  float table[DC_TABLE];
  dc_table_fill(table, layer->codebook, layer->k);
  job_t job = make_job(layer, layer->entry_ptr, rows, table);
  job.bias = bias;
  const int together = gemv_rows_at_once(&job, width);
  if (batch <= GEMV_MAX_BATCH) {
    for (int64_t b = 0; b < batch; b += together) {
      job.batch = batch - b < together ? batch - b : together;
      job.bp = 1;
      job.x = x + b * cols;
      job.y = y + b * rows;
      dc_parallel_rows(gemv_rows[width], &job, rows, DC_ROW_GRAIN, entries * job.batch, nthreads);
    }
  } else {
    int64_t pass = XT_BYTES / (int64_t)sizeof(float) / cols / BATCH_TILE * BATCH_TILE;
    if (pass < MIN_PASS) pass = MIN_PASS;
    if (pass > batch) pass = batch;
    const int64_t bp_max = (pass + BATCH_TILE - 1) / BATCH_TILE * BATCH_TILE;
    float *xt = aligned_alloc(DC_PLANE_ALIGN, (size_t)dc_plane_align(cols * bp_max * (int64_t)sizeof(float)));
    if (!xt) return -1;
    for (int64_t b0 = 0; b0 < batch; b0 += pass) {
      const int64_t n = batch - b0 < pass ? batch - b0 : pass;
      job.batch = n;
      job.bp = (n + BATCH_TILE - 1) / BATCH_TILE * BATCH_TILE;
      transpose(x + b0 * cols, n, cols, xt, job.bp);
      job.x = xt;
      job.y = y + b0 * rows;
      dc_parallel_rows(gemm_rows[width], &job, rows, DC_ROW_GRAIN, entries * n, nthreads);
    }
    free(xt);
  }
  dc_nonfinite_rows(x, batch, cols, y, rows);
  return 0;
}

/* Rows row0 .. row0 + rows of the layer, dense, into out (rows, cols). */
void dc_sparse_decode(const dc_sparse_layer_t *layer, int64_t row0, int64_t rows, float *out, int nthreads) {
  if (row0 < 0 || rows < 0 || row0 + rows > layer->rows) return;
  float table[DC_TABLE];
  dc_table_fill(table, layer->codebook, layer->k);
  /* The entry pointers stay absolute offsets into the stream: the block starts at row0's. */
  job_t job = make_job(layer, layer->entry_ptr + row0, rows, table);
  job.y = out;
  dc_parallel_rows(decode_rows[layer->bits + layer->index_bits], &job, rows, 1, rows * layer->cols,
                   nthreads);
}

/* Which path this build took (reported by benchmarks): 512 for AVX-512, 256 for AVX2, 0 for
 * portable C. */
int dc_vector_bits(void) {
#ifdef DC_AVX512
  return 512;
#elif defined(DC_AVX2)
  return 256;
#else
  return 0;
#endif
}
