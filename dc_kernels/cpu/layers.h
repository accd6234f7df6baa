/* The layer descriptors the CPU kernels' entry points take, and the rule for non-finite inputs
 * they apply.
 *
 * A descriptor holds everything about one layer that stays the same from call to call (sizes,
 * the packed stream, the codebook): it is built once per layer (ctypes structures of the same
 * fields in dc_kernels/cpu/build.py) so that a call passes one pointer instead of a dozen
 * arguments. The kernels never write through it.
 */
#ifndef DC_LAYERS_H
#define DC_LAYERS_H
#include <stdint.h>
#include <string.h>

/* The sparse form (sparse_linear.c): relative-index entries, entry_ptr[r] row r's first. */
typedef struct {
  int64_t rows, cols;
  const int64_t *entry_ptr; /* rows + 1 offsets into the stream */
  const uint8_t *planes;
  int64_t length; /* entries in the stream */
  int32_t bits, index_bits;
  const float *codebook;
  int64_t k; /* codebook entries */
} dc_sparse_layer_t;

/* The dense-codes form (dense_codes.c): row r's codes at r * stride of the stream. */
typedef struct {
  int64_t rows, cols, stride;
  const uint8_t *planes;
  int64_t length; /* codes in the stream */
  int32_t width, unused;
  const float *codebook;
  int64_t k;
} dc_codes_layer_t;

/* The rule of dc_kernels/ops.py for non-finite inputs: NaN in every output (of `rows`) of a row
 * of x (`cols` floats) that holds a NaN or an infinity. Integer compares of the exponent bits,
 * which vectorize without reassociating float math. */
static inline void dc_nonfinite_rows(const float *x, int64_t batch, int64_t cols, float *y, int64_t rows) {
  for (int64_t b = 0; b < batch; ++b) {
    const float *xb = x + b * cols;
    uint32_t top = 0;
#pragma omp simd reduction(max : top)
    for (int64_t c = 0; c < cols; ++c) {
      uint32_t u;
      memcpy(&u, xb + c, sizeof u);
      u &= 0x7FFFFFFFu;
      top = u > top ? u : top;
    }
    if (top >= 0x7F800000u) /* an exponent of all ones: NaN or infinity */
      for (int64_t r = 0; r < rows; ++r) y[b * rows + r] = __builtin_nanf("");
  }
}

#endif
