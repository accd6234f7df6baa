"""Triton kernels over a `GpuLayout`: codebook-lookup sparse GEMV / small-batch GEMM, and decoding
to a dense weight (for cuBLAS at large batch).

One program per block of ``R`` rows, one thread per lane ``(t, r)``: chunk ``t`` of row ``r``
(see `dc_kernels.fixed.layout`). Each loop step loads the lane's next 256-bit group (two 128-bit
loads, issued one step ahead so that they are in flight while the current group is decoded) and
walks its slots at compile-time bit positions:

* ``step`` and ``code`` come out with constant shifts (a slot crossing a word: a funnel shift);
* the column is the lane's running sum: ``+ step`` for a kept weight (``step > 0``), ``+ code <<
  (INDEX_BITS - 1)`` for a filler or a wait (``step = 0``: no weight, nothing loaded);
* the weight is ``codebook[code]``, a warp shuffle from a register copy (``GATHER``) or a load of
  the L1-resident table;
* the weight multiplies the ``BB`` batch columns of x at that column (one or a few 16-byte loads),
  accumulated in float32 in the lane's registers.

After the loop the chunks of each row are summed (one reduction across lanes per program, in a
fixed order) and written once. Word offsets are 32-bit. The reference of both kernels is
`dc_kernels.reference` on ``layout.to_matrix()``.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _split_group(lo, hi):
    """The eight words of each lane's group from its two 128-bit halves ([T, R, 4] each)."""
    a0, a1 = tl.split(tl.reshape(lo, [lo.shape[0], lo.shape[1], 2, 2]))
    w0, w2 = tl.split(a0)
    w1, w3 = tl.split(a1)
    b0, b1 = tl.split(tl.reshape(hi, [hi.shape[0], hi.shape[1], 2, 2]))
    w4, w6 = tl.split(b0)
    w5, w7 = tl.split(b1)
    return w0, w1, w2, w3, w4, w5, w6, w7


@triton.jit
def _times_piece(weight, x_at, kept):
    """weight x one 16-byte piece of x at each kept weight's column, in float32."""
    return weight * tl.load(x_at, mask=kept, other=0.0).to(tl.float32)


@triton.jit
def _walk(
    words_ptr, blocks_ptr, starts_ptr, codebook_ptr, codebook_size, x_ptr, stride_xp, stride_xk,
    rows, n_cols, n_words,
    CODE_BITS: tl.constexpr, INDEX_BITS: tl.constexpr, CODEBOOK_PAD: tl.constexpr, R: tl.constexpr,
    T: tl.constexpr, BB: tl.constexpr, GATHER: tl.constexpr, DENSE: tl.constexpr,
):  # fmt: skip
    """Decode the program's block, slot by slot. ``DENSE``: store each kept weight at ``x_ptr +
    rows * n_cols + column`` (``x_ptr``: the dense weight, ``rows``: the lanes' original rows);
    otherwise return, for each of the ``NV <= 4`` pieces, the [T, R, V] float32 sums of weight x x
    over each lane's slots (pieces past ``NV``: zeros). x (``BB = 1``: one row, column ``k`` at
    ``x_ptr + k * stride_xk``) is read in ``NV`` pieces of ``V`` batch columns (16 bytes at most):
    batch column ``i * V + v`` of x column ``k`` at ``x_ptr + i * stride_xp + k * V + v``.

    Each piece has its own [T, R, V] accumulator rather than one [NV, T, R, V] tensor: Triton
    spreads threads over a pointer tensor's non-contiguous dimensions in an order that changed
    between releases, and only with the lane dimensions alone beside ``V`` does every release
    give the x loads the words' thread mapping (with a piece dimension, Triton 3.6 moved each
    slot's columns through shared memory and spilled)."""
    EB: tl.constexpr = CODE_BITS + INDEX_BITS
    V: tl.constexpr = min(BB, 128 // x_ptr.dtype.element_ty.primitive_bitwidth)
    NV: tl.constexpr = BB // V
    tl.static_assert(NV <= 4, "x pieces are 16 bytes of 16-bit or 32-bit values: at most 4 a launch")
    pid = tl.program_id(0)
    t = tl.arange(0, T)[:, None]
    r = tl.arange(0, R)[None, :]
    lane = (r * 4)[:, :, None] + tl.arange(0, 4)  # a lane's half group within a step
    # The first group of every chunk sits at a step known from the program id alone, so its loads
    # go out together with those of the block's group count and the chunks' start columns.
    head = words_ptr + (pid * T + t)[:, :, None] * (R * 8) + lane
    tail = tl.load(blocks_ptr + 2 * pid)
    groups = tl.load(blocks_ptr + 2 * pid + 1)  # groups of each row
    col = tl.load(starts_ptr + (pid * (T - 1) + t - 1) * R + r, mask=t > 0, other=-1).to(tl.int32)
    size = groups // T
    extra = groups % T
    length = size + (t < extra).to(tl.int32)  # the first `extra` chunks hold one group more
    # The codebook lookup by shuffle runs on the lanes viewed as [warps, 32], one warp a row of the
    # view, so that each lookup is one shuffle within the warp whatever the lane shape.
    W: tl.constexpr = max(T * R // 32, 1)
    if GATHER:
        k = tl.arange(0, CODEBOOK_PAD)
        codebook = tl.broadcast_to(
            tl.load(codebook_ptr + k, mask=k < codebook_size, other=0.0)[None, :], (W, CODEBOOK_PAD)
        )
    if BB > 1:  # pieces [piece, column, V] contiguous: constant strides, 16-byte aligned pieces
        x_b = x_ptr + tl.arange(0, V)[None, None, :]
        piece_stride = tl.multiple_of(stride_xp, V)
        column_stride: tl.constexpr = V
    else:
        x_b = x_ptr
        piece_stride = 0
        column_stride = stride_xk
    acc0 = tl.zeros((T, R, V), dtype=tl.float32)
    acc1 = tl.zeros((T, R, V), dtype=tl.float32)
    acc2 = tl.zeros((T, R, V), dtype=tl.float32)
    acc3 = tl.zeros((T, R, V), dtype=tl.float32)
    # Lanes past their chunk read zero words: waits, which do nothing.
    lo = tl.load(head, mask=(length > 0)[:, :, None], other=0).to(tl.uint32, bitcast=True)
    hi = tl.load(head + R * 4, mask=(length > 0)[:, :, None], other=0).to(tl.uint32, bitcast=True)
    # A chunk's other groups: in the block's tail, after those of the earlier chunks; ``offset``
    # is the lane's next half group there. Its loads are live while the chunk has groups left and
    # they lie inside the stored words: one unsigned compare per step against the lane's
    # ``bound`` (0 for chunks of at most one group; negative offsets from a corrupt block table
    # fail it too).
    offset = (tail + t * size + tl.minimum(t, extra) - tl.minimum(t, groups)) * (R * 8) + r * 4
    bound = tl.maximum(tl.minimum(offset + (length - 1) * (R * 8), n_words - R * 4 - 3), 0)
    bound = tl.where(length > 1, bound, 0).to(tl.uint32)
    quad = tl.arange(0, 4)[None, None, :]
    for _ in range(size + (extra > 0).to(tl.int32)):
        w = _split_group(lo, hi)
        # The next group's loads are issued before this group's slots are decoded.
        live = (offset.to(tl.uint32) < bound)[:, :, None]
        at = words_ptr + offset[:, :, None] + quad
        lo = tl.load(at, mask=live, other=0).to(tl.uint32, bitcast=True)
        hi = tl.load(at + R * 4, mask=live, other=0).to(tl.uint32, bitcast=True)
        offset += R * 8
        for e in tl.static_range(256 // EB):
            # The slot's bits: constant word and shift (a slot crossing a word: a funnel shift).
            if (e * EB) % 32 + EB <= 32:
                field = w[e * EB // 32] >> ((e * EB) % 32)
            else:
                field = (w[e * EB // 32] >> ((e * EB) % 32)) | (w[e * EB // 32 + 1] << (32 - (e * EB) % 32))
            code = (field & ((1 << CODE_BITS) - 1)).to(tl.int32)
            rel = ((field >> CODE_BITS) & ((1 << INDEX_BITS) - 1)).to(tl.int32)
            kept = rel != 0
            col = col + tl.where(kept, rel, code << (INDEX_BITS - 1))
            # Only kept weights inside the row load or store; a corrupt stream cannot make a
            # column out of bounds reach memory (an unsigned compare also catches negatives).
            kept = kept & (col.to(tl.uint32) < n_cols)
            if GATHER:
                weight = tl.reshape(tl.gather(codebook, tl.reshape(code, (W, T * R // W)), 1), (T, R))
            else:
                weight = tl.load(codebook_ptr + code)
            if DENSE:
                tl.store(x_ptr + rows * n_cols + col, weight.to(x_ptr.dtype.element_ty), mask=kept)
            else:
                # Batch columns past the real batch load the pieces' padding: their sums are never
                # stored, and one mask per kept weight keeps the loads 16 bytes wide.
                x_k = x_b + col[:, :, None] * column_stride
                lane_weight = weight[:, :, None]
                lane_kept = kept[:, :, None]
                acc0 += _times_piece(lane_weight, x_k, lane_kept)
                if NV > 1:
                    acc1 += _times_piece(lane_weight, x_k + piece_stride, lane_kept)
                if NV > 2:
                    acc2 += _times_piece(lane_weight, x_k + 2 * piece_stride, lane_kept)
                if NV > 3:
                    acc3 += _times_piece(lane_weight, x_k + 3 * piece_stride, lane_kept)
    return acc0, acc1, acc2, acc3


@triton.jit
def codebook_spmm_kernel(
    words_ptr,
    blocks_ptr,
    starts_ptr,
    row_ids_ptr,
    codebook_ptr,
    x_ptr,
    bias_ptr,
    y_ptr,
    n_rows,
    n_cols,
    n_words,
    batch,
    codebook_size,
    stride_xp,
    stride_xk,
    stride_yb,
    stride_yn,
    CODE_BITS: tl.constexpr,
    INDEX_BITS: tl.constexpr,
    CODEBOOK_PAD: tl.constexpr,
    R: tl.constexpr,
    T: tl.constexpr,
    BB: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    GATHER: tl.constexpr,
    FRESH_PID: tl.constexpr,
):
    """y[b, row] = sum_k W[row, k] x[b, k] (+ bias[row]) for the block's rows, b < batch <= BB; x
    in pieces of ``V = min(BB, 16 bytes)`` batch columns (see `_walk`)."""
    V: tl.constexpr = min(BB, 128 // x_ptr.dtype.element_ty.primitive_bitwidth)
    if FRESH_PID:  # the rows' places into L2 now, for the store after the loop (no register kept)
        first_row = tl.program_id(0) * R
        _prefetch_l2(row_ids_ptr + first_row)
        _prefetch_l2(row_ids_ptr + tl.minimum(first_row + R, n_rows) - 1)  # R x 4 bytes: two lines at most
    acc0, acc1, acc2, acc3 = _walk(
        words_ptr, blocks_ptr, starts_ptr, codebook_ptr, codebook_size, x_ptr, stride_xp, stride_xk, 0,
        n_cols, n_words, CODE_BITS, INDEX_BITS, CODEBOOK_PAD, R, T, BB, GATHER, False,
    )  # fmt: skip
    pid = _program_id_again(n_rows) if FRESH_PID else tl.program_id(0)
    slot = pid * R + tl.arange(0, R)[:, None]
    row_ok = slot < n_rows
    row = tl.load(row_ids_ptr + slot, mask=row_ok, other=0)
    bias = tl.load(bias_ptr + row, mask=row_ok & HAS_BIAS, other=0.0).to(tl.float32)
    at = y_ptr + row.to(tl.int64) * stride_yn
    _store_piece(acc0, bias, at, 0, batch, stride_yb, V, row_ok)
    if BB // V > 1:
        _store_piece(acc1, bias, at, 1, batch, stride_yb, V, row_ok)
    if BB // V > 2:
        _store_piece(acc2, bias, at, 2, batch, stride_yb, V, row_ok)
    if BB // V > 3:
        _store_piece(acc3, bias, at, 3, batch, stride_yb, V, row_ok)


@triton.jit
def _program_id_again(like):
    """The program id read once more from its special register after the loop (a non-pure asm
    the compiler cannot merge with the first read), so that no copy of it lives across the loop:
    under the ``--regAllocOptLevel=2`` that Triton 3.9 passes to ptxas, that copy was spilled in
    some configurations. ``like``: any int32 scalar (the asm needs an operand). Not available
    under Triton's interpreter (``FRESH_PID`` off there)."""
    return tl.inline_asm_elementwise(
        "mov.u32 $0, %ctaid.x;", "=r,r", [like], dtype=tl.int32, is_pure=False, pack=1
    )


@triton.jit
def _prefetch_l2(ptr):
    """Ask L2 for the line at ``ptr`` (a hint: nothing is kept in a register, nothing waits on
    it). Not available under Triton's interpreter."""
    tl.inline_asm_elementwise(
        "prefetch.global.L2 [$1]; mov.u32 $0, 0;", "=r,l", [ptr], dtype=tl.int32, is_pure=False, pack=1
    )


@triton.jit
def _store_piece(acc, bias, at, piece: tl.constexpr, batch, stride_yb, V: tl.constexpr, row_ok):
    """Sum the chunks of each row of one piece's [T, R, V] accumulator (in a fixed order), add the
    bias and store batch columns ``piece * V ..`` below ``batch``."""
    y = tl.sum(acc, axis=0) + bias  # [R, V]
    bb = piece * V + tl.arange(0, V)[None, :]
    tl.store(at + bb * stride_yb, y.to(at.dtype.element_ty), mask=row_ok & (bb < batch))


@triton.jit
def decode_dense_kernel(
    words_ptr,
    blocks_ptr,
    starts_ptr,
    row_ids_ptr,
    codebook_ptr,
    w_ptr,
    n_rows,
    n_cols,
    n_words,
    codebook_size,
    CODE_BITS: tl.constexpr,
    INDEX_BITS: tl.constexpr,
    CODEBOOK_PAD: tl.constexpr,
    R: tl.constexpr,
    T: tl.constexpr,
    GATHER: tl.constexpr,
):
    """Scatter the block's kept weights into a zero-filled dense (n_rows, n_cols) ``w``."""
    slot = tl.program_id(0) * R + tl.arange(0, R)[None, :]
    # Padding rows of the last block hold no kept weights: their (masked) stores go nowhere.
    row = tl.load(row_ids_ptr + slot, mask=slot < n_rows, other=0).to(tl.int64)
    _walk(
        words_ptr, blocks_ptr, starts_ptr, codebook_ptr, codebook_size, w_ptr, 0, 0, row, n_cols, n_words,
        CODE_BITS, INDEX_BITS, CODEBOOK_PAD, R, T, 1, GATHER, True,
    )  # fmt: skip
