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
 * decode's stores lane by lane.
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

DC_INLINE void gemv_body(const job_t *j, int64_t begin, int64_t end, const int width) {
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
    const __m256 sum = _mm256_add_ps(acc[0], acc[1]);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps(sum, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    j->y[r] = _mm_cvtss_f32(s) + (j->bias ? j->bias[r] : 0.f);
  }
}

#define BATCH_TILE 8
/* TB batch columns of row r in TB / 8 registers (TB a constant: the loops over v unroll). */
DC_INLINE void tile(const job_t *j, const decoder_t *d, int64_t r, int64_t b0, const int TB, const int width) {
  __m256 acc[8];
  for (int v = 0; v < TB / 8; ++v) acc[v] = _mm256_setzero_ps();
  __m256i base = _mm256_set1_epi32(-1);
  int32_t col[16];
  float weight[16];
  for (int64_t e = j->entry_ptr[r]; e < j->entry_ptr[r + 1]; e += 16) {
    for (unsigned real = decode16_lanes(j, d, e, &base, col, weight, width); real; real &= real - 1) {
      const int t = __builtin_ctz(real);
      const __m256 wt = _mm256_set1_ps(weight[t]);
      const float *xr = j->x + (int64_t)col[t] * j->bp + b0;
      for (int v = 0; v < TB / 8; ++v) acc[v] = _mm256_fmadd_ps(wt, _mm256_loadu_ps(xr + 8 * v), acc[v]);
    }
  }
  float out[64];
  for (int v = 0; v < TB / 8; ++v) _mm256_storeu_ps(out + 8 * v, acc[v]);
  store_tile(j, r, b0, out, TB);
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
/* Row r's batch columns in register tiles of 64, then 32, 16 and (AVX2) 8: bp is a multiple of
 * BATCH_TILE. */
DC_INLINE void gemm_body(const job_t *j, int64_t begin, int64_t end, const int width) {
  const decoder_t d = decoder(j);
  for (int64_t r = begin; r < end; ++r) {
    int64_t b0 = 0;
    for (; j->bp - b0 >= 64; b0 += 64) tile(j, &d, r, b0, 64, width);
    if (j->bp - b0 >= 32) tile(j, &d, r, b0, 32, width), b0 += 32;
    if (j->bp - b0 >= 16) tile(j, &d, r, b0, 16, width), b0 += 16;
#if BATCH_TILE == 8
    if (j->bp - b0 >= 8) tile(j, &d, r, b0, 8, width);
#endif
  }
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
#define GEMV_MAX_BATCH 2 /* batches the batch-1 kernel runs row by row (gemm pads to a register tile) */
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

/* x (batch, cols) transposed into xt (cols, bp), batch columns n .. bp zero. */
static void transpose(const float *x, int64_t n, int64_t cols, float *xt, int64_t bp) {
  for (int64_t c = 0; c < cols; ++c) {
    float *row = xt + c * bp;
    for (int64_t b = 0; b < n; ++b) row[b] = x[b * cols + c];
    for (int64_t b = n; b < bp; ++b) row[b] = 0.f;
  }
}

/* y (batch, rows) = x (batch, cols, contiguous) W^T + bias: the batch-1 kernel for batches of up
 * to GEMV_MAX_BATCH rows, else the batched kernel on passes of batch columns whose transposed x
 * fits XT_BYTES. Returns 0, or -1 when the buffer of transposed x cannot be allocated. */
int dc_sparse_linear(const dc_sparse_layer_t *layer, int64_t batch, const float *x, const float *bias, float *y,
                     int nthreads) {
  const int64_t rows = layer->rows, cols = layer->cols, entries = layer->entry_ptr[rows] - layer->entry_ptr[0];
  const int width = layer->bits + layer->index_bits;
  float table[DC_TABLE];
  dc_table_fill(table, layer->codebook, layer->k);
  job_t job = make_job(layer, layer->entry_ptr, rows, table);
  job.bias = bias;
  if (batch <= GEMV_MAX_BATCH) {
    job.batch = job.bp = 1;
    for (int64_t b = 0; b < batch; ++b) {
      job.x = x + b * cols;
      job.y = y + b * rows;
      dc_parallel_rows(gemv_rows[width], &job, rows, DC_ROW_GRAIN, entries, nthreads);
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
