"""Triton kernels over a `DenseCodesLayout`: codebook-lookup GEMV / small-batch GEMM, and decoding
to a dense weight (for cuBLAS at large batch).

Every weight is a code; the kernels read a tile of ``BLOCK_N`` rows x ``BLOCK_K`` columns of codes
per loop step, unpack it from the bit planes in registers (``N8`` byte planes, ``N4`` nibble planes
and ``N1`` bit planes, widest first, as `dc_kernels.planes` lays them out), look the weights up in
the codebook (an L1-resident table: the zero code, just past it, is masked to 0) and multiply them
by the tile's ``BB`` batch columns of x, read contiguously (no index, no gather), summing in
float32. One program owns whole rows: no atomics.

Offsets into the codes, x and y are 64-bit. The reference of both kernels is
`dc_kernels.reference` on ``layout.to_matrix()``.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _tile_codes(planes_ptr, first, live, byte_bytes, nib_off, bit_off, bit_bytes,
                N8: tl.constexpr, N4: tl.constexpr, N1: tl.constexpr, G: tl.constexpr):  # fmt: skip
    """The codes of ``G`` whole groups of 16 from int64 code positions ``first`` ([BLOCK_N, 1], a
    multiple of 16) on, as [BLOCK_N, G * 16] (0 where ``live`` [BLOCK_N, G] is off): a byte plane's
    16 bytes, a nibble plane's 64-bit word, a bit plane's 16-bit word per group, each loaded once
    for its 16 codes."""
    g = tl.arange(0, G)[None, :, None]
    j = tl.arange(0, 16)[None, None, :]
    group = (first >> 4)[:, :, None] + g  # [BLOCK_N, G, 1]
    ok = live[:, :, None]
    code = tl.zeros((first.shape[0], G, 16), tl.int32)
    for p in tl.static_range(N8):
        byte = tl.load(planes_ptr + p * byte_bytes + group * 16 + j, mask=ok, other=0).to(tl.int32)
        code |= byte << (8 * p)
    if N4 > 0:
        # Code j of a group at nibble (j % 2) * 8 + j // 2 of its word: even codes in the low 32 bits.
        words_ptr = (planes_ptr + nib_off).to(tl.pointer_type(tl.int64), bitcast=True)
        word = tl.load(words_ptr + group, mask=ok, other=0)
        half = tl.where(j % 2 == 0, word.to(tl.int32), (word >> 32).to(tl.int32))
        code |= ((half >> (4 * (j // 2))) & 15) << (8 * N8)
    for p in tl.static_range(N1):
        bits_ptr = (planes_ptr + bit_off + p * bit_bytes).to(tl.pointer_type(tl.int16), bitcast=True)
        bits = tl.load(bits_ptr + group, mask=ok, other=0).to(tl.int32)
        code |= ((bits >> j) & 1) << (8 * N8 + 4 * N4 + p)
    return tl.reshape(code, (first.shape[0], G * 16))


@triton.jit
def _weights(
    planes_ptr, codebook_ptr, rows, row_ok, k0, n_cols, stride_codes, codebook_size, byte_bytes, nib_off,
    bit_off, bit_bytes, N8: tl.constexpr, N4: tl.constexpr, N1: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """The (BLOCK_N, BLOCK_K) tile of weights at columns k0 .. k0 + BLOCK_K of ``rows`` (0 past
    the layer and at pruned positions), and those columns (k0 a multiple of 16)."""
    k = k0 + tl.arange(0, BLOCK_K)
    live = row_ok[:, None] & (k0 + 16 * tl.arange(0, BLOCK_K // 16) < n_cols)[None, :]
    first = rows.to(tl.int64)[:, None] * stride_codes + k0
    code = _tile_codes(
        planes_ptr, first, live, byte_bytes, nib_off, bit_off, bit_bytes, N8, N4, N1, BLOCK_K // 16
    )
    inside = row_ok[:, None] & (k < n_cols)[None, :]
    weight = tl.load(codebook_ptr + code, mask=inside & (code < codebook_size), other=0.0)
    return weight, k


@triton.jit
def dense_codes_gemm_kernel(
    planes_ptr,
    codebook_ptr,
    x_ptr,
    bias_ptr,
    y_ptr,
    n_rows,
    n_cols,
    stride_codes,
    batch,
    codebook_size,
    byte_bytes,
    nib_off,
    bit_off,
    bit_bytes,
    stride_xb,
    stride_xk,
    stride_yb,
    stride_yn,
    N8: tl.constexpr,
    N4: tl.constexpr,
    N1: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BB: tl.constexpr,
    HAS_BIAS: tl.constexpr,
):
    """y[b, row] = sum_k W[row, k] x[b, k] (+ bias[row]) for the program's BLOCK_N rows, b < batch <= BB."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < n_rows
    b = tl.arange(0, BB)
    b_ok = b < batch
    if HAS_BIAS:  # loaded before the loop: after it, its latency would stand before the store
        bias = tl.load(bias_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
    acc = tl.zeros((BLOCK_N, BB), dtype=tl.float32)
    for k0 in range(0, n_cols, BLOCK_K):
        weight, k = _weights(planes_ptr, codebook_ptr, rows, row_ok, k0, n_cols, stride_codes, codebook_size,
                             byte_bytes, nib_off, bit_off, bit_bytes, N8, N4, N1, BLOCK_K)  # fmt: skip
        xv = tl.load(
            x_ptr + b.to(tl.int64)[None, :] * stride_xb + k.to(tl.int64)[:, None] * stride_xk,
            mask=(k < n_cols)[:, None] & b_ok[None, :],
            other=0.0,
        )
        if x_ptr.dtype.element_ty == tl.float16:  # tensor cores, the weight rounded as decode + cuBLAS does
            acc = tl.dot(weight.to(tl.float16), xv, acc)
        else:  # float32 x (the launcher's copy of a bfloat16 one): float32 products
            acc = tl.dot(weight, xv, acc, input_precision="ieee")
    if HAS_BIAS:
        acc += bias[:, None]
    y_offs = b.to(tl.int64)[None, :] * stride_yb + rows[:, None] * stride_yn
    tl.store(y_ptr + y_offs, acc.to(y_ptr.dtype.element_ty), mask=row_ok[:, None] & b_ok[None, :])


@triton.jit
def _pick(q: tl.constexpr, w0, w1, w2, w3):
    """Word ``q`` (a compile-time index) of four."""
    if q == 0:
        word = w0
    elif q == 1:
        word = w1
    elif q == 2:
        word = w2
    else:
        word = w3
    return word


@triton.jit
def _four_words(piece):
    """The four 32-bit words of each thread's 16-byte piece ([R, G, 4])."""
    a0, a1 = tl.split(tl.reshape(piece, [piece.shape[0], piece.shape[1], 2, 2]))
    w0, w2 = tl.split(a0)
    w1, w3 = tl.split(a1)
    return w0, w1, w2, w3


@triton.jit
def _word_value(word, v: tl.constexpr, dtype: tl.constexpr):
    """Value ``v`` of a 32-bit word of x values of ``dtype``, in float32."""
    if dtype.primitive_bitwidth == 32:
        value = word.to(tl.float32, bitcast=True)
    else:
        value = ((word >> (16 * v)) & 0xFFFF).to(tl.int16).to(dtype, bitcast=True).to(tl.float32)
    return value


@triton.jit
def _group_products(planes_ptr, codebook_ptr, x_ptr, stride_xk, n_cols, codebook_size, first, groups, live,
                    byte_bytes, nib_off, bit_off, bit_bytes, N8: tl.constexpr, N4: tl.constexpr,
                    N1: tl.constexpr, MASK_X: tl.constexpr, VEC_X: tl.constexpr, DENSE: tl.constexpr = False,
                    w_row=0):  # fmt: skip
    """The sum of weight x x over each thread's group of 16 codes, [R, G] float32: group
    ``groups`` ([1, G]) of the rows starting at group ``first`` ([R, 1]), read where ``live``.
    A group's words are loaded once (a byte plane's four, a nibble plane's two: its even and its
    odd values, a bit plane's 16 bits), then its 16 values are taken out with constant shifts, one
    after the other, each looked up and multiplied in the thread's registers (no tensor dimension
    of 16 values, which the compiler would spread over threads). ``MASK_X``: x values
    past ``n_cols`` read as 0 (else all exist); ``VEC_X``: x contiguous and 16-byte aligned, each
    group's values read in 16-byte pieces (a warp's load then covers few cache lines; one value a
    load spans 32 lanes x 32 or 64 bytes). ``DENSE``: store each weight at ``x_ptr + w_row + k``
    instead (``x_ptr``: the dense weight, ``w_row``: [R, 1] offsets of the rows; ``MASK_X``: only
    columns below ``n_cols``) and return zeros."""
    tl.static_assert(N8 <= 1 and N4 <= 1 and N1 <= 3, "codes of at most 9 bits (`MAX_WIDTH`)")
    at = first + groups
    if N8 > 0:
        words = planes_ptr.to(tl.pointer_type(tl.int32))
        b0 = tl.load(words + at * 4, mask=live, other=0)
        b1 = tl.load(words + at * 4 + 1, mask=live, other=0)
        b2 = tl.load(words + at * 4 + 2, mask=live, other=0)
        b3 = tl.load(words + at * 4 + 3, mask=live, other=0)
    if N4 > 0:
        words = (planes_ptr + nib_off).to(tl.pointer_type(tl.int32))
        even = tl.load(words + at * 2, mask=live, other=0)
        odd = tl.load(words + at * 2 + 1, mask=live, other=0)
    halves = (planes_ptr + bit_off).to(tl.pointer_type(tl.int16))  # bit planes: 16 bits a group
    if N1 > 0:
        h0 = tl.load(halves + at, mask=live, other=0).to(tl.int32)
    if N1 > 1:
        h1 = tl.load(halves + bit_bytes // 2 + at, mask=live, other=0).to(tl.int32)
    if N1 > 2:
        h2 = tl.load(halves + bit_bytes + at, mask=live, other=0).to(tl.int32)
    total = tl.zeros(at.shape, dtype=tl.float32)
    # x values a 32-bit word holds (2 of 16 bits, 1 float32); with VEC_X a group's x values come in
    # 16-byte pieces (one load each), taken apart in registers.
    VPW: tl.constexpr = 32 // x_ptr.dtype.element_ty.primitive_bitwidth
    x_words = x_ptr.to(tl.pointer_type(tl.int32))
    for p in tl.static_range(4 // VPW):
        if VEC_X:
            # Every row's threads load the piece (L1 hits after the first): a [1, G] piece would be
            # laid out over other warps and moved through shared memory to the rows' threads.
            piece = (at * 0 + groups * (16 // VPW) + p * 4)[:, :, None] + tl.arange(0, 4)[None, None, :]
            x0, x1, x2, x3 = _four_words(tl.load(x_words + piece))
        for q in tl.static_range(4):
            for v in tl.static_range(VPW):
                j = (p * 4 + q) * VPW + v
                code = tl.zeros(at.shape, dtype=tl.int32)
                if N8 > 0:
                    code |= (_pick(j // 4, b0, b1, b2, b3) >> (8 * (j % 4))) & 255
                if N4 > 0:
                    code |= ((_pick(j % 2, even, odd, even, odd) >> (4 * (j // 2))) & 15) << (8 * N8)
                if N1 > 0:
                    code |= ((h0 >> j) & 1) << (8 * N8 + 4 * N4)
                if N1 > 1:
                    code |= ((h1 >> j) & 1) << (8 * N8 + 4 * N4 + 1)
                if N1 > 2:
                    code |= ((h2 >> j) & 1) << (8 * N8 + 4 * N4 + 2)
                weight = tl.load(codebook_ptr + code, mask=code < codebook_size, other=0.0)
                k = groups * 16 + j
                if DENSE:
                    stored = weight.to(x_ptr.dtype.element_ty)
                    if MASK_X:
                        tl.store(x_ptr + w_row + k, stored, mask=live & (k < n_cols))
                    else:
                        tl.store(x_ptr + w_row + k, stored, mask=live)
                else:
                    if VEC_X:
                        xv = _word_value(_pick(q, x0, x1, x2, x3), v, x_ptr.dtype.element_ty)
                    elif MASK_X:
                        xv = tl.load(x_ptr + k * stride_xk, mask=k < n_cols, other=0.0).to(tl.float32)
                    else:
                        xv = tl.load(x_ptr + k * stride_xk).to(tl.float32)
                    total += weight * xv
    return total


@triton.jit
def dense_codes_gemv_kernel(
    planes_ptr,
    codebook_ptr,
    x_ptr,
    bias_ptr,
    y_ptr,
    n_rows,
    n_cols,
    stride_codes,
    codebook_size,
    byte_bytes,
    nib_off,
    bit_off,
    bit_bytes,
    stride_xk,
    stride_yn,
    N8: tl.constexpr,
    N4: tl.constexpr,
    N1: tl.constexpr,
    R: tl.constexpr,
    G: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    VEC_X: tl.constexpr,
):
    """y[row] = sum_k W[row, k] x[k] (+ bias[row]) for the program's ``R`` rows, batch 1. Thread
    ``(r, g)`` decodes whole groups of 16 codes of row ``r`` (groups ``g``, ``g + G``, ...: a warp
    reads neighbouring groups) in its registers (`_group_products`) and sums in float32; one
    reduction across the row's threads after the loop. Groups wholly inside ``n_cols`` run
    without masks (x in 16-byte pieces with ``VEC_X``: x contiguous and 16-byte aligned), the
    last ones mask x (codes past ``n_cols`` are the zero code)."""
    rows = tl.program_id(0) * R + tl.arange(0, R)
    row_ok = rows < n_rows
    first = rows.to(tl.int64)[:, None] * (stride_codes // 16)
    g = tl.arange(0, G)[None, :]
    live = row_ok[:, None] & (g < G)
    if HAS_BIAS:  # loaded before the loop: after it, its latency would stand before the store
        bias = tl.load(bias_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
    acc = tl.zeros((R, G), dtype=tl.float32)
    full = n_cols // 16  # groups whose 16 x values all exist
    for g0 in range(0, full - G + 1, G):
        acc += _group_products(planes_ptr, codebook_ptr, x_ptr, stride_xk, n_cols, codebook_size, first,
                               g0 + g, live, byte_bytes, nib_off, bit_off, bit_bytes, N8, N4, N1, False,
                               VEC_X)  # fmt: skip
    # What is left, fewer than G whole groups and the one x ends in, is one masked step (not a
    # loop, so that the main loop stays the kernel's only one).
    tail = (full // G) * G + g
    acc += _group_products(planes_ptr, codebook_ptr, x_ptr, stride_xk, n_cols, codebook_size, first, tail,
                           live & (tail < tl.cdiv(n_cols, 16)), byte_bytes, nib_off, bit_off, bit_bytes,
                           N8, N4, N1, True, False)  # fmt: skip
    y = tl.sum(acc, axis=1)
    if HAS_BIAS:
        y += bias
    tl.store(y_ptr + rows.to(tl.int64) * stride_yn, y.to(y_ptr.dtype.element_ty), mask=row_ok)


@triton.jit
def dense_codes_decode_kernel(
    planes_ptr,
    codebook_ptr,
    w_ptr,
    n_rows,
    n_cols,
    stride_codes,
    codebook_size,
    byte_bytes,
    nib_off,
    bit_off,
    bit_bytes,
    N8: tl.constexpr,
    N4: tl.constexpr,
    N1: tl.constexpr,
    R: tl.constexpr,
    G: tl.constexpr,
):
    """The dense (n_rows, n_cols) ``w``: ``R`` whole rows a program, thread ``(r, g)`` decoding
    groups ``g``, ``g + G``, ... of row ``r`` in its registers and storing each weight, as the
    GEMV kernel walks them (`_group_products`)."""
    rows = tl.program_id(0) * R + tl.arange(0, R)
    row_ok = rows < n_rows
    first = rows.to(tl.int64)[:, None] * (stride_codes // 16)
    w_row = rows.to(tl.int64)[:, None] * n_cols
    g = tl.arange(0, G)[None, :]
    live = row_ok[:, None] & (g < G)
    full = n_cols // 16  # groups whose 16 columns all exist
    for g0 in range(0, full - G + 1, G):
        _group_products(planes_ptr, codebook_ptr, w_ptr, 0, n_cols, codebook_size, first, g0 + g, live,
                        byte_bytes, nib_off, bit_off, bit_bytes, N8, N4, N1, False, False, True,
                        w_row)  # fmt: skip
    tail = (full // G) * G + g
    _group_products(planes_ptr, codebook_ptr, w_ptr, 0, n_cols, codebook_size, first, tail,
                    live & (tail < tl.cdiv(n_cols, 16)), byte_bytes, nib_off, bit_off, bit_bytes, N8, N4, N1,
                    True, False, True, w_row)  # fmt: skip
