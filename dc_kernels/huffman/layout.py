"""The Huffman GPU form of a compressed FC layer: decodable in parallel, fused into the GEMV.

Pure NumPy/PyTorch (no Triton here). The kernels are in `dc_kernels.huffman.kernels`.

What is coded: one joint symbol per step
----------------------------------------
Every kept weight becomes one symbol ``code * E + r`` that carries both its codebook index and
the number ``r < E`` of pruned columns skipped before it; a gap ``g >= E`` is preceded by
``g // E`` *escape* symbols (symbol ``k * E``, ``k`` the codebook size), each of which advances
``E`` columns and holds no weight. One table lookup therefore yields a weight's code and column
at once. On the paper's random layers (uniform codes) the joint code costs the same bits as
Huffman-coding codes and gaps separately and comes within 0.5% of the entropy of codes plus
gaps, while decoding needs one lookup per weight instead of two (README: measured bits). ``E``
is chosen per layer among powers of two (and the largest that fits the table), together with the
length limit (12, 10 or 8 bits: small layers prefer small tables), minimizing the GPU-resident
bits plus one bit per escape (an escape costs a decode step, like a weight).

Codes are canonical and length-limited (`compress.huffman`, at most ``MAX_TABLE_BITS`` = 12
bits), so one flat table of ``2**T`` int32 entries (``T`` <= 12: at most 16 KB) decodes a step.
The bit order is `compress.huffman`'s: bit ``p`` is bit ``31 - p % 32`` of ``words[p // 32]``.

Segments: column blocks of rows
-------------------------------
The columns are cut into ``col_blocks`` (a power of two) blocks of ``block_cols`` columns; a
segment is one row's kept weights in one block, gaps counted from the block's first column.
Segments are stored in row-major order (segment ``row * col_blocks + block``), one after the
other (padded only to their length unit, below). One GPU program decodes ``rows_per_program``
whole rows, one lane per segment, so a row's partial sums are reduced inside the program (no
atomics) and no segment needs a stored row or column. ``col_blocks`` is picked so that a segment holds about
``segment_symbols`` symbols: the steps of the decode chain, traded against offset bits.

Offsets: ``prog_base[p]`` is the bit where program ``p``'s first segment starts
(``prog_base[-1]`` = the stream's length); segment ``s`` spans ``(seg_len[s] + len_base) *
len_unit`` bits. Segments are zero-padded to whole units of ``len_unit`` bits (1, 2, 4 or 8, no
longer than the shortest codeword, so a decoder stops when less than a unit is left) so that
``seg_len`` fits ``uint8``; where no unit does, ``len_unit`` is 1 and ``seg_len`` is ``int16``
holding ``uint16``. A program finds its segments' starts with one prefix sum of their lengths.

Derived at build or load (not stored, but resident on the GPU and counted in the bits):
the decode table (``int32[2**T]``: ``length | is_weight << 5 | code << 6 | advance << 14``, 0
for bit patterns that start no codeword) and ``prog_steps`` (the most symbols of any segment of
each program: the kernels' loop count). ``seg_first`` (the index of each segment's first kept
weight, for the standalone decoder's output) is derived too and not counted.

Loading (`HuffmanLayout.from_state`) decodes every segment on the CPU, with every read bounded by
the segment's extent, and raises `HuffmanLayoutError` on any inconsistency before a tensor is
used; kernels then only ever see streams that decode exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from compress.huffman import HuffmanCode
from compress.matrix import CompressedMatrix, check_bits

MAX_TABLE_BITS = 12  # 2**12 int32 entries = 16 KB
SHORTER_LIMITS = (MAX_TABLE_BITS, 10, 8)  # length limits tried: smaller tables for small layers
LENGTH_UNITS = (1, 2, 4, 8)  # segment padding units (bits) tried for one-byte segment lengths
DEFAULT_SEGMENT_SYMBOLS = 32
PROGRAM_LANES = 128  # lanes (segments) of one program when a row has fewer column blocks
MAX_COL_BLOCKS = 256  # lanes of one program <= 256 (8 warps, one lane per thread)
MAX_BLOCK_COLS = 4096  # a segment then spans < 2**16 bits (<= 4096 symbols of <= 12 bits)
LENGTH_MASK, WEIGHT_FLAG, CODE_SHIFT, ADVANCE_SHIFT = 31, 1 << 5, 6, 14
TENSOR_NAMES = ("words", "prog_base", "seg_len", "code_lengths", "codebook")
METADATA_NAMES = (
    "out_features",
    "in_features",
    "code_bits",
    "escape",
    "col_blocks",
    "rows_per_program",
    "len_unit",
    "len_base",
    "total_bits",
    "nnz",
)


class HuffmanLayoutError(ValueError):
    """A Huffman layout whose fields are inconsistent or whose stream does not decode exactly."""


def _pow2_at_most(n: int) -> int:
    return 1 << (max(int(n), 1).bit_length() - 1)


def choose_col_blocks(matrix: CompressedMatrix, segment_symbols: int) -> int:
    """Column blocks per row (a power of two) for segments of about ``segment_symbols`` symbols."""
    rows, cols = matrix.shape
    per_row = matrix.nnz / rows
    want = max(1.0, per_row / segment_symbols)
    blocks = 1 << max(0, round(np.log2(want)))
    least = _pow2_at_most(-(-cols // MAX_BLOCK_COLS)) * 2 if cols > MAX_BLOCK_COLS else 1
    return int(min(max(blocks, least), _pow2_at_most(cols), MAX_COL_BLOCKS))


def _segment_gaps(matrix: CompressedMatrix, col_blocks: int, block_cols: int):
    """(segment of each kept weight, pruned columns skipped before it within its segment)."""
    cols = matrix.col_idx.astype(np.int64)
    block = cols // block_cols
    seg = matrix.row_idx * col_blocks + block
    prev = np.empty_like(cols)
    first = np.ones(cols.size, dtype=bool)
    if cols.size:
        prev[1:] = cols[:-1]
        first[1:] = seg[1:] != seg[:-1]
    gaps = np.where(first, cols - block * block_cols, cols - prev - 1)
    return seg, gaps


def _escape_candidates(codebook_size: int, max_gap: int) -> list[int]:
    largest = ((1 << MAX_TABLE_BITS) - 1) // codebook_size  # k * E + 1 symbols must fit the table
    cands = [1 << i for i in range(13) if 1 << i <= largest and (1 << i) <= max(max_gap + 1, 1) * 2]
    if largest <= max_gap and largest not in cands:
        cands.append(largest)
    return cands or [1]


def _joint_counts(codes: np.ndarray, gaps: np.ndarray, k: int, escape: int) -> np.ndarray:
    counts = np.bincount(codes.astype(np.int64) * escape + gaps % escape, minlength=k * escape + 1)
    counts[k * escape] = int(np.sum(gaps // escape))
    return counts


def _resident_bits(code: HuffmanCode, counts: np.ndarray) -> int:
    return code.encoded_bits(counts) + 32 * (1 << code.table_bits) + 8 * code.alphabet_size


def choose_escape(matrix: CompressedMatrix, gaps: np.ndarray) -> tuple[int, HuffmanCode]:
    """The escape width ``E`` and its code: fewest resident bits plus one bit per escape. Small
    layers also try shorter length limits, whose decode tables cost less than their codes."""
    k = int(matrix.codebook.size)
    best = None
    for escape in _escape_candidates(k, int(gaps.max()) if gaps.size else 0):
        counts = _joint_counts(matrix.codes, gaps, k, escape)
        used = int(np.count_nonzero(counts))
        for max_len in SHORTER_LIMITS:
            if used > 1 << max_len:
                break
            code = HuffmanCode.from_counts(counts, max_len)
            score = _resident_bits(code, counts) + int(counts[k * escape])
            if best is None or score < best[0]:
                best = (score, escape, code)
    return best[1], best[2]


def _fused_table(code: HuffmanCode, k: int, escape: int) -> np.ndarray:
    """`compress.huffman`'s table (symbol, length) turned into the kernels' fused entries."""
    if code.table_bits == 0:  # no symbols: two invalid entries keep a 1-bit peek in bounds
        return np.zeros(2, dtype=np.int32)
    base = code.decode_table().astype(np.int64)
    symbol, length = base & 0xFFFF, base >> 16
    is_weight = symbol < k * escape
    advance = np.where(is_weight, symbol % escape + 1, escape)
    entry = length | (is_weight * WEIGHT_FLAG) | ((symbol // escape) * is_weight) << CODE_SHIFT
    entry |= advance << ADVANCE_SHIFT
    return np.where(length > 0, entry, 0).astype(np.int32)


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
    escape: int
    col_blocks: int
    rows_per_program: int
    len_unit: int
    len_base: int
    total_bits: int
    nnz: int
    words: torch.Tensor  # int32 (uint32 bit patterns), >= 1 word
    prog_base: torch.Tensor  # int32 or int64 [n_programs + 1]
    seg_len: torch.Tensor  # uint8 or int16 (uint16 bit patterns) [n_segments]
    code_lengths: torch.Tensor  # uint8 [codebook_size * escape + 1]
    codebook: torch.Tensor  # float32 [k]
    table: torch.Tensor  # int32 [2**table_bits], derived
    prog_steps: torch.Tensor  # int32 [n_programs], derived
    seg_first: torch.Tensor | None  # int64 [n_segments], derived; None: left out

    # ------------------------------------------------------------------ geometry
    @property
    def shape(self) -> tuple[int, int]:
        return (self.out_features, self.in_features)

    @property
    def block_cols(self) -> int:
        return -(-self.in_features // self.col_blocks)

    @property
    def n_segments(self) -> int:
        return self.out_features * self.col_blocks

    @property
    def n_programs(self) -> int:
        return -(-self.out_features // self.rows_per_program)

    @property
    def lanes(self) -> int:
        return self.rows_per_program * self.col_blocks

    @property
    def table_bits(self) -> int:
        return int(self.table.numel()).bit_length() - 1

    @property
    def codebook_size(self) -> int:
        return int(self.codebook.numel())

    @property
    def device(self) -> torch.device:
        return self.words.device

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_matrix(
        cls,
        matrix: CompressedMatrix,
        segment_symbols: int = DEFAULT_SEGMENT_SYMBOLS,
        escape: int | None = None,
        device: torch.device | str | None = None,
    ) -> HuffmanLayout:
        """Encode a canonical matrix (vectorized). ``segment_symbols``: target symbols per segment;
        ``escape=None`` picks ``E`` by measured bits (module docstring)."""
        if not isinstance(matrix, CompressedMatrix):
            raise TypeError(f"matrix must be a CompressedMatrix, got {type(matrix).__name__}")
        if isinstance(segment_symbols, bool) or not isinstance(segment_symbols, int) or segment_symbols < 1:
            raise ValueError(f"segment_symbols must be an int >= 1, got {segment_symbols!r}")
        rows, cols = matrix.shape
        if cols > MAX_COL_BLOCKS * MAX_BLOCK_COLS:
            raise ValueError(
                f"in_features={cols} exceeds the Huffman form's {MAX_COL_BLOCKS * MAX_BLOCK_COLS} columns"
            )
        k = int(matrix.codebook.size)
        col_blocks = choose_col_blocks(matrix, segment_symbols)
        block_cols = -(-cols // col_blocks)
        rows_per_program = max(1, PROGRAM_LANES // col_blocks)
        seg_of_weight, gaps = _segment_gaps(matrix, col_blocks, block_cols)
        if escape is None:
            escape, code = choose_escape(matrix, gaps)
        else:
            if isinstance(escape, bool) or not isinstance(escape, int) or escape < 1:
                raise ValueError(f"escape must be an int >= 1, got {escape!r}")
            if k * escape + 1 > 1 << MAX_TABLE_BITS:
                raise ValueError(
                    f"escape={escape} with {k} codebook entries needs {k * escape + 1} symbols, "
                    f"more than the {1 << MAX_TABLE_BITS} of a {MAX_TABLE_BITS}-bit table"
                )
            code = HuffmanCode.from_counts(_joint_counts(matrix.codes, gaps, k, escape), MAX_TABLE_BITS)

        # Symbol stream: each kept weight's escapes, then its joint symbol.
        n_escapes = gaps // escape
        weight_pos = np.arange(matrix.nnz, dtype=np.int64) + np.cumsum(n_escapes)
        n_symbols = matrix.nnz + int(n_escapes.sum())
        symbols = np.full(n_symbols, k * escape, dtype=np.int64)
        symbols[weight_pos] = matrix.codes.astype(np.int64) * escape + gaps % escape

        # Segments padded to whole length units, so that their lengths fit in a byte.
        n_seg = rows * col_blocks
        seg_of_symbol = np.repeat(seg_of_weight, n_escapes + 1)
        sym_len = code.lengths.astype(np.int64)[symbols]
        seg_bits = np.bincount(seg_of_symbol, weights=sym_len, minlength=n_seg).astype(np.int64)
        seg_syms = np.bincount(seg_of_symbol, minlength=n_seg).astype(np.int64)
        seg_weights = np.bincount(seg_of_weight, minlength=n_seg).astype(np.int64)
        used = code.lengths[code.lengths > 0]
        len_unit, len_base, seg_len = _segment_lengths(seg_bits, int(used.min()) if used.size else 1)
        seg_start = np.concatenate(([0], np.cumsum(_stored_lengths(seg_len, len_base, len_unit))))
        total_bits = int(seg_start[-1])
        sym_start = np.cumsum(sym_len) - sym_len
        sym_start += (seg_start[:-1] - np.concatenate(([0], np.cumsum(seg_bits)[:-1])))[seg_of_symbol]
        words = _pack_codewords(code.codewords()[symbols], sym_len, sym_start, max(1, -(-total_bits // 32)))
        lanes = rows_per_program * col_blocks
        n_prog = -(-rows // rows_per_program)
        prog_base = seg_start[np.minimum(np.arange(n_prog + 1) * lanes, n_seg)]
        padded_syms = np.zeros(n_prog * lanes, dtype=np.int64)
        padded_syms[:n_seg] = seg_syms
        prog_steps = padded_syms.reshape(n_prog, lanes).max(axis=1)
        tensors = {
            "words": torch.from_numpy(words.view(np.int32)),
            "prog_base": torch.from_numpy(_offset_array(prog_base, total_bits)),
            "seg_len": torch.from_numpy(seg_len),
            "code_lengths": torch.from_numpy(code.lengths.copy()),
            "codebook": torch.from_numpy(matrix.codebook.copy()),
            "table": torch.from_numpy(_fused_table(code, k, escape)),
            "prog_steps": torch.from_numpy(prog_steps.astype(np.int32)),
            "seg_first": torch.from_numpy(
                np.concatenate(([0], np.cumsum(seg_weights)[:-1])).astype(np.int64)
            ),
        }
        return cls(
            out_features=rows,
            in_features=cols,
            code_bits=matrix.bits,
            escape=int(escape),
            col_blocks=col_blocks,
            rows_per_program=rows_per_program,
            len_unit=len_unit,
            len_base=len_base,
            total_bits=total_bits,
            nnz=matrix.nnz,
            **{name: t.to(device) for name, t in tensors.items()},
        )

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], metadata: dict[str, int]) -> HuffmanLayout:
        """Rebuild from `tensors()` and `metadata()`, validating everything first: the stream is
        decoded on the CPU and any inconsistency raises `HuffmanLayoutError`."""
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
            "word_padding_bits": self.words.numel() * 32 - self.total_bits,
            "segment_length_bits": self.seg_len.numel() * self.seg_len.element_size() * 8,
            "program_offset_bits": self.prog_base.numel() * self.prog_base.element_size() * 8,
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

    # ------------------------------------------------------------------ decoding
    def decode(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, column, code) of every kept weight in CSR order: the reference of the decoder
        kernel (same lockstep steps, same bounded reads). Raises `HuffmanLayoutError`."""
        arrays = {name: t.detach().cpu().numpy() for name, t in self.tensors().items()}
        *_, (rows, cols, codes) = _validate(arrays, self.metadata())
        return rows, cols, codes

    def to_matrix(self) -> CompressedMatrix:
        rows, cols, codes = self.decode()
        row_ptr = np.zeros(self.out_features + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=self.out_features), out=row_ptr[1:])
        return CompressedMatrix(self.shape, self.codebook.cpu().numpy(), row_ptr, cols, codes, self.code_bits)

    def to_dense(self) -> torch.Tensor:
        """The decoded float32 weight (out_features, in_features) on the layout's device."""
        return torch.from_numpy(self.to_matrix().to_dense()).to(self.device)


def _segment_lengths(seg_bits: np.ndarray, min_code_length: int) -> tuple[int, int, np.ndarray]:
    """(unit, base, stored): segment ``s`` is padded to ``(base + stored[s]) * unit`` bits.

    The smallest unit (a power of two no longer than the shortest codeword, so that padding is
    never mistaken for a symbol) whose lengths span < 256 units gives ``uint8``; else ``uint16``
    bits (in an ``int16``; a segment spans < 2**16 bits)."""
    for unit in LENGTH_UNITS:
        if unit > min_code_length:
            break
        units = -(-seg_bits // unit)
        base = int(units.min())
        if int(units.max()) - base < 256:
            return unit, base, (units - base).astype(np.uint8)
    base = int(seg_bits.min())
    return 1, base, (seg_bits - base).astype(np.uint16).view(np.int16)


def _stored_lengths(seg_len: np.ndarray, base: int, unit: int) -> np.ndarray:
    """Padded segment lengths in bits (int64) from their stored form."""
    raw = seg_len.view(np.uint16) if seg_len.dtype == np.int16 else seg_len
    return (raw.astype(np.int64) + base) * unit


def _pack_codewords(
    codewords: np.ndarray, lengths: np.ndarray, starts: np.ndarray, n_words: int
) -> np.ndarray:
    """Write each codeword MSB first at its bit position (`compress.huffman`'s bit order) into
    ``n_words`` uint32 words; the bits between segments stay zero. (`huffman_encode` writes
    one gapless stream, hence this packer.)"""
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


def _offset_array(values: np.ndarray, total_bits: int) -> np.ndarray:
    return values.astype(np.int32 if total_bits < 2**31 else np.int64)


def _fail(message: str):
    raise HuffmanLayoutError(message)


def _peek(uwords: np.ndarray, pos: np.ndarray, end: np.ndarray, nbits) -> np.ndarray:
    """The next ``nbits`` (<= 32) bits at ``pos`` (int64), reading only words that overlap
    ``[pos, end)``, as the kernels do."""
    w = pos >> 5
    hi = uwords[w]
    lo = np.where((w + 1) * 32 < end, uwords[np.minimum(w + 1, uwords.size - 1)], 0).astype(np.uint64)
    window = (hi << np.uint64(32)) | lo
    nbits = np.asarray(nbits, dtype=np.uint64)
    peek = (window >> (np.uint64(64) - nbits - (pos & 31).astype(np.uint64))) & ((np.uint64(1) << nbits) - 1)
    return peek.astype(np.int64)


def _validate(arrays: dict[str, np.ndarray], meta: dict[str, int]):
    """Check every field, then decode all segments in lockstep (the decoder kernel's steps).

    Returns (table, prog_steps, seg_first, (rows, cols, codes)); raises `HuffmanLayoutError`.
    """
    rows, cols = meta["out_features"], meta["in_features"]
    if not 1 <= rows < 2**31 or not 1 <= cols < 2**31:
        _fail(f"shape ({rows}, {cols}) must have both sides in 1..2**31-1")
    try:
        bits = check_bits(meta["code_bits"], "code_bits")
    except (TypeError, ValueError) as exc:
        raise HuffmanLayoutError(str(exc)) from exc
    codebook = arrays["codebook"]
    if codebook.dtype != np.float32 or codebook.ndim != 1 or not 1 <= codebook.size <= 2**bits:
        _fail(f"codebook must be float32 with 1..{2**bits} entries, got {codebook.dtype} {codebook.shape}")
    if not np.all(np.isfinite(codebook)):
        _fail("codebook holds NaN or inf values")
    k, escape, col_blocks = int(codebook.size), meta["escape"], meta["col_blocks"]
    if escape < 1 or k * escape + 1 > 1 << MAX_TABLE_BITS:
        _fail(f"escape={escape} with {k} codebook entries exceeds the {1 << MAX_TABLE_BITS}-symbol table")
    if (
        col_blocks < 1
        or col_blocks & (col_blocks - 1)
        or col_blocks > min(MAX_COL_BLOCKS, _pow2_at_most(cols))
    ):
        _fail(f"col_blocks={col_blocks} must be a power of two <= min({MAX_COL_BLOCKS}, in_features)")
    block_cols = -(-cols // col_blocks)
    if block_cols > MAX_BLOCK_COLS:
        _fail(f"col_blocks={col_blocks} gives blocks of {block_cols} > {MAX_BLOCK_COLS} columns")
    rpp = meta["rows_per_program"]
    if rpp != max(1, PROGRAM_LANES // col_blocks):
        _fail(
            f"rows_per_program={rpp} must be {max(1, PROGRAM_LANES // col_blocks)} "
            f"for col_blocks={col_blocks}"
        )
    lengths = arrays["code_lengths"]
    if lengths.dtype != np.uint8 or lengths.shape != (k * escape + 1,):
        _fail(f"code_lengths must be uint8[{k * escape + 1}], got {lengths.dtype} {lengths.shape}")
    try:
        code = HuffmanCode(lengths, MAX_TABLE_BITS)
    except (TypeError, ValueError) as exc:
        raise HuffmanLayoutError(f"code_lengths: {exc}") from exc
    table = _fused_table(code, k, escape)

    n_seg, n_prog, lanes = rows * col_blocks, -(-rows // rpp), rpp * col_blocks
    words, prog_base, seg_len = arrays["words"], arrays["prog_base"], arrays["seg_len"]
    total_bits = meta["total_bits"]
    if words.dtype != np.int32 or words.ndim != 1 or words.size != max(1, -(-total_bits // 32)):
        _fail(
            f"words must be int32[{max(1, -(-total_bits // 32))}] for total_bits={total_bits}, "
            f"got {words.dtype} {words.shape}"
        )
    if prog_base.dtype not in (np.int32, np.int64) or prog_base.shape != (n_prog + 1,):
        _fail(f"prog_base must be int32/int64[{n_prog + 1}], got {prog_base.dtype} {prog_base.shape}")
    if seg_len.dtype not in (np.uint8, np.int16) or seg_len.shape != (n_seg,):
        _fail(f"seg_len must be uint8/int16[{n_seg}], got {seg_len.dtype} {seg_len.shape}")
    unit = meta["len_unit"]
    used = code.lengths[code.lengths > 0]
    if unit not in LENGTH_UNITS or (used.size and unit > int(used.min())):
        _fail(f"len_unit={unit} must be in {LENGTH_UNITS} and no longer than the shortest codeword")
    seg_bits = _stored_lengths(seg_len, meta["len_base"], unit)
    # Lengths beyond what a block can hold are absurd: refuse before decoding anything.
    if seg_bits.size and seg_bits.max() > block_cols * MAX_TABLE_BITS + unit - 1:
        _fail(f"a segment length of {seg_bits.max()} bits exceeds {block_cols * MAX_TABLE_BITS + unit - 1}")
    padded = np.zeros(n_prog * lanes, dtype=np.int64)
    padded[:n_seg] = seg_bits
    prog_bits = padded.reshape(n_prog, lanes).sum(axis=1)
    base = prog_base.astype(np.int64)
    if base[0] != 0 or not np.array_equal(np.diff(base), prog_bits) or base[-1] != total_bits:
        _fail(f"prog_base does not match the segment lengths (stream of total_bits={total_bits})")
    starts = np.concatenate(([0], np.cumsum(seg_bits)))
    ends = starts[1:]
    starts = starts[:-1]

    # Lockstep decode of every segment, reads bounded by the segment's extent.
    uwords = words.view(np.uint32).astype(np.uint64)
    tbits = code.table_bits
    pos = starts.copy()
    colpos = (np.arange(n_seg) % col_blocks) * block_cols
    col_end = np.minimum(colpos + block_cols, cols)
    last_weight = np.ones(n_seg, dtype=bool)
    steps = np.zeros(n_seg, dtype=np.int64)
    # A segment decodes while a whole unit is left: padding is shorter than any codeword.
    active = np.flatnonzero(pos + unit <= ends)
    out_seg, out_col, out_code = [], [], []
    while active.size:
        p, e = pos[active], ends[active]
        entry = table[_peek(uwords, p, e, tbits)].astype(np.int64)
        length = entry & LENGTH_MASK
        if np.any(length == 0) or np.any(p + length > e):
            bad = active[np.flatnonzero((length == 0) | (p + length > e))[0]]
            _fail(
                f"corrupt stream: segment {bad} (row {bad // col_blocks}) has no codeword ending "
                f"inside it at bit {pos[bad]}"
            )
        is_weight = (entry & WEIGHT_FLAG) != 0
        advance = entry >> ADVANCE_SHIFT
        col = colpos[active] + advance - 1
        if np.any(is_weight & (col >= col_end[active])):
            bad = active[np.flatnonzero(is_weight & (col >= col_end[active]))[0]]
            _fail(f"corrupt stream: segment {bad} decodes a column beyond its block (< {col_end[bad]})")
        out_seg.append(active[is_weight])
        out_col.append(col[is_weight])
        out_code.append((entry[is_weight] >> CODE_SHIFT) & 0xFF)
        colpos[active] += advance
        pos[active] = p + length
        last_weight[active] = is_weight
        steps[active] += 1
        active = active[pos[active] + unit <= ends[active]]
    padding = np.flatnonzero(pos < ends)
    if padding.size and np.any(_peek(uwords, pos[padding], ends[padding], ends[padding] - pos[padding])):
        _fail("corrupt stream: nonzero padding bits at the end of a segment")
    if not np.all(last_weight):
        _fail(f"corrupt stream: segment {int(np.flatnonzero(~last_weight)[0])} ends with an escape")
    seg = np.concatenate(out_seg) if out_seg else np.zeros(0, dtype=np.int64)
    order = np.argsort(seg, kind="stable")
    seg = seg[order]
    col_out = np.concatenate(out_col)[order] if out_col else np.zeros(0, dtype=np.int64)
    code_out = np.concatenate(out_code)[order] if out_code else np.zeros(0, dtype=np.int64)
    if seg.size != meta["nnz"]:
        _fail(f"stream holds {seg.size} kept weights, metadata says nnz={meta['nnz']}")
    if code_out.size and code_out.max() >= k:
        _fail(f"decoded code {code_out.max()} is outside the codebook of {k}")
    per_seg = np.bincount(seg, minlength=n_seg)
    seg_first = np.concatenate(([0], np.cumsum(per_seg)[:-1])).astype(np.int64)
    padded_steps = np.zeros(n_prog * lanes, dtype=np.int64)
    padded_steps[:n_seg] = steps
    prog_steps = padded_steps.reshape(n_prog, lanes).max(axis=1).astype(np.int32)
    decoded = (seg // col_blocks, col_out.astype(np.int32), code_out.astype(np.uint8))
    return table, prog_steps, seg_first, decoded
