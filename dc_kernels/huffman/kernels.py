"""Triton kernels over a `HuffmanLayout`: the fused decode + GEMV / small-batch GEMM and the
standalone decoder.

One program per ``ROWS`` consecutive sorted rows, one lane per piece (``ROWS x PIECES`` lanes, one
per thread): a row's pieces sit side by side, so its partial sums are reduced inside the program
(every output element written once, at the row's original index ``row_ids[row]``; with column
slabs, by the last of the row's programs, below).
A lane's words are interleaved with those of the 31 other lanes of its warp (word ``j`` at
``32 j + lane`` from its warp's base: a warp's loads touch one or two lines, not 32); the first
three, the lane's head, sit at places its warp's index gives, so a program loads its lanes' heads
without waiting on the warps' offsets (which locate the rest), asks L1 for the decode table
beside them (`_warm_table`), issues every load before its first wait on one (the offsets last)
and finds the lanes' first columns with a prefix sum of the stored spans,
then runs ``prog_steps[pid]`` steps, rounded up to whole iterations of ``K``
steps and closing iterations of ``K / 2`` and (``K >= 8``) ``K / 4`` steps as the rest needs
(`dc_kernels.huffman.launch.steps_granularity`); in every step each lane decodes one symbol:

* the lane reads from two 32-bit words at a bit position (the symbol's 32 bits are one funnel
  shift away), with at least 32 unread bits before every two steps; after them, once the first
  word is used up, the word the lane loaded at its previous refill moves in and the next one is
  loaded (a step reads at most 16 bits: codeword plus raw bits). A register that a load has not
  filled yet cannot be read, or even moved to another register, without waiting for it, so
  each refill waits on the previous refill's load: that load has to find its line in L1. With
  ``PREFETCH`` (compiled code; not under the interpreter) each refill asks L1 for the word row
  `ROWS_AHEAD` (4) rows further (``prefetch.global.L1``, which fills no register, so nothing waits
  on it): a warp's word rows are lines of their own, and each has four refills (about ten steps)
  to come from HBM;
* one lookup in the ``int32`` decode table (a few cache lines) gives the symbol's bit count and
  the bases its codebook index and column advance are counted from: the symbol's bits, read as a
  number ``v``, complete both (``v >> b`` and ``v``'s low ``b`` bits; an escape or END points
  past the codebook: weight 0), so a step costs one shift, one mask and two adds beyond the lookup
  (`dc_kernels.huffman.layout.decode_table_entries`);
* a weight is multiplied with the ``BB`` batch columns of x at its column.

With column slabs (`dc_kernels.huffman.layout`: ``SLABS > 1``) program ``pid`` covers slab
``pid // slab_programs``: its columns count from the slab's first and x is read from there (the
on-chip copy one slab wide). Its row sums are partial: it stores them in a float32 ``partial``
array (slab, row, batch column), and after a barrier one acq_rel atomic add per row on a
``count`` array tells it whether it is the last of the row's ``SLABS`` programs (the count read
modulo ``SLABS``: never reset). The last adds the ``SLABS`` partials in slab order, so the sum
does not depend on which program ends last, and writes the row (`_slab_sums`). The launcher keeps
both arrays with the layout (`dc_kernels.huffman.launch.slab_scratch`).

A lane's words past its piece are one bits (its padding to its warp's longest piece) and words
past its warp's are not loaded but read as one bits: a lane that finishes early decodes END
(weight 0, no advance) until the program's last step, so no lane needs a mask. Every word read
lies below the end of its warp's words, clamped to the words array, the table index has ``T``
bits, the codebook index is taken modulo the on-chip codebook's entries, the x index is masked
to the on-chip window or to ``col < n_cols``, and the loop count is stored: even a layout that
skipped validation reads and writes nothing out of bounds.

After every ``K`` steps one ``tl.gather`` reads the ``K`` weights of every lane from an on-chip
copy of the codebook, and x is read one of two ways (``XW``):

* ``XW > 0`` (batch 1): the whole x row, zero-padded to ``XW`` columns, lives on chip; a second
  ``tl.gather`` fetches the ``K`` decoded columns of every lane from its shared memory copy (the
  copy is refreshed once per gather, not once per step) and the ``K`` products enter the lane's
  sum as a chain of multiply-adds;
* ``XW == 0``: x is read from memory at the decoded columns: for a batch (``BB > 1``) the launcher
  hands over x transposed and padded to ``BB`` columns (``stride_xb`` and ``stride_xk`` are then
  unused), so each decoded weight reads its ``BB`` values with one vector load and multiplies them
  from registers into the lane's ``BB`` sums, step by step.

References: `HuffmanLayout.decode` (the same steps in NumPy) and `dc_kernels.reference` on
``layout.to_matrix()``.
"""

from __future__ import annotations

import triton
import triton.language as tl

from dc_kernels.huffman import layout

CODEBOOK_CHIP = tl.constexpr(layout.CODEBOOK_INDICES)  # the fused kernel's on-chip codebook, zero-padded
# Fields of a decode-table entry (`dc_kernels.huffman.layout.decode_table_entries`).
BITS_MASK = tl.constexpr(layout.BITS_MASK)
CODE_SHIFT = tl.constexpr(layout.CODE_SHIFT)
ADVANCE_SHIFT = tl.constexpr(layout.ADVANCE_SHIFT)
HEAD_WORDS = tl.constexpr(layout.HEAD_WORDS)
ROWS_AHEAD = tl.constexpr(layout.ROWS_AHEAD)
# `_prefetch_l1`'s instruction, at the word's line and `ROWS_AHEAD` rows (128-byte lines) past it.
_PREFETCH = "{{ .reg .pred p; setp.ne.b32 p, $2, 0; @p prefetch.global.L1 [$1{}]; mov.u32 $0, 0; }}"
PREFETCH_ASM = tl.constexpr(_PREFETCH.format(""))
PREFETCH_AHEAD_ASM = tl.constexpr(_PREFETCH.format(f"+{layout.ROWS_AHEAD * 128}"))


@triton.jit
def _heads(warp_base_ptr, pid, n_rows, n_words, ROWS: tl.constexpr, PIECES: tl.constexpr):
    """(sorted row [ROWS, 1], lane, whether its warp is stored, its first word) of the program's
    ``ROWS x PIECES`` lanes, without a load: lane ``l`` of warp ``g`` finds its first `HEAD_WORDS`
    words at ``32 (HEAD_WORDS g + j) + l`` (a lane past the stored warps reads no word). The
    kernels load the heads before anything waits on the warps' offsets (`_rest`), so both come
    from HBM together."""
    r = tl.arange(0, ROWS)[:, None]
    p = tl.arange(0, PIECES)[None, :]
    row = pid * ROWS + r  # int32: a layout holds fewer than 2**31 pieces
    lane = row * PIECES + p
    stored = (lane >> 5) < tl.cdiv(n_rows * PIECES, 32)  # past the stored warps lanes read all ones
    offset = warp_base_ptr.dtype.element_ty
    head = tl.where(stored, (lane >> 5).to(offset) * (32 * HEAD_WORDS) + (lane & 31), n_words)
    return row, lane, stored, head


@triton.jit
def _rest(
    warp_base_ptr, seg_span_ptr, row, lane, stored, n_rows, span_base, span_unit, n_words,
    PIECES: tl.constexpr,
):  # fmt: skip
    """(first word past the head, byte offset of the end of the words, first column) of the lanes
    of `_heads`: a lane reads the rest of its words at ``32 HEAD_WORDS warps + warp_base[g] + l``,
    ``+ 32``, ... below its end, which is clamped to the ``n_words`` of the words array, so even
    offsets that skipped validation cannot send a read outside it (``warps``: those holding a
    piece)."""
    warps = tl.cdiv(n_rows * PIECES, 32)
    first = tl.load(warp_base_ptr + (lane >> 5), mask=stored, other=0, volatile=True)
    after = tl.load(warp_base_ptr + (lane >> 5) + 1, mask=stored, other=0, volatile=True)
    if PIECES > 1:
        p = lane % PIECES
        spanned = (row < n_rows) & (p < PIECES - 1)
        # uint8 loads zero-extend; int16 holds uint16 bit patterns, hence the mask.
        raw = tl.load(seg_span_ptr + row * (PIECES - 1) + p, mask=spanned, other=0, volatile=True)
        raw = raw.to(tl.int32) & 0xFFFF
        span = tl.where(spanned, (raw + span_base) * span_unit, 0)
        first_col = tl.cumsum(span, axis=1) - span
    else:
        first_col = tl.zeros(lane.shape, dtype=tl.int32)
    heads = (warps * (32 * HEAD_WORDS)).to(first.dtype)
    first = tl.minimum(tl.maximum(first, 0), n_words - heads)
    after = tl.minimum(tl.maximum(after, first), n_words - heads)
    rest = heads + first + (lane & 31)
    end = rest + ((after - first) >> 5 << 5)  # the last word read, end - 32, is below after
    return rest, _byte_offset(end), first_col


@triton.jit
def _warm_table(table_ptr, table_bits, ROWS: tl.constexpr, PIECES: tl.constexpr, PREFETCH: tl.constexpr):
    """With ``PREFETCH``, ask L1 for the decode table's lines (lanes 32 entries, a 128-byte line,
    apart): they come into L1 while the heads come from HBM, so the first lookup, which waits on
    the heads, finds the table in L1, not L2. A prefetch fills no register, so nothing waits on
    it (a load did, and ptxas placed its issue after the wait on the warps' offsets)."""
    if PREFETCH:
        lane = tl.arange(0, ROWS)[:, None] * PIECES + tl.arange(0, PIECES)[None, :]
        entry = (lane * 32) & ((1 << table_bits) - 1)
        _prefetch_l1(table_ptr, _byte_offset(entry), entry >= 0, False)


@triton.jit
def _reader(words_ptr, head, n_words):
    """A lane's bit reader at its first word: (its head's first two words, the position of the next
    bit in them, the head's third word)."""
    tl.static_assert(HEAD_WORDS == 3, "the reader holds three words")
    w0 = _fetch(words_ptr, head, n_words)
    w1 = _fetch(words_ptr, head + 32, n_words)
    q0 = _fetch(words_ptr, head + 64, n_words)
    buf = (w0.to(tl.uint64) << 32) | w1.to(tl.uint64)
    return buf, tl.zeros(head.shape, tl.int32), q0


@triton.jit
def _past_head(words_ptr, rest, end, PREFETCH: tl.constexpr):
    """(``wi``: the byte offset of a lane's first word past its head, which its first refill
    loads; ``ahead``: ``end`` less `ROWS_AHEAD` rows, 0 where that is negative, below which the
    word `ROWS_AHEAD` rows past a refill's still lies inside the lane's words). With ``PREFETCH``
    the lane's first `ROWS_AHEAD` word rows are asked into L1 (the refills ask for the rows after
    them)."""
    wi = _byte_offset(rest)
    if PREFETCH:
        for j in tl.static_range(ROWS_AHEAD):
            _prefetch_l1(words_ptr, wi + j * 128, wi + j * 128 < end, False)
    return wi, tl.maximum(end, ROWS_AHEAD * 128) - ROWS_AHEAD * 128


@triton.jit
def _prefetch_l1(words_ptr, wi, mask, AHEAD: tl.constexpr):
    """Ask L1 for the line of the word at byte offset ``wi`` (``AHEAD``: the line `ROWS_AHEAD`
    word rows past it) where ``mask``: a hint, which no register receives, so nothing waits on it.
    The address is a load's at ``wi`` (with an offset), so the two share their arithmetic. Not
    available under Triton's interpreter."""
    asm: tl.constexpr = PREFETCH_AHEAD_ASM if AHEAD else PREFETCH_ASM
    args = [_word_ptr(words_ptr, wi), mask.to(tl.int32)]
    tl.inline_asm_elementwise(asm, "=r,l,r", args, dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _byte_offset(i):
    """``4 i``, the byte offset of word ``i``: unsigned 32-bit where the offsets are ``int32``
    (fewer than 2**30 words), which the load's address takes in one add, else ``int64``."""
    if i.dtype == tl.int32:
        return (i * 4).to(tl.uint32, bitcast=True)
    else:
        return i * 4


@triton.jit
def _fetch(words_ptr, i, end):
    """Word ``i``: read from memory below the lane's ``end``, all ones past it (the lane's
    padding: END)."""
    return tl.load(words_ptr + i, mask=i < end, other=-1, volatile=True).to(tl.uint32, bitcast=True)


@triton.jit
def _word_ptr(words_ptr, wi):
    """The address of the word at byte offset ``wi`` (one add: ``wi`` counts bytes)."""
    byte_ptr = words_ptr.to(tl.pointer_type(tl.int8), bitcast=True) + wi
    return byte_ptr.to(tl.pointer_type(tl.int32), bitcast=True)


@triton.jit
def _load_word(words_ptr, wi, mask, other):
    """The word at byte offset ``wi`` where ``mask``, else ``other`` (uint32)."""
    word = tl.load(_word_ptr(words_ptr, wi), mask=mask, other=other.to(tl.int32, bitcast=True))
    return word.to(tl.uint32, bitcast=True)


@triton.jit
def _refill(words_ptr, buf, pos, q0, wi, end, ahead, PREFETCH: tl.constexpr):
    """Once the buffer's first word is read (``pos >= 32``; afterwards ``pos < 32``: at least 32
    bits are unread) the next word ``q0`` enters it and the word after it is loaded into ``q0``
    (all ones past the lane's end). That load is waited on by the next refill, so it has to find
    its line in L1: with ``PREFETCH`` the refill asks L1 for the row `ROWS_AHEAD` rows further
    (a warp's word rows are lines of their own, first read from HBM), which no register receives.
    A deeper queue of loaded words would not help: moving a word whose load is in flight from
    one register to the next waits on that load."""
    need = pos >= 32
    buf = tl.where(need, (buf << 32) | q0.to(tl.uint64), buf)
    # Where a word is taken the next one is loaded over it, elsewhere the load leaves it in place.
    kept = tl.where(need, tl.full(q0.shape, 0xFFFFFFFF, tl.uint32), q0)
    q0 = _load_word(words_ptr, wi, need & (wi < end), kept)
    if PREFETCH:  # ``ahead``: the lane's end less ROWS_AHEAD rows (`_past_head`)
        _prefetch_l1(words_ptr, wi, need & (wi < ahead), True)
    return buf, tl.where(need, pos - 32, pos), q0, tl.where(need, wi + 128, wi)


@triton.jit
def _symbol(table_ptr, buf, pos, table_bits, gap_bits, gap_mask):
    """Decode one symbol at bit ``pos`` of the buffer: (position past it, its column advance, its
    codebook index: ``>= k``, past the codebook, for an escape or END). ``gap_mask`` (``2**b - 1``)
    is a kernel argument: read from constant memory, it holds no register (computed in the kernel,
    it pushed a float32 configuration into a spill on sm_80)."""
    top = ((buf << pos.to(tl.uint64)) >> 32).to(tl.uint32)
    entry = tl.load(table_ptr + (top >> (32 - table_bits).to(tl.uint32)).to(tl.int32))
    bits = entry & BITS_MASK  # the symbol's bits (codeword and raw bits)
    v = ((top.to(tl.uint64) << bits.to(tl.uint64)) >> 32).to(tl.int32)  # top >> (32 - bits): one funnel shift
    code = ((entry >> CODE_SHIFT) + (v >> gap_bits)) & (CODEBOOK_CHIP - 1)
    advance = (entry >> ADVANCE_SHIFT) + (v & gap_mask)
    return pos + bits, advance, code


@triton.jit
def _pair(
    words_ptr, table_ptr, buf, pos, q0, wi, end, ahead, col, table_bits, gap_bits, gap_mask,
    PREFETCH: tl.constexpr,
):  # fmt: skip
    """Two steps and a refill: (state..., columns [.., 2], codebook indices [.., 2])."""
    pos, advance_a, code_a = _symbol(table_ptr, buf, pos, table_bits, gap_bits, gap_mask)
    col_a = col + advance_a
    pos, advance_b, code_b = _symbol(table_ptr, buf, pos, table_bits, gap_bits, gap_mask)
    col_b = col_a + advance_b
    buf, pos, q0, wi = _refill(words_ptr, buf, pos, q0, wi, end, ahead, PREFETCH)
    return buf, pos, q0, wi, col_b, tl.join(col_a, col_b), tl.join(code_a, code_b)


@triton.jit
def _steps(
    words_ptr, table_ptr, buf, pos, q0, wi, end, ahead, col, table_bits, gap_bits, gap_mask,
    K: tl.constexpr, PREFETCH: tl.constexpr,
):  # fmt: skip
    """``K`` (2, 4, 8 or 16) steps: (state..., columns and codebook indices, [ROWS, PIECES, 2, ...])."""
    if K == 2:
        return _pair(
            words_ptr, table_ptr, buf, pos, q0, wi, end, ahead, col, table_bits, gap_bits, gap_mask, PREFETCH
        )
    else:
        buf, pos, q0, wi, col, cols_a, codes_a = _steps(
            words_ptr, table_ptr, buf, pos, q0, wi, end, ahead, col, table_bits, gap_bits, gap_mask,
            K // 2, PREFETCH,
        )  # fmt: skip
        buf, pos, q0, wi, col, cols_b, codes_b = _steps(
            words_ptr, table_ptr, buf, pos, q0, wi, end, ahead, col, table_bits, gap_bits, gap_mask,
            K // 2, PREFETCH,
        )  # fmt: skip
        return buf, pos, q0, wi, col, tl.join(cols_a, cols_b), tl.join(codes_a, codes_b)


@triton.jit
def _iteration(
    words_ptr, table_ptr, x_ptr, buf, pos, q0, wi, end, ahead, col, acc, codebook_chip, x_chip,
    table_bits, gap_bits, gap_mask, n_cols, stride_xk,
    ROWS: tl.constexpr, PIECES: tl.constexpr, K: tl.constexpr, BB: tl.constexpr, XW: tl.constexpr,
    PREFETCH: tl.constexpr,
):  # fmt: skip
    """``K`` steps of every lane, their weights applied to x: (buf, pos, q0, wi, col, acc)."""
    buf, pos, q0, wi, col, cols, codes = _steps(
        words_ptr, table_ptr, buf, pos, q0, wi, end, ahead, col, table_bits, gap_bits, gap_mask, K, PREFETCH
    )
    cols = tl.reshape(cols, (ROWS, PIECES, K))
    flat_codes = tl.reshape(codes, (ROWS * PIECES * K,))
    weights = tl.reshape(tl.gather(codebook_chip, flat_codes, 0), (ROWS, PIECES, K))
    if XW > 0:
        flat = tl.reshape(cols & (XW - 1), (ROWS * PIECES * K,))
        values = tl.reshape(tl.gather(x_chip, flat, 0), (ROWS, PIECES, K))
    else:
        values = cols
    acc = _accumulate(acc, weights, values, x_ptr, n_cols, stride_xk, ROWS, PIECES, K, BB, XW)
    return buf, pos, q0, wi, col, acc


@triton.jit
def _accumulate(
    acc, weights, values, x_ptr, n_cols, stride_xk,
    ROWS: tl.constexpr, PIECES: tl.constexpr, K: tl.constexpr, BB: tl.constexpr, XW: tl.constexpr,
):  # fmt: skip
    """``acc`` ([ROWS, PIECES, BB]) plus each of the ``K`` weights times x at its step: ``values``
    holds x (``XW > 0``: gathered from chip) or the columns whose ``BB`` values are read from
    memory. One multiply-add into ``acc`` a step: no sum over steps (a summed tree took ``2K - 1``
    instructions, and across threads at ``BB > 1`` shuffles and barriers)."""
    if K == 1:  # weights and values [ROWS, PIECES, 1], used as they are: with a reshape here
        # Triton 3.6's loop took 1.18 warp-instructions a symbol instead of 0.91
        if XW > 0:
            xv = values
        else:
            c = values.to(tl.int64)
            inside = (c >= 0) & (c < n_cols)
            if BB == 1:
                xv = tl.load(x_ptr + c * stride_xk, mask=inside, other=0.0)
            else:  # transposed and padded to BB columns by the launcher: one vector a column
                xv = tl.load(x_ptr + c * BB + tl.arange(0, BB)[None, None, :], mask=inside, other=0.0)
        return tl.fma(weights, xv.to(tl.float32), acc)
    else:
        w_a, w_b = tl.split(tl.reshape(weights, (ROWS, PIECES, K // 2, 2)))
        v_a, v_b = tl.split(tl.reshape(values, (ROWS, PIECES, K // 2, 2)))
        acc = _accumulate(acc, w_a, v_a, x_ptr, n_cols, stride_xk, ROWS, PIECES, K // 2, BB, XW)
        return _accumulate(acc, w_b, v_b, x_ptr, n_cols, stride_xk, ROWS, PIECES, K // 2, BB, XW)


@triton.jit
def _slab_columns(pid, n_cols, slab_cols, slab_programs, SLABS: tl.constexpr):
    """(slab, its first column, its columns) of program ``pid``: slab ``pid // slab_programs`` of
    ``slab_cols`` columns (a multiple of 16, so x's loads keep their alignment past its first
    column); one slab: all ``n_cols`` columns."""
    if SLABS == 1:
        return 0, 0, n_cols
    slab = pid // slab_programs
    start = slab * slab_cols
    return slab, start, tl.minimum(n_cols - start, slab_cols)


@triton.jit
def _slab_sums(
    out, original, row_ok, slab, partial_ptr, count_ptr, n_out, BB: tl.constexpr, SLABS: tl.constexpr
):
    """(row sums, rows to write): the program's sums over its slab go to ``partial[slab, row]``;
    the program that finds itself the last of its rows' ``SLABS`` (an acq_rel count per row, read
    modulo ``SLABS``, so it never needs a reset) adds the slabs' partials in slab order (the same
    sums whichever program comes last) and writes the rows. The barrier before the count orders
    every thread's partials before it; the partials are read from L2 (``.cg``), not a stale L1."""
    b = tl.arange(0, BB)[None, :]
    original = original.to(tl.int64)
    tl.store(partial_ptr + ((slab * n_out + original) * BB)[:, None] + b, out, mask=row_ok[:, None])
    tl.debug_barrier()
    seen = tl.atomic_add(count_ptr + original, 1, mask=row_ok, sem="acq_rel")
    last = row_ok & ((seen & (SLABS - 1)) == SLABS - 1)
    tl.debug_barrier()
    total = tl.zeros(out.shape, dtype=tl.float32)
    for s in tl.static_range(SLABS):
        offs = ((s * n_out + original) * BB)[:, None] + b
        total += tl.load(partial_ptr + offs, mask=last[:, None], other=0.0, cache_modifier=".cg")
    return total, last


@triton.jit
def _rows(row_ids_ptr, bias_ptr, pid, n_rows, n_out, ROWS: tl.constexpr, HAS_BIAS: tl.constexpr):
    """(original row ``int32`` [ROWS], which of them to write, their bias or 0) of the program's
    sorted rows. At batch 1 the kernel loads them before its loop, so that the store after the last
    step waits on no memory (after the loop their first read from HBM stood there); with x read
    from memory (``XW == 0``) after it, where no register holds them across the loop (with Triton
    3.6, sm_80, float32, 16 warps, that register spilled)."""
    sorted_row = pid * ROWS + tl.arange(0, ROWS)
    row_ok = sorted_row < n_rows
    original = tl.load(row_ids_ptr + sorted_row, mask=row_ok, other=0, volatile=True)
    original = original.to(tl.int32)  # int64 at use
    row_ok = row_ok & (original >= 0) & (original < n_out)  # empty rows, row_ids that skipped validation
    bias = tl.zeros((ROWS,), dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + original, mask=row_ok, other=0.0).to(tl.float32)
    return original, row_ok, bias


@triton.jit
def huffman_spmm_kernel(
    words_ptr,
    warp_base_ptr,
    seg_span_ptr,
    row_ids_ptr,
    prog_steps_ptr,
    table_ptr,
    codebook_ptr,
    x_ptr,
    bias_ptr,
    y_ptr,
    partial_ptr,
    count_ptr,
    n_rows,
    n_cols,
    n_out,
    slab_cols,
    slab_programs,
    codebook_size,
    gap_bits,
    gap_mask,
    span_base,
    span_unit,
    n_words,
    table_bits,
    batch,
    stride_xb,
    stride_xk,
    stride_yb,
    stride_yn,
    ROWS: tl.constexpr,
    PIECES: tl.constexpr,
    K: tl.constexpr,
    BB: tl.constexpr,
    XW: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SLABS: tl.constexpr,
    PREFETCH: tl.constexpr,
):
    """y[b, row] = sum_k W[row, k] x[b, k] (+ bias[row]) for the program's rows, b < batch <= BB
    (``XW > 0``: batch 1 with x on chip; see the module docstring). ``n_rows``: the stored rows;
    the program covers the columns of slab ``pid // slab_programs`` (``slab_cols`` wide); with
    ``SLABS > 1`` its sums go through ``partial`` and ``count`` (`_slab_sums`)."""
    pid = tl.program_id(0)
    slab, slab_start, n_cols = _slab_columns(pid, n_cols, slab_cols, slab_programs, SLABS)
    if SLABS > 1:  # x from the slab's first column: a row of x (batch 1), or of its BB-wide transpose
        x_ptr += slab_start.to(tl.int64) * (BB if BB > 1 else stride_xk)
    # Before the loop every load is issued before anything waits on one (`_rest`: the warps'
    # offsets, which the first word rows past the heads wait on, last): volatile loads keep
    # their order, and ptxas placed its first wait on the offsets before loads it could have
    # issued first, which then waited another HBM latency.
    row, lane, stored, head = _heads(warp_base_ptr, pid, n_rows, n_words, ROWS, PIECES)
    buf, pos, q0 = _reader(words_ptr, head, n_words)
    _warm_table(table_ptr, table_bits, ROWS, PIECES, PREFETCH)
    b = tl.arange(0, BB)
    # The codebook on chip, zero past its end: escapes and END (indices k .. 2k) read weight 0.
    c = tl.arange(0, CODEBOOK_CHIP)
    codebook_chip = tl.load(codebook_ptr + c, mask=c < codebook_size, other=0.0, volatile=True)
    if XW > 0:
        k = tl.arange(0, XW)
        x_chip = tl.load(x_ptr + k.to(tl.int64) * stride_xk, mask=k < n_cols, other=0.0, volatile=True)
    else:
        x_chip = codebook_chip  # not read: x comes from memory
    if XW > 0:  # batch 1: the rows' places and bias before the loop (see `_rows`)
        original, row_ok, bias = _rows(row_ids_ptr, bias_ptr, pid, n_rows, n_out, ROWS, HAS_BIAS)
    n_steps = tl.load(prog_steps_ptr + pid, volatile=True)
    rest, end, first_col = _rest(
        warp_base_ptr, seg_span_ptr, row, lane, stored, n_rows, span_base, span_unit, n_words, PIECES
    )
    wi, ahead = _past_head(words_ptr, rest, end, PREFETCH)
    col = first_col - 1  # the last weight's column
    acc = tl.zeros((ROWS, PIECES, BB), dtype=tl.float32)
    # Whole iterations, then what is left in iterations of K / 2 and (K >= 8) K / 4 steps;
    # ``rest``: the quarters of an iteration left.
    if K >= 8:
        quarters = tl.cdiv(n_steps, K // 4)
        n_iter = quarters // 4
        rest = quarters % 4
    elif K == 4:
        halves = tl.cdiv(n_steps, 2)
        n_iter = halves // 2
        rest = (halves % 2) * 2
    else:
        n_iter = tl.cdiv(n_steps, K)
    for _ in range(0, n_iter):
        buf, pos, q0, wi, col, acc = _iteration(
            words_ptr, table_ptr, x_ptr, buf, pos, q0, wi, end, ahead, col, acc, codebook_chip, x_chip,
            table_bits, gap_bits, gap_mask, n_cols, stride_xk, ROWS, PIECES, K, BB, XW, PREFETCH,
        )  # fmt: skip
    if K >= 4:  # noqa: SIM102 (a compile-time test around a run-time one)
        if rest >= 2:
            buf, pos, q0, wi, col, acc = _iteration(
                words_ptr, table_ptr, x_ptr, buf, pos, q0, wi, end, ahead, col, acc, codebook_chip,
                x_chip, table_bits, gap_bits, gap_mask, n_cols, stride_xk, ROWS, PIECES, K // 2, BB, XW,
                PREFETCH,
            )  # fmt: skip
    if K >= 8:  # noqa: SIM102
        if rest % 2 == 1:
            buf, pos, q0, wi, col, acc = _iteration(
                words_ptr, table_ptr, x_ptr, buf, pos, q0, wi, end, ahead, col, acc, codebook_chip,
                x_chip, table_bits, gap_bits, gap_mask, n_cols, stride_xk, ROWS, PIECES, K // 4, BB, XW,
                PREFETCH,
            )  # fmt: skip
    out = tl.sum(acc, axis=1)  # [ROWS, BB]
    if XW == 0:
        original, row_ok, bias = _rows(row_ids_ptr, bias_ptr, pid, n_rows, n_out, ROWS, HAS_BIAS)
    if SLABS > 1:
        out, row_ok = _slab_sums(out, original, row_ok, slab, partial_ptr, count_ptr, n_out, BB, SLABS)
    if HAS_BIAS:
        out += tl.where(row_ok, bias, 0.0)[:, None]
    y_offs = b.to(tl.int64)[None, :] * stride_yb + original.to(tl.int64)[:, None] * stride_yn
    tl.store(y_ptr + y_offs, out.to(y_ptr.dtype.element_ty), mask=row_ok[:, None] & (b < batch)[None, :])


@triton.jit
def huffman_decode_kernel(
    words_ptr,
    warp_base_ptr,
    seg_span_ptr,
    row_ids_ptr,
    prog_steps_ptr,
    table_ptr,
    codebook_ptr,
    seg_first_ptr,
    codes_ptr,
    cols_ptr,
    w_ptr,
    n_rows,
    n_cols,
    n_out,
    slab_cols,
    slab_programs,
    codebook_size,
    gap_bits,
    gap_mask,
    nnz,
    span_base,
    span_unit,
    n_words,
    table_bits,
    ROWS: tl.constexpr,
    PIECES: tl.constexpr,
    DENSE: tl.constexpr,
    SLABS: tl.constexpr,
    PREFETCH: tl.constexpr,
):
    """Decode the program's pieces: into ``codes`` (uint8) and ``cols`` (int32) in CSR order,
    from each piece's ``seg_first`` (``DENSE`` False), or each weight into the zero-filled float32
    ``w`` (n_out, n_cols) at its original row (``DENSE`` True: no ``seg_first`` needed). ``n_rows``:
    the stored rows; the program's slab of ``slab_cols`` columns is ``pid // slab_programs``."""
    pid = tl.program_id(0)
    sorted_row, lane, stored, head = _heads(warp_base_ptr, pid, n_rows, n_words, ROWS, PIECES)
    buf, pos, q0 = _reader(words_ptr, head, n_words)
    _warm_table(table_ptr, table_bits, ROWS, PIECES, PREFETCH)
    # As in the fused kernel, every load before the loop goes out before the first wait (the
    # warps' offsets last, in `_rest`).
    _, slab_start, slab_end = _slab_columns(pid, n_cols, slab_cols, slab_programs, SLABS)
    row_ok = sorted_row < n_rows
    row = tl.load(row_ids_ptr + sorted_row, mask=row_ok, other=0, volatile=True).to(tl.int64)
    if not DENSE:  # masked by the stored rows only, so the load does not wait on the row ids
        piece = sorted_row.to(tl.int64) * PIECES + tl.arange(0, PIECES)[None, :]
        out = tl.load(seg_first_ptr + piece, mask=row_ok, other=0, volatile=True)
    n_steps = tl.load(prog_steps_ptr + pid, volatile=True)
    rest, end, first_col = _rest(
        warp_base_ptr, seg_span_ptr, sorted_row, lane, stored, n_rows, span_base, span_unit, n_words, PIECES
    )
    wi, ahead = _past_head(words_ptr, rest, end, PREFETCH)
    col = first_col - 1
    row_ok = row_ok & (row >= 0) & (row < n_out)  # empty rows, and row_ids that skipped validation
    for _ in range(0, n_steps):
        pos, advance, code = _symbol(table_ptr, buf, pos, table_bits, gap_bits, gap_mask)
        col += advance
        real = (code < codebook_size) & (col >= 0) & (col < slab_end) & row_ok
        if DENSE:
            weight = tl.load(codebook_ptr + code, mask=real, other=0.0)
            tl.store(w_ptr + row * n_cols + slab_start + col, weight, mask=real)
        else:
            real = real & (out >= 0) & (out < nnz)
            tl.store(codes_ptr + out, code.to(tl.uint8), mask=real)
            tl.store(cols_ptr + out, slab_start + col, mask=real)
            out += real.to(tl.int64)
        # One step at a time: the refill keeps 32 bits ahead, more than one symbol needs.
        buf, pos, q0, wi = _refill(words_ptr, buf, pos, q0, wi, end, ahead, PREFETCH)
