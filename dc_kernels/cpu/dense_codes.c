/* CPU kernels of the dense-codes form: y = x W^T + b with every weight a code.
 *
 * Layout (dc_kernels/dense_codes/layout.py): row r's codes are values r * stride .. r * stride +
 * in_features of one bit-plane stream (planes.h), stride a multiple of 16; a pruned weight holds
 * the code just past the codebook, whose entry of the zero-padded table is 0. A weight costs
 * `width` bits whatever the density, and x is read contiguously: no index, no gather.
 *
 * dc_codes_linear: y = x W^T + b for a layer's descriptor (layers.h), x (batch, in_features).
 *   With AVX-512, two kernels. Below TILE_MIN_BATCH rows of x, the row kernel: 16 codes per step
 *   select their weights from the codebook in registers (planes.h) and each weight vector
 *   multiplies the same 16 inputs of up to 8 rows of x held in registers (batches of more rows:
 *   groups of 8), so a code is decoded once per 8 rows of x and each product ends in a horizontal
 *   sum. From TILE_MIN_BATCH rows, the tile kernel: 32 rows of codes decoded once into a panel
 *   held in L1, transposed so that each step of k loads the 32 rows' weights as two vectors, and
 *   those multiply one input of each of 12 rows of x (broadcast): 24 accumulators that are rows
 *   of y, no horizontal sums, and each weight decoded once per block of x (TILE_X_BYTES).
 *   With AVX2 (and FMA), the row kernel on vectors of 8 lanes and a tile kernel on x transposed
 *   (panels of 6 rows decoded row by row, no transposes of weights: its section below); 4- to
 *   6-bit codes go 32 per step through byte lookups (planes.h: dc_lookup32_nibbles), so
 *   dc_codes_linear first copies x with each group of 16 columns in the order those weights come
 *   out in.
 * dc_codes_decode: dense float32 rows, for batches where a dense GEMM beats the lookup loop.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "layers.h"
#include "planes.h"
#include "pool.h"

#define MAX_GROUP 8 /* rows of x per pass over a row of codes (the row kernel) */
/* TILE_MIN_BATCH: rows of x from which the tile kernel runs. With AVX-512: at 16 rows the row
 * kernel ran 1.04-1.13x faster on 384 x 384, 1536 x 384 and 384 x 1536 layers, at 24 the tile
 * kernel 1.07-1.10x (and 1.12-1.17x on 4096 x 4096 from 16 rows; 1 thread, interleaved medians).
 * With AVX2 (AMD EPYC Zen 3, the same layers and 4096 x 4096, 1 thread, 4-bit codes): the row
 * kernel ran 1.0-1.4x faster than the tile kernel at 4-12 rows, and as fast at 15.
 * TILE_MAX_BATCH: see dc_codes_kernel_max_batch. */
#ifdef DC_AVX2 /* 16 vector registers of 8 lanes */
#define TILE_MIN_BATCH 16
#define TILE_MAX_BATCH 256
#define TILE_ROWS 6   /* rows of codes per panel: 6 weights broadcast per step of k */
#define TILE_BATCH 16 /* rows of x per tile: two vectors of x^T per step of k, 12 accumulators */
#define TILE_GRAIN 16 /* rows per thread's chunk: y's columns stored 8 at a time, 16 to a line */
#define TILE_X_ROWS 256 /* rows of x per block: x^T's TILE_K columns of a block (256 KB) stay in L2 */
#define DOT4_MAX_GROUP 2
#define DOT2_MAX_GROUP 4
#else
#define TILE_MIN_BATCH 24
#define TILE_MAX_BATCH 512
#define TILE_ROWS 32  /* rows of codes per panel: two vectors of weights per step of k */
#define TILE_BATCH 12 /* rows of x per tile: 24 accumulators, 2 weight vectors, 1 input */
#define TILE_GRAIN TILE_ROWS
#define DOT4_MAX_GROUP 4
#define DOT2_MAX_GROUP 8
#endif
#define TILE_K 256 /* columns per panel: 32 KB of weights with AVX-512, held in L1 beside x's 12 KB */
#define TILE_X_ALIGN 64 /* bytes: the AVX2 tile kernel's transposed x and y (aligned vector loads) */
/* Rows of x per block of the AVX-512 tile kernel, in bytes: every panel is decoded again for each
 * block, and the block stays in L2 while the panels go by. On 384 x 384, 1536 x 384 and 384 x 1536
 * layers at batch 256-1024 (1 thread, interleaved medians) blocks of 1-2 MB ran 2-30% faster than
 * blocks of 256-512 KB. */
#define TILE_X_BYTES (2 << 20)

#ifndef DC_AVX2
/* Rows of x per block of the tile kernel, for a layer of `cols` > 0 inputs: whole tiles. */
static int64_t tile_block_rows(int64_t cols) {
  const int64_t rows = TILE_X_BYTES / (4 * cols) / TILE_BATCH * TILE_BATCH;
  return rows > TILE_BATCH ? rows : TILE_BATCH;
}
#endif

/* X(w) for every code width the kernels are instantiated for: a full 256-entry codebook and the
 * zero code take 9 bits. */
#define DC_FOR_CODE_WIDTHS(X) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9)

typedef struct {
  dc_planes_t planes;
  int64_t rows, cols, stride, row0, batch, ldx;
  int width;
  const float *table; /* the codebook, zero-padded (planes.h) */
  const float *x, *bias;
  float *y; /* (batch, rows) for gemm, (rows, cols) for decode */
  /* the AVX2 tile kernel's x^T and y^T (tile_body there), bt = batch rounded up to 8 */
  const float *xt;
  float *yt;
  int64_t bt;
} job_t;

#ifdef DC_AVX512
typedef __m512 vec_t;
/* The codebook in registers: the table's first 32 entries. */
typedef struct {
  __m512 lo, hi;
} codebook_t;
DC_INLINE codebook_t codebook_regs(const float *table) {
  return (codebook_t){_mm512_loadu_ps(table), _mm512_loadu_ps(table + 16)};
}

/* The sums of the lanes of a, b, c and d, in that order. */
DC_INLINE __m128 sum4(__m512 a, __m512 b, __m512 c, __m512 d) {
  const __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm512_shuffle_f32x4(c, d, _MM_SHUFFLE(3, 2, 3, 2)));
  /* 128-bit block i now holds four partial sums of a, b, c, d for i = 0, 1, 2, 3 */
  __m512 t = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, _MM_SHUFFLE(2, 0, 2, 0)),
                           _mm512_shuffle_f32x4(ab, cd, _MM_SHUFFLE(3, 1, 3, 1)));
  t = _mm512_add_ps(t, _mm512_permute_ps(t, _MM_SHUFFLE(1, 0, 3, 2)));
  t = _mm512_add_ps(t, _mm512_permute_ps(t, _MM_SHUFFLE(2, 3, 0, 1)));
  const __m512i firsts = _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 8, 4, 0);
  return _mm512_castps512_ps128(_mm512_permutexvar_ps(firsts, t));
}
#elif defined(DC_AVX2)
typedef __m256 vec_t;
/* The codebook in registers: the table's first 16 entries, and the bytes of its first 64 for
 * 4- to 6-bit codes. */
typedef struct {
  __m256 lo, hi;
  __m256i bytes[4 * DC_NIBBLE_TABLES];
} codebook_t;
DC_INLINE codebook_t codebook_regs(const float *table) {
  codebook_t cb;
  cb.lo = _mm256_loadu_ps(table);
  cb.hi = _mm256_loadu_ps(table + 8);
  dc_table_bytes(table, cb.bytes, DC_NIBBLE_TABLES);
  return cb;
}

/* The sums of the lanes of a, b, c and d, in that order. */
DC_INLINE __m128 sum4(__m256 a, __m256 b, __m256 c, __m256 d) {
  /* each 128-bit half: four partial sums of a, b, c, d */
  const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
  return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}
#endif

#if defined(DC_AVX512) || defined(DC_AVX2)
/* y's outputs r .. r + R of rows b0 .. b0 + NB of x: the sums of the dot kernels' R * NB
 * accumulators (rows of codes major), reduced four at a time (a horizontal sum each would cost as
 * much as the products of a short row), plus the bias. */
DC_INLINE void store_dot(const job_t *j, vec_t acc[4][MAX_GROUP], int64_t r, int64_t b0, const int R, const int NB) {
  float sums[4 * MAX_GROUP + 3];
  for (int q = 0; q < R * NB; q += 4) {
#define ACC(n) ((n) < R * NB ? acc[(n) / NB][(n) % NB] : acc[0][0]) /* past R * NB: sums not stored */
    _mm_storeu_ps(sums + q, sum4(ACC(q), ACC(q + 1), ACC(q + 2), ACC(q + 3)));
#undef ACC
  }
  for (int i = 0; i < R; ++i) {
    const float bias = j->bias ? j->bias[r + i] : 0.f;
    for (int b = 0; b < NB; ++b) j->y[(b0 + b) * j->rows + r + i] = sums[i * NB + b] + bias;
  }
}
#endif

#ifdef DC_AVX512
/* Rows r .. r + R of codes (R = 1, 2 or 4) times NB rows of x from b0, for codes of `width` bits
 * (R, NB and width constants: the loops unroll, the planes unpack with immediates). Each 16
 * inputs of a row of x are loaded once for the R rows of codes. */
DC_INLINE void dot(const job_t *j, const codebook_t *cb, int64_t r, int64_t b0, const int R, const int NB,
                   const int width) {
  const float *x = j->x + b0 * j->ldx;
  __m512 acc[4][MAX_GROUP];
  for (int i = 0; i < R; ++i)
    for (int b = 0; b < NB; ++b) acc[i][b] = _mm512_setzero_ps();
  const int64_t e0 = (j->row0 + r) * j->stride, whole = j->cols / 16 * 16;
  for (int64_t k = 0; k < j->cols; k += 16) {
    /* a mask only for the last, partial step (a mask register per step would cost a shuffle uop) */
    __m512 xs[MAX_GROUP];
    if (k < whole)
      for (int b = 0; b < NB; ++b) xs[b] = _mm512_loadu_ps(x + b * j->ldx + k);
    else
      for (int b = 0; b < NB; ++b)
        xs[b] = _mm512_maskz_loadu_ps((__mmask16)((1u << (j->cols - k)) - 1u), x + b * j->ldx + k);
    for (int i = 0; i < R; ++i) {
      const __m512i code = dc_get16(&j->planes, e0 + i * j->stride + k, width, width > 5);
      const __m512 w = dc_lookup16(j->table, width, cb->lo, cb->hi, code);
      for (int b = 0; b < NB; ++b) acc[i][b] = _mm512_fmadd_ps(w, xs[b], acc[i][b]);
    }
  }
  store_dot(j, acc, r, b0, R, NB);
}

/* ---- the tile kernel (TILE_* at the top) */
/* r[i] (row i, 16 columns) becomes column i of the 16 x 16 block: three rounds of shuffles. */
DC_INLINE void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i)
    for (int h = 0; h < 2; ++h) {
      const __m512d a = _mm512_castps_pd(t[4 * i + h]), b = _mm512_castps_pd(t[4 * i + 2 + h]);
      r[4 * i + 2 * h] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
      r[4 * i + 2 * h + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
    }
  /* r[4i + c]: column c of each group of 4 columns, for rows 4i .. 4i + 3 (lane = 4 * group + row) */
  for (int c = 0; c < 4; ++c) {
    t[c] = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x88);
    t[4 + c] = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xdd);
    t[8 + c] = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x88);
    t[12 + c] = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xdd);
  }
  for (int c = 0; c < 4; ++c) {
    r[c] = _mm512_shuffle_f32x4(t[c], t[8 + c], 0x88);
    r[8 + c] = _mm512_shuffle_f32x4(t[c], t[8 + c], 0xdd);
    r[4 + c] = _mm512_shuffle_f32x4(t[4 + c], t[12 + c], 0x88);
    r[12 + c] = _mm512_shuffle_f32x4(t[4 + c], t[12 + c], 0xdd);
  }
}

/* Weights of rows r .. r + rows (at most TILE_ROWS; the rest zero) and columns k0 .. k0 + kn into
 * panel[k][TILE_ROWS]: each 16 x 16 block decoded by rows, then transposed. */
DC_INLINE void decode_panel(const job_t *j, int64_t r, int rows, int64_t k0, int64_t kn, float *panel,
                            const codebook_t *cb, const int width) {
  for (int h = 0; h < TILE_ROWS; h += 16)
    for (int64_t k = 0; k < kn; k += 16) {
      __m512 v[16];
      for (int i = 0; i < 16; ++i) {
        const int64_t e = (j->row0 + r + h + i) * j->stride + k0 + k;
        v[i] = h + i < rows ? dc_lookup16(j->table, width, cb->lo, cb->hi, dc_get16(&j->planes, e, width, width > 5))
                            : _mm512_setzero_ps();
      }
      transpose16(v);
      const int n = kn - k < 16 ? (int)(kn - k) : 16;
      for (int i = 0; i < n; ++i) _mm512_store_ps(panel + (k + i) * TILE_ROWS + h, v[i]);
    }
}

/* Rows b0 .. b0 + NB of y, columns r .. r + rows, += x's columns k0 .. k0 + kn times the panel
 * (the bias instead of y's values for the first panel). NB constant: the loops unroll. */
DC_INLINE void tile(const job_t *j, const float *panel, int64_t r, int rows, int64_t k0, int64_t kn, int64_t b0,
                    const int NB) {
  const float *x = j->x + b0 * j->ldx + k0;
  const __mmask16 m0 = rows >= 16 ? 0xFFFF : (__mmask16)((1u << rows) - 1u);
  const __mmask16 m1 = rows >= 32 ? 0xFFFF : rows <= 16 ? 0 : (__mmask16)((1u << (rows - 16)) - 1u);
  __m512 a0[TILE_BATCH], a1[TILE_BATCH];
  if (k0 == 0) {
    const __m512 bias0 = j->bias ? _mm512_maskz_loadu_ps(m0, j->bias + r) : _mm512_setzero_ps();
    const __m512 bias1 = j->bias ? _mm512_maskz_loadu_ps(m1, j->bias + r + 16) : _mm512_setzero_ps();
    for (int b = 0; b < NB; ++b) a0[b] = bias0, a1[b] = bias1;
  } else {
    for (int b = 0; b < NB; ++b) {
      const float *y = j->y + (b0 + b) * j->rows + r;
      a0[b] = _mm512_maskz_loadu_ps(m0, y);
      a1[b] = _mm512_maskz_loadu_ps(m1, y + 16);
    }
  }
  for (int64_t k = 0; k < kn; ++k) {
    const __m512 w0 = _mm512_load_ps(panel + k * TILE_ROWS), w1 = _mm512_load_ps(panel + k * TILE_ROWS + 16);
    for (int b = 0; b < NB; ++b) {
      const __m512 xb = _mm512_set1_ps(x[b * j->ldx + k]);
      a0[b] = _mm512_fmadd_ps(w0, xb, a0[b]);
      a1[b] = _mm512_fmadd_ps(w1, xb, a1[b]);
    }
  }
  for (int b = 0; b < NB; ++b) {
    float *y = j->y + (b0 + b) * j->rows + r;
    _mm512_mask_storeu_ps(y, m0, a0[b]);
    _mm512_mask_storeu_ps(y + 16, m1, a1[b]);
  }
}

DC_INLINE void decode_body(const job_t *j, int64_t begin, int64_t end, const int width) {
  const codebook_t cb = codebook_regs(j->table);
  for (int64_t r = begin; r < end; ++r) {
    const int64_t e0 = (j->row0 + r) * j->stride;
    float *row = j->y + r * j->cols;
    for (int64_t k = 0; k < j->cols; k += 16) {
      const __mmask16 m = j->cols - k >= 16 ? 0xFFFF : (__mmask16)((1u << (j->cols - k)) - 1u);
      _mm512_mask_storeu_ps(row + k, m, dc_lookup16(j->table, width, cb.lo, cb.hi, dc_get16(&j->planes, e0 + k, width, width > 5)));
    }
  }
}
#define TILE_CASE(NB)                                \
  case NB:                                           \
    tile(j, panel, r, rows, k0, kn, b0, NB);         \
    break;

DC_INLINE void tile_body(const job_t *j, int64_t begin, int64_t end, const int width) {
  const codebook_t cb = codebook_regs(j->table);
  float panel[TILE_ROWS * TILE_K] __attribute__((aligned(64)));
  const int64_t block = tile_block_rows(j->cols);
  for (int64_t x0 = 0; x0 < j->batch; x0 += block) {
    const int64_t x1 = j->batch - x0 < block ? j->batch : x0 + block;
    for (int64_t r = begin; r < end; r += TILE_ROWS) {
      const int rows = end - r < TILE_ROWS ? (int)(end - r) : TILE_ROWS;
      for (int64_t k0 = 0; k0 < j->cols; k0 += TILE_K) {
        const int64_t kn = j->cols - k0 < TILE_K ? j->cols - k0 : TILE_K;
        decode_panel(j, r, rows, k0, kn, panel, &cb, width);
        for (int64_t b0 = x0; b0 < x1; b0 += TILE_BATCH) switch (x1 - b0 < TILE_BATCH ? x1 - b0 : TILE_BATCH) {
            TILE_CASE(1) TILE_CASE(2) TILE_CASE(3) TILE_CASE(4) TILE_CASE(5) TILE_CASE(6)
#if TILE_BATCH > 6
            TILE_CASE(7) TILE_CASE(8) TILE_CASE(9) TILE_CASE(10) TILE_CASE(11) TILE_CASE(12)
#endif
          }
      }
    }
  }
}
#elif defined(DC_AVX2)
/* Lanes i of the two halves of 16 values at column k: whether k + 8 h + i < cols. */
DC_INLINE void tail_masks(int64_t cols, int64_t k, __m256i m[2]) {
  const __m256i left = _mm256_set1_epi32((int)(cols - k));
  m[0] = _mm256_cmpgt_epi32(left, _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  m[1] = _mm256_cmpgt_epi32(left, _mm256_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15));
}

/* The weights of the codes e .. e + step(width) of the stream, as vectors of 8 lanes: 4- to 6-bit
 * codes 32 at a time in nibble order (planes.h; the caller orders x's columns to match), others
 * 16. */
#define NIBBLES(width) ((width) >= 4 && (width) <= 6)
#define STEP(width) (NIBBLES(width) ? DC_NIBBLE_STEP : 16)
DC_INLINE void decode_step(const job_t *j, const codebook_t *cb, int64_t e, const int width, __m256 w[4]) {
  if (NIBBLES(width)) {
    dc_lookup32_nibbles(&j->planes, e, cb->bytes, width, w);
    return;
  }
  __m256i code[2];
  dc_get16x8(&j->planes, e, width, width > 5, code);
  for (int h = 0; h < 2; ++h) w[h] = dc_lookup8(j->table, width, cb->lo, cb->hi, code[h]);
}

/* One step of codes at column k of rows r .. r + R into acc, x's columns loaded as the products
 * need them (8 rows of x held in registers for a step would crowd out the weights), masked by
 * `tail` (a partial last step of 16) when not NULL. */
DC_INLINE void dot_step(const job_t *j, const codebook_t *cb, __m256 acc[4][MAX_GROUP], const float *x, int64_t e,
                        int64_t k, const int R, const int NB, const int width, const __m256i *tail) {
  for (int i = 0; i < R; ++i) {
    __m256 w[4];
    decode_step(j, cb, e + i * j->stride + k, width, w);
    for (int h = 0; h < STEP(width) / 8; ++h)
      for (int b = 0; b < NB; ++b) {
        const float *xh = x + b * j->ldx + k + 8 * h;
        const __m256 xs = tail ? _mm256_maskload_ps(xh, tail[h]) : _mm256_loadu_ps(xh);
        acc[i][b] = _mm256_fmadd_ps(w[h], xs, acc[i][b]);
      }
  }
}

/* As the AVX-512 dot above, a step of codes as 2 or 4 vectors of 8 lanes. */
DC_INLINE void dot(const job_t *j, const codebook_t *cb, int64_t r, int64_t b0, const int R, const int NB,
                   const int width) {
  const float *x = j->x + b0 * j->ldx;
  __m256 acc[4][MAX_GROUP];
  for (int i = 0; i < R; ++i)
    for (int b = 0; b < NB; ++b) acc[i][b] = _mm256_setzero_ps();
  const int64_t e = (j->row0 + r) * j->stride, whole = j->cols / STEP(width) * STEP(width);
  int64_t k = 0;
  for (; k < whole; k += STEP(width)) dot_step(j, cb, acc, x, e, k, R, NB, width, NULL);
  if (k < j->cols) { /* only with steps of 16: x's columns in nibble order are whole steps */
    __m256i m[2];
    tail_masks(j->cols, k, m);
    dot_step(j, cb, acc, x, e, k, R, NB, width, m);
  }
  store_dot(j, acc, r, b0, R, NB);
}

/* r[i] (row i, 8 columns) becomes column i of the 8 x 8 block. */
DC_INLINE void transpose8(__m256 r[8]) {
  __m256 t[8], s[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  /* s[4 g + c]: columns c and c + 4 of rows 4 g .. 4 g + 3 */
  for (int g = 0; g < 2; ++g) {
    s[4 * g] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
    s[4 * g + 1] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
    s[4 * g + 2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
    s[4 * g + 3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
  }
  for (int c = 0; c < 4; ++c) {
    r[c] = _mm256_permute2f128_ps(s[c], s[4 + c], 0x20);
    r[4 + c] = _mm256_permute2f128_ps(s[c], s[4 + c], 0x31);
  }
}

/* ---- the AVX2 tile kernel (TILE_* at the top): x^T (job.xt) in tiles of TILE_BATCH rows of x
 * (8 for the last one when the batch rounded up to 8 leaves 8), each tile's columns k as one
 * 64-byte line (32 bytes for a tile of 8) after another: tile t starts at 16 t * cols and holds
 * x[16 t + c][k] at 16 k + c. Each step of k loads the tile's two vectors of x^T and broadcasts
 * the weights of the panel's TILE_ROWS rows at k: 12 accumulators that are rows of y^T (job.yt,
 * tiled as x^T: tile t at 16 t * rows, y[16 t + c][r] at 16 r + c), and the panel is decoded
 * row by row without transposes. Against the AVX-512 kernel's layout (a transposed panel, x
 * broadcast) the same loop ran 1.2-1.4x faster at 16-128 rows of x (AMD EPYC Zen 3, 384 x 384,
 * 1536 x 384, 384 x 1536 and 4096 x 4096, 4-bit codes, 1 thread) where decoding and transposing
 * the panel took about a fifth of the time at 32 rows. */

/* Room for n floats at TILE_X_ALIGN bytes, or NULL. */
static float *tile_floats(int64_t n) {
  const size_t bytes = ((size_t)n * sizeof(float) + TILE_X_ALIGN - 1) / TILE_X_ALIGN * TILE_X_ALIGN;
  return aligned_alloc(TILE_X_ALIGN, bytes);
}

/* Columns of x^T per tile starting at row b0 of x (its first of TILE_BATCH or 8 rows). */
DC_INLINE int64_t tile_width(int64_t bt, int64_t b0) { return bt - b0 >= TILE_BATCH ? TILE_BATCH : 8; }

/* x (batch, cols, contiguous) into x^T tiles (above) of bt >= batch rows (zeros beyond batch),
 * for columns 0 .. kx (a multiple of 16; zeros from cols), each group of 16 in nibble order when
 * `nibbles` (planes.h). */
static void transpose_x(const float *x, int64_t batch, int64_t cols, int64_t bt, int64_t kx, int nibbles, float *xt) {
  for (int64_t b = 0; b < bt; b += 8) {
    const int64_t b0 = b / TILE_BATCH * TILE_BATCH, w = tile_width(bt, b0);
    float *tile = xt + b0 * kx + (b - b0);
    for (int64_t k = 0; k < kx; k += 8) {
      const int64_t group = k / 16 * 16; /* nibble order: the group's 16 columns make these 8 */
      __m256i m[2];
      tail_masks(cols, nibbles ? group : k, m);
      __m256 v[8];
      for (int i = 0; i < 8; ++i) {
        const float *row = x + (b + i) * cols;
        if (b + i >= batch)
          v[i] = _mm256_setzero_ps();
        else if (nibbles)
          v[i] = dc_nibble_order8(_mm256_maskload_ps(row + group, m[0]), _mm256_maskload_ps(row + group + 8, m[1]),
                                  (int)(k / 8 % 2));
        else
          v[i] = _mm256_maskload_ps(row + k, m[0]);
      }
      transpose8(v);
      for (int i = 0; i < 8; ++i) _mm256_store_ps(tile + (k + i) * w, v[i]);
    }
  }
}

/* Weights of rows r .. r + rows (at most TILE_ROWS; the rest zero) and columns k0 .. k0 + kn (kn
 * a multiple of the step) into panel[TILE_ROWS][TILE_K], row by row. */
DC_INLINE void decode_panel(const job_t *j, int64_t r, int rows, int64_t k0, int64_t kn, float *panel,
                            const codebook_t *cb, const int width) {
  for (int i = 0; i < TILE_ROWS; ++i) {
    float *row = panel + i * TILE_K;
    if (i < rows) {
      const int64_t e = (j->row0 + r + i) * j->stride + k0;
      for (int64_t k = 0; k < kn; k += STEP(width)) {
        __m256 w[4];
        decode_step(j, cb, e + k, width, w);
        for (int h = 0; h < STEP(width) / 8; ++h) _mm256_store_ps(row + k + 8 * h, w[h]);
      }
    } else
      for (int64_t k = 0; k < kn; k += 8) _mm256_store_ps(row + k, _mm256_setzero_ps());
  }
}

/* y^T's rows r .. r + rows, x's rows b0 .. b0 + 8 V (one tile), += x^T's columns k0 .. k0 + kn
 * times the panel (the bias instead of y^T's values for the first panel). V constant. */
DC_INLINE void tile(const job_t *j, const float *panel, int64_t r, int rows, int64_t k0, int64_t kn, int64_t b0,
                    const int V) {
  const int w = 8 * V;
  float *yt = j->yt + b0 * j->rows + r * w;
  const float *xt = j->xt + b0 * j->cols + k0 * w;
  __m256 acc[TILE_ROWS][2];
  for (int i = 0; i < TILE_ROWS; ++i)
    for (int h = 0; h < V; ++h)
      if (i >= rows)
        acc[i][h] = _mm256_setzero_ps();
      else if (k0 == 0)
        acc[i][h] = j->bias ? _mm256_set1_ps(j->bias[r + i]) : _mm256_setzero_ps();
      else
        acc[i][h] = _mm256_load_ps(yt + i * w + 8 * h);
  for (int64_t k = 0; k < kn; ++k) {
    __m256 xs[2];
    for (int h = 0; h < V; ++h) xs[h] = _mm256_load_ps(xt + k * w + 8 * h);
    for (int i = 0; i < TILE_ROWS; ++i) {
      const __m256 weight = _mm256_broadcast_ss(panel + i * TILE_K + k);
      for (int h = 0; h < V; ++h) acc[i][h] = _mm256_fmadd_ps(weight, xs[h], acc[i][h]);
    }
  }
  for (int i = 0; i < rows; ++i)
    for (int h = 0; h < V; ++h) _mm256_store_ps(yt + i * w + 8 * h, acc[i][h]);
}

/* y's outputs begin .. end of every row of x from y^T, by 8 x 8 blocks. */
DC_INLINE void store_y(const job_t *j, int64_t begin, int64_t end) {
  for (int64_t r = begin; r < end; r += 8) {
    const int nr = end - r < 8 ? (int)(end - r) : 8;
    __m256i m[2];
    tail_masks(nr, 0, m);
    for (int64_t b = 0; b < j->batch; b += 8) {
      const int64_t b0 = b / TILE_BATCH * TILE_BATCH, w = tile_width(j->bt, b0);
      const float *yt = j->yt + b0 * j->rows + (b - b0);
      __m256 v[8];
      for (int i = 0; i < 8; ++i) v[i] = i < nr ? _mm256_load_ps(yt + (r + i) * w) : _mm256_setzero_ps();
      transpose8(v);
      const int nb = j->batch - b < 8 ? (int)(j->batch - b) : 8;
      for (int i = 0; i < nb; ++i) {
        float *out = j->y + (b + i) * j->rows + r;
        if (nr == 8) /* a masked store is slow (see decode_body) */
          _mm256_storeu_ps(out, v[i]);
        else
          _mm256_maskstore_ps(out, m[0], v[i]);
      }
    }
  }
}

/* Panels of TILE_ROWS rows by TILE_K columns, each decoded once and multiplied by every tile of
 * x^T (x^T's TILE_K columns of the whole batch, at most 256 KB, stay in L2 while the panels go
 * by); y^T accumulated over the columns' blocks, then stored into y. */
DC_INLINE void tile_body(const job_t *j, int64_t begin, int64_t end, const int width) {
  const codebook_t cb = codebook_regs(j->table);
  float panel[TILE_ROWS * TILE_K] __attribute__((aligned(64)));
  for (int64_t k0 = 0; k0 < j->cols; k0 += TILE_K) {
    const int64_t kn = j->cols - k0 < TILE_K ? j->cols - k0 : TILE_K;
    for (int64_t r = begin; r < end; r += TILE_ROWS) {
      const int rows = end - r < TILE_ROWS ? (int)(end - r) : TILE_ROWS;
      decode_panel(j, r, rows, k0, kn, panel, &cb, width);
      int64_t b0 = 0;
      for (; b0 + TILE_BATCH <= j->bt; b0 += TILE_BATCH) tile(j, panel, r, rows, k0, kn, b0, 2);
      if (b0 < j->bt) tile(j, panel, r, rows, k0, kn, b0, 1);
    }
  }
  store_y(j, begin, end);
}

DC_INLINE void decode_body(const job_t *j, int64_t begin, int64_t end, const int width) {
  const codebook_t cb = codebook_regs(j->table);
  for (int64_t r = begin; r < end; ++r) {
    const int64_t e0 = (j->row0 + r) * j->stride;
    float *row = j->y + r * j->cols;
    /* masked stores only for the last, partial step: on AMD EPYC (Zen 3) a vmaskmovps store took
     * the decode of 384 x 384 to 1 G codes a second */
    for (int64_t k = 0; k < j->cols; k += 16) {
      __m256i code[2], m[2];
      dc_get16x8(&j->planes, e0 + k, width, width > 5, code);
      if (k + 16 <= j->cols) {
        for (int h = 0; h < 2; ++h) _mm256_storeu_ps(row + k + 8 * h, dc_lookup8(j->table, width, cb.lo, cb.hi, code[h]));
        continue;
      }
      tail_masks(j->cols, k, m);
      for (int h = 0; h < 2; ++h)
        _mm256_maskstore_ps(row + k + 8 * h, m[h], dc_lookup8(j->table, width, cb.lo, cb.hi, code[h]));
    }
  }
}
#else
static void gemm_body(const job_t *j, int64_t begin, int64_t end, const int width) {
  (void)width;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t e0 = (j->row0 + r) * j->stride;
    const float bias = j->bias ? j->bias[r] : 0.f;
    for (int64_t b0 = 0; b0 < j->batch; b0 += MAX_GROUP) {
      const int nb = j->batch - b0 < MAX_GROUP ? (int)(j->batch - b0) : MAX_GROUP;
      float acc[MAX_GROUP] = {0.f};
      for (int64_t k = 0; k < j->cols; ++k) {
        const float w = j->table[dc_get1(&j->planes, e0 + k)];
        for (int b = 0; b < nb; ++b) acc[b] += w * j->x[(b0 + b) * j->ldx + k];
      }
      for (int b = 0; b < nb; ++b) j->y[(b0 + b) * j->rows + r] = acc[b] + bias;
    }
  }
}

/* Without AVX-512 one loop serves every batch. */
static void tile_body(const job_t *j, int64_t begin, int64_t end, const int width) { gemm_body(j, begin, end, width); }

static void decode_body(const job_t *j, int64_t begin, int64_t end, const int width) {
  (void)width;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t e0 = (j->row0 + r) * j->stride;
    for (int64_t k = 0; k < j->cols; ++k) j->y[r * j->cols + k] = j->table[dc_get1(&j->planes, e0 + k)];
  }
}
#endif

#if defined(DC_AVX512) || defined(DC_AVX2)
/* ---- the loops both vector kernels share */
/* Rows of x in groups of up to MAX_GROUP; rows of codes by 4 for groups of up to DOT4_MAX_GROUP rows
 * of x, by 2 for up to DOT2_MAX_GROUP (so at most 16 accumulators with AVX-512, 8 with AVX2), and
 * one by one for larger groups and at the end of the chunk. */
#define DOT_ROWS(R, NB) \
  for (; r + R <= end; r += R) dot(j, &cb, r, b0, R, NB, width)
#define DOT_GROUP(NB)                                        \
  case NB: {                                                 \
    int64_t r = begin;                                       \
    if (NB <= DOT4_MAX_GROUP) DOT_ROWS(4, NB);               \
    if (NB <= DOT2_MAX_GROUP) DOT_ROWS(2, NB);               \
    DOT_ROWS(1, NB);                                         \
    break;                                                   \
  }

DC_INLINE void gemm_body(const job_t *j, int64_t begin, int64_t end, const int width) {
  const codebook_t cb = codebook_regs(j->table);
  for (int64_t b0 = 0; b0 < j->batch; b0 += MAX_GROUP) {
    switch (j->batch - b0 < MAX_GROUP ? j->batch - b0 : MAX_GROUP) {
      DOT_GROUP(1)
      DOT_GROUP(2)
      DOT_GROUP(3)
      DOT_GROUP(4)
      DOT_GROUP(5)
      DOT_GROUP(6)
      DOT_GROUP(7)
      DOT_GROUP(8)
    }
  }
}

#endif

/* The row functions for each code width (a constant in each: see planes.h). */
#define DEFINE_WIDTH(W)                                                                                 \
  static void gemm_rows_##W(const void *j, int64_t b, int64_t e) { gemm_body(j, b, e, W); }             \
  static void tile_rows_##W(const void *j, int64_t b, int64_t e) { tile_body(j, b, e, W); }             \
  static void decode_rows_##W(const void *j, int64_t b, int64_t e) { decode_body(j, b, e, W); }
DC_FOR_CODE_WIDTHS(DEFINE_WIDTH)
#define GEMM_ROWS(W) gemm_rows_##W,
#define TILE_ROWS_FN(W) tile_rows_##W,
#define DECODE_ROWS(W) decode_rows_##W,
static const dc_rows_fn gemm_rows[] = {NULL, DC_FOR_CODE_WIDTHS(GEMM_ROWS)};
static const dc_rows_fn tile_rows[] = {NULL, DC_FOR_CODE_WIDTHS(TILE_ROWS_FN)};
static const dc_rows_fn decode_rows[] = {NULL, DC_FOR_CODE_WIDTHS(DECODE_ROWS)};

/* -------------------------------------------------------------------------------- entry points */
static job_t make_job(const dc_codes_layer_t *layer, int64_t rows, int64_t row0, const float *table) {
  job_t job;
  memset(&job, 0, sizeof job);
  dc_planes_init(&job.planes, layer->planes, layer->length, layer->width);
  job.rows = rows;
  job.cols = layer->cols;
  job.stride = layer->stride;
  job.row0 = row0;
  job.width = layer->width;
  job.table = table;
  return job;
}

/* y (batch, rows) = x (batch, cols, contiguous) W^T + bias for one block of rows of x (all of
 * them but with AVX2's tile kernel): 0, or -1 when out of memory (x's copies below). */
static int codes_linear_block(const dc_codes_layer_t *layer, const float *table, int64_t batch, const float *x,
                              const float *bias, float *y, int nthreads) {
  job_t job = make_job(layer, layer->rows, 0, table);
  job.batch = batch;
  job.ldx = layer->cols;
  job.x = x;
  job.bias = bias;
  job.y = y;
  float *ordered = NULL, *xt = NULL, *yt = NULL;
#ifdef DC_AVX2
  /* The kernels walk whole steps of codes over x's columns (in nibble order for 4- and 5-bit
   * codes), padded with zeros: the codes read past a row, of the next row or the stream's zero
   * tail, meet those zeros. */
  const int64_t step = STEP(layer->width), cols = (layer->cols + step - 1) / step * step;
  if (batch >= TILE_MIN_BATCH) { /* the tile kernel's x^T (ordered as it is transposed) and y^T */
    const int64_t bt = (batch + 7) / 8 * 8;
    xt = tile_floats(bt * cols);
    yt = tile_floats(bt * layer->rows);
    if (xt == NULL || yt == NULL) {
      free(xt), free(yt);
      return -1;
    }
    transpose_x(x, batch, layer->cols, bt, cols, NIBBLES(layer->width), xt);
    job.xt = xt, job.yt = yt, job.bt = bt, job.cols = cols;
  } else if (NIBBLES(layer->width)) {
    ordered = malloc((size_t)(batch * cols) * sizeof(float));
    if (ordered == NULL) return -1;
    dc_nibble_order_rows(x, batch, layer->cols, layer->cols, ordered, cols);
    job.x = ordered;
    job.ldx = job.cols = cols;
  }
#endif
  const int64_t work = layer->rows * layer->cols * batch;
  if (batch >= TILE_MIN_BATCH) /* threads take whole panels: a chunk of a few rows would waste most of one */
    dc_parallel_rows(tile_rows[layer->width], &job, layer->rows, TILE_GRAIN, work, nthreads);
  else
    dc_parallel_rows(gemm_rows[layer->width], &job, layer->rows, DC_ROW_GRAIN, work, nthreads);
  free(ordered), free(xt), free(yt);
  return 0;
}

/* y (batch, rows) = x (batch, cols, contiguous) W^T + bias. Returns 0, or -1 when out of memory.
 * With AVX2 the tile kernel takes the batch in blocks of at most TILE_X_ROWS rows of nearly equal
 * size, each weight decoded once per block. */
int dc_codes_linear(const dc_codes_layer_t *layer, int64_t batch, const float *x, const float *bias, float *y,
                    int nthreads) {
  float table[DC_TABLE];
  dc_table_fill(table, layer->codebook, layer->k);
#ifdef DC_AVX2
  const int64_t blocks = (batch + TILE_X_ROWS - 1) / TILE_X_ROWS;
#else
  const int64_t blocks = 1;
#endif
  for (int64_t i = 0, b0 = 0; i < blocks; ++i) {
    const int64_t b1 = batch * (i + 1) / blocks;
    if (codes_linear_block(layer, table, b1 - b0, x + b0 * layer->cols, bias, y + b0 * layer->rows, nthreads))
      return -1;
    b0 = b1;
  }
  dc_nonfinite_rows(x, batch, layer->cols, y, layer->rows);
  return 0;
}

/* The most rows of x for which dc_codes_linear beats decoding to float32 and a dense GEMM on a
 * layer of `cols` inputs: the row kernel's batches, and the tile kernel's while one block of x
 * holds the batch (every weight decoded once) up to TILE_MAX_BATCH rows. Beyond one block, decode +
 * GEMM ran 1.05-1.19x faster than the tile kernel's two or more (384 x 384 at batch 2048, 384 x 1536
 * at 1024, 4096 x 4096 at 256); beyond TILE_MAX_BATCH rows, where the tile kernel writes y 32
 * outputs per row at a time, 1.05-1.13x (1536 x 384 at 1024; 1 thread, interleaved medians). With
 * AVX2 (the tile kernel on x^T; AMD EPYC Zen 3, 4-bit codes, 1 thread) the tile kernel ran at
 * 0.88-1.02x of nn.Linear at batch 256 on the three MiniLM-shaped layers and 4096 x 4096, where
 * decode + GEMM ran at 0.85-0.88x, and at 0.50-0.91x at 512 (x^T's 256 columns outgrow L2), where
 * decode + GEMM ran at 0.84-0.92x: TILE_MAX_BATCH 256 there. Taking the batch in blocks of 256
 * rows (TILE_X_ROWS, for calls that force the kernel beyond) it ran at 0.89-1.03x from 512 to 2048
 * rows where decode + GEMM ran at 0.91-0.99x. */
int64_t dc_codes_kernel_max_batch(int64_t cols) {
#ifdef DC_AVX2
  (void)cols; /* the AVX2 tile kernel takes x^T by blocks of columns, whatever the batch */
  return TILE_MAX_BATCH;
#else
  const int64_t block = cols > 0 ? tile_block_rows(cols) : TILE_MAX_BATCH;
  const int64_t tiles = block < TILE_MAX_BATCH ? block : TILE_MAX_BATCH;
  return tiles > TILE_MIN_BATCH - 1 ? tiles : TILE_MIN_BATCH - 1;
#endif
}

/* Rows row0 .. row0 + rows of the layer, dense, into out (rows, cols). */
void dc_codes_decode(const dc_codes_layer_t *layer, int64_t row0, int64_t rows, float *out, int nthreads) {
  if (row0 < 0 || rows < 0 || row0 + rows > layer->rows) return;
  float table[DC_TABLE];
  dc_table_fill(table, layer->codebook, layer->k);
  job_t job = make_job(layer, rows, row0, table);
  job.y = out;
  dc_parallel_rows(decode_rows[layer->width], &job, rows, 1, rows * layer->cols, nthreads);
}
