/* CPU kernels of CompressedLinear: y = x W^T + b straight from the compressed form.
 *
 * W is given in the canonical CSR form of compress.CompressedMatrix: row_ptr (int64, rows + 1),
 * the column of every kept weight (int16 when in_features <= 32768, else int32) and its code
 * (uint8), which indexes a float32 codebook of k <= 256 shared weights. Every kept weight is
 * decoded in registers (codebook lookup) and never written back: the kernels read ~3 bytes per
 * kept weight instead of the 4 bytes per weight of the dense layer.
 *
 * dc_gemv_*: batch 1. With AVX-512, 16 kept weights per step: codes widened to 32-bit lanes
 * select their shared weight with one vpermt2ps over a 32-entry table in two registers (codes of
 * up to 5 bits) or a gather from a 256-entry table, and x is gathered at the columns.
 * dc_gemm_*: batch >= 2, x transposed to xt (in_features, bp), bp a multiple of 8: each kept
 * weight is decoded once and multiplies a contiguous tile of up to 64 batch columns (the inner
 * loops have constant trip counts so the compiler vectorizes them).
 * dc_decode_*: the dense float32 weight, for batches where a dense GEMM beats the sparse loop.
 *
 * Rows are split over OpenMP threads (the library is loaded into a process that already holds
 * PyTorch's libgomp, so both share one thread pool); small products stay on one thread.
 */
#include <stdint.h>
#include <string.h>
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define DC_AVX512 1
#include <immintrin.h>
#endif

#define PARALLEL_MIN_WORK 65536 /* kept weights x batch below which threads cost more than they save */

static void fill_table(float *table, const float *codebook, int64_t k) {
  memset(table, 0, 256 * sizeof(float));
  memcpy(table, codebook, (size_t)k * sizeof(float));
}

#ifdef DC_AVX512
static inline __m512i load_cols16(const int16_t *col, __mmask16 m) {
  return _mm512_cvtepi16_epi32(_mm256_maskz_loadu_epi16(m, col));
}
static inline __m512i load_cols32(const int32_t *col, __mmask16 m) {
  return _mm512_maskz_loadu_epi32(m, col);
}
#endif

#define DEFINE_GEMV(SUFFIX, COL_T)                                                                     \
  void dc_gemv_##SUFFIX(int64_t rows, const int64_t *row_ptr, const COL_T *col, const uint8_t *codes, \
                        const float *codebook, int64_t k, const float *x, const float *bias, float *y,  \
                        int nthreads) {                                                                 \
    float table[256];                                                                                   \
    fill_table(table, codebook, k);                                                                     \
    const int parallel = row_ptr[rows] >= PARALLEL_MIN_WORK && nthreads > 1;                            \
    _Pragma("omp parallel for num_threads(nthreads) schedule(dynamic, 64) if (parallel)")              \
    for (int64_t r = 0; r < rows; ++r) {                                                                \
      const int64_t begin = row_ptr[r], end = row_ptr[r + 1];                                           \
      y[r] = gemv_row_##SUFFIX(begin, end, col, codes, table, k, x) + (bias ? bias[r] : 0.f);           \
    }                                                                                                   \
  }

#ifdef DC_AVX512
#define DEFINE_GEMV_ROW(SUFFIX, COL_T)                                                                 \
  static inline float gemv_row_##SUFFIX(int64_t begin, int64_t end, const COL_T *col,                  \
                                        const uint8_t *codes, const float *table, int64_t k,           \
                                        const float *x) {                                              \
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();                                     \
    const __m512 lo = _mm512_loadu_ps(table), hi = _mm512_loadu_ps(table + 16);                        \
    const int small = k <= 32;                                                                         \
    int64_t i = begin;                                                                                 \
    for (; i + 32 <= end; i += 32) {                                                                   \
      const __m512i c0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(codes + i)));          \
      const __m512i c1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(codes + i + 16)));     \
      const __m512 w0 = small ? _mm512_permutex2var_ps(lo, c0, hi) : _mm512_i32gather_ps(c0, table, 4); \
      const __m512 w1 = small ? _mm512_permutex2var_ps(lo, c1, hi) : _mm512_i32gather_ps(c1, table, 4); \
      const __m512i j0 = load_cols##SUFFIX(col + i, 0xFFFF);                                           \
      const __m512i j1 = load_cols##SUFFIX(col + i + 16, 0xFFFF);                                      \
      acc0 = _mm512_fmadd_ps(w0, _mm512_i32gather_ps(j0, x, 4), acc0);                                 \
      acc1 = _mm512_fmadd_ps(w1, _mm512_i32gather_ps(j1, x, 4), acc1);                                 \
    }                                                                                                  \
    for (; i < end; i += 16) {                                                                         \
      const int64_t n = end - i < 16 ? end - i : 16;                                                   \
      const __mmask16 m = (__mmask16)((1u << n) - 1u);                                                 \
      const __m512i c = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, codes + i));                      \
      const __m512 w = small ? _mm512_permutex2var_ps(lo, c, hi) : _mm512_i32gather_ps(c, table, 4);   \
      const __m512i j = load_cols##SUFFIX(col + i, m);                                                 \
      acc0 = _mm512_mask3_fmadd_ps(w, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, j, x, 4), acc0, m); \
    }                                                                                                  \
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));                                            \
  }
#else
#define DEFINE_GEMV_ROW(SUFFIX, COL_T)                                                                 \
  static inline float gemv_row_##SUFFIX(int64_t begin, int64_t end, const COL_T *col,                  \
                                        const uint8_t *codes, const float *table, int64_t k,           \
                                        const float *x) {                                              \
    (void)k;                                                                                           \
    float acc = 0.f;                                                                                   \
    _Pragma("omp simd reduction(+ : acc)")                                                             \
    for (int64_t i = begin; i < end; ++i) acc += table[codes[i]] * x[col[i]];                          \
    return acc;                                                                                        \
  }
#endif

#define DEFINE_TILE(SUFFIX, COL_T, TB)                                                                 \
  static void gemm_tile##TB##_##SUFFIX(int64_t r, int64_t rows, int64_t b0, int64_t batch, int64_t bp, \
                                       const int64_t *row_ptr, const COL_T *col, const uint8_t *codes, \
                                       const float *table, const float *xt, const float *bias,        \
                                       float *y) {                                                     \
    float acc[TB];                                                                                     \
    for (int j = 0; j < TB; ++j) acc[j] = 0.f;                                                         \
    for (int64_t i = row_ptr[r]; i < row_ptr[r + 1]; ++i) {                                            \
      const float w = table[codes[i]];                                                                 \
      const float *xr = xt + (int64_t)col[i] * bp + b0;                                                \
      for (int j = 0; j < TB; ++j) acc[j] += w * xr[j];                                                \
    }                                                                                                  \
    const float b = bias ? bias[r] : 0.f;                                                              \
    const int64_t n = batch - b0 < TB ? batch - b0 : TB;                                               \
    for (int64_t j = 0; j < n; ++j) y[(b0 + j) * rows + r] = acc[j] + b;                               \
  }

#define DEFINE_GEMM(SUFFIX, COL_T)                                                                     \
  DEFINE_TILE(SUFFIX, COL_T, 8)                                                                        \
  DEFINE_TILE(SUFFIX, COL_T, 16)                                                                       \
  DEFINE_TILE(SUFFIX, COL_T, 32)                                                                       \
  DEFINE_TILE(SUFFIX, COL_T, 64)                                                                       \
  void dc_gemm_##SUFFIX(int64_t rows, int64_t batch, int64_t bp, const int64_t *row_ptr,              \
                        const COL_T *col, const uint8_t *codes, const float *codebook, int64_t k,      \
                        const float *xt, const float *bias, float *y, int nthreads) {                  \
    float table[256];                                                                                  \
    fill_table(table, codebook, k);                                                                    \
    const int parallel = row_ptr[rows] * batch >= PARALLEL_MIN_WORK && nthreads > 1;                   \
    _Pragma("omp parallel for num_threads(nthreads) schedule(dynamic, 16) if (parallel)")             \
    for (int64_t r = 0; r < rows; ++r) {                                                               \
      int64_t b0 = 0;                                                                                  \
      for (; bp - b0 >= 64; b0 += 64)                                                                  \
        gemm_tile64_##SUFFIX(r, rows, b0, batch, bp, row_ptr, col, codes, table, xt, bias, y);         \
      if (bp - b0 >= 32) {                                                                             \
        gemm_tile32_##SUFFIX(r, rows, b0, batch, bp, row_ptr, col, codes, table, xt, bias, y);         \
        b0 += 32;                                                                                      \
      }                                                                                                \
      if (bp - b0 >= 16) {                                                                             \
        gemm_tile16_##SUFFIX(r, rows, b0, batch, bp, row_ptr, col, codes, table, xt, bias, y);         \
        b0 += 16;                                                                                      \
      }                                                                                                \
      if (bp - b0 >= 8)                                                                                \
        gemm_tile8_##SUFFIX(r, rows, b0, batch, bp, row_ptr, col, codes, table, xt, bias, y);          \
    }                                                                                                  \
  }

#define DEFINE_DECODE(SUFFIX, COL_T)                                                                   \
  void dc_decode_##SUFFIX(int64_t rows, int64_t cols, const int64_t *row_ptr, const COL_T *col,        \
                          const uint8_t *codes, const float *codebook, int64_t k, float *out,          \
                          int nthreads) {                                                              \
    float table[256];                                                                                  \
    fill_table(table, codebook, k);                                                                    \
    _Pragma("omp parallel for num_threads(nthreads) schedule(static) if (nthreads > 1)")              \
    for (int64_t r = 0; r < rows; ++r) {                                                               \
      float *row = out + r * cols;                                                                     \
      memset(row, 0, (size_t)cols * sizeof(float));                                                    \
      for (int64_t i = row_ptr[r]; i < row_ptr[r + 1]; ++i) row[col[i]] = table[codes[i]];             \
    }                                                                                                  \
  }

DEFINE_GEMV_ROW(16, int16_t)
DEFINE_GEMV_ROW(32, int32_t)
DEFINE_GEMV(16, int16_t)
DEFINE_GEMV(32, int32_t)
DEFINE_GEMM(16, int16_t)
DEFINE_GEMM(32, int32_t)
DEFINE_DECODE(16, int16_t)
DEFINE_DECODE(32, int32_t)

/* Which GEMV path this build took (reported by benchmarks): 512 for AVX-512, 0 for portable C. */
int dc_vector_bits(void) {
#ifdef DC_AVX512
  return 512;
#else
  return 0;
#endif
}
