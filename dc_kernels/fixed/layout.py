"""The fixed-width GPU form's layout of a compressed FC layer (NumPy/PyTorch, no Triton here).

Format ("scheduled lanes"): one GPU thread (a *lane*) decodes one row, so the column of each kept
weight is a running sum of the row's relative indices kept in that thread's registers, and a row's
sum needs no cross-lane work until the end.

* **Entries.** Each row is a sequence of ``code_bits + index_bits``-bit entries ``code | step <<
  code_bits``. ``step > 0`` is a kept weight ``code`` that sits ``step`` columns after the previous
  entry (the paper's relative index plus one: ``step - 1`` pruned columns skipped). ``step = 0``
  holds no weight and advances ``code * 2**(index_bits - 1)`` columns: a *filler* bridging a long
  gap (``code >= 1``) or a *wait* (``code = 0``, an all-zero entry that advances nothing).
* **Schedule.** Rows are sorted by entry count (longest first) and cut into blocks of
  ``block_rows`` rows, one GPU program each. A block's rows step through their entries in
  lockstep, one per *slot*, the same number of slots for every row of the block; the builder
  inserts waits so that at every slot each row is at most ``lead`` columns ahead of a schedule line
  crossing the layer at constant speed. The lanes of a warp therefore read x at neighbouring
  columns: a few cache lines per load instead of one per lane. Waits cost bits, and are counted.
* **Groups and chunks.** A row's slots are stored in 256-bit *groups* of ``256 // entry_bits``
  slots, slot ``e`` at bits ``e * entry_bits`` (constant positions: a kernel unpacks them with
  constant shifts; the ``256 % entry_bits`` top bits are zero). A block's rows have ``G`` groups
  each, cut into ``chunks`` consecutive *chunks* (the first ``G % chunks`` chunks one group longer).
  Program lane ``(t, r)`` decodes chunk ``t`` of row ``r``, from the column before it (``starts``;
  -1 for the first chunk): a program has ``chunks x block_rows`` lanes, so short rows still fill
  the GPU. The chunks of a row are summed once, after the loop, in a fixed order: results are the
  same bit for bit run to run.
* **Steps.** Storage is in *steps* of ``block_rows`` lane groups: the first 128-bit halves of the
  step's groups, then the second halves, so that one 128-bit load per lane reads a contiguous
  run. The first group of chunk ``t`` of block ``b`` is step ``b * chunks + t`` (its address needs
  nothing loaded first); the other groups follow in the *tail*, block after block, from step
  ``blocks[2 b]``, chunk after chunk.

Tensors (the module stores them as buffers): ``words`` int32 (bit pattern of uint32;
``steps * block_rows * 8``), ``blocks`` int32[2 * n_blocks] (each block's first tail step and
groups per row), ``starts`` int16 or int32 (`starts_dtype`) [n_blocks * (chunks - 1) *
block_rows] (chunk ``t >= 1`` of row ``r`` of block ``b`` at ``(b * (chunks - 1) + t - 1) *
block_rows + r``), ``row_ids`` int32[out_features] (the original row of each sorted position),
``codebook`` float32[k].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from compress.matrix import CompressedMatrix, check_bits
from compress.relative_index import check_index_bits

GROUP_WORDS = 8  # a lane's group: two 128-bit loads
HALF_WORDS = 4
GROUP_BITS = 32 * GROUP_WORDS
# Entries are at least 4 bits wide (at most 64 slots a group): with narrower ones the kernels'
# fully unrolled walk of a group keeps too many loads in flight and spills registers. A layer with
# 1-3-bit codes gets a wider index field, which only saves fillers.
MIN_ENTRY_BITS = 4
MAX_BLOCK_ROWS = 32
MAX_LANES = 1024  # threads of one program (32 warps)
MIN_PROGRAMS = 128  # about one program per SM (132 on an H100 or H200)
SMS = 132  # SMs of the GPU the defaults plan for (H100, H200)
STEP_INSTRUCTIONS = 400  # instructions of a warp's loop trip at batch 1 (one group of each lane)
OUTSIDE_INSTRUCTIONS = 150  # instructions of a warp outside the loop
LEAD_ENTRIES = 9  # default lead: the columns a row's next 9 kept weights span on average
TENSOR_NAMES = ("words", "blocks", "starts", "row_ids", "codebook")
METADATA_NAMES = (
    "out_features", "in_features", "code_bits", "index_bits", "block_rows", "chunks", "nnz", "fillers",
    "steps",
)  # fmt: skip


class FixedLayoutError(ValueError):
    """A fixed-width layout's tensors or metadata are inconsistent (bad construction or a corrupt
    state)."""


def starts_dtype(in_features: int) -> torch.dtype:
    """The dtype of ``starts``: int16 when every column fits, else int32."""
    return torch.int16 if in_features <= 2**15 - 1 else torch.int32


def slots_per_group(entry_bits: int) -> int:
    """Slots of one 256-bit group for entries of ``entry_bits`` bits."""
    return GROUP_BITS // entry_bits


def _is_pow2(value, low: int, high: int) -> bool:
    return (
        isinstance(value, (int, np.integer))
        and not isinstance(value, bool)
        and low <= value <= high
        and value & (value - 1) == 0
    )


def _row_gaps(matrix: CompressedMatrix) -> np.ndarray:
    """Pruned columns skipped before each kept weight since the previous one of its row."""
    cols = matrix.col_idx.astype(np.int64)
    prev = np.empty_like(cols)
    if cols.size:
        prev[1:] = cols[:-1]
        starts = matrix.row_ptr[:-1]
        prev[starts[starts < cols.size]] = -1
    return cols - prev - 1


def _filler_units(gaps: np.ndarray, code_bits: int, index_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(units, fillers) bridging each gap: a gap ``g`` wider than a kept weight's ``z`` can hold
    is shortened by ``units * 2**(index_bits - 1)`` columns, carried by ``fillers`` entries of at
    most ``2**code_bits - 1`` units each."""
    widest, half = (1 << index_bits) - 2, 1 << (index_bits - 1)  # a kept weight skips up to `widest`
    units = np.maximum(gaps - widest + half - 1, 0) // half
    return units, -(-units // ((1 << code_bits) - 1))


def index_widths(code_bits: int) -> range:
    """The index widths a layout of ``code_bits``-bit codes may use: 1..8, entries at least
    `MIN_ENTRY_BITS` wide."""
    return range(max(1, MIN_ENTRY_BITS - code_bits), 9)


def best_index_bits(matrix: CompressedMatrix) -> int:
    """The index width (of `index_widths`) with the fewest group bits ``(nnz + fillers) * 256 /
    slots``."""
    gaps = _row_gaps(matrix)
    widths = index_widths(matrix.bits)
    costs = []
    for ib in widths:
        entries = matrix.nnz + int(np.sum(_filler_units(gaps, matrix.bits, ib)[1]))
        costs.append(entries * GROUP_BITS / slots_per_group(matrix.bits + ib))
    return widths[int(np.argmin(costs))]


def default_block_rows(out_features: int) -> int:
    """Rows per block: 32 (a warp's lanes decode one chunk of 32 rows, whose x columns the
    schedule keeps close) unless that leaves fewer than `MIN_PROGRAMS` programs; then the largest
    power of two that does not (at least 1)."""
    rows = MAX_BLOCK_ROWS
    while rows > 1 and -(-out_features // rows) < MIN_PROGRAMS:
        rows //= 2
    return rows


def default_chunks(groups: np.ndarray, block_rows: int) -> int:
    """Chunks per block for blocks of ``groups`` groups per row: the power of two (one warp to
    `MAX_LANES` lanes a program, no more chunks than the median block's groups) with the shortest
    estimated time on a GPU of `SMS` SMs: the longer of the longest block's chain of dependent
    steps (one HBM latency, its code outside the loop, then per loop trip an L2 latency plus the
    trip's instructions on the SM's four schedulers) and an SM's share of all the instructions
    (`STEP_INSTRUCTIONS` per warp and trip, `OUTSIDE_INSTRUCTIONS` per warp: figures of the
    compiled kernel at batch 1, see `perf.cost`)."""
    longest = int(groups.max(initial=0))
    cap = max(int(np.median(groups)) if groups.size else 0, 1)
    best, best_cycles = 1, None
    chunks = 1
    while chunks * block_rows <= MAX_LANES:
        warps = -(-chunks * block_rows // 32)
        per_scheduler = -(-warps // 4)
        trips = -(-longest // chunks)
        chain = 600 + OUTSIDE_INSTRUCTIONS * per_scheduler + trips * (270 + STEP_INSTRUCTIONS * per_scheduler)
        all_trips = int(np.sum(-(-groups // chunks)))
        share = warps * (all_trips * STEP_INSTRUCTIONS + groups.size * OUTSIDE_INSTRUCTIONS) / (4 * SMS)
        cycles = max(chain, share)
        if chunks * block_rows >= 32 and (best_cycles is None or (chunks <= cap and cycles < best_cycles)):
            best, best_cycles = chunks, cycles
        chunks *= 2
    return best


def default_lead(matrix: CompressedMatrix) -> int:
    """The columns `LEAD_ENTRIES` kept weights of a row span at the layer's density."""
    rows, cols = matrix.shape
    return max(1, round(LEAD_ENTRIES * rows * cols / max(matrix.nnz, 1)))


def _fields(values: np.ndarray, bits: np.ndarray, n_words: int) -> np.ndarray:
    """Pack unsigned ``values`` (< 2**16) at bit positions ``bits`` (fields never cross a group,
    may cross a word) into ``n_words`` little-endian uint32 words."""
    word = bits >> 5
    shift = (bits & 31).astype(np.uint64)
    v = values.astype(np.uint64)
    low = (v << shift) & np.uint64(0xFFFFFFFF)
    high = v >> (np.uint64(32) - shift)  # 0 unless the field crosses into the next word
    # Fields never overlap, so summing is OR; float64 holds 32-bit sums exactly.
    packed = np.bincount(word, weights=low.astype(np.float64), minlength=n_words)
    packed += np.bincount(word + 1, weights=high.astype(np.float64), minlength=n_words + 1)[:n_words]
    return packed.astype(np.uint64).astype(np.uint32)


def _unfields(words: np.ndarray, bits: np.ndarray, width: int) -> np.ndarray:
    """Inverse of `_fields`: the ``width``-bit fields at ``bits`` (int64)."""
    w = np.asarray(words).view(np.uint32).astype(np.uint64)
    word = bits >> 5
    shift = (bits & 31).astype(np.uint64)
    pair = w[word] | (w[np.minimum(word + 1, w.size - 1)] << np.uint64(32))
    return ((pair >> shift) & np.uint64((1 << width) - 1)).astype(np.int64)


def chunk_first_group(groups, chunk, chunks: int):
    """First group (of a row's ``groups``) that chunk ``chunk`` of ``chunks`` decodes: the first
    ``groups % chunks`` chunks get one group more than the others."""
    return chunk * (groups // chunks) + np.minimum(chunk, groups % chunks)


def chunk_of_group(groups, group, chunks: int):
    """The chunk that decodes group ``group`` of a row of ``groups`` groups."""
    size, extra = groups // chunks, groups % chunks
    long_part = extra * (size + 1)
    return np.where(
        group < long_part, group // (size + 1), extra + (group - long_part) // np.maximum(size, 1)
    )


def tail_steps(groups, chunks: int):
    """Steps of a block's tail: every group but the first of each non-empty chunk."""
    return groups - np.minimum(groups, chunks)


def _step_of(block, group, groups, tail_first, chunks: int):
    """Storage step of group ``group`` of a row of ``block`` (rows of ``groups`` groups, the
    block's tail from step ``tail_first``)."""
    t = chunk_of_group(groups, group, chunks)
    g = group - chunk_first_group(groups, t, chunks)
    before = chunk_first_group(groups, t, chunks) - np.minimum(t, groups)  # tail groups of earlier chunks
    return np.where(g == 0, block * chunks + t, tail_first + before + g - 1)


def _slot_bits(step, row, slot, rows: int, entry_bits: int) -> np.ndarray:
    """Logical bit position of slot ``slot`` of row ``row``'s group at ``step``: the group's 256
    bits in a row (fields may cross words, never groups), groups numbered ``step * rows + row``."""
    return (step * rows + row) * GROUP_BITS + slot * entry_bits


def _physical_words(n_words: int, rows: int) -> np.ndarray:
    """Where each logical word (``group * 8 + word``) is stored: a step of ``rows`` groups holds
    the first 128-bit halves of its groups, then the second halves, so that one 128-bit load per
    lane reads a contiguous run of the step."""
    logical = np.arange(n_words, dtype=np.int64)
    group, word = logical // GROUP_WORDS, logical % GROUP_WORDS
    step, row = group // rows, group % rows
    return (
        step * GROUP_WORDS * rows
        + (word // HALF_WORDS) * HALF_WORDS * rows
        + row * HALF_WORDS
        + word % HALF_WORDS
    )


def _segment_cummax(values: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Running maximum of ``values`` restarted at every new ``segment`` (segments contiguous and
    non-decreasing)."""
    if values.size == 0:
        return values
    span = int(values.max() - values.min()) + 1
    shifted = values - values.min() + segment * span
    return np.maximum.accumulate(shifted) - segment * span + values.min()


@dataclass(frozen=True)
class _Entries:
    """Every row's entry sequence (kept weights and fillers), flat in row order: the row, the
    index in the row, the entry value, the column it ends at, and whether it is a kept weight."""

    row: np.ndarray
    index: np.ndarray
    value: np.ndarray
    column: np.ndarray
    kept: np.ndarray
    per_row: np.ndarray


def _entries(matrix: CompressedMatrix, index_bits: int) -> _Entries:
    cb, half = matrix.bits, 1 << (index_bits - 1)
    top = (1 << cb) - 1
    gaps = _row_gaps(matrix)
    units, fillers = _filler_units(gaps, cb, index_bits)
    owner = np.repeat(np.arange(matrix.nnz, dtype=np.int64), fillers + 1)
    first = np.concatenate(([0], np.cumsum(fillers + 1)))[:-1]
    j = np.arange(owner.size, dtype=np.int64) - first[owner]
    kept = j == fillers[owner]
    cols = matrix.col_idx.astype(np.int64)
    prev = (cols - gaps - 1)[owner]
    last_code = (units - (fillers - 1) * top)[owner]
    filler_code = np.where(j < fillers[owner] - 1, top, last_code)
    step = np.where(kept, (gaps - units * half)[owner] + 1, 0)
    code = np.where(kept, matrix.codes.astype(np.int64)[owner], filler_code)
    column = np.where(kept, cols[owner], np.where(j < fillers[owner] - 1, prev + (j + 1) * top * half,
                                                   prev + units[owner] * half))  # fmt: skip
    row = matrix.row_idx.astype(np.int64)[owner]
    per_row = np.bincount(row, minlength=matrix.shape[0]).astype(np.int64)
    row_first = np.concatenate(([0], np.cumsum(per_row)))[:-1]
    index = np.arange(row.size, dtype=np.int64) - row_first[row]
    return _Entries(row, index, code | (step << cb), column, kept, per_row)


def _schedule(
    e: _Entries, block: np.ndarray, slots: np.ndarray, n_cols: int, lead: int
) -> tuple[np.ndarray, np.ndarray]:
    """Slot of every entry when block ``b`` has ``slots[b]`` slots per lane, and whether each
    block fits. An entry at column ``c`` waits until ``c - lead`` is reached by the block's
    schedule line (``slot * n_cols / slots``): the earliest slot ``(c - lead) * slots //
    n_cols``, and at least one after the row's previous entry."""
    k_block = slots[block]
    earliest = np.maximum((e.column - lead) * k_block // max(n_cols, 1), 0)
    delay = _segment_cummax(np.maximum(earliest - e.index, 0), e.row)
    slot = e.index + delay
    fits = np.bincount(block, weights=slot >= k_block, minlength=slots.size) == 0
    return slot, fits


def _fit(
    e: _Entries, block: np.ndarray, longest: np.ndarray, per_group: int, n_cols: int, lead: int
) -> tuple[np.ndarray, np.ndarray]:
    """(groups per row of each block, slot of each entry): the fewest whole groups in which every
    row of a block (the longest has ``longest`` entries) fits its schedule; doubling, then
    bisection, for all blocks at once (one more slot delays an entry by at most one slot, so
    fitting is monotone in the slot count)."""
    low = -(-longest // per_group)
    high = low.copy()
    while True:
        fits = _schedule(e, block, high * per_group, n_cols, lead)[1]
        if fits.all():
            break
        high = np.where(fits, high, 2 * high)
    while np.any(low < high):
        mid = (low + high) // 2
        fits = _schedule(e, block, mid * per_group, n_cols, lead)[1]
        high = np.where(fits, mid, high)
        low = np.where(fits, low, mid + 1)
    slot, fits = _schedule(e, block, high * per_group, n_cols, lead)
    if not fits.all():
        raise FixedLayoutError("internal error: a block's schedule does not fit its slots")
    return high, slot


def _pack(e: _Entries, lane: np.ndarray, slot: np.ndarray, groups: np.ndarray, tail_first: np.ndarray,
          rows: int, chunks: int, code_bits: int, index_bits: int, steps: int) -> np.ndarray:  # fmt: skip
    """The uint32 words of the layout: every slot a wait (all zero) except those holding entries."""
    eb = code_bits + index_bits
    per_group = slots_per_group(eb)
    block = lane // rows
    step = _step_of(block, slot // per_group, groups[block], tail_first[block], chunks)
    n_words = steps * rows * GROUP_WORDS
    logical = _fields(e.value, _slot_bits(step, lane % rows, slot % per_group, rows, eb), n_words)
    words = np.empty_like(logical)
    words[_physical_words(n_words, rows)] = logical
    return words


def _chunk_starts(
    e: _Entries,
    lane: np.ndarray,
    slot: np.ndarray,
    groups: np.ndarray,
    rows: int,
    chunks: int,
    per_group: int,
) -> np.ndarray:
    """The column before the first slot of every chunk but the first (``[block, chunk - 1, row]``):
    that of the row's last entry in earlier chunks, -1 if none or if the chunk is empty."""
    n_blocks = groups.size
    q_block = np.repeat(np.arange(n_blocks), (chunks - 1) * rows)
    q_chunk = np.tile(np.repeat(np.arange(1, chunks), rows), n_blocks)
    q_lane = q_block * rows + np.tile(np.arange(rows), n_blocks * (chunks - 1))
    first = chunk_first_group(groups[q_block], q_chunk, chunks) * per_group
    starts = np.full(q_lane.size, -1, dtype=np.int64)
    if e.row.size and q_lane.size:
        span = int(groups.max(initial=0)) * per_group + 1
        keys = lane * span + slot
        by_key = np.argsort(keys, kind="stable")
        before = np.searchsorted(keys[by_key], q_lane * span + first, side="left") - 1
        hit = before >= 0
        hit[hit] = lane[by_key][before[hit]] == q_lane[hit]
        starts[hit] = e.column[by_key][before[hit]]
    starts[q_chunk >= groups[q_block]] = -1  # empty chunks (a row shorter than the chunk count)
    return starts


@dataclass(frozen=True, eq=False)
class GpuLayout:
    """A compressed layer in the kernels' layout (see the module docstring); tensors on any device.

    Construction checks dtypes, shapes, sizes and metadata but never reads tensor values, so
    building a view of device tensors (e.g. a module's buffers) costs no host synchronization;
    `decode` checks the values."""

    out_features: int
    in_features: int
    code_bits: int
    index_bits: int
    block_rows: int
    chunks: int
    nnz: int
    fillers: int  # filler entries (bridging long gaps); every other slot without a weight is a wait
    steps: int  # steps of `block_rows` 256-bit groups stored: the heads, then the tails
    words: torch.Tensor
    blocks: torch.Tensor
    starts: torch.Tensor
    row_ids: torch.Tensor
    codebook: torch.Tensor

    def __post_init__(self) -> None:
        check_bits(self.code_bits, "code_bits")
        check_index_bits(self.index_bits)
        if self.code_bits + self.index_bits < MIN_ENTRY_BITS:
            raise FixedLayoutError(
                f"entries of {self.code_bits}+{self.index_bits} bits are narrower than {MIN_ENTRY_BITS}"
            )
        for name in ("out_features", "in_features", "nnz", "fillers", "steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise FixedLayoutError(f"{name} must be a non-negative int, got {value!r}")
        if not _is_pow2(self.block_rows, 1, MAX_BLOCK_ROWS):
            raise FixedLayoutError(
                f"block_rows must be a power of two in 1..{MAX_BLOCK_ROWS}, got {self.block_rows!r}"
            )
        if not _is_pow2(self.chunks, 1, MAX_LANES) or self.lanes > MAX_LANES:
            raise FixedLayoutError(
                f"chunks must be a power of two with chunks x block_rows <= {MAX_LANES}, got chunks="
                f"{self.chunks!r} for block_rows={self.block_rows}"
            )
        if self.steps < self.n_blocks * self.chunks:
            raise FixedLayoutError(
                f"steps={self.steps} is fewer than the {self.n_blocks * self.chunks} chunk heads"
            )
        if self.nnz + self.fillers > self.slots:
            raise FixedLayoutError(
                f"{self.nnz} kept weights and {self.fillers} fillers exceed {self.slots} slots"
            )
        expected = {
            "words": (torch.int32, self.steps * self.block_rows * GROUP_WORDS),
            "blocks": (torch.int32, 2 * self.n_blocks),
            "starts": (starts_dtype(self.in_features), self.n_blocks * (self.chunks - 1) * self.block_rows),
            "row_ids": (torch.int32, self.out_features),
            "codebook": (torch.float32, None),
        }
        for name, (dtype, size) in expected.items():
            t = getattr(self, name)
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            if t.dtype != dtype or t.dim() != 1:
                raise FixedLayoutError(f"{name} must be 1-D {dtype}, got {t.dtype} of shape {tuple(t.shape)}")
            if size is not None and t.numel() != size:
                raise FixedLayoutError(f"{name} has {t.numel()} elements, the metadata needs {size}")
        devices = {t.device for t in self.tensors().values()}
        if len(devices) != 1:
            raise FixedLayoutError(f"all tensors must be on one device, got {sorted(map(str, devices))}")
        if not 1 <= self.codebook.numel() <= 2**self.code_bits:
            raise FixedLayoutError(
                f"codebook has {self.codebook.numel()} entries for code_bits={self.code_bits}"
            )

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_matrix(
        cls,
        matrix: CompressedMatrix,
        index_bits: int | None = None,
        block_rows: int | None = None,
        chunks: int | None = None,
        lead: int | None = None,
        device: torch.device | str | None = None,
    ) -> GpuLayout:
        """Build the layout (vectorized). ``index_bits=None`` picks the width with the fewest
        bits (entries at least `MIN_ENTRY_BITS` wide; a narrower explicit width: ValueError);
        ``block_rows``, ``chunks`` and ``lead`` (the columns a row may run ahead of its
        block's schedule line; ``in_features`` or more: no waits) None choose them from the
        layer (`default_block_rows`, `default_chunks`, `default_lead`)."""
        if not isinstance(matrix, CompressedMatrix):
            raise TypeError(f"matrix must be a CompressedMatrix, got {type(matrix).__name__}")
        if lead is not None and (
            isinstance(lead, bool) or not isinstance(lead, (int, np.integer)) or lead < 0
        ):
            raise ValueError(f"lead must be a non-negative int or None, got {lead!r}")
        ib = best_index_bits(matrix) if index_bits is None else check_index_bits(index_bits)
        if ib not in index_widths(matrix.bits):
            raise ValueError(
                f"index_bits={ib} with {matrix.bits}-bit codes makes {matrix.bits + ib}-bit entries; "
                f"the fixed-width layout needs at least {MIN_ENTRY_BITS} "
                f"(index_bits >= {MIN_ENTRY_BITS - matrix.bits})"
            )
        rows, n_cols = matrix.shape
        per_group = slots_per_group(matrix.bits + ib)
        e = _entries(matrix, ib)
        r = default_block_rows(rows) if block_rows is None else block_rows
        if not _is_pow2(r, 1, MAX_BLOCK_ROWS):
            raise ValueError(f"block_rows must be a power of two in 1..{MAX_BLOCK_ROWS}, got {r!r}")
        order = np.argsort(-e.per_row, kind="stable")  # longest rows first
        position = np.empty(rows, dtype=np.int64)
        position[order] = np.arange(rows)
        lane = position[e.row]  # sorted position = block * r + row of the block
        lead = default_lead(matrix) if lead is None else int(lead)
        while True:
            longest = e.per_row[order[::r]]  # the first row of each block is its longest
            groups, slot = _fit(e, lane // r, longest, per_group, n_cols, lead)
            t = default_chunks(groups, r) if chunks is None else chunks
            # Rows of a few groups in blocks of few rows: the one-warp minimum (chunks x rows >=
            # 32) would leave most chunks only an empty head group (a layer of 64 rows of ~10
            # kept weights took 458 bits per kept weight): more rows a block instead, fewer
            # programs, which a layer that small does not need.
            if block_rows is not None or chunks is not None or r == MAX_BLOCK_ROWS:
                break
            if t <= max(int(np.median(groups)) if groups.size else 0, 1):
                break
            r *= 2
        if not _is_pow2(t, 1, MAX_LANES) or t * r > MAX_LANES:
            raise ValueError(
                f"chunks must be a power of two with chunks x block_rows <= {MAX_LANES}, got {t!r}"
            )
        n_blocks = groups.size
        tail_first = n_blocks * t + np.concatenate(([0], np.cumsum(tail_steps(groups, t))))
        steps = int(tail_first[-1])
        if steps * r * GROUP_WORDS >= 2**31:
            raise ValueError(f"layer too large for 32-bit word offsets: {steps * r * GROUP_WORDS} words")
        words = _pack(e, lane, slot, groups, tail_first, r, t, matrix.bits, ib, steps)
        starts = _chunk_starts(e, lane, slot, groups, r, t, per_group)
        return cls(
            out_features=rows,
            in_features=n_cols,
            code_bits=matrix.bits,
            index_bits=ib,
            block_rows=r,
            chunks=t,
            nnz=matrix.nnz,
            fillers=int(np.count_nonzero(~e.kept)),
            steps=steps,
            words=torch.from_numpy(words.view(np.int32)).to(device),
            blocks=torch.from_numpy(
                np.stack([tail_first[:-1], groups], axis=1).reshape(-1).astype(np.int32)
            ).to(device),
            starts=torch.from_numpy(starts).to(starts_dtype(n_cols)).to(device),
            row_ids=torch.from_numpy(order.astype(np.int32)).to(device),
            codebook=torch.from_numpy(matrix.codebook.copy()).to(device),
        )

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], metadata: dict[str, int]) -> GpuLayout:
        """Rebuild from `tensors()` and `metadata()` (e.g. a module's buffers and config)."""
        missing = [n for n in TENSOR_NAMES if n not in tensors]
        missing += [n for n in METADATA_NAMES if n not in metadata]
        if missing:
            raise FixedLayoutError(f"missing layout fields: {missing}")
        return cls(**{n: int(metadata[n]) for n in METADATA_NAMES}, **{n: tensors[n] for n in TENSOR_NAMES})

    def tensors(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in TENSOR_NAMES}

    def metadata(self) -> dict[str, int]:
        return {name: int(getattr(self, name)) for name in METADATA_NAMES}

    def to(self, device: torch.device | str) -> GpuLayout:
        return GpuLayout(**self.metadata(), **{n: t.to(device) for n, t in self.tensors().items()})

    @property
    def device(self) -> torch.device:
        return self.words.device

    # ------------------------------------------------------------------ sizes
    @property
    def shape(self) -> tuple[int, int]:
        return (self.out_features, self.in_features)

    @property
    def n_blocks(self) -> int:
        return -(-self.out_features // self.block_rows)

    @property
    def lanes(self) -> int:
        """Threads of one program: ``chunks x block_rows``."""
        return self.chunks * self.block_rows

    @property
    def entry_bits(self) -> int:
        return self.code_bits + self.index_bits

    @property
    def slots_per_group(self) -> int:
        return slots_per_group(self.entry_bits)

    @property
    def slots(self) -> int:
        """Stored slots: kept weights, fillers and waits."""
        return self.steps * self.block_rows * self.slots_per_group

    def bit_counts(self) -> dict[str, int]:
        """Exact bits of every stored tensor, as the GPU reads them; the words split into kept
        weights, fillers, waits (and the first groups of chunks a short row leaves empty), and the
        unused top bits of each group."""
        eb = self.entry_bits
        return {
            "kept_bits": self.nnz * eb,
            "filler_bits": self.fillers * eb,
            "wait_bits": (self.slots - self.nnz - self.fillers) * eb,
            "group_padding_bits": self.words.numel() * 32 - self.slots * eb,
            "blocks_bits": self.blocks.numel() * 32,
            "starts_bits": self.starts.numel() * self.starts.element_size() * 8,
            "row_ids_bits": self.row_ids.numel() * 32,
            "codebook_bits": self.codebook.numel() * 32,
        }

    def total_bits(self) -> int:
        return sum(self.bit_counts().values())

    def total_bytes(self) -> int:
        """GPU-resident bytes of the layer (every tensor the kernels read)."""
        return (self.total_bits() + 7) // 8

    def bits_per_kept_weight(self) -> float:
        return self.total_bits() / max(self.nnz, 1)

    # ------------------------------------------------------------------ decoding
    def block_groups(self) -> np.ndarray:
        """Groups per row of each block, checked against the tail offsets."""
        info = self.blocks.cpu().numpy().astype(np.int64).reshape(-1, 2)
        tail_first, groups = info[:, 0], info[:, 1]
        ends = np.append(tail_first[1:], self.steps)
        if self.n_blocks and (
            np.any(groups < 0) or tail_first[0] != self.n_blocks * self.chunks
            or np.any(ends - tail_first != tail_steps(groups, self.chunks))
        ):  # fmt: skip
            raise FixedLayoutError("blocks' tail offsets and group counts do not add up to the stored steps")
        return groups

    def decode_slots(self) -> dict[str, np.ndarray]:
        """Every stored slot in row order (block, row of the block, slot of the row): its block,
        row of the block, chunk and slot in the row, its code, whether it holds a kept weight,
        and the column after it. Raises `FixedLayoutError` on inconsistent tensors."""
        r, t, per_group, eb = self.block_rows, self.chunks, self.slots_per_group, self.entry_bits
        groups = self.block_groups()
        tail_first = self.blocks.cpu().numpy().astype(np.int64).reshape(-1, 2)[:, 0]
        per_row = groups * per_group
        n = int(np.sum(per_row)) * r
        block = np.repeat(np.arange(self.n_blocks), per_row * r)
        within = np.arange(n, dtype=np.int64) - np.repeat(np.cumsum(per_row * r) - per_row * r, per_row * r)
        row, k = np.divmod(within, np.maximum(per_row[block], 1))
        step = _step_of(block, k // per_group, groups[block], tail_first[block], t)
        logical = self.words.cpu().numpy()[_physical_words(self.words.numel(), r)]
        values = _unfields(logical, _slot_bits(step, row, k % per_group, r, eb), eb)
        code = values & ((1 << self.code_bits) - 1)
        rel = values >> self.code_bits
        kept = rel != 0
        advance = np.where(kept, rel, code << (self.index_bits - 1))
        chunk = chunk_of_group(groups[block], k // per_group, t)
        lane = (block * t + chunk) * r + row
        first = np.ones(n, dtype=bool)
        first[1:] = lane[1:] != lane[:-1]
        running = np.cumsum(advance)
        base = (
            np.maximum.accumulate(np.where(first, running - advance, np.iinfo(np.int64).min))
            if n
            else running
        )
        # Every lane's starting column: -1 for chunk 0, the stored column for the others.
        starts = np.full((self.n_blocks, t, r), -1, dtype=np.int64)
        starts[:, 1:, :] = self.starts.cpu().numpy().reshape(self.n_blocks, t - 1, r)
        starts = starts.reshape(-1)
        column = running - base + starts[lane]
        # Continuity: a chunk starts where the row's previous chunk ended; empty chunks at -1.
        expected = np.full(starts.size, -1, dtype=np.int64)
        if n:
            last = np.ones(n, dtype=bool)
            last[:-1] = first[1:]
            filled = chunk[last] + 1 < np.minimum(groups[block[last]], t)
            expected[lane[last][filled] + r] = column[last][filled]
        if np.any(starts != expected):
            raise FixedLayoutError("starts do not continue each row's previous chunk")
        return {
            "block": block,
            "row": row,
            "chunk": chunk,
            "slot": k,
            "code": code,
            "kept": kept,
            "column": column,
        }

    def decode(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, column, code) of every kept weight, in lane order; raises `FixedLayoutError` on
        inconsistent tensors."""
        d = self.decode_slots()
        kept = d["kept"]
        position = d["block"][kept] * self.block_rows + d["row"][kept]
        column = d["column"][kept]
        if np.any(position >= self.out_features):
            raise FixedLayoutError("padding rows of the last block hold kept weights")
        if column.size and (column.min() < 0 or column.max() >= self.in_features):
            raise FixedLayoutError(
                f"decoded columns {column.min()}..{column.max()} are outside 0..{self.in_features - 1}"
            )
        fillers = int(np.count_nonzero(~kept & (d["code"] > 0)))
        if fillers != self.fillers:
            raise FixedLayoutError(f"stream holds {fillers} fillers, metadata says {self.fillers}")
        row_ids = self.row_ids.cpu().numpy().astype(np.int64)
        if row_ids.size and (np.sort(row_ids) != np.arange(self.out_features)).any():
            raise FixedLayoutError("row_ids is not a permutation of the rows")
        return row_ids[position], column, d["code"][kept]

    def to_matrix(self) -> CompressedMatrix:
        rows, cols, codes = self.decode()
        if rows.size != self.nnz:
            raise FixedLayoutError(f"stream holds {rows.size} kept weights, metadata says nnz={self.nnz}")
        order = np.lexsort((cols, rows))
        row_ptr = np.zeros(self.out_features + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=self.out_features), out=row_ptr[1:])
        return CompressedMatrix(
            self.shape, self.codebook.cpu().numpy(), row_ptr, cols[order], codes[order], self.code_bits
        )

    def to_dense(self) -> torch.Tensor:
        """The decoded float32 weight (out_features, in_features), on the layout's device."""
        rows, cols, codes = self.decode()
        dense = torch.zeros(self.shape, dtype=torch.float32, device=self.device)
        index = torch.from_numpy(rows * self.in_features + cols).to(self.device)
        dense.view(-1)[index] = self.codebook[torch.from_numpy(codes).to(self.device)]
        return dense
