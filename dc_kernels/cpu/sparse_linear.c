/* CPU kernels of CompressedLinear: y = x W^T + b straight from the compressed form.
 *
 * W is given in the canonical CSR form of compress.CompressedMatrix: row_ptr (int64, rows + 1),
 * the column of every kept weight (int16 when in_features <= 32768, else int32) and its code
 * (uint8), which indexes a float32 codebook of k <= 256 shared weights. Every kept weight is
 * decoded in registers (codebook lookup) and never written back: the kernels read ~3 bytes per
 * kept weight instead of the 4 bytes per weight of the dense layer.
 *
 * dc_gemv: batch 1. With AVX-512, 16 kept weights per step: codes widened to 32-bit lanes select
 *   their shared weight with one vpermt2ps over a 32-entry table held in two registers (codes of
 *   up to 5 bits) or a gather from a 256-entry table, and x is gathered at the columns.
 * dc_gemm: batch >= 2, x transposed to xt (in_features, bp), bp a multiple of dc_batch_tile() (16
 *   with AVX-512, else 8): each kept weight is decoded once and multiplies a contiguous tile of up
 *   to 64 batch columns held in registers.
 * dc_decode: the dense float32 weight, for batches where a dense GEMM beats the sparse loop.
 *
 * Threads: rows are cut into chunks that the calling thread and a small pool of helper threads
 * claim from one atomic counter. The caller never waits for a helper that has not started (it
 * just takes the chunks itself), only for chunks already claimed: on a machine whose cores are
 * busy with other processes a late helper costs nothing, where an OpenMP barrier would wait a
 * whole scheduler tick for it. A forked child starts its own helpers.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define DC_AVX512 1
#include <immintrin.h>
#endif

#define PARALLEL_MIN_WORK 65536 /* kept weights x batch below which threads cost more than they save */
#define CHUNKS_PER_THREAD 16
#define MAX_HELPERS 63
#define SPIN_BEFORE_SLEEP 20000 /* polls (~tens of microseconds) before a helper sleeps */

/* ------------------------------------------------------------------------------------ kernels */
typedef struct {
  int64_t rows, cols, batch, bp;
  const int64_t *row_ptr;
  const void *col;
  const uint8_t *codes;
  const float *table; /* the codebook padded with zeros to 256 entries */
  int small;          /* codebook of at most 32 entries */
  const float *x;     /* x (in_features) for gemv, xt (in_features, bp) for gemm */
  const float *bias;
  float *y; /* y (rows) for gemv, (batch, rows) for gemm, (rows, cols) for decode */
} job_t;

typedef void (*rows_fn)(const job_t *job, int64_t begin, int64_t end);

#ifdef DC_AVX512
static inline __m512i load_cols_16(const int16_t *col, __mmask16 m) {
  return _mm512_cvtepi16_epi32(_mm256_maskz_loadu_epi16(m, col));
}
static inline __m512i load_cols_32(const int32_t *col, __mmask16 m) { return _mm512_maskz_loadu_epi32(m, col); }

#define DEFINE_DOT(W, COL_T)                                                                            \
  static inline float dot_##W(const job_t *j, int64_t i, int64_t end) {                                 \
    const COL_T *col = (const COL_T *)j->col;                                                           \
    const __m512 lo = _mm512_loadu_ps(j->table), hi = _mm512_loadu_ps(j->table + 16);                   \
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();                                      \
    for (; i + 32 <= end; i += 32) {                                                                    \
      const __m512i c0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(j->codes + i)));        \
      const __m512i c1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(j->codes + i + 16)));   \
      const __m512 w0 = j->small ? _mm512_permutex2var_ps(lo, c0, hi) : _mm512_i32gather_ps(c0, j->table, 4); \
      const __m512 w1 = j->small ? _mm512_permutex2var_ps(lo, c1, hi) : _mm512_i32gather_ps(c1, j->table, 4); \
      acc0 = _mm512_fmadd_ps(w0, _mm512_i32gather_ps(load_cols_##W(col + i, 0xFFFF), j->x, 4), acc0);   \
      acc1 = _mm512_fmadd_ps(w1, _mm512_i32gather_ps(load_cols_##W(col + i + 16, 0xFFFF), j->x, 4), acc1); \
    }                                                                                                   \
    for (; i < end; i += 16) {                                                                          \
      const __mmask16 m = (__mmask16)((1u << (end - i < 16 ? end - i : 16)) - 1u);                      \
      const __m512i c = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, j->codes + i));                    \
      const __m512 w = j->small ? _mm512_permutex2var_ps(lo, c, hi) : _mm512_i32gather_ps(c, j->table, 4); \
      const __m512 xv = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, load_cols_##W(col + i, m), j->x, 4); \
      acc0 = _mm512_mask3_fmadd_ps(w, xv, acc0, m);                                                     \
    }                                                                                                   \
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));                                             \
  }
#else
#define DEFINE_DOT(W, COL_T)                                                                            \
  static inline float dot_##W(const job_t *j, int64_t i, int64_t end) {                                 \
    const COL_T *col = (const COL_T *)j->col;                                                           \
    float acc = 0.f;                                                                                    \
    _Pragma("omp simd reduction(+ : acc)") for (int64_t t = i; t < end; ++t)                            \
      acc += j->table[j->codes[t]] * j->x[col[t]];                                                      \
    return acc;                                                                                         \
  }
#endif

static inline void store_tile(const job_t *j, int64_t r, int64_t b0, const float *acc, int64_t tb) {
  const float b = j->bias ? j->bias[r] : 0.f;
  const int64_t n = j->batch - b0 < tb ? j->batch - b0 : tb;
  for (int64_t t = 0; t < n; ++t) j->y[(b0 + t) * j->rows + r] = acc[t] + b;
}

#ifdef DC_AVX512
#define BATCH_TILE 16
/* TB batch columns in TB / 16 registers (constant trip counts: the loops over v unroll). */
#define DEFINE_TILE(W, COL_T, TB)                                                                       \
  static void tile##TB##_##W(const job_t *j, int64_t r, int64_t b0) {                                   \
    const COL_T *col = (const COL_T *)j->col;                                                           \
    __m512 acc[TB / 16];                                                                                \
    for (int v = 0; v < TB / 16; ++v) acc[v] = _mm512_setzero_ps();                                     \
    for (int64_t i = j->row_ptr[r]; i < j->row_ptr[r + 1]; ++i) {                                       \
      const __m512 w = _mm512_set1_ps(j->table[j->codes[i]]);                                           \
      const float *xr = j->x + (int64_t)col[i] * j->bp + b0;                                            \
      for (int v = 0; v < TB / 16; ++v) acc[v] = _mm512_fmadd_ps(w, _mm512_loadu_ps(xr + 16 * v), acc[v]); \
    }                                                                                                   \
    float out[TB];                                                                                      \
    for (int v = 0; v < TB / 16; ++v) _mm512_storeu_ps(out + 16 * v, acc[v]);                           \
    store_tile(j, r, b0, out, TB);                                                                      \
  }
#define DEFINE_TILE8(W, COL_T)
#define TILE8(W, j, r, b0)
#else
#define BATCH_TILE 8
#define DEFINE_TILE(W, COL_T, TB)                                                                       \
  static void tile##TB##_##W(const job_t *j, int64_t r, int64_t b0) {                                   \
    const COL_T *col = (const COL_T *)j->col;                                                           \
    float acc[TB];                                                                                      \
    for (int t = 0; t < TB; ++t) acc[t] = 0.f;                                                          \
    for (int64_t i = j->row_ptr[r]; i < j->row_ptr[r + 1]; ++i) {                                       \
      const float w = j->table[j->codes[i]];                                                            \
      const float *xr = j->x + (int64_t)col[i] * j->bp + b0;                                            \
      _Pragma("omp simd") for (int t = 0; t < TB; ++t) acc[t] += w * xr[t];                             \
    }                                                                                                   \
    store_tile(j, r, b0, acc, TB);                                                                      \
  }
#define DEFINE_TILE8(W, COL_T) DEFINE_TILE(W, COL_T, 8)
#define TILE8(W, j, r, b0) \
  if (j->bp - b0 >= 8) tile8_##W(j, r, b0);
#endif

#define DEFINE_KERNELS(W, COL_T)                                                                        \
  DEFINE_DOT(W, COL_T)                                                                                  \
  DEFINE_TILE8(W, COL_T)                                                                                \
  DEFINE_TILE(W, COL_T, 16)                                                                             \
  DEFINE_TILE(W, COL_T, 32)                                                                             \
  DEFINE_TILE(W, COL_T, 64)                                                                             \
  static void gemv_rows_##W(const job_t *j, int64_t begin, int64_t end) {                               \
    for (int64_t r = begin; r < end; ++r)                                                               \
      j->y[r] = dot_##W(j, j->row_ptr[r], j->row_ptr[r + 1]) + (j->bias ? j->bias[r] : 0.f);            \
  }                                                                                                     \
  static void gemm_rows_##W(const job_t *j, int64_t begin, int64_t end) {                               \
    for (int64_t r = begin; r < end; ++r) {                                                             \
      int64_t b0 = 0;                                                                                   \
      for (; j->bp - b0 >= 64; b0 += 64) tile64_##W(j, r, b0);                                          \
      if (j->bp - b0 >= 32) tile32_##W(j, r, b0), b0 += 32;                                            \
      if (j->bp - b0 >= 16) tile16_##W(j, r, b0), b0 += 16;                                            \
      TILE8(W, j, r, b0)                                                                                \
    }                                                                                                   \
  }                                                                                                     \
  static void decode_rows_##W(const job_t *j, int64_t begin, int64_t end) {                             \
    const COL_T *col = (const COL_T *)j->col;                                                           \
    for (int64_t r = begin; r < end; ++r) {                                                             \
      float *row = j->y + r * j->cols;                                                                  \
      memset(row, 0, (size_t)j->cols * sizeof(float));                                                  \
      for (int64_t i = j->row_ptr[r]; i < j->row_ptr[r + 1]; ++i) row[col[i]] = j->table[j->codes[i]];  \
    }                                                                                                   \
  }

DEFINE_KERNELS(16, int16_t)
DEFINE_KERNELS(32, int32_t)

/* --------------------------------------------------------------------------------- thread pool */
/* state = generation (24 bits) | chunks (20 bits) | next unclaimed chunk (20 bits) */
#define FIELD 20
#define MASK ((UINT64_C(1) << FIELD) - 1)

static struct {
  pthread_mutex_t call_lock; /* one pooled call at a time; a concurrent call runs on its own thread */
  pthread_mutex_t wake_lock;
  pthread_cond_t wake;
  uint64_t wake_count; /* under wake_lock */
  _Atomic uint64_t state;
  _Atomic int64_t done; /* chunks finished in the current generation */
  /* The current job, stable while any of its chunks is unclaimed or running (atomics: a helper
     may read them while the next job is being set up; its claim then fails). */
  _Atomic(rows_fn) fn;
  _Atomic(const job_t *) job;
  _Atomic int64_t rows, chunk;
  int helpers;
  pid_t pid;
} pool = {.call_lock = PTHREAD_MUTEX_INITIALIZER,
          .wake_lock = PTHREAD_MUTEX_INITIALIZER,
          .wake = PTHREAD_COND_INITIALIZER};

/* Claim and run chunks of the current job until none is left; returns at once between jobs. */
static void run_chunks(void) {
  for (;;) {
    uint64_t v = atomic_load_explicit(&pool.state, memory_order_acquire);
    const uint64_t chunks = (v >> FIELD) & MASK, next = v & MASK;
    if (next >= chunks) return;
    const rows_fn fn = atomic_load_explicit(&pool.fn, memory_order_relaxed);
    const job_t *job = atomic_load_explicit(&pool.job, memory_order_relaxed);
    const int64_t rows = atomic_load_explicit(&pool.rows, memory_order_relaxed);
    const int64_t chunk = atomic_load_explicit(&pool.chunk, memory_order_relaxed);
    /* Succeeds only while the state is still v: the job read above is then the current one. */
    if (!atomic_compare_exchange_weak_explicit(&pool.state, &v, v + 1, memory_order_acq_rel,
                                               memory_order_acquire))
      continue;
    const int64_t begin = (int64_t)next * chunk;
    fn(job, begin, begin + chunk < rows ? begin + chunk : rows);
    atomic_fetch_add_explicit(&pool.done, 1, memory_order_release);
  }
}

static void *helper_main(void *unused) {
  (void)unused;
  uint64_t seen = 0;
  for (;;) {
    /* Poll a little before sleeping: back-to-back layers then find the helper awake. */
    for (int spin = 0; spin < SPIN_BEFORE_SLEEP; ++spin) {
      uint64_t v = atomic_load_explicit(&pool.state, memory_order_relaxed);
      if ((v & MASK) < ((v >> FIELD) & MASK)) run_chunks();
    }
    pthread_mutex_lock(&pool.wake_lock);
    while (pool.wake_count == seen) pthread_cond_wait(&pool.wake, &pool.wake_lock);
    seen = pool.wake_count;
    pthread_mutex_unlock(&pool.wake_lock);
    run_chunks();
  }
  return NULL;
}

static void ensure_helpers(int wanted) {
  if (pool.pid != getpid()) { /* a forked child has none of its parent's helpers */
    pool.pid = getpid();
    pool.helpers = 0;
    pthread_mutex_init(&pool.wake_lock, NULL);
    pthread_cond_init(&pool.wake, NULL);
  }
  if (wanted > MAX_HELPERS) wanted = MAX_HELPERS;
  while (pool.helpers < wanted) {
    pthread_t thread;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    const int failed = pthread_create(&thread, &attr, helper_main, NULL);
    pthread_attr_destroy(&attr);
    if (failed) break; /* fewer helpers: the caller does the rest */
    ++pool.helpers;
  }
}

static void parallel_rows(rows_fn fn, const job_t *job, int64_t rows, int64_t work, int nthreads) {
  if (nthreads <= 1 || work < PARALLEL_MIN_WORK || rows < 2 || pthread_mutex_trylock(&pool.call_lock)) {
    fn(job, 0, rows);
    return;
  }
  ensure_helpers(nthreads - 1);
  int64_t chunks = (int64_t)nthreads * CHUNKS_PER_THREAD;
  if (chunks > rows) chunks = rows;
  const int64_t chunk = (rows + chunks - 1) / chunks;
  chunks = (rows + chunk - 1) / chunk;
  atomic_store_explicit(&pool.fn, fn, memory_order_relaxed);
  atomic_store_explicit(&pool.job, job, memory_order_relaxed);
  atomic_store_explicit(&pool.rows, rows, memory_order_relaxed);
  atomic_store_explicit(&pool.chunk, chunk, memory_order_relaxed);
  atomic_store_explicit(&pool.done, 0, memory_order_relaxed);
  const uint64_t generation = ((atomic_load(&pool.state) >> (2 * FIELD)) + 1) & ((UINT64_C(1) << 24) - 1);
  atomic_store_explicit(&pool.state, generation << (2 * FIELD) | (uint64_t)chunks << FIELD, memory_order_release);
  pthread_mutex_lock(&pool.wake_lock);
  ++pool.wake_count;
  pthread_cond_broadcast(&pool.wake);
  pthread_mutex_unlock(&pool.wake_lock);
  run_chunks();
  /* Only chunks a helper has claimed are left; yielding lets a preempted helper finish. */
  while (atomic_load_explicit(&pool.done, memory_order_acquire) < chunks) sched_yield();
  pthread_mutex_unlock(&pool.call_lock);
}

/* -------------------------------------------------------------------------------- entry points */
static void fill_table(float *table, const float *codebook, int64_t k) {
  memset(table, 0, 256 * sizeof(float));
  memcpy(table, codebook, (size_t)k * sizeof(float));
}

void dc_gemv(int64_t rows, const int64_t *row_ptr, const void *col, int col_bits, const uint8_t *codes,
             const float *codebook, int64_t k, const float *x, const float *bias, float *y, int nthreads) {
  float table[256];
  fill_table(table, codebook, k);
  const job_t job = {rows, 0, 1, 1, row_ptr, col, codes, table, k <= 32, x, bias, y};
  parallel_rows(col_bits == 16 ? gemv_rows_16 : gemv_rows_32, &job, rows, row_ptr[rows], nthreads);
}

void dc_gemm(int64_t rows, int64_t batch, int64_t bp, const int64_t *row_ptr, const void *col, int col_bits,
             const uint8_t *codes, const float *codebook, int64_t k, const float *xt, const float *bias,
             float *y, int nthreads) {
  float table[256];
  fill_table(table, codebook, k);
  const job_t job = {rows, 0, batch, bp, row_ptr, col, codes, table, k <= 32, xt, bias, y};
  parallel_rows(col_bits == 16 ? gemm_rows_16 : gemm_rows_32, &job, rows, row_ptr[rows] * batch, nthreads);
}

void dc_decode(int64_t rows, int64_t cols, const int64_t *row_ptr, const void *col, int col_bits,
               const uint8_t *codes, const float *codebook, int64_t k, float *out, int nthreads) {
  float table[256];
  fill_table(table, codebook, k);
  const job_t job = {rows, cols, 0, 0, row_ptr, col, codes, table, k <= 32, NULL, NULL, out};
  parallel_rows(col_bits == 16 ? decode_rows_16 : decode_rows_32, &job, rows, rows * cols, nthreads);
}

/* The batch padding dc_gemm expects: bp must be a multiple of it. */
int dc_batch_tile(void) { return BATCH_TILE; }

/* Which dot-product path this build took (reported by benchmarks): 512 for AVX-512, 0 for C. */
int dc_vector_bits(void) {
#ifdef DC_AVX512
  return 512;
#else
  return 0;
#endif
}
