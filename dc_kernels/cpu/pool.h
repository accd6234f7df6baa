/* The threads the CPU kernels share (pool.c): rows of a job cut into chunks that a team of
 * PyTorch's OpenMP runtime claims, or (built without OpenMP) the calling thread and a few helper
 * threads of the library's own pool. */
#ifndef DC_POOL_H
#define DC_POOL_H
#include <stdint.h>

#define DC_HIDDEN __attribute__((visibility("hidden")))

typedef void (*dc_rows_fn)(const void *job, int64_t begin, int64_t end);

/* Run fn(job, begin, end) over rows 0..rows in chunks, on up to nthreads threads when the work
 * (multiply-adds, roughly) is large enough to pay for them; returns when every row is done. */
DC_HIDDEN void dc_parallel_rows(dc_rows_fn fn, const void *job, int64_t rows, int64_t work, int nthreads);

#endif
