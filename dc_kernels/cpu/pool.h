/* The threads the CPU kernels share (pool.c): rows of a job cut into chunks that a team of
 * PyTorch's OpenMP runtime deals out, or (built without OpenMP) the calling thread and a few helper
 * threads of the library's own pool. */
#ifndef DC_POOL_H
#define DC_POOL_H
#include <stdint.h>

#define DC_HIDDEN __attribute__((visibility("hidden")))

typedef void (*dc_rows_fn)(const void *job, int64_t begin, int64_t end);

/* Run fn(job, begin, end) over rows 0..rows in chunks of whole multiples of `grain` >= 1 rows (the
 * last one excepted), on up to nthreads threads when the work (multiply-adds, roughly) is large
 * enough to pay for them; returns when every row is done. */
DC_HIDDEN void dc_parallel_rows(dc_rows_fn fn, const void *job, int64_t rows, int64_t grain, int64_t work,
                                int nthreads);

/* The grain of kernels that write outputs row by row: 16 rows of y are one 64-byte line, which
 * two threads then never share (chunks of 12 rows of a 384 x 384 dense-codes layer ran slower on
 * 2 threads than on 1 at batch 2-8: 0.77-0.88x of nn.Linear, 0.83-1.34x in whole lines). */
#define DC_ROW_GRAIN 16

#endif
