"""Triton kernels over a `GpuLayout`: codebook-lookup sparse GEMV / small-batch GEMM, and decoding
to a dense weight (for cuBLAS at large batch).

One program per slice (``R`` rows, whole rows: no atomics). Each loop step reads ``BLOCK``
entries of every row of the slice, one contiguous run of the packed stream, and decodes them:

* unpack ``code | z << CODE_BITS`` from 32-bit words (an entry may straddle two words);
* columns = the row's running column + a prefix sum (``tl.cumsum``) of the advances
  (``z + 1``, or ``2**INDEX_BITS - 1`` for an escape/filler/padding entry, which holds no weight);
* weight = codebook[code], looked up on chip with ``tl.gather`` from a register copy of the
  codebook (``GATHER=False`` falls back to an L1-cached global load, for Triton builds whose
  ``tl.gather`` lowering fails);
* each decoded weight multiplies the ``BB`` batch columns of x (decoded once, reused across the
  batch) and is summed in float32.

Offsets into the packed stream, x and y are 64-bit. The reference of both kernels is
`dc_kernels.reference` on ``layout.to_matrix()``.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _unpack(words_ptr, entry, mask, ENTRY_BITS: tl.constexpr):
    """The ``ENTRY_BITS``-bit fields at int64 positions ``entry`` of the packed stream."""
    bit = entry * ENTRY_BITS
    word = bit >> 5
    shift = (bit & 31).to(tl.uint32)
    lo = tl.load(words_ptr + word, mask=mask, other=0).to(tl.uint32, bitcast=True)
    if 32 % ENTRY_BITS == 0:
        val = lo >> shift
    else:
        hi = tl.load(words_ptr + word + 1, mask=mask, other=0).to(tl.uint32, bitcast=True)
        # (hi << 1) << (31 - shift) avoids a shift by 32 (undefined) when shift == 0.
        val = (lo >> shift) | ((hi << 1) << (31 - shift))
    return (val & ((1 << ENTRY_BITS) - 1)).to(tl.int32)


@triton.jit
def _load_block(words_ptr, start, j0, length, R: tl.constexpr, BLOCK: tl.constexpr, ENTRY_BITS: tl.constexpr):
    """Raw entries ``j0 .. j0 + BLOCK`` of the slice's ``R`` rows (zeros past the end)."""
    j = j0 + tl.arange(0, BLOCK)
    in_slice = tl.broadcast_to((j < length)[None, :], (R, BLOCK))
    entry = start + j[None, :].to(tl.int64) * R + tl.arange(0, R)[:, None]
    return _unpack(words_ptr, entry, in_slice, ENTRY_BITS)


@triton.jit
def _decode_block(
    val,
    codebook_ptr,
    codebook,
    j0,
    length,
    col,
    n_cols,
    CODE_BITS: tl.constexpr,
    INDEX_BITS: tl.constexpr,
    R: tl.constexpr,
    BLOCK: tl.constexpr,
    GATHER: tl.constexpr,
):
    """Decode the raw entries ``val`` (entries ``j0 .. j0 + BLOCK``) of the slice's ``R`` rows:
    (columns, weights, real mask, running columns after the block); ``col`` is each row's column
    before the block."""
    j = j0 + tl.arange(0, BLOCK)
    in_slice = tl.broadcast_to((j < length)[None, :], (R, BLOCK))
    code = val & ((1 << CODE_BITS) - 1)
    z = val >> CODE_BITS
    real = z != (1 << INDEX_BITS) - 1  # the escape: a filler or padding entry
    advance = tl.where(in_slice, tl.where(real, z + 1, (1 << INDEX_BITS) - 1), 0)
    cols = col[:, None] + tl.cumsum(advance, axis=1)
    real = real & in_slice & (cols < n_cols)
    if GATHER:
        weight = tl.gather(codebook, code, axis=1)
    else:
        weight = tl.load(codebook_ptr + code, mask=real, other=0.0)
    weight = tl.where(real, weight, 0.0)
    return cols, weight, real, col + tl.sum(advance, axis=1)


@triton.jit
def _codebook_tile(codebook_ptr, codebook_size, R: tl.constexpr, CODEBOOK_PAD: tl.constexpr):
    k = tl.arange(0, CODEBOOK_PAD)
    cb = tl.load(codebook_ptr + k, mask=k < codebook_size, other=0.0)
    return tl.broadcast_to(cb[None, :], (R, CODEBOOK_PAD))


@triton.jit
def _slice_setup(slice_ptr_ptr, row_ids_ptr, codebook_ptr, n_rows, codebook_size, R: tl.constexpr,
                 CODEBOOK_PAD: tl.constexpr):  # fmt: skip
    """This program's slice: entry offset, entries per row, original rows (+ validity) and the
    codebook tile."""
    pid = tl.program_id(0)
    start = tl.load(slice_ptr_ptr + pid)
    length = (tl.load(slice_ptr_ptr + pid + 1) - start) // R
    slot = pid.to(tl.int64) * R + tl.arange(0, R)
    row_ok = slot < n_rows
    row = tl.load(row_ids_ptr + slot, mask=row_ok, other=0).to(tl.int64)
    return start, length, row, row_ok, _codebook_tile(codebook_ptr, codebook_size, R, CODEBOOK_PAD)


@triton.jit
def codebook_spmm_kernel(
    words_ptr,
    slice_ptr_ptr,
    row_ids_ptr,
    codebook_ptr,
    x_ptr,
    bias_ptr,
    y_ptr,
    n_rows,
    n_cols,
    batch,
    codebook_size,
    stride_xb,
    stride_xk,
    stride_yb,
    stride_yn,
    CODE_BITS: tl.constexpr,
    INDEX_BITS: tl.constexpr,
    CODEBOOK_PAD: tl.constexpr,
    R: tl.constexpr,
    BLOCK: tl.constexpr,
    BB: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    GATHER: tl.constexpr,
):
    """y[b, row] = sum_k W[row, k] x[b, k] (+ bias[row]) for the slice's rows, b < batch <= BB."""
    start, length, row, row_ok, codebook = _slice_setup(
        slice_ptr_ptr, row_ids_ptr, codebook_ptr, n_rows, codebook_size, R, CODEBOOK_PAD
    )
    b = tl.arange(0, BB)
    b_ok = b < batch
    x_batch = x_ptr + b.to(tl.int64)[None, None, :] * stride_xb
    col = tl.full((R,), -1, tl.int32)
    acc = tl.zeros((R, BB), dtype=tl.float32)
    # The next block's words are loaded before this block is used (software pipelining by hand),
    # so that a stream load is always in flight.
    val = _load_block(words_ptr, start, 0, length, R, BLOCK, CODE_BITS + INDEX_BITS)
    for j0 in range(0, length, BLOCK):
        next_val = _load_block(words_ptr, start, j0 + BLOCK, length, R, BLOCK, CODE_BITS + INDEX_BITS)
        cols, weight, real, col = _decode_block(
            val, codebook_ptr, codebook, j0, length, col, n_cols, CODE_BITS, INDEX_BITS, R, BLOCK, GATHER
        )
        val = next_val
        xv = tl.load(
            x_batch + cols.to(tl.int64)[:, :, None] * stride_xk,
            mask=real[:, :, None] & b_ok[None, None, :],
            other=0.0,
        )
        acc += tl.sum(weight[:, :, None] * xv.to(tl.float32), axis=1)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + row, mask=row_ok, other=0.0).to(tl.float32)[:, None]
    y_offs = b.to(tl.int64)[None, :] * stride_yb + row[:, None] * stride_yn
    tl.store(y_ptr + y_offs, acc.to(y_ptr.dtype.element_ty), mask=row_ok[:, None] & b_ok[None, :])


@triton.jit
def decode_dense_kernel(
    words_ptr,
    slice_ptr_ptr,
    row_ids_ptr,
    codebook_ptr,
    w_ptr,
    n_rows,
    n_cols,
    codebook_size,
    CODE_BITS: tl.constexpr,
    INDEX_BITS: tl.constexpr,
    CODEBOOK_PAD: tl.constexpr,
    R: tl.constexpr,
    BLOCK: tl.constexpr,
    GATHER: tl.constexpr,
):
    """Scatter the slice's kept weights into a zero-filled dense (n_rows, n_cols) ``w``."""
    start, length, row, row_ok, codebook = _slice_setup(
        slice_ptr_ptr, row_ids_ptr, codebook_ptr, n_rows, codebook_size, R, CODEBOOK_PAD
    )
    col = tl.full((R,), -1, tl.int32)
    for j0 in range(0, length, BLOCK):
        val = _load_block(words_ptr, start, j0, length, R, BLOCK, CODE_BITS + INDEX_BITS)
        cols, weight, real, col = _decode_block(
            val, codebook_ptr, codebook, j0, length, col, n_cols, CODE_BITS, INDEX_BITS, R, BLOCK, GATHER
        )
        offs = row[:, None] * n_cols + cols.to(tl.int64)
        tl.store(w_ptr + offs, weight.to(w_ptr.dtype.element_ty), mask=real & row_ok[:, None])
