/* CPU kernels of the dense-codes form: y = x W^T + b with every weight a code.
 *
 * Layout (dc_kernels/dense_codes/layout.py): row r's codes are values r * stride .. r * stride +
 * in_features of one bit-plane stream (planes.h), stride a multiple of 16; a pruned weight holds
 * the code just past the codebook, whose entry of the zero-padded table is 0. A weight costs
 * `width` bits whatever the density, and x is read contiguously: no index, no gather.
 *
 * dc_codes_gemm: 1 <= batch, x row-major (batch, ldx). With AVX-512, 16 codes per step select
 *   their weights from the codebook in registers (planes.h) and each weight vector multiplies the
 *   same 16 inputs of up to 8 rows of x held in registers (batches of more rows: groups of 8).
 * dc_codes_decode: dense float32 rows, for batches where a dense GEMM beats the lookup loop.
 */
#include <stdint.h>
#include <string.h>

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
/* NB rows of x (from b0) times row r for codes of `width` bits (NB and width constants: the
 * loops over b unroll, the planes unpack with immediates); two accumulators per row of x hide
 * the FMA latency. */
DC_INLINE void dot(const job_t *j, __m512 lo, __m512 hi, int64_t r, int64_t b0, const int NB, const int width) {
  const int64_t e0 = (j->row0 + r) * j->stride;
  const float *x = j->x + b0 * j->ldx;
  __m512 acc[MAX_GROUP], acc2[MAX_GROUP];
  for (int b = 0; b < NB; ++b) acc[b] = acc2[b] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 32 <= j->cols; k += 32) {
    const __m512 w0 = dc_lookup16(j->table, width, lo, hi, dc_get16(&j->planes, e0 + k, width, width > 5));
    const __m512 w1 = dc_lookup16(j->table, width, lo, hi, dc_get16(&j->planes, e0 + k + 16, width, width > 5));
    for (int b = 0; b < NB; ++b) {
      acc[b] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + b * j->ldx + k), acc[b]);
      acc2[b] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + b * j->ldx + k + 16), acc2[b]);
    }
  }
  for (; k < j->cols; k += 16) {
    const __mmask16 m = j->cols - k >= 16 ? 0xFFFF : (__mmask16)((1u << (j->cols - k)) - 1u);
    const __m512 w = dc_lookup16(j->table, width, lo, hi, dc_get16(&j->planes, e0 + k, width, width > 5));
    for (int b = 0; b < NB; ++b) acc[b] = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(m, x + b * j->ldx + k), acc[b]);
  }
  const float bias = j->bias ? j->bias[r] : 0.f;
  for (int b = 0; b < NB; ++b)
    j->y[(b0 + b) * j->rows + r] = _mm512_reduce_add_ps(_mm512_add_ps(acc[b], acc2[b])) + bias;
}

DC_INLINE void gemm_body(const job_t *j, int64_t begin, int64_t end, const int width) {
  const __m512 lo = _mm512_loadu_ps(j->table), hi = _mm512_loadu_ps(j->table + 16);
  for (int64_t r = begin; r < end; ++r) {
    for (int64_t b0 = 0; b0 < j->batch; b0 += MAX_GROUP) {
      switch (j->batch - b0 < MAX_GROUP ? j->batch - b0 : MAX_GROUP) {
        case 1: dot(j, lo, hi, r, b0, 1, width); break;
        case 2: dot(j, lo, hi, r, b0, 2, width); break;
        case 3: dot(j, lo, hi, r, b0, 3, width); break;
        case 4: dot(j, lo, hi, r, b0, 4, width); break;
        case 5: dot(j, lo, hi, r, b0, 5, width); break;
        case 6: dot(j, lo, hi, r, b0, 6, width); break;
        case 7: dot(j, lo, hi, r, b0, 7, width); break;
        default: dot(j, lo, hi, r, b0, 8, width); break;
      }
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
static job_t make_job(int64_t rows, int64_t cols, int64_t stride, int64_t row0, const uint8_t *planes,
                      int64_t length, int width, const float *table) {
  job_t job;
  memset(&job, 0, sizeof job);
  dc_planes_init(&job.planes, planes, length, width);
  job.rows = rows;
  job.cols = cols;
  job.stride = stride;
  job.row0 = row0;
  job.width = width;
  job.table = table;
  return job;
}

void dc_codes_gemm(int64_t rows, int64_t cols, int64_t stride, const uint8_t *planes, int64_t length, int width,
                   const float *codebook, int64_t k, int64_t batch, const float *x, int64_t ldx, const float *bias,
                   float *y, int nthreads) {
  float table[DC_TABLE];
  dc_table_fill(table, codebook, k);
  job_t job = make_job(rows, cols, stride, 0, planes, length, width, table);
  job.batch = batch;
  job.ldx = ldx;
  job.x = x;
  job.bias = bias;
  job.y = y;
  dc_parallel_rows(gemm_rows[width], &job, rows, rows * cols * batch, nthreads);
}

/* Rows row0 .. row0 + rows of the layer into out (rows, cols). */
void dc_codes_decode(int64_t rows, int64_t cols, int64_t stride, int64_t row0, const uint8_t *planes,
                     int64_t length, int width, const float *codebook, int64_t k, float *out, int nthreads) {
  float table[DC_TABLE];
  dc_table_fill(table, codebook, k);
  job_t job = make_job(rows, cols, stride, row0, planes, length, width, table);
  job.y = out;
  dc_parallel_rows(decode_rows[width], &job, rows, rows * cols, nthreads);
}
