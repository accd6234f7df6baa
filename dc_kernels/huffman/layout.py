"""The Huffman GPU form of a compressed FC layer: decodable in parallel, fused into the GEMV.

Pure NumPy/PyTorch (no Triton here). The kernels are in `dc_kernels.huffman.kernels`.

What is coded
-------------
A kept weight's *gap* ``g`` is the number of pruned columns skipped since the previous kept weight
of its piece (for the piece's first weight: since the piece's first column). With ``gap_raw_bits``
``b`` and ``q_levels`` ``Q`` the gap splits into ``q = g >> b`` and its ``b`` low bits; while
``q >= Q`` an *escape* symbol (advance ``Q << b`` columns, no weight) is written and ``q`` drops by
``Q``. With ``code_raw_bits`` ``c`` the weight's codebook index splits into ``code >> c`` and its
``c`` low bits. The weight is then written as the joint symbol ``(code >> c) * Q + q`` followed by
``c + b`` raw bits (the code's low bits, then the gap's). One Huffman code covers the
``ceil(k / 2**c) * Q`` weight symbols, the escape and *END*, which never occurs in a stream: it is
the all-ones codeword of the longest length, and what a decoder reads once it has passed the end of
its piece, where every bit reads as one (so a lane that finishes early decodes ENDs: weight 0, no
advance, no masking needed). This is DEFLATE's scheme of Huffman-coded classes plus extra bits:
the joint symbol keeps what codes and gaps share on trained layers, and the raw low bits (nearly
uniform where they are chosen: they cost no more than coding them) keep the decode table small, a
few cache lines that a warp's 32 lookups touch. Codes are canonical (`compress.huffman`) and
length-limited to ``T <= MAX_TABLE_BITS`` bits, and a codeword with its raw bits is at most
``MAX_SYMBOL_BITS`` long, so one lookup in a table of ``2**T`` ``int32`` entries decodes a step and
two steps always fit in the 32 bits a refill guarantees. ``b``, ``c``, ``Q`` and ``T`` are chosen
per layer for the fewest resident bits plus ``ESCAPE_PENALTY_BITS`` per escape (an escape costs a
decode step, like a weight).

The bit order is `compress.huffman`'s: bit ``p`` of a lane is bit ``31 - p % 32`` of its word ``p // 32``.

Pieces: balanced by symbol count
--------------------------------
Each row is cut into ``pieces`` pieces at columns chosen so that its pieces hold equal numbers of
symbols (up to the rounding of the cuts to multiples of ``span_unit`` columns; the least-memory
layout balances their bits instead): piece ``p`` of a row covers columns ``[c_p, c_{p+1})``,
``c_0 = 0``, ``c_pieces = in_features``. Rows are sorted by their number of symbols (or bits),
most first (``row_ids[i]`` is the original row of sorted row ``i``),
and one GPU program decodes ``rows_per_program`` consecutive sorted rows, one lane per piece: the
lanes of a program hold about the same number of symbols (the lane utilization, `lane_utilization`,
is what is left idle), and a row's partial sums are reduced inside its program (every output
written once; with column slabs a row's slabs meet as described below).

Column slabs: one slab of x per program
---------------------------------------
A layer wider than `SLAB_COLUMNS` (8192) columns is cut into ``slabs`` (2, 4, ...: `choose_slabs`)
column slabs of ``slab_width`` columns (a multiple of 16; the last slab may hold fewer): the
weights of row ``r`` in slab ``s`` are stored as a row of their own, their columns counted from the
slab's first, cut into pieces like any row. The stored rows go slab by slab; within a slab the
rows are sorted by their symbols there, and each slab's rows are padded with empty rows to whole
programs (``stored_rows = slabs * ceil(out_features / rows_per_program) * rows_per_program``;
``row_ids`` holds each slab's order, the padding rows' ids ``>= out_features``). A program so
covers one slab, and the fused kernel keeps only that slab of x on chip (VGG-6's 25088 columns: 4
slabs, an 8192-column copy instead of a 32768-column one, which frees registers for three
programs an SM instead of one); a row's slab sums meet in whichever of its programs ends last
(`dc_kernels.huffman.kernels`). One slab is the layout without slabs.

Words: interleaved by warp
-------------------------
Lane ``l`` of program ``i`` (``l = r * pieces + p`` for piece ``p`` of its ``r``-th row, rows
past the last are empty lanes) belongs to warp ``(i * lanes + l) // 32`` with the 31 lanes beside
it. A warp's lanes each get the same number ``W`` of 32-bit words (its longest piece, rounded up
to whole words, and at least `HEAD_WORDS`; the rest of every lane one bits, which decode as END),
and word ``j`` of its lane ``l % 32`` is stored at ``32 (HEAD_WORDS g + j) + l % 32`` for the
first `HEAD_WORDS` (the head, which a reader holds before its loop: found from the warp's index
``g`` alone, without waiting on a load of an offset), the others at ``32 HEAD_WORDS n_warps +
warp_base[g] + 32 (j - HEAD_WORDS) + l % 32``: the 32 lanes of a warp, which decode in lockstep at
about the same pace, read their next words from one or two 128-byte lines (pieces stored one
after the other put each lane of a warp on a line of its own). The price is the padding of each
lane to its warp's longest piece (a few percent of the bits on the paper's layers: rows are
sorted and pieces balanced, so a warp's pieces are about equally long); in exchange no piece
lengths are stored. Per warp: ``warp_base`` (its first word past the heads; ``warp_base[-1]`` =
the count of those words, ``int32`` below ``2**30`` words in all). For pieces ``0 .. pieces - 2`` of each row:
``seg_span`` (its columns: ``(seg_span + span_base) * span_unit``), ``uint8`` when the values
span fewer than 256 units, else ``int16`` holding ``uint16``; a program finds its pieces' first
columns with a prefix sum. ``total_bits`` counts the coded bits (symbols and raw bits), without
padding.

Derived at build or load (not stored, but resident on the GPU and counted in the bits):
the decode table (``int32[2**T]``, `decode_table_entries`) and ``prog_steps`` (the most symbols of
any piece of each program: the kernels' step count). ``seg_first`` (the index of each piece's first
kept weight in CSR order, for the standalone decoder's output) is derived too and not counted.

Loading (`HuffmanLayout.from_state`) decodes every lane on the CPU, with every read bounded by
the lane's words, and raises `HuffmanLayoutError` on any inconsistency before a tensor is used;
kernels then only ever see streams that decode exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from compress.huffman import HuffmanCode
from compress.matrix import CompressedMatrix, check_bits

MAX_TABLE_BITS = 10  # decode table <= 2**10 int32 entries (4 KB): the least-memory choice
FAST_TABLE_BITS = 6  # the default limit: 256 bytes, two cache lines for a warp's 32 lookups
MAX_SYMBOL_BITS = 16  # codeword + raw bits: two steps fit the 32 bits a refill guarantees
MIN_TABLE_BITS = 4  # the smallest table tried
MAX_ADVANCE = (1 << 12) - 1  # largest column advance of one symbol (a 12-bit table field)
ESCAPE_PENALTY_BITS = 8  # score of an escape beyond its bits: it costs a decode step, ~10% of a weight's
WARP_LANES = 32  # lanes whose words are interleaved: one warp of the kernels
HEAD_WORDS = 3  # a lane's first words: its reader's before the loop, found without an offset
ROWS_AHEAD = 4  # word rows a kernel lane asks into L1 before it loads them (refills of lead)
MAX_INT32_OFFSET_WORDS = 1 << 30  # int32 warp offsets below: the kernels count bytes in 32 bits
# Lanes (pieces) of one program, one per thread: 4 warps for small layers (their time is the
# length of a program's decode chain, and four warps issue an iteration twice as fast as eight),
# 8 warps, or 16 when x is wide (its on-chip copy is spread over more threads).
SMALL_LAYER_WEIGHTS = 1 << 20
PROGRAM_LANE_CHOICES = (128, 256, 512)
WIDE_X_COLUMNS = 8192
# Widest column slab: a wider layer is cut into 2, 4, ... slabs of at most this many columns,
# so that each program's on-chip copy of x covers one slab (`choose_slabs`).
SLAB_COLUMNS = WIDE_X_COLUMNS
# Shortest pieces the adaptive choice makes. A layer's time at batch 1 is its longest decode chain
# on small and mid-size layers: 32-symbol pieces (instead of 48) cut Alex-7 from 7.6 to 5.5 us and
# NT-LSTM from 7.5 to 5.3 us in `dcomp predict-gpu`, for at most 0.5 more bits a kept weight
# (lengths and spans). 16 everywhere cut more but left lanes idle (lane utilization 0.83 on Alex-8
# and 0.86 on the real fc8, against 0.92 and more with 32), so 16 is kept to the layers under
# `SHORT_LAYER_WEIGHTS` kept weights: with 32-symbol pieces they fill fewer 128-lane programs than
# an H100 has SMs (NT-We and NT-LSTM: 75), so their time is one program's chain, which 16-symbol
# pieces halve (predicted 4.3 -> 3.4 us and 4.8 -> 3.7 us), and their lanes stay busy (0.917 and
# 0.934 at the steps the kernel runs: its iterations of 8 steps round a program's up to 2).
MIN_SEGMENT_SYMBOLS = 32
SHORT_LAYER_WEIGHTS = 1 << 19
SHORT_LAYER_SEGMENT_SYMBOLS = 16
MAX_SEGMENT_SYMBOLS = 128  # longest pieces the adaptive choice makes
TARGET_PIECES = 1 << 16  # the adaptive choice aims at this many pieces (lanes) in a layer
MAX_IN_FEATURES = 1 << 24
# The least-memory layout (`HuffmanLayout.from_matrix` arguments): long pieces, the largest table,
# escapes counted by their bits only (at the cost of longer decode chains and more steps).
# Its pieces are cut to equal bits, not symbols: a warp's lanes end close together, so little of
# their words is padding.
LEAST_MEMORY = {
    "segment_symbols": 256,
    "max_table_bits": MAX_TABLE_BITS,
    "escape_penalty_bits": 1.0,
    "balance": "bits",
}
BALANCES = ("symbols", "bits")
# Codebook indices a decode step can produce: a codebook of k <= 256 entries, k for an escape or
# END, and up to 2k - 1 from the raw low bits of a corrupt stream (the kernels' on-chip codebook).
CODEBOOK_INDICES = 512
# Fields of a decode-table entry (`decode_table_entries`).
BITS_MASK, CODE_SHIFT, CODE_MASK, ADVANCE_SHIFT = 31, 5, CODEBOOK_INDICES - 1, 14
TENSOR_NAMES = ("words", "warp_base", "seg_span", "row_ids", "code_lengths", "codebook")
METADATA_NAMES = (
    "out_features",
    "in_features",
    "code_bits",
    "gap_raw_bits",
    "code_raw_bits",
    "q_levels",
    "pieces",
    "rows_per_program",
    "span_unit",
    "span_base",
    "total_bits",
    "nnz",
    "slabs",
)
# Metadata older files may lack, with the value that reads them as they were written.
METADATA_DEFAULTS = {"slabs": 1}


class HuffmanLayoutError(ValueError):
    """A Huffman layout whose fields are inconsistent or whose stream does not decode exactly."""


def _pow2_at_most(n: float) -> int:
    return 1 << (max(int(n), 1).bit_length() - 1)


def choose_slabs(in_features: int) -> int:
    """Column slabs of a layer with ``in_features`` columns: 1 up to `SLAB_COLUMNS`, else the
    fewest (a power of two) whose slabs are at most `SLAB_COLUMNS` wide."""
    slabs = 1
    while slab_width(in_features, slabs) > SLAB_COLUMNS:
        slabs *= 2
    return slabs


def program_lanes(in_features: int, nnz: int) -> int:
    """Lanes (pieces) of one program for a layer with ``in_features`` columns and ``nnz`` kept
    weights (`PROGRAM_LANE_CHOICES`)."""
    if in_features > WIDE_X_COLUMNS:
        return PROGRAM_LANE_CHOICES[2]
    return PROGRAM_LANE_CHOICES[0] if nnz < SMALL_LAYER_WEIGHTS else PROGRAM_LANE_CHOICES[1]


def choose_pieces(matrix: CompressedMatrix, segment_symbols: int | None, slabs: int = 1) -> int:
    """Pieces per row (of each of ``slabs`` column slabs; a power of two, at most a program's
    lanes) for pieces of about ``segment_symbols`` kept weights; ``None``: as long as the layer
    allows while leaving about `TARGET_PIECES` pieces (short pieces, short decode chains, on small
    layers), and at least `MIN_SEGMENT_SYMBOLS` long (`SHORT_LAYER_SEGMENT_SYMBOLS` on layers under
    `SHORT_LAYER_WEIGHTS` kept weights)."""
    rows, cols = matrix.shape[0] * slabs, slab_width(matrix.shape[1], slabs)
    if segment_symbols is None:
        shortest = SHORT_LAYER_SEGMENT_SYMBOLS if matrix.nnz < SHORT_LAYER_WEIGHTS else MIN_SEGMENT_SYMBOLS
        segment_symbols = int(np.clip(matrix.nnz / TARGET_PIECES, shortest, MAX_SEGMENT_SYMBOLS))
    per_row = matrix.nnz / rows
    pieces = 1 << max(0, round(np.log2(max(per_row / segment_symbols, 1.0))))
    return int(min(pieces, _pow2_at_most(cols), program_lanes(cols, matrix.nnz)))


def _cuts(matrix: CompressedMatrix, pieces: int, cost: np.ndarray) -> np.ndarray:
    """int64[rows, pieces + 1]: the first column of every piece (then ``in_features``), cut so
    that the pieces of a row hold equal shares of its kept weights' ``cost`` (their symbols)."""
    rows, cols = matrix.shape
    cuts = np.zeros((rows, pieces + 1), dtype=np.int64)
    cuts[:, -1] = cols
    if pieces == 1 or matrix.nnz == 0:
        cuts[:, 1:-1] = cols
        return cuts
    before = np.cumsum(cost) - cost  # symbols before each weight, strictly increasing
    row_start = np.append(before, before[-1] + cost[-1])[matrix.row_ptr]
    share = (row_start[1:] - row_start[:-1])[:, None] * np.arange(1, pieces)[None, :] / pieces
    first = np.searchsorted(before, row_start[:-1, None] + share, side="left")
    inside = first < matrix.row_ptr[1:, None]
    col = matrix.col_idx.astype(np.int64)[np.minimum(first, matrix.nnz - 1)]
    cuts[:, 1:-1] = np.where(inside, col, cols)
    return np.maximum.accumulate(cuts, axis=1)


def _quantize_cuts(cuts: np.ndarray, unit: int) -> np.ndarray:
    """The cuts rounded down to multiples of ``unit`` (the last one stays ``in_features``)."""
    out = cuts.copy()
    out[:, 1:-1] = (cuts[:, 1:-1] // unit) * unit
    return out


def _span_units(cuts: np.ndarray) -> tuple[int, int, np.ndarray, np.ndarray]:
    """(span_unit, span_base, seg_span, quantized cuts): the smallest unit that stores the spans
    of pieces ``0 .. pieces - 2`` in bytes, else exact ``uint16`` spans."""
    pieces = cuts.shape[1] - 1
    if pieces == 1:
        return 1, 0, np.zeros(0, dtype=np.uint8), cuts
    for shift in range(17):
        unit = 1 << shift
        q = _quantize_cuts(cuts, unit)
        spans = np.diff(q, axis=1)[:, :-1].reshape(-1) // unit
        base = int(spans.min())
        if int(spans.max()) - base < 256:
            return unit, base, (spans - base).astype(np.uint8), q
        if int(spans.max()) - base < 1 << 16:
            return unit, base, (spans - base).astype(np.uint16).view(np.int16), q
    raise ValueError("piece spans do not fit 16 bits")  # unreachable: in_features <= 2**24


def _piece_gaps(matrix: CompressedMatrix, cuts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(piece of each kept weight as ``row * pieces + p``, gap before it within its piece)."""
    rows, cols = matrix.shape
    pieces = cuts.shape[1] - 1
    col = matrix.col_idx.astype(np.int64)
    row = matrix.row_idx
    # Cuts and weights as increasing keys row * (cols + 1) + column: one search finds each piece.
    keys = (np.arange(rows)[:, None] * (cols + 1) + cuts[:, :-1]).reshape(-1)
    piece = np.searchsorted(keys, row * (cols + 1) + col, side="right") - 1
    prev = np.empty_like(col)
    first = np.ones(col.size, dtype=bool)
    if col.size:
        prev[1:] = col[:-1]
        first[1:] = piece[1:] != piece[:-1]
    gaps = np.where(first, col - cuts.reshape(-1)[piece + piece // pieces], col - prev - 1)
    return piece, gaps


@dataclass(frozen=True)
class Coding:
    """``b`` gap raw bits, ``c`` code raw bits, ``Q`` q levels and the Huffman code over the
    ``ceil(k / 2**c) * Q + 2`` symbols (module docstring)."""

    gap_raw_bits: int
    code_raw_bits: int
    q_levels: int
    code: HuffmanCode

    @property
    def table_bits(self) -> int:
        return self.code.table_bits


def high_codes(k: int, code_raw_bits: int) -> int:
    """Codebook indices ``code >> c`` of a codebook of ``k`` entries."""
    return -(-k // (1 << code_raw_bits))


def _symbol_counts(
    codes: np.ndarray, gaps: np.ndarray, k: int, gap_raw_bits: int, code_raw_bits: int, q_levels: int
) -> np.ndarray:
    """Occurrences of every symbol: the weight symbols, the escape, END (none)."""
    q = gaps >> gap_raw_bits
    kh = high_codes(k, code_raw_bits)
    high = codes.astype(np.int64) >> code_raw_bits
    counts = np.bincount(high * q_levels + q % q_levels, minlength=kh * q_levels + 2)
    counts[kh * q_levels] = int(np.sum(q // q_levels))
    counts[kh * q_levels + 1] = 0
    return counts


def end_code(counts: np.ndarray, max_len: int) -> HuffmanCode:
    """The length-limited code of ``counts`` (END last, with no occurrences) in which END is the
    all-ones codeword: the last symbol of the longest length. END gets the room of one occurrence;
    where that leaves it shorter than another symbol it swaps lengths with the last of the longest
    (both have the fewest occurrences there, so no bit changes)."""
    counts = counts.astype(np.int64).copy()
    end = counts.size - 1
    counts[end] = 1
    if np.count_nonzero(counts) < 2:  # a stream of ENDs only: give the escape a codeword too
        counts[end - 1] = 1
    lengths = HuffmanCode.from_counts(counts, max_len).lengths.copy()
    longest = int(lengths.max())
    if lengths[end] != longest:
        other = int(np.flatnonzero(lengths == longest)[-1])
        lengths[other], lengths[end] = lengths[end], longest
    return HuffmanCode(lengths, max_len)


def _gap_bits_candidates(gaps: np.ndarray) -> list[int]:
    """Gap raw bits around the Rice parameter of the mean gap (optimal for geometric gaps)."""
    mean = float(gaps.mean()) if gaps.size else 0.0
    centre = int(np.floor(np.log2(mean * np.log(2) + 1))) if mean > 0 else 0
    return list(range(max(0, centre - 2), centre + 2))


def _score(
    code: HuffmanCode, counts: np.ndarray, raw_bits: int, nnz: int, escape: int, penalty: float
) -> float:
    """Resident bits (stream, table, code lengths) plus ``penalty`` bits per escape."""
    bits = code.encoded_bits(counts) + raw_bits * nnz
    return bits + 32 * (1 << code.table_bits) + 8 * counts.size + penalty * int(counts[escape])


def choose_coding(
    matrix: CompressedMatrix,
    gaps: np.ndarray,
    max_table_bits: int = FAST_TABLE_BITS,
    escape_penalty_bits: float = ESCAPE_PENALTY_BITS,
) -> Coding:
    """``b``, ``c``, ``Q`` and ``T <= max_table_bits`` with the fewest resident bits plus
    ``escape_penalty_bits`` per escape (``Q`` a power of two; one pass over the weights per ``b``
    gives the symbol counts of every ``c`` and ``Q``)."""
    k = int(matrix.codebook.size)
    codes = matrix.codes.astype(np.int64)
    top = _pow2_at_most(((1 << max_table_bits) - 2) // high_codes(k, matrix.bits))
    best = None
    for gap_bits in _gap_bits_candidates(gaps):
        q = gaps >> gap_bits
        by_residue = np.bincount(codes * top + q % top, minlength=k * top).reshape(k, top)
        q_hist = np.bincount(q) if q.size else np.zeros(1, np.int64)
        q_values = np.arange(q_hist.size)
        for code_bits in range(matrix.bits + 1):
            kh = high_codes(k, code_bits)
            merged = np.zeros((kh << code_bits, top), dtype=np.int64)
            merged[:k] = by_residue
            merged = merged.reshape(kh, 1 << code_bits, top).sum(axis=1)
            q_levels = 1
            while kh * q_levels + 2 <= 1 << max_table_bits and q_levels << gap_bits <= MAX_ADVANCE:
                if q_levels > top:
                    break
                counts = np.zeros(kh * q_levels + 2, dtype=np.int64)
                counts[: kh * q_levels] = (
                    merged.reshape(kh, top // q_levels, q_levels).sum(axis=1).reshape(-1)
                )
                counts[kh * q_levels] = int(np.dot(q_hist, q_values // q_levels))
                raw = gap_bits + code_bits
                for table_bits in range(max_table_bits, MIN_TABLE_BITS - 1, -1):
                    if table_bits + raw > MAX_SYMBOL_BITS or np.count_nonzero(counts) + 1 > 1 << table_bits:
                        continue
                    code = end_code(counts, table_bits)
                    score = _score(code, counts, raw, matrix.nnz, kh * q_levels, escape_penalty_bits)
                    if best is None or score < best[0]:
                        best = (score, Coding(gap_bits, code_bits, q_levels, code))
                q_levels *= 2
    if best is None:
        raise ValueError(f"a codebook of {k} entries leaves no room in a {max_table_bits}-bit table")
    return best[1]


def decode_table_entries(code: HuffmanCode, k: int, gap_raw_bits: int, code_raw_bits: int, q_levels: int):
    """The kernels' decode table: ``int32[2**T]``, entry ``peek`` for the codeword that prefixes
    the ``T`` bits ``peek``. A step reads the symbol's ``bits`` (codeword and raw bits) as the
    number ``v`` and gets the rest with shifts, masks and adds:
    ``code = (code_base + (v >> b)) mod CODEBOOK_INDICES``, ``advance = advance_base + (v & (2**b - 1))``,
    the bases folding in what the codeword's own bits add. The entry is
    ``advance_base << 14 | (code_base mod 512) << 5 | bits`` (``advance_base`` signed; ``bits`` is
    at least 1: a slot no codeword fills, which only a corrupt stream reaches, moves on 1 bit). The
    kernels add ``bits`` to their bit position straight from the entry: one instruction on the
    chain from a lookup to the next (``32 - bits`` took two).
    ``code`` is the weight's codebook index (``k``, past the codebook, for an escape or END:
    weight 0) and ``advance`` the columns it moves (``gap + 1`` for a weight, ``Q << b`` for an
    escape, 0 for END)."""
    base = code.decode_table().astype(np.int64)
    symbol, length = base & 0xFFFF, base >> 16
    kh = high_codes(k, code_raw_bits)
    is_weight = symbol < kh * q_levels
    escape = symbol == kh * q_levels
    weight_code = np.where(is_weight, (symbol // q_levels) << code_raw_bits, k)
    advance = np.where(
        is_weight, (symbol % q_levels << gap_raw_bits) + 1, np.where(escape, q_levels << gap_raw_bits, 0)
    )
    raw = np.where(is_weight, gap_raw_bits + code_raw_bits, 0)
    # The codeword's canonical value: the peeked bits above its length.
    codeword = np.arange(base.size, dtype=np.int64) >> (code.table_bits - length)
    v_codeword = codeword << raw  # v with the raw bits zero
    code_base = (weight_code - (v_codeword >> gap_raw_bits)) & CODE_MASK
    advance_base = advance - (v_codeword & ((1 << gap_raw_bits) - 1))
    entry = advance_base << ADVANCE_SHIFT | code_base << CODE_SHIFT | np.maximum(length + raw, 1)
    return entry.astype(np.int32)


@dataclass(frozen=True, eq=False)
class HuffmanLayout:
    """A compressed layer in the Huffman GPU form (module docstring); tensors on any device.

    Build with `from_matrix` or load with `from_state` (which validates); the derived fields
    ``table``, ``prog_steps`` and ``seg_first`` are filled by those constructors. ``seg_first``
    serves only the standalone decoder (`huffman.launch.huffman_decode`); a `CompressedLinear`
    leaves it out (None) of its packed form.
    """

    out_features: int
    in_features: int
    code_bits: int
    gap_raw_bits: int
    code_raw_bits: int
    q_levels: int
    pieces: int
    rows_per_program: int
    span_unit: int
    span_base: int
    total_bits: int
    nnz: int
    slabs: int
    words: torch.Tensor  # int32 (uint32 bit patterns) [32 * HEAD_WORDS * n_warps + warp_base[-1]]
    warp_base: torch.Tensor  # int32 or int64 [n_warps + 1], n_warps = stored_warps(rows, pieces)
    seg_span: torch.Tensor  # uint8 or int16 (uint16 bit patterns) [stored_rows * (pieces - 1)]
    row_ids: torch.Tensor  # int16 or int32 [stored_rows]: original row of each stored row
    code_lengths: torch.Tensor  # uint8 [ceil(codebook_size / 2**code_raw_bits) * q_levels + 2]
    codebook: torch.Tensor  # float32 [k]
    table: torch.Tensor  # int32 [2**table_bits], derived
    prog_steps: torch.Tensor  # int32 [n_programs], derived
    seg_first: torch.Tensor | None  # int64 [stored_rows * pieces], derived; None: left out
    # The fused kernel's per-slab partial sums and counts (`huffman.launch`), made at first use.
    scratch: dict = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------------ geometry
    @property
    def shape(self) -> tuple[int, int]:
        return (self.out_features, self.in_features)

    @property
    def slab_width(self) -> int:
        """Columns of a slab (the last one may hold fewer)."""
        return slab_width(self.in_features, self.slabs)

    @property
    def stored_rows(self) -> int:
        """Rows of the stream: the sorted rows, or with slabs, each row once per slab."""
        return stored_rows(self.out_features, self.rows_per_program, self.slabs)

    @property
    def n_segments(self) -> int:
        return self.stored_rows * self.pieces

    @property
    def n_programs(self) -> int:
        return -(-self.stored_rows // self.rows_per_program)

    @property
    def slab_programs(self) -> int:
        """Programs of each slab (program ``pid`` covers slab ``pid // slab_programs``)."""
        return self.n_programs // self.slabs

    @property
    def lanes(self) -> int:
        return self.rows_per_program * self.pieces

    @property
    def table_bits(self) -> int:
        return int(self.table.numel()).bit_length() - 1

    @property
    def codebook_size(self) -> int:
        return int(self.codebook.numel())

    @property
    def gap_mask(self) -> int:
        """``2**b - 1``: the raw low bits of a gap."""
        return (1 << self.gap_raw_bits) - 1

    @property
    def device(self) -> torch.device:
        return self.words.device

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_matrix(
        cls,
        matrix: CompressedMatrix,
        segment_symbols: int | None = None,
        max_table_bits: int = FAST_TABLE_BITS,
        escape_penalty_bits: float = ESCAPE_PENALTY_BITS,
        coding: tuple[int, int, int] | None = None,
        device: torch.device | str | None = None,
        balance: str = "symbols",
        slabs: int | None = None,
    ) -> HuffmanLayout:
        """Encode a canonical matrix (vectorized). ``segment_symbols``: target kept weights per
        piece (None: `choose_pieces`' adaptive choice); ``max_table_bits``: the longest codeword
        (`FAST_TABLE_BITS`: a table of a few cache lines; up to `MAX_TABLE_BITS`, fewer bits where
        codes are skewed); ``escape_penalty_bits``: what an escape's decode step counts for in the
        choice of the coding (0: fewest bits); ``coding``: ``(gap_raw_bits, code_raw_bits,
        q_levels)`` instead of the measured choice (module docstring); ``balance``: what a row's
        pieces hold equal shares of and rows are sorted by, ``"symbols"`` (decode steps: the
        lanes of a program stay busy) or ``"bits"`` (a warp's lanes need less padding: 0.07..0.15
        fewer bits a kept weight in the least-memory layout on the paper's layers and the real
        fc8, for 1..2.5% lower lane utilization); ``slabs``: column slabs (None: `choose_slabs`;
        a power of two), each row's weights in slab ``s`` stored as a row of their own whose
        columns count from the slab's first, the rows of a block of ``rows_per_program`` sorted
        rows stored once per slab (slab by slab), so that a program covers one slab of x.
        `LEAST_MEMORY` holds the arguments of the least-memory layout."""
        if not isinstance(matrix, CompressedMatrix):
            raise TypeError(f"matrix must be a CompressedMatrix, got {type(matrix).__name__}")
        if segment_symbols is not None and (
            isinstance(segment_symbols, bool) or not isinstance(segment_symbols, int) or segment_symbols < 1
        ):
            raise ValueError(f"segment_symbols must be None or an int >= 1, got {segment_symbols!r}")
        rows, cols = matrix.shape
        if (
            isinstance(max_table_bits, bool)
            or not isinstance(max_table_bits, int)
            or not MIN_TABLE_BITS <= max_table_bits <= MAX_TABLE_BITS
        ):
            raise ValueError(
                f"max_table_bits must be an int in {MIN_TABLE_BITS}..{MAX_TABLE_BITS}, got {max_table_bits!r}"
            )
        if (
            isinstance(escape_penalty_bits, bool)
            or not isinstance(escape_penalty_bits, (int, float))
            or not (0 <= escape_penalty_bits < float("inf"))
        ):
            raise ValueError(f"escape_penalty_bits must be a finite number >= 0, got {escape_penalty_bits!r}")
        if cols > MAX_IN_FEATURES:
            raise ValueError(f"in_features={cols} exceeds the Huffman form's {MAX_IN_FEATURES} columns")
        if balance not in BALANCES:
            raise ValueError(f"balance must be one of {BALANCES}, got {balance!r}")
        if slabs is None:
            slabs = choose_slabs(cols)
        if (
            isinstance(slabs, bool)
            or not isinstance(slabs, int)
            or slabs < 1
            or slabs & (slabs - 1)
            or slabs > cols
        ):
            raise ValueError(f"slabs must be None or a power of two <= in_features={cols}, got {slabs!r}")
        out_features, in_features = rows, cols
        k = int(matrix.codebook.size)
        pieces = choose_pieces(matrix, segment_symbols, slabs)
        if slabs > 1:
            width = slab_width(cols, slabs)
            rpp = max(1, program_lanes(width, matrix.nnz) // pieces)
            matrix = _slab_rows(matrix, slabs, -(-rows // rpp) * rpp)
            rows, cols = matrix.shape
        # The coding is chosen on the row's gaps; the cuts then balance the pieces' symbols (or
        # their bits in that coding).
        row_gaps = _piece_gaps(matrix, _cuts(matrix, 1, None))[1]
        if coding is None:
            picked = choose_coding(matrix, row_gaps, max_table_bits, escape_penalty_bits)
        else:
            picked = _explicit_coding(matrix, row_gaps, coding, max_table_bits)
        gap_bits, code_bits, q_levels = picked.gap_raw_bits, picked.code_raw_bits, picked.q_levels
        escapes = (row_gaps >> gap_bits) // q_levels
        if balance == "bits":
            lengths = picked.code.lengths.astype(np.int64)
            high = matrix.codes.astype(np.int64) >> code_bits
            symbol = high * q_levels + (row_gaps >> gap_bits) % q_levels
            escape = high_codes(k, code_bits) * q_levels
            cost = lengths[symbol] + gap_bits + code_bits + escapes * lengths[escape]
        else:
            cost = 1 + escapes
        span_unit, span_base, seg_span, cuts = _span_units(_cuts(matrix, pieces, cost))
        piece_of_weight, gaps = _piece_gaps(matrix, cuts)
        counts = _symbol_counts(matrix.codes, gaps, k, gap_bits, code_bits, q_levels)
        code = end_code(counts, picked.table_bits)

        # Symbol stream in original row order: each kept weight's escapes, then its joint symbol
        # with its raw bits (the code's low bits, then the gap's).
        q = gaps >> gap_bits
        n_escapes = q // q_levels
        weight_pos = np.arange(matrix.nnz, dtype=np.int64) + np.cumsum(n_escapes)
        n_symbols = matrix.nnz + int(n_escapes.sum())
        codes = matrix.codes.astype(np.int64)
        symbols = np.full(n_symbols, high_codes(k, code_bits) * q_levels, dtype=np.int64)
        symbols[weight_pos] = (codes >> code_bits) * q_levels + q % q_levels
        piece_of_symbol = np.repeat(piece_of_weight, n_escapes + 1)
        raw = np.zeros(n_symbols, dtype=np.int64)
        raw[weight_pos] = (codes & ((1 << code_bits) - 1)) << gap_bits | gaps & ((1 << gap_bits) - 1)
        raw_len = np.zeros(n_symbols, dtype=np.int64)
        raw_len[weight_pos] = code_bits + gap_bits
        cw = code.codewords().astype(np.int64)[symbols] << raw_len | raw
        cw_len = code.lengths.astype(np.int64)[symbols] + raw_len

        # Rows sorted by symbol count or bits (most first); pieces in sorted row-major order.
        n_seg = rows * pieces
        seg_syms = np.bincount(piece_of_symbol, minlength=n_seg)
        weights = cw_len if balance == "bits" else None  # None: each symbol counts 1
        # Slab by slab (stored row row * slabs + s), each slab's rows sorted by their symbols there.
        slab_cost = np.bincount(piece_of_symbol // pieces, weights, minlength=rows).reshape(-1, slabs)
        order = (np.argsort(-slab_cost.T, axis=1, kind="stable") * slabs + np.arange(slabs)[:, None]).reshape(
            -1
        )
        rank = np.empty(rows, dtype=np.int64)
        rank[order] = np.arange(rows)
        # The rows' runs of symbols move as blocks to their sorted places.
        row_syms = seg_syms.reshape(rows, pieces).sum(axis=1)
        old_start = np.cumsum(row_syms) - row_syms
        new_start = (np.cumsum(row_syms[order]) - row_syms[order])[rank]
        symbol_row = piece_of_symbol // pieces
        at = np.arange(n_symbols) - old_start[symbol_row] + new_start[symbol_row]
        sorted_piece = np.empty(n_symbols, dtype=np.int64)
        sorted_piece[at] = rank[symbol_row] * pieces + piece_of_symbol % pieces
        cw, cw_len = _scatter(cw, at), _scatter(cw_len, at)
        seg_bits = np.bincount(sorted_piece, weights=cw_len, minlength=n_seg).astype(np.int64)
        total_bits = int(seg_bits.sum())
        rpp = max(1, program_lanes(cols, matrix.nnz) // pieces)
        n_prog = -(-rows // rpp)
        lane_bits = np.zeros(stored_warps(rows, pieces) * WARP_LANES, dtype=np.int64)
        lane_bits[:n_seg] = seg_bits
        warp_words = np.maximum((-(-lane_bits // 32)).reshape(-1, WARP_LANES).max(axis=1), HEAD_WORDS)
        warp_base = np.concatenate(([0], np.cumsum((warp_words - HEAD_WORDS) * WARP_LANES)))
        # Each lane's words written one after the other (its piece, then one bits: what a decoder
        # reads past a piece decodes as END), then interleaved across its warp.
        lane_start, lane_words = _lane_starts(warp_base), _lane_words(warp_base)
        n_words = int(lane_words.sum())
        by_lane = _pack_codewords(
            cw, cw_len, lane_start[sorted_piece] * 32 + _cumsum_within(cw_len, sorted_piece), n_words
        )
        by_lane |= _padding_masks(lane_words, lane_bits)
        words = by_lane[_interleaved_order(warp_base)]

        steps = np.zeros(n_prog * rpp * pieces, dtype=np.int64)
        steps[:n_seg] = seg_syms.reshape(rows, pieces)[order].reshape(-1)
        row_dtype = np.int16 if rows // slabs <= 1 << 15 else np.int32
        per_piece = np.bincount(piece_of_weight, minlength=n_seg).reshape(rows, pieces)
        first = matrix.row_ptr[:-1, None] + np.cumsum(per_piece, axis=1) - per_piece
        tensors = {
            "words": torch.from_numpy(words.view(np.int32)),
            "warp_base": torch.from_numpy(_offset_array(warp_base, n_words)),
            "seg_span": torch.from_numpy(seg_span.reshape(rows, pieces - 1)[order].reshape(-1).copy()),
            "row_ids": torch.from_numpy((order // slabs).astype(row_dtype)),
            "code_lengths": torch.from_numpy(code.lengths.copy()),
            "codebook": torch.from_numpy(matrix.codebook.astype(np.float32)),
            "table": torch.from_numpy(decode_table_entries(code, k, gap_bits, code_bits, q_levels)),
            "prog_steps": torch.from_numpy(steps.reshape(n_prog, -1).max(axis=1).astype(np.int32)),
            "seg_first": torch.from_numpy(first[order].reshape(-1).astype(np.int64)),
        }
        return cls(
            out_features=out_features,
            in_features=in_features,
            code_bits=matrix.bits,
            gap_raw_bits=gap_bits,
            code_raw_bits=code_bits,
            q_levels=q_levels,
            pieces=pieces,
            rows_per_program=rpp,
            span_unit=span_unit,
            span_base=span_base,
            total_bits=total_bits,
            nnz=matrix.nnz,
            slabs=slabs,
            **{name: t.to(device) for name, t in tensors.items()},
        )

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], metadata: dict[str, int]) -> HuffmanLayout:
        """Rebuild from `tensors()` and `metadata()`, validating everything first: the stream is
        decoded on the CPU and any inconsistency raises `HuffmanLayoutError`. Metadata written
        before a field existed reads with its `METADATA_DEFAULTS` value."""
        metadata = {**METADATA_DEFAULTS, **metadata}
        missing = [n for n in TENSOR_NAMES if n not in tensors] + [
            n for n in METADATA_NAMES if n not in metadata
        ]
        if missing:
            raise HuffmanLayoutError(f"missing Huffman layout fields: {missing}")
        meta = {}
        for name in METADATA_NAMES:
            value = metadata[name]
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 0:
                raise HuffmanLayoutError(f"metadata {name} must be a non-negative int, got {value!r}")
            meta[name] = int(value)
        for name in TENSOR_NAMES:
            if not isinstance(tensors[name], torch.Tensor):
                raise HuffmanLayoutError(f"{name} must be a tensor, got {type(tensors[name]).__name__}")
        device = tensors["words"].device
        arrays = {name: tensors[name].detach().cpu().numpy() for name in TENSOR_NAMES}
        table, prog_steps, seg_first, _ = _validate(arrays, meta)
        derived = {
            "table": torch.from_numpy(table),
            "prog_steps": torch.from_numpy(prog_steps),
            "seg_first": torch.from_numpy(seg_first),
        }
        stored = {name: tensors[name].to(device) for name in TENSOR_NAMES}
        return cls(**meta, **stored, **{n: t.to(device) for n, t in derived.items()})

    def tensors(self) -> dict[str, torch.Tensor]:
        """The stored tensors (what a module keeps as buffers or a file holds)."""
        return {name: getattr(self, name) for name in TENSOR_NAMES}

    def metadata(self) -> dict[str, int]:
        return {name: int(getattr(self, name)) for name in METADATA_NAMES}

    def to(self, device: torch.device | str) -> HuffmanLayout:
        fields = {
            **self.tensors(),
            "table": self.table,
            "prog_steps": self.prog_steps,
            "seg_first": self.seg_first,
        }
        return HuffmanLayout(
            **self.metadata(), **{n: None if t is None else t.to(device) for n, t in fields.items()}
        )

    # ------------------------------------------------------------------ sizes
    def bit_counts(self) -> dict[str, int]:
        """Exact bits of everything the layout holds (GPU-resident), by field."""
        return {
            "stream_bits": self.total_bits,
            "lane_padding_bits": self.words.numel() * 32 - self.total_bits,
            "segment_span_bits": self.seg_span.numel() * self.seg_span.element_size() * 8,
            "row_order_bits": self.row_ids.numel() * self.row_ids.element_size() * 8,
            "warp_offset_bits": self.warp_base.numel() * self.warp_base.element_size() * 8,
            "program_steps_bits": self.prog_steps.numel() * 32,
            "decode_table_bits": self.table.numel() * 32,
            "code_length_bits": self.code_lengths.numel() * 8,
            "codebook_bits": self.codebook.numel() * 32,
        }

    def total_bits_resident(self) -> int:
        return sum(self.bit_counts().values())

    def total_bytes(self) -> int:
        return (self.total_bits_resident() + 7) // 8

    def bits_per_kept_weight(self) -> float:
        return self.total_bits_resident() / max(self.nnz, 1)

    def symbols(self) -> int:
        """Decoded symbols: the kept weights and the escapes (END excluded)."""
        return int(self.segment_symbols().sum())

    def segment_symbols(self) -> np.ndarray:
        """int64[out_features * pieces]: symbols of every piece (sorted row-major order)."""
        arrays = {name: t.detach().cpu().numpy() for name, t in self.tensors().items()}
        return _validate(arrays, self.metadata())[3][3]

    def step_bits(self) -> np.ndarray:
        """int32[steps, lanes of all programs]: the bits each lane's reader moves on at each step of
        its program (`prog_steps`): its symbols', then END's (which the kernels' lanes decode
        past their piece, reading their warp's padding words, then nothing); 0 past its program's
        steps. What `perf.cost` counts the stream's cache lines from."""
        arrays = {name: t.detach().cpu().numpy() for name, t in self.tensors().items()}
        trace: list = []
        table, prog_steps, _, _ = _validate(arrays, self.metadata(), trace)
        steps = np.repeat(prog_steps.astype(np.int64), self.lanes)
        out = np.full((int(steps.max(initial=0)), steps.size), table[-1] & BITS_MASK, np.int32)
        for step, (lanes, bits) in enumerate(trace):
            out[step, lanes] = bits
        out[np.arange(out.shape[0])[:, None] >= steps[None, :]] = 0
        return out

    def lane_utilization(self, step_multiple: int = 1) -> float:
        """Share of the lane-steps the kernels run that decode a symbol: symbols over lanes times
        each program's steps rounded up to ``step_multiple`` (the fused kernel's:
        `dc_kernels.huffman.launch.steps_granularity`); 1.0 for a layer without symbols."""
        steps = -(-self.prog_steps.detach().cpu().numpy().astype(np.int64) // step_multiple) * step_multiple
        lane_steps = int(steps.sum()) * self.lanes
        return self.symbols() / lane_steps if lane_steps else 1.0

    # ------------------------------------------------------------------ decoding
    def decode(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, column, code) of every kept weight in CSR order: the reference of the decoder
        kernel (same steps, same bounded reads). Raises `HuffmanLayoutError`."""
        arrays = {name: t.detach().cpu().numpy() for name, t in self.tensors().items()}
        rows, cols, codes, _ = _validate(arrays, self.metadata())[3]
        return rows, cols, codes

    def to_matrix(self) -> CompressedMatrix:
        rows, cols, codes = self.decode()
        row_ptr = np.zeros(self.out_features + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=self.out_features), out=row_ptr[1:])
        return CompressedMatrix(self.shape, self.codebook.cpu().numpy(), row_ptr, cols, codes, self.code_bits)

    def to_dense(self) -> torch.Tensor:
        """The decoded float32 weight (out_features, in_features) on the layout's device."""
        return torch.from_numpy(self.to_matrix().to_dense()).to(self.device)


def _slab_rows(matrix: CompressedMatrix, slabs: int, rows: int) -> CompressedMatrix:
    """``matrix`` with each row's weights in column slab ``s`` as row ``row * slabs + s`` (columns
    counted from the slab's first), ``rows * slabs`` rows (those past the matrix's empty)."""
    out_features, in_features = matrix.shape
    width = slab_width(in_features, slabs)
    col = matrix.col_idx.astype(np.int64)
    row = np.repeat(np.arange(out_features), np.diff(matrix.row_ptr))
    counts = np.bincount(row * slabs + col // width, minlength=rows * slabs)
    row_ptr = np.concatenate(([0], np.cumsum(counts)))
    return CompressedMatrix(
        (rows * slabs, width), matrix.codebook, row_ptr, col % width, matrix.codes, matrix.bits
    )


def _explicit_coding(matrix: CompressedMatrix, gaps: np.ndarray, coding, max_table_bits: int) -> Coding:
    """The code for a caller's ``(gap_raw_bits, code_raw_bits, q_levels)``, or ValueError naming
    what does not fit."""
    if not isinstance(coding, tuple) or len(coding) != 3:
        raise ValueError(f"coding must be a (gap_raw_bits, code_raw_bits, q_levels) tuple, got {coding!r}")
    gap_bits, code_bits, q_levels = coding
    for name, value, low in (
        ("gap_raw_bits", gap_bits, 0),
        ("code_raw_bits", code_bits, 0),
        ("q_levels", q_levels, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    k = int(matrix.codebook.size)
    if code_bits > matrix.bits:
        raise ValueError(f"code_raw_bits={code_bits} exceeds the {matrix.bits}-bit codes")
    n_sym = high_codes(k, code_bits) * q_levels + 2
    if n_sym > 1 << max_table_bits or q_levels << gap_bits > MAX_ADVANCE:
        raise ValueError(
            f"coding {coding} with {k} codebook entries needs {n_sym} symbols (at most "
            f"{1 << max_table_bits}) and advances of {q_levels << gap_bits} columns (at most {MAX_ADVANCE})"
        )
    limit = min(max_table_bits, MAX_SYMBOL_BITS - gap_bits - code_bits)
    counts = _symbol_counts(matrix.codes, gaps, k, gap_bits, code_bits, q_levels)
    if limit < 1 or np.count_nonzero(counts) + 1 > 1 << limit:
        raise ValueError(
            f"coding {coding} leaves codewords of {limit} bits for {np.count_nonzero(counts) + 1} symbols"
        )
    return Coding(gap_bits, code_bits, q_levels, end_code(counts, limit))


def slab_width(in_features: int, slabs: int) -> int:
    """Columns of each of ``slabs`` slabs (the last may hold fewer): a multiple of 16 (the kernels'
    x loads stay aligned past a slab's first column), ``in_features`` for one slab."""
    if slabs == 1:
        return in_features
    return -(-in_features // (slabs * 16)) * 16


def stored_rows(out_features: int, rows_per_program: int, slabs: int) -> int:
    """Rows of a layout's stream: ``out_features``; with ``slabs > 1`` each block of
    ``rows_per_program`` sorted rows (the last padded with empty rows) once per slab."""
    if slabs == 1:
        return out_features
    return slabs * -(-out_features // rows_per_program) * rows_per_program


def stored_warps(rows: int, pieces: int) -> int:
    """Warps whose words are stored: those holding a piece (a program's lanes past the last row
    read all ones: END). Public for meta-device layouts (`perf.cost.launches.huffman_shell`)."""
    return -(-rows * pieces // WARP_LANES)


def _lane_words(warp_base: np.ndarray) -> np.ndarray:
    """int64 per lane: its words, the head's and its warp's rows of words past the head."""
    return np.repeat(HEAD_WORDS + np.diff(warp_base) // WARP_LANES, WARP_LANES)


def _lane_starts(warp_base: np.ndarray) -> np.ndarray:
    """int64 per lane: where its words start when each lane's words are written one after the
    other."""
    words = _lane_words(warp_base)
    return np.cumsum(words) - words


def _interleaved_order(warp_base: np.ndarray) -> np.ndarray:
    """int64 per stored word: its index when each lane's words are written one after the other
    (`_lane_starts`). Stored first are the heads (word ``j < HEAD_WORDS`` of lane ``l`` of warp
    ``g`` at ``32 (HEAD_WORDS g + j) + l``), then the rest (word ``j`` at ``32 HEAD_WORDS n_warps +
    warp_base[g] + 32 (j - HEAD_WORDS) + l``)."""
    n_warps = warp_base.size - 1
    starts = _lane_starts(warp_base)
    head = np.arange(n_warps * HEAD_WORDS * WARP_LANES)
    warp, word = head // (HEAD_WORDS * WARP_LANES), head // WARP_LANES % HEAD_WORDS
    head_order = starts[warp * WARP_LANES + head % WARP_LANES] + word
    rows = np.diff(warp_base) // WARP_LANES
    warp = np.repeat(np.arange(n_warps), rows * WARP_LANES)
    rest = np.arange(int(warp_base[-1])) - warp_base[warp]
    rest_order = starts[warp * WARP_LANES + rest % WARP_LANES] + HEAD_WORDS + rest // WARP_LANES
    return np.concatenate((head_order, rest_order))


def _padding_masks(lane_words: np.ndarray, lane_bits: np.ndarray) -> np.ndarray:
    """uint32 per word of the lanes written one after the other: the bits of every lane at and
    past its first ``lane_bits`` (its padding, all ones)."""
    lane = np.repeat(np.arange(lane_words.size), lane_words)
    j = np.arange(lane.size) - np.repeat(np.cumsum(lane_words) - lane_words, lane_words)
    left = np.clip(lane_bits[lane] - j * 32, 0, 32).astype(np.uint64)  # coded bits of the word
    return ((np.uint64(1) << (np.uint64(32) - left)) - np.uint64(1)).astype(np.uint32)


def _scatter(values: np.ndarray, at: np.ndarray) -> np.ndarray:
    out = np.empty_like(values)
    out[at] = values
    return out


def _stored_lengths(stored: np.ndarray, base: int, unit: int) -> np.ndarray:
    """Values (int64) from their ``uint8`` / ``int16`` (``uint16`` patterns) stored form."""
    raw = stored.view(np.uint16) if stored.dtype == np.int16 else stored
    return (raw.astype(np.int64) + base) * unit


def _cumsum_within(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Exclusive running sum of ``values`` within each run of equal (sorted) ``groups``."""
    total = np.cumsum(values) - values
    if values.size == 0:
        return total
    starts = np.flatnonzero(np.concatenate(([True], groups[1:] != groups[:-1])))
    offset = np.repeat(total[starts], np.diff(np.concatenate((starts, [values.size]))))
    return total - offset


def _pack_codewords(
    codewords: np.ndarray, lengths: np.ndarray, starts: np.ndarray, n_words: int
) -> np.ndarray:
    """Write each codeword (<= 32 bits) MSB first at its bit position (`compress.huffman`'s bit
    order) into ``n_words`` uint32 words; bits no codeword covers stay zero."""
    starts = starts.astype(np.uint64)
    shift = np.uint64(64) - (starts & np.uint64(31)) - lengths.astype(np.uint64)
    placed = codewords.astype(np.uint64) << shift  # in the 64-bit window of the start word
    word = (starts >> np.uint64(5)).astype(np.int64)
    # Codewords of one word hold disjoint bits: their sum is their OR (exact in float64).
    high = np.bincount(word, weights=(placed >> np.uint64(32)).astype(np.float64), minlength=n_words)
    spill = shift < np.uint64(32)
    low = np.bincount(
        word[spill] + 1, weights=(placed[spill] & np.uint64(0xFFFFFFFF)).astype(np.float64), minlength=n_words
    )
    return (high + low[:n_words]).astype(np.uint64).astype(np.uint32)


def _offset_array(values: np.ndarray, n_words: int) -> np.ndarray:
    return values.astype(np.int32 if n_words < MAX_INT32_OFFSET_WORDS else np.int64)


def _fail(message: str):
    raise HuffmanLayoutError(message)


_ALL_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)


def _peek(uwords: np.ndarray, pos: np.ndarray, end: np.ndarray, nbits) -> np.ndarray:
    """The next ``nbits`` (1..32) bits at ``pos`` (int64), bits at or past ``end`` reading as one
    (as the kernels read them: no word outside ``[pos, end)`` is touched)."""
    w = pos >> 5
    last = uwords.size - 1
    hi = np.where(w * 32 < end, uwords[np.clip(w, 0, last)], np.uint64(0))
    lo = np.where((w + 1) * 32 < end, uwords[np.clip(w + 1, 0, last)], np.uint64(0))
    window = (hi << np.uint64(32)) | lo
    valid = np.clip(end - w * 32, 0, 64).astype(np.uint64)
    ones = np.where(valid >= 64, np.uint64(0), _ALL_ONES >> np.minimum(valid, np.uint64(63)))
    ones = np.where(valid == 0, _ALL_ONES, ones)
    window |= ones
    nbits = np.asarray(nbits, dtype=np.uint64)
    top = (window << (pos & 31).astype(np.uint64)) >> np.uint64(32)
    return ((top >> (np.uint64(32) - nbits)) & ((np.uint64(1) << nbits) - np.uint64(1))).astype(np.int64)


def _check_meta(arrays: dict[str, np.ndarray], meta: dict[str, int]):
    """The fields' shapes, dtypes and ranges; returns the Huffman code."""
    rows, cols = meta["out_features"], meta["in_features"]
    if not 1 <= rows < 2**31 or not 1 <= cols <= MAX_IN_FEATURES:
        _fail(f"shape ({rows}, {cols}) must have 1..2**31-1 rows and 1..{MAX_IN_FEATURES} columns")
    try:
        bits = check_bits(meta["code_bits"], "code_bits")
    except (TypeError, ValueError) as exc:
        raise HuffmanLayoutError(str(exc)) from exc
    codebook = arrays["codebook"]
    if codebook.dtype != np.float32 or codebook.ndim != 1 or not 1 <= codebook.size <= 2**bits:
        _fail(f"codebook must be float32 with 1..{2**bits} entries, got {codebook.dtype} {codebook.shape}")
    if not np.all(np.isfinite(codebook)):
        _fail("codebook holds NaN or inf values")
    k, q_levels = int(codebook.size), meta["q_levels"]
    gap_bits, code_bits = meta["gap_raw_bits"], meta["code_raw_bits"]
    if code_bits > bits or q_levels < 1:
        _fail(f"code_raw_bits={code_bits} must be <= code_bits={bits} and q_levels={q_levels} >= 1")
    n_sym = high_codes(k, code_bits) * q_levels + 2
    if n_sym > 1 << MAX_TABLE_BITS or q_levels << gap_bits > MAX_ADVANCE:
        _fail(f"{n_sym} symbols or advances of {q_levels << gap_bits} columns exceed the decode table")
    pieces, rpp, slabs = meta["pieces"], meta["rows_per_program"], meta["slabs"]
    if slabs < 1 or slabs & (slabs - 1) or slabs > cols:
        _fail(f"slabs={slabs} must be a power of two <= in_features={cols}")
    width = slab_width(cols, slabs)
    if pieces < 1 or pieces & (pieces - 1) or pieces > _pow2_at_most(width):
        _fail(f"pieces={pieces} must be a power of two <= the slab's {width} columns")
    if rpp * pieces not in PROGRAM_LANE_CHOICES:
        _fail(f"rows_per_program={rpp} x pieces={pieces} must be one of {PROGRAM_LANE_CHOICES} lanes")
    orig_rows, rows = rows, stored_rows(rows, rpp, slabs)
    if rows * pieces >= 2**31:
        _fail(f"{rows} rows x {pieces} pieces: a layout holds fewer than 2**31 pieces")
    lengths = arrays["code_lengths"]
    if lengths.dtype != np.uint8 or lengths.shape != (n_sym,):
        _fail(f"code_lengths must be uint8[{n_sym}], got {lengths.dtype} {lengths.shape}")
    try:
        code = HuffmanCode(lengths, MAX_TABLE_BITS)
    except (TypeError, ValueError) as exc:
        raise HuffmanLayoutError(f"code_lengths: {exc}") from exc
    used = np.flatnonzero(lengths)
    if used.size < 2 or lengths[-1] != lengths.max():
        _fail("code_lengths: END must be the all-ones codeword of a code of two or more symbols")
    if int(lengths[: n_sym - 2].max(initial=0)) + gap_bits + code_bits > MAX_SYMBOL_BITS:
        _fail(f"a codeword with its {gap_bits + code_bits} raw bits exceeds {MAX_SYMBOL_BITS} bits")
    n_warps = stored_warps(rows, pieces)
    words, warp_base = arrays["words"], arrays["warp_base"]
    if warp_base.dtype not in (np.int32, np.int64) or warp_base.shape != (n_warps + 1,):
        _fail(f"warp_base must be int32/int64[{n_warps + 1}], got {warp_base.dtype} {warp_base.shape}")
    sizes = np.diff(warp_base.astype(np.int64))
    if warp_base[0] != 0 or np.any(sizes < 0) or np.any(sizes % WARP_LANES):
        _fail("warp_base must start at 0 and grow by multiples of 32 words")
    if sizes.size and sizes.max() // WARP_LANES * 32 > width * MAX_SYMBOL_BITS + 31:
        past = sizes.max() // WARP_LANES
        _fail(f"a warp's lanes hold {past} words past their heads, more than {width} columns fill")
    n_words = n_warps * HEAD_WORDS * WARP_LANES + int(warp_base[-1])
    if warp_base.dtype == np.int32 and n_words >= MAX_INT32_OFFSET_WORDS:
        _fail(f"warp_base must be int64 for {n_words} words (int32 below {MAX_INT32_OFFSET_WORDS})")
    if words.dtype != np.int32 or words.shape != (n_words,):
        got = f"{words.dtype} {words.shape}"
        _fail(f"words must be int32[{n_words}] ({n_warps} heads + warp_base[-1] words), got {got}")
    seg_span = arrays["seg_span"]
    if seg_span.dtype not in (np.uint8, np.int16) or seg_span.shape != (rows * (pieces - 1),):
        _fail(f"seg_span must be uint8/int16[{rows * (pieces - 1)}], got {seg_span.dtype} {seg_span.shape}")
    row_ids = arrays["row_ids"]
    if row_ids.dtype not in (np.int16, np.int32) or row_ids.shape != (rows,):
        _fail(f"row_ids must be int16/int32[{rows}], got {row_ids.dtype} {row_ids.shape}")
    per_slab = row_ids.astype(np.int64).reshape(slabs, -1)
    if not np.array_equal(
        np.sort(per_slab, axis=1), np.broadcast_to(np.arange(per_slab.shape[1]), per_slab.shape)
    ):
        _fail("row_ids is not a permutation of the rows" + (" in every slab" if slabs > 1 else ""))
    if slabs > 1 and np.any(per_slab.reshape(slabs, -1, rpp)[:, :-1] >= orig_rows):
        _fail(f"row_ids: empty rows (>= out_features={orig_rows}) outside a slab's last block")
    span_unit = meta["span_unit"]
    if span_unit < 1 or span_unit & (span_unit - 1) or span_unit > 1 << 16:
        _fail(f"span_unit={span_unit} must be a power of two <= 65536")
    return code


def _validate(arrays: dict[str, np.ndarray], meta: dict[str, int], trace: list | None = None):
    """Check every field, then decode all lanes in lockstep (the kernels' steps); ``trace``: a list
    to append each step's (decoding lanes, their symbols' bits) to.

    Returns (table, prog_steps, seg_first, (rows, cols, codes, symbols per piece)); raises
    `HuffmanLayoutError`."""
    code = _check_meta(arrays, meta)
    orig_rows, in_features, pieces, rpp, slabs = (
        meta["out_features"],
        meta["in_features"],
        meta["pieces"],
        meta["rows_per_program"],
        meta["slabs"],
    )
    rows, cols = stored_rows(orig_rows, rpp, slabs), slab_width(in_features, slabs)
    gap_bits, total_bits = meta["gap_raw_bits"], meta["total_bits"]
    k = int(arrays["codebook"].size)
    table = decode_table_entries(code, k, gap_bits, meta["code_raw_bits"], meta["q_levels"])
    n_seg, n_prog, lanes = rows * pieces, -(-rows // rpp), rpp * pieces

    n_lanes = stored_warps(rows, pieces) * WARP_LANES
    spans = _stored_lengths(arrays["seg_span"], meta["span_base"], meta["span_unit"]).reshape(
        rows, pieces - 1
    )
    first_col = np.concatenate((np.zeros((rows, 1), np.int64), np.cumsum(spans, axis=1)), axis=1)
    if first_col[:, -1].max() > cols:
        _fail(f"piece spans add up to {first_col[:, -1].max()} columns, beyond in_features={cols}")
    end_col = np.zeros(n_lanes, dtype=np.int64)  # lanes past the last row hold no columns
    end_col[:n_seg] = np.concatenate((first_col[:, 1:], np.full((rows, 1), cols)), axis=1).reshape(-1)
    lane_col = np.zeros(n_lanes, dtype=np.int64)
    lane_col[:n_seg] = first_col.reshape(-1)
    warp_base = arrays["warp_base"].astype(np.int64)
    lane_words = _lane_words(warp_base)
    starts = _lane_starts(warp_base) * 32
    ends = starts + lane_words * 32
    by_lane = np.empty(arrays["words"].size, dtype=np.uint32)
    by_lane[_interleaved_order(warp_base)] = arrays["words"].view(np.uint32)

    # Lockstep decode of every lane, reads bounded by the lane's words.
    uwords = by_lane.astype(np.uint64)
    tbits = code.table_bits
    pos = starts.copy()
    coded = ends.copy()  # where each lane's symbols end: its END, else its last word's end
    col = lane_col - 1  # the column of the last kept weight
    last_weight = np.ones(n_lanes, dtype=bool)
    steps = np.zeros(n_lanes, dtype=np.int64)
    active = np.flatnonzero(pos < ends)
    out_seg, out_col, out_code = [], [], []
    end_entry = table[-1]  # the all-ones peek: END
    while active.size:
        p, e = pos[active], ends[active]
        peek = _peek(uwords, p, e, tbits)
        entry = table[peek].astype(np.int64)
        total = entry & BITS_MASK
        is_end = entry == end_entry
        if np.any(is_end):  # END: the rest of the lane must be one bits (checked below)
            done = active[is_end]
            coded[done] = pos[done]
            pos[done] = ends[done]
            keep = ~is_end
            active, p, e, entry, total = (a[keep] for a in (active, p, e, entry, total))
            if not active.size:
                break
        if trace is not None:
            trace.append((active, total))
        if np.any(p + total > e):
            bad = int(active[np.flatnonzero(p + total > e)[0]])
            _fail(f"corrupt stream: lane {bad} (sorted row {bad // pieces}) has a symbol crossing its end")
        v = _peek(uwords, p, e, total)
        weight_code = ((entry >> CODE_SHIFT) + (v >> gap_bits)) & CODE_MASK
        is_weight = weight_code < k  # an escape (and END) points past the codebook
        new_col = col[active] + (entry >> ADVANCE_SHIFT) + (v & ((1 << gap_bits) - 1))
        if np.any(is_weight & (new_col >= end_col[active])):
            bad = int(active[np.flatnonzero(is_weight & (new_col >= end_col[active]))[0]])
            _fail(f"corrupt stream: lane {bad} decodes a column beyond its end column {end_col[bad]}")
        out_seg.append(active[is_weight])
        out_col.append(new_col[is_weight])
        out_code.append(weight_code[is_weight])
        col[active] = new_col
        pos[active] = p + total
        last_weight[active] = is_weight
        steps[active] += 1
        active = active[pos[active] < ends[active]]
    if not np.all(last_weight):
        _fail(f"corrupt stream: lane {int(np.flatnonzero(~last_weight)[0])} ends with an escape")
    padding = _padding_masks(lane_words, coded - starts)
    unpadded = (by_lane & padding) != padding
    if np.any(unpadded):
        word = int(np.flatnonzero(unpadded)[0])
        _fail(f"corrupt stream: zero bits after a lane's END (word {word} of the lanes' words in order)")
    if int((coded - starts).sum()) != total_bits:
        _fail(f"stream holds {int((coded - starts).sum())} coded bits, metadata says total_bits={total_bits}")
    seg = np.concatenate(out_seg) if out_seg else np.zeros(0, dtype=np.int64)
    col_out = np.concatenate(out_col) if out_col else np.zeros(0, dtype=np.int64)
    code_out = np.concatenate(out_code) if out_code else np.zeros(0, dtype=np.int64)
    if seg.size != meta["nnz"]:
        _fail(f"stream holds {seg.size} kept weights, metadata says nnz={meta['nnz']}")
    row_ids = arrays["row_ids"].astype(np.int64)
    orig_row = row_ids[seg // pieces]
    if np.any(orig_row >= orig_rows):
        _fail(f"corrupt stream: an empty row (row id >= out_features={orig_rows}) holds a weight")
    slab_of = np.arange(rows) // (rows // slabs)  # the slab of each stored row
    col_out = col_out + slab_of[seg // pieces] * cols  # counted from the slab's first column
    if np.any(col_out >= in_features):
        _fail(f"corrupt stream: a weight of the last slab decodes past in_features={in_features}")
    order = np.lexsort((col_out, orig_row))
    per_seg = np.bincount(seg, minlength=n_seg)
    per_piece = per_seg.reshape(rows, pieces)
    per_row = per_piece.sum(axis=1)
    row_count = np.bincount(row_ids, weights=per_row, minlength=rows // slabs)[:orig_rows]
    row_ptr = np.concatenate(([0], np.cumsum(row_count.astype(np.int64))))
    # A row's weights in CSR order: slab by slab, each slab's pieces in order.
    by_slab = np.bincount(row_ids * slabs + slab_of, weights=per_row, minlength=rows).reshape(-1, slabs)
    before = (np.cumsum(by_slab, axis=1) - by_slab).astype(np.int64)[row_ids, slab_of]
    start = row_ptr[np.minimum(row_ids, orig_rows)] + before
    seg_first = (start[:, None] + np.cumsum(per_piece, axis=1) - per_piece).reshape(-1)
    padded_steps = np.zeros(n_prog * lanes, dtype=np.int64)  # lanes of warps not stored: none
    padded_steps[:n_lanes] = steps
    prog_steps = padded_steps.reshape(n_prog, lanes).max(axis=1).astype(np.int32)
    decoded = (orig_row[order], col_out[order].astype(np.int32), code_out[order].astype(np.uint8))
    return table, prog_steps, seg_first.astype(np.int64), (*decoded, steps[:n_seg])
