/* The threads of the CPU kernels.
 *
 * Built with OpenMP (the build's first flags), rows are cut into chunks that a team of the
 * process's OpenMP runtime deals out in turn (thread t takes chunks t, t + n, ...): every call the
 * same rows, so a thread finds its rows' codes and the lines of y it wrote last in its own core's
 * caches. Claimed one by one, chunks changed threads from call to call: with 2 threads dense codes
 * ran 2-6% slower on 384 x 384 and 1536 x 384 at batch 1-256 and at 0.65x the speed on 4096 x 4096
 * at batch 1; the sparse layers Alex-6, VGG-6 and Alex-8 within -2..+7%. The runtime is PyTorch's
 * own (the library is linked against libgomp.so.1, the soname of the one PyTorch loads), so the
 * kernels' threads are the ones its operators just used, still spinning: on 384 x 384 and 1536 x
 * 384 dense codes at batch 1-128 with 2 threads, called in turn with nn.Linear, 0.81-1.21x of
 * nn.Linear's speed where the library's own pool (below) ran at 0.58-0.97x, its helper competing
 * with PyTorch's spinning thread for the second core. GNU OpenMP cannot start a team in a child
 * forked after the parent ran one (PyTorch's own operators hang there), so a forked child runs the
 * kernels on one thread.
 *
 * Without OpenMP, the library's own pool: rows are cut into chunks that the calling thread and a
 * small pool of helper threads claim from one atomic counter. The caller never waits for a
 * helper that has not started (it just takes the chunks itself), only for chunks already
 * claimed. A forked child starts its own helpers.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>

#include "pool.h"

/* Multiply-adds below which threads cost more than they save, and the least a chunk holds: each
 * claim and each start of a kernel costs, and on a 384 x 384 dense-codes layer at batch 1-8 with
 * 2 threads, 2-18 such chunks ran 1.03-1.16x faster than 24 chunks of 16 rows. */
#define PARALLEL_MIN_WORK 65536
#define CHUNKS_PER_THREAD 16

/* Whether a job runs on the calling thread alone: one thread, too little work, or one grain. */
static int runs_alone(int64_t rows, int64_t grain, int64_t work, int nthreads) {
  return nthreads <= 1 || work < PARALLEL_MIN_WORK || rows <= grain;
}

/* How many chunks of how many rows: about CHUNKS_PER_THREAD per thread, each a whole number of
 * grains holding about PARALLEL_MIN_WORK or more, at least one per thread, none empty. */
static int64_t chunk_rows(int64_t rows, int64_t grain, int64_t work, int nthreads, int64_t *chunks) {
  const int64_t grains = (rows + grain - 1) / grain;
  int64_t n = (int64_t)nthreads * CHUNKS_PER_THREAD;
  const int64_t by_work = work / PARALLEL_MIN_WORK > nthreads ? work / PARALLEL_MIN_WORK : nthreads;
  if (n > by_work) n = by_work;
  if (n > grains) n = grains;
  const int64_t chunk = (grains + n - 1) / n * grain;
  *chunks = (rows + chunk - 1) / chunk;
  return chunk;
}

#ifdef _OPENMP
#include <omp.h>

static atomic_int forked; /* set in a child forked after the library was loaded */

static void mark_forked(void) { atomic_store(&forked, 1); }

__attribute__((constructor)) static void watch_forks(void) { pthread_atfork(NULL, NULL, mark_forked); }

void dc_parallel_rows(dc_rows_fn fn, const void *job, int64_t rows, int64_t grain, int64_t work,
                      int nthreads) {
  if (runs_alone(rows, grain, work, nthreads) || atomic_load(&forked) || omp_in_parallel()) {
    fn(job, 0, rows);
    return;
  }
  int64_t chunks;
  const int64_t chunk = chunk_rows(rows, grain, work, nthreads, &chunks);
#pragma omp parallel for num_threads(nthreads) schedule(static, 1)
  for (int64_t c = 0; c < chunks; ++c) fn(job, c * chunk, c * chunk + chunk < rows ? c * chunk + chunk : rows);
}

#else
#define MAX_HELPERS 63
#define SPIN_BEFORE_SLEEP 20000 /* polls (~tens of microseconds) before a helper sleeps */

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
  _Atomic(dc_rows_fn) fn;
  _Atomic(const void *) job;
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
    const dc_rows_fn fn = atomic_load_explicit(&pool.fn, memory_order_relaxed);
    const void *job = atomic_load_explicit(&pool.job, memory_order_relaxed);
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

void dc_parallel_rows(dc_rows_fn fn, const void *job, int64_t rows, int64_t grain, int64_t work,
                      int nthreads) {
  if (runs_alone(rows, grain, work, nthreads) || pthread_mutex_trylock(&pool.call_lock)) {
    fn(job, 0, rows);
    return;
  }
  ensure_helpers(nthreads - 1);
  int64_t chunks;
  const int64_t chunk = chunk_rows(rows, grain, work, nthreads, &chunks);
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
#endif
