"""Triton kernels over a `HuffmanLayout`: the standalone Huffman decoder and the fused
decode + GEMV / small-batch GEMM.

One program per ``ROWS`` whole rows; one lane per segment (``ROWS x NCB`` lanes: a row's column
blocks side by side), so a row's partial sums are reduced inside the program (no atomics, every
output element written exactly once). A program first finds its segments' start bits with one
prefix sum of their stored lengths, then runs ``prog_steps[pid]`` lockstep steps; in each step
every lane with at least a length unit left (the rest is padding) decodes one joint symbol:

* peek ``table_bits`` bits at the lane's bit position from two 32-bit words (the second read only
  when it lies inside the segment: every read is bounded by the segment's recorded extent);
* one lookup in the flat table gives (length, is_weight, code, column advance);
* a weight multiplies the ``BB`` batch columns of x at its column (decoded once for the batch).

The table holds only valid entries or 0 (length 0: a lane on a corrupt pattern stops advancing),
peeks have ``table_bits`` bits, segment extents are clamped to the words array, x reads are masked
to ``col < n_cols``, decoder writes to ``< nnz`` and the loop count is stored, so even a layout that
skipped validation reads and writes nothing out of bounds.
References: `HuffmanLayout.decode` (same steps in NumPy) and `dc_kernels.reference`
on ``layout.to_matrix()``.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _segment_bounds(
    prog_base_ptr, seg_len_ptr, pid, n_seg, len_base, len_unit, n_bits, ROWS: tl.constexpr, NCB: tl.constexpr
):
    """(segment ids, start bits, end bits, block index) of the program's ``ROWS x NCB`` lanes,
    clamped to the ``n_bits`` bits of the words array: even offsets that skipped validation
    cannot send a read outside it (every read lies in ``[start, end)``)."""
    r = tl.arange(0, ROWS)[:, None]
    c = tl.arange(0, NCB)[None, :]
    seg = pid.to(tl.int64) * (ROWS * NCB) + r * NCB + c
    valid = seg < n_seg
    # uint8 loads zero-extend; int16 holds uint16 bit patterns, hence the mask.
    raw = tl.load(seg_len_ptr + seg, mask=valid, other=0).to(tl.int32) & 0xFFFF
    length = tl.where(valid, (raw + len_base) * len_unit, 0)
    row_total = tl.sum(length, axis=1)
    before_row = tl.cumsum(row_total, axis=0) - row_total
    base = tl.load(prog_base_ptr + pid)
    start = base + (before_row[:, None] + tl.cumsum(length, axis=1) - length).to(base.dtype)
    end = tl.minimum(start + length.to(base.dtype), n_bits)
    return seg, tl.minimum(tl.maximum(start, 0), end), end, c


@triton.jit
def _load_words(words_ptr, pos, stop, end):
    """The two words holding the next codeword of each lane with a whole length unit left
    (``pos < stop``; padding is shorter than any codeword); the second only inside the segment."""
    active = pos < stop
    w = pos >> 5
    hi = tl.load(words_ptr + w, mask=active, other=0).to(tl.uint32, bitcast=True)
    lo = tl.load(words_ptr + w + 1, mask=active & ((w + 1) * 32 < end), other=0).to(tl.uint32, bitcast=True)
    return hi, lo, active


@triton.jit
def _decode_entry(table_ptr, hi, lo, pos, active, table_bits):
    """The symbol at ``pos``: (length, is_weight, code, advance), all 0 for inactive lanes."""
    o = (pos & 31).to(tl.uint32)
    # (lo >> 1) >> (31 - o) avoids a shift by 32 when o == 0.
    top = (hi << o) | ((lo >> 1) >> (31 - o))
    peek = (top >> (32 - table_bits).to(tl.uint32)).to(tl.int32)
    length, is_weight, code, advance = _entry_fields(tl.load(table_ptr + peek, mask=active, other=0))
    return length, is_weight & active, code, advance


@triton.jit
def _entry_fields(entry):
    """(length, is_weight, code, column advance) of table entries (0 entry: all 0)."""
    return entry & 31, ((entry >> 5) & 1) != 0, (entry >> 6) & 255, entry >> 14


@triton.jit
def huffman_spmm_kernel(
    words_ptr,
    prog_base_ptr,
    seg_len_ptr,
    prog_steps_ptr,
    table_ptr,
    codebook_ptr,
    x_ptr,
    bias_ptr,
    y_ptr,
    n_rows,
    n_cols,
    n_seg,
    len_base,
    len_unit,
    n_bits,
    block_cols,
    table_bits,
    batch,
    stride_xb,
    stride_xk,
    stride_yb,
    stride_yn,
    ROWS: tl.constexpr,
    NCB: tl.constexpr,
    BB: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    PREFETCH: tl.constexpr,
):
    """y[b, row] = sum_k W[row, k] x[b, k] (+ bias[row]) for the program's rows, b < batch <= BB.

    ``PREFETCH``: each lane keeps a 64-bit bit buffer refilled from a word loaded one refill
    ahead, so no word load sits on the decode chain (more integer work per step instead)."""
    pid = tl.program_id(0)
    _, pos, end, block = _segment_bounds(
        prog_base_ptr, seg_len_ptr, pid, n_seg, len_base, len_unit, n_bits, ROWS, NCB
    )
    stop = end - (len_unit - 1)
    colpos = tl.broadcast_to(block * block_cols, (ROWS, NCB))
    b = tl.arange(0, BB)
    b_ok = (b < batch)[None, None, :]
    x_batch = x_ptr + b.to(tl.int64)[None, None, :] * stride_xb
    acc = tl.zeros((ROWS, NCB, BB), dtype=tl.float32)
    n_steps = tl.load(prog_steps_ptr + pid)
    # Software pipelined by one step: a step's weight and x values are loaded while the next
    # step's words are fetched, and multiplied only then, so their latency leaves the chain.
    weight = tl.zeros((ROWS, NCB), dtype=tl.float32)
    xv = tl.zeros((ROWS, NCB, BB), dtype=x_ptr.dtype.element_ty)
    if PREFETCH:
        # buf: the next bits, left-aligned (then zeros); nbits >= 33 valid before every peek.
        hi, lo, _ = _load_words(words_ptr, pos, end, end)
        buf = ((hi.to(tl.uint64) << 32) | lo.to(tl.uint64)) << (pos & 31).to(tl.uint64)
        nbits = 64 - (pos & 31).to(tl.int32)
        wnext = (pos >> 5) + 2
        pend = tl.load(words_ptr + wnext, mask=wnext * 32 < end, other=0).to(tl.uint32, bitcast=True)
    for _ in range(0, n_steps):
        if PREFETCH:
            active = pos < stop
            acc += weight[:, :, None] * xv.to(tl.float32)
            peek = ((buf >> 32).to(tl.uint32) >> (32 - table_bits).to(tl.uint32)).to(tl.int32)
            length, is_weight, code, advance = _entry_fields(tl.load(table_ptr + peek, mask=active, other=0))
            is_weight = is_weight & active
            buf = buf << length.to(tl.uint64)
            nbits -= length
            need = nbits <= 32
            refill = pend.to(tl.uint64) << tl.where(need, 32 - nbits, 0).to(tl.uint64)
            buf = tl.where(need, buf | refill, buf)
            nbits = tl.where(need, nbits + 32, nbits)
            wnext = tl.where(need, wnext + 1, wnext)
            loaded = tl.load(words_ptr + wnext, mask=need & (wnext * 32 < end), other=0)
            pend = tl.where(need, loaded.to(tl.uint32, bitcast=True), pend)
        else:
            hi, lo, active = _load_words(words_ptr, pos, stop, end)
            acc += weight[:, :, None] * xv.to(tl.float32)
            length, is_weight, code, advance = _decode_entry(table_ptr, hi, lo, pos, active, table_bits)
        col = colpos + advance - 1
        real = is_weight & (col < n_cols)
        weight = tl.load(codebook_ptr + code, mask=real, other=0.0)
        xv = tl.load(
            x_batch + col.to(tl.int64)[:, :, None] * stride_xk, mask=real[:, :, None] & b_ok, other=0.0
        )
        pos += length
        colpos += advance
    acc += weight[:, :, None] * xv.to(tl.float32)
    out = tl.sum(acc, axis=1)
    row = pid.to(tl.int64) * ROWS + tl.arange(0, ROWS)
    row_ok = row < n_rows
    if HAS_BIAS:
        out += tl.load(bias_ptr + row, mask=row_ok, other=0.0).to(tl.float32)[:, None]
    y_offs = b.to(tl.int64)[None, :] * stride_yb + row[:, None] * stride_yn
    tl.store(y_ptr + y_offs, out.to(y_ptr.dtype.element_ty), mask=row_ok[:, None] & (b < batch)[None, :])


@triton.jit
def huffman_decode_kernel(
    words_ptr,
    prog_base_ptr,
    seg_len_ptr,
    prog_steps_ptr,
    table_ptr,
    seg_first_ptr,
    codes_ptr,
    cols_ptr,
    codebook_ptr,
    w_ptr,
    n_rows,
    n_cols,
    n_seg,
    nnz,
    len_base,
    len_unit,
    n_bits,
    block_cols,
    table_bits,
    ROWS: tl.constexpr,
    NCB: tl.constexpr,
    DENSE: tl.constexpr,
):
    """Decode the program's segments: into ``codes`` (uint8) and ``cols`` (int32) in CSR order,
    from each segment's ``seg_first`` (``DENSE`` False), or each weight ``codebook[code]`` into
    the zero-filled float32 ``w`` (n_rows, n_cols) (``DENSE`` True: no ``seg_first`` needed)."""
    pid = tl.program_id(0)
    seg, pos, end, block = _segment_bounds(
        prog_base_ptr, seg_len_ptr, pid, n_seg, len_base, len_unit, n_bits, ROWS, NCB
    )
    stop = end - (len_unit - 1)
    colpos = tl.broadcast_to(block * block_cols, (ROWS, NCB))
    if DENSE:
        row = pid.to(tl.int64) * ROWS + tl.arange(0, ROWS)[:, None]
        row_ok = row < n_rows
    else:
        out = tl.load(seg_first_ptr + seg, mask=seg < n_seg, other=0)
    n_steps = tl.load(prog_steps_ptr + pid)
    for _ in range(0, n_steps):
        hi, lo, active = _load_words(words_ptr, pos, stop, end)
        length, is_weight, code, advance = _decode_entry(table_ptr, hi, lo, pos, active, table_bits)
        col = colpos + advance - 1
        if DENSE:
            real = is_weight & (col >= 0) & (col < n_cols) & row_ok
            weight = tl.load(codebook_ptr + code, mask=real, other=0.0)
            tl.store(w_ptr + row * n_cols + col, weight, mask=real)
        else:
            real = is_weight & (col < n_cols) & (out < nnz)
            tl.store(codes_ptr + out, code.to(tl.uint8), mask=real)
            tl.store(cols_ptr + out, col, mask=real)
            out += real.to(tl.int64)
        pos += length
        colpos += advance
