/* CPU kernels of the dense-codes form: y = x W^T + b with every weight a code.
 *
 * Layout (dc_kernels/dense_codes/layout.py): row r's codes are values r * stride .. r * stride +
 * in_features of one bit-plane stream (planes.h), stride a multiple of 16; a pruned weight holds
 * the code just past the codebook, whose entry of the zero-padded table is 0. A weight costs
 * `width` bits whatever the density, and x is read contiguously: no index, no gather.
 *
 * dc_codes_linear: y = x W^T + b for a layer's descriptor (layers.h), x (batch, in_features).
 *   With AVX-512, 16 codes per step select their weights from the codebook in registers
 *   (planes.h) and each weight vector multiplies the same 16 inputs of up to 8 rows of x held in
 *   registers (batches of more rows: groups of 8).
 * dc_codes_decode: dense float32 rows, for batches where a dense GEMM beats the lookup loop.
 */
#include <stdint.h>
#include <string.h>

#include "layers.h"
#include "planes.h"
#include "pool.h"

#define MAX_GROUP 8 /* rows of x per pass over a row of codes */
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
} job_t;

#ifdef DC_AVX512
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

/* Rows r .. r + R of codes (R = 1, 2 or 4) times NB rows of x from b0, for codes of `width` bits
 * (R, NB and width constants: the loops unroll, the planes unpack with immediates). Each 16
 * inputs of a row of x are loaded once for the R rows of codes, and the R * NB sums are reduced
 * four at a time (a horizontal sum each would cost as much as the products of a short row). */
DC_INLINE void dot(const job_t *j, __m512 lo, __m512 hi, int64_t r, int64_t b0, const int R, const int NB,
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
      const __m512 w = dc_lookup16(j->table, width, lo, hi, code);
      for (int b = 0; b < NB; ++b) acc[i][b] = _mm512_fmadd_ps(w, xs[b], acc[i][b]);
    }
  }
  /* The R * NB sums, reduced four accumulators at a time. */
  float sums[4 * MAX_GROUP + 3];
  const __m512 zero = _mm512_setzero_ps();
  for (int q = 0; q < R * NB; q += 4) {
#define ACC(n) ((n) < R * NB ? acc[(n) / NB][(n) % NB] : zero)
    _mm_storeu_ps(sums + q, sum4(ACC(q), ACC(q + 1), ACC(q + 2), ACC(q + 3)));
#undef ACC
  }
  for (int i = 0; i < R; ++i) {
    const float bias = j->bias ? j->bias[r + i] : 0.f;
    for (int b = 0; b < NB; ++b) j->y[(b0 + b) * j->rows + r + i] = sums[i * NB + b] + bias;
  }
}

/* Rows of x in groups of up to MAX_GROUP; rows of codes by 4 for groups of up to 4 rows of x (at
 * most 16 accumulators), by 2 for larger groups, and one by one at the end of the chunk. */
#define DOT_ROWS(R, NB) \
  for (; r + R <= end; r += R) dot(j, lo, hi, r, b0, R, NB, width)
#define DOT_GROUP(NB)                                        \
  case NB: {                                                 \
    int64_t r = begin;                                       \
    if (NB <= 4) DOT_ROWS(4, NB);                            \
    DOT_ROWS(2, NB);                                         \
    DOT_ROWS(1, NB);                                         \
    break;                                                   \
  }

DC_INLINE void gemm_body(const job_t *j, int64_t begin, int64_t end, const int width) {
  const __m512 lo = _mm512_loadu_ps(j->table), hi = _mm512_loadu_ps(j->table + 16);
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

DC_INLINE void decode_body(const job_t *j, int64_t begin, int64_t end, const int width) {
  const __m512 lo = _mm512_loadu_ps(j->table), hi = _mm512_loadu_ps(j->table + 16);
  for (int64_t r = begin; r < end; ++r) {
    const int64_t e0 = (j->row0 + r) * j->stride;
    float *row = j->y + r * j->cols;
    for (int64_t k = 0; k < j->cols; k += 16) {
      const __mmask16 m = j->cols - k >= 16 ? 0xFFFF : (__mmask16)((1u << (j->cols - k)) - 1u);
      _mm512_mask_storeu_ps(row + k, m, dc_lookup16(j->table, width, lo, hi, dc_get16(&j->planes, e0 + k, width, width > 5)));
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

static void decode_body(const job_t *j, int64_t begin, int64_t end, const int width) {
  (void)width;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t e0 = (j->row0 + r) * j->stride;
    for (int64_t k = 0; k < j->cols; ++k) j->y[r * j->cols + k] = j->table[dc_get1(&j->planes, e0 + k)];
  }
}
#endif

/* The row functions for each code width (a constant in each: see planes.h). */
#define DEFINE_WIDTH(W)                                                                                 \
  static void gemm_rows_##W(const void *j, int64_t b, int64_t e) { gemm_body(j, b, e, W); }             \
  static void decode_rows_##W(const void *j, int64_t b, int64_t e) { decode_body(j, b, e, W); }
DC_FOR_CODE_WIDTHS(DEFINE_WIDTH)
#define GEMM_ROWS(W) gemm_rows_##W,
#define DECODE_ROWS(W) decode_rows_##W,
static const dc_rows_fn gemm_rows[] = {NULL, DC_FOR_CODE_WIDTHS(GEMM_ROWS)};
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

/* y (batch, rows) = x (batch, cols, contiguous) W^T + bias. */
void dc_codes_linear(const dc_codes_layer_t *layer, int64_t batch, const float *x, const float *bias, float *y,
                     int nthreads) {
  float table[DC_TABLE];
  dc_table_fill(table, layer->codebook, layer->k);
  job_t job = make_job(layer, layer->rows, 0, table);
  job.batch = batch;
  job.ldx = layer->cols;
  job.x = x;
  job.bias = bias;
  job.y = y;
  dc_parallel_rows(gemm_rows[layer->width], &job, layer->rows, layer->rows * layer->cols * batch, nthreads);
  dc_nonfinite_rows(x, batch, layer->cols, y, layer->rows);
}

/* Rows row0 .. row0 + rows of the layer, dense, into out (rows, cols). */
void dc_codes_decode(const dc_codes_layer_t *layer, int64_t row0, int64_t rows, float *out, int nthreads) {
  if (row0 < 0 || rows < 0 || row0 + rows > layer->rows) return;
  float table[DC_TABLE];
  dc_table_fill(table, layer->codebook, layer->k);
  job_t job = make_job(layer, rows, row0, table);
  job.y = out;
  dc_parallel_rows(decode_rows[layer->width], &job, rows, rows * layer->cols, nthreads);
}
