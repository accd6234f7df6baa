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
  ``block_rows`` rows (one GPU program each). The ``block_rows`` lanes of a block step through
  their rows in lockstep, one entry per *slot*; the builder inserts waits so that at every slot
  every lane is at most ``lead`` columns ahead of a common schedule line that crosses the layer in
  ``slots`` steps. The lanes of a warp therefore read ``x`` at neighbouring columns (a few cache
  lines per load instead of one line per lane); the waits cost bits and are counted.
* **Chunks.** A block's slots are cut into ``chunks`` equal chunks; lane ``(t, r)`` of a program
  decodes chunk ``t`` of row ``r`` starting from the stored column ``starts``, so a program has
  ``chunks x block_rows`` lanes and short rows still fill the GPU; the chunks of a row are summed
  once, after the loop (a fixed order: results are bitwise the same run to run).
* **Groups.** A chunk is a whole number of 128-bit *groups* of ``128 // entry_bits`` slots each,
  slot ``e`` at bits ``e * entry_bits`` of the group (fixed positions: a kernel unpacks them with
  constant shifts; the ``128 % entry_bits`` top bits are zero). Groups are stored step-major: step
  ``g`` of block ``b`` holds group ``g`` of every lane of the block, lane ``t * block_rows + r`` at
  16-byte slot ``(block_ptr[b] + g) * lanes + t * block_rows + r`` of ``words``: one step of a
  program is one contiguous, 128-bit-per-lane load.

Tensors (the module stores them as buffers): ``words`` int32 (bit pattern of uint32; 4 per
group), ``block_ptr`` int32[n_blocks + 1] (first step of each block), ``starts`` int32[n_blocks *
chunks * block_rows] (the column before each lane's first slot; -1 for chunk 0), ``row_ids``
int32[out_features] (the original row of each sorted position), ``codebook`` float32[k].
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
MAX_BLOCK_ROWS = 32
MAX_LANES = 1024  # threads of one program (32 warps)
MIN_PROGRAMS = 132  # one program per SM of a 132-SM GPU (H100, H200)
TARGET_TRIPS = 3  # loop steps per program the default chunking aims at
LEAD_ENTRIES = 12  # default lead: the columns a row's next 12 kept weights span on average
TENSOR_NAMES = ("words", "block_ptr", "starts", "row_ids", "codebook")
METADATA_NAMES = (
    "out_features", "in_features", "code_bits", "index_bits", "block_rows", "chunks", "nnz", "fillers",
    "groups",
)  # fmt: skip


class FixedLayoutError(ValueError):
    """A fixed-width layout's tensors or metadata are inconsistent (bad construction or a corrupt
    state)."""


def slots_per_group(entry_bits: int) -> int:
    """Slots of one 128-bit group for entries of ``entry_bits`` bits."""
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


def best_index_bits(matrix: CompressedMatrix) -> int:
    """The index width (1..8) with the fewest group bits ``(nnz + fillers) * 128 / slots``."""
    gaps = _row_gaps(matrix)
    costs = []
    for ib in range(1, 9):
        entries = matrix.nnz + int(np.sum(_filler_units(gaps, matrix.bits, ib)[1]))
        costs.append(entries * GROUP_BITS / slots_per_group(matrix.bits + ib))
    return int(np.argmin(costs)) + 1


def default_block_rows(out_features: int) -> int:
    """Rows per block: 32 (a warp's lanes decode one chunk of 32 rows, whose x columns the
    schedule keeps close) unless that leaves fewer than `MIN_PROGRAMS` programs; then the largest
    power of two that does not (at least 1)."""
    rows = MAX_BLOCK_ROWS
    while rows > 1 and -(-out_features // rows) < MIN_PROGRAMS:
        rows //= 2
    return rows


def default_chunks(groups: int, block_rows: int) -> int:
    """Chunks per block for rows of about ``groups`` groups: the fewest that keep a program's loop
    at `TARGET_TRIPS` steps, at least one warp and at most `MAX_LANES` lanes a program."""
    chunks = 1
    while chunks * block_rows < 32 or (-(-groups // chunks) > TARGET_TRIPS and 2 * chunks * block_rows <= MAX_LANES):
        chunks *= 2
    return chunks


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


def _physical_words(block_ptr: np.ndarray, rows: int) -> np.ndarray:
    """Where each logical word (``lane_group * 8 + word``; lane groups numbered ``block_ptr[b] +
    group * rows + row``) is stored: a step of ``rows`` lane groups holds the first 128-bit half
    of every row's group, then every second half, so one 128-bit load per lane reads a contiguous
    run of the step."""
    total = int(block_ptr[-1])
    lane_group = np.arange(total, dtype=np.int64)
    block = np.searchsorted(block_ptr, lane_group, side="right") - 1
    row = (lane_group - block_ptr[block]) % rows
    step_base = lane_group - row
    word = np.arange(GROUP_WORDS, dtype=np.int64)
    return (
        step_base[:, None] * GROUP_WORDS
        + (word // HALF_WORDS)[None, :] * HALF_WORDS * rows
        + row[:, None] * HALF_WORDS
        + (word % HALF_WORDS)[None, :]
    ).reshape(-1)


def _slot_bits(slot_index: np.ndarray, per_group: int, entry_bits: int) -> np.ndarray:
    """Logical bit position of slot ``lane_group * per_group + slot``: slot bits within the lane's
    256-bit group (fields may cross words, never groups)."""
    return (slot_index // per_group) * GROUP_BITS + (slot_index % per_group) * entry_bits


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


def _pack(
    e: _Entries, lane: np.ndarray, slot: np.ndarray, block_ptr: np.ndarray, rows: int, code_bits: int, index_bits: int
) -> np.ndarray:
    """The uint32 words of the layout: every slot a wait (0) except those holding entries."""
    eb = code_bits + index_bits
    per_group = slots_per_group(eb)
    total = int(block_ptr[-1])
    block = lane // rows
    values = np.zeros(total * per_group, dtype=np.int64)
    lane_group = block_ptr[block] + (slot // per_group) * rows + lane % rows
    values[lane_group * per_group + slot % per_group] = e.value
    logical = _fields(values, _slot_bits(np.arange(values.size, dtype=np.int64), per_group, eb), total * GROUP_WORDS)
    words = np.empty_like(logical)
    words[_physical_words(block_ptr, rows)] = logical
    return words


def _chunk_starts(
    e: _Entries, lane: np.ndarray, slot: np.ndarray, groups: np.ndarray, rows: int, chunks: int, per_group: int
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
    empty = chunk_first_group(groups[q_block], q_chunk + 1, chunks) * per_group == first
    starts[empty] = -1
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
    fillers: int  # filler entries (bridging long gaps); every other non-weight slot is a wait
    groups: int  # 256-bit lane groups stored (= block_ptr[-1])
    words: torch.Tensor
    block_ptr: torch.Tensor
    starts: torch.Tensor
    row_ids: torch.Tensor
    codebook: torch.Tensor

    def __post_init__(self) -> None:
        check_bits(self.code_bits, "code_bits")
        check_index_bits(self.index_bits)
        if not _is_pow2(self.block_rows, 1, MAX_BLOCK_ROWS):
            raise FixedLayoutError(f"block_rows must be a power of two in 1..{MAX_BLOCK_ROWS}, got {self.block_rows!r}")
        if not _is_pow2(self.chunks, 1, MAX_LANES) or self.lanes > MAX_LANES:
            raise FixedLayoutError(
                f"chunks must be a power of two with chunks x block_rows <= {MAX_LANES}, got chunks="
                f"{self.chunks!r} for block_rows={self.block_rows}"
            )
        for name in ("out_features", "in_features", "nnz", "fillers", "groups"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise FixedLayoutError(f"{name} must be a non-negative int, got {value!r}")
        if self.nnz + self.fillers > self.slots:
            raise FixedLayoutError(f"{self.nnz} kept weights and {self.fillers} fillers exceed {self.slots} slots")
        expected = {
            "words": (torch.int32, self.groups * GROUP_WORDS),
            "block_ptr": (torch.int32, self.n_blocks + 1),
            "starts": (torch.int32, self.n_blocks * (self.chunks - 1) * self.block_rows),
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
            raise FixedLayoutError(f"codebook has {self.codebook.numel()} entries for code_bits={self.code_bits}")

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
        bits; ``block_rows``, ``chunks`` and ``lead`` (the columns a lane may run ahead of its
        block's schedule line; ``in_features`` or more: no waits) None choose them from the
        layer (`default_block_rows`, `default_chunks`, `default_lead`)."""
        if not isinstance(matrix, CompressedMatrix):
            raise TypeError(f"matrix must be a CompressedMatrix, got {type(matrix).__name__}")
        if lead is not None and (isinstance(lead, bool) or not isinstance(lead, (int, np.integer)) or lead < 0):
            raise ValueError(f"lead must be a non-negative int or None, got {lead!r}")
        ib = best_index_bits(matrix) if index_bits is None else check_index_bits(index_bits)
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
        longest = e.per_row[order[:: r]] if rows else np.zeros(0, dtype=np.int64)  # blocks' first rows
        lead = default_lead(matrix) if lead is None else int(lead)
        groups, slot = _fit(e, lane // r, longest, per_group, n_cols, lead)
        t = default_chunks(int(groups.max(initial=0)), r) if chunks is None else chunks
        if not _is_pow2(t, 1, MAX_LANES) or t * r > MAX_LANES:
            raise ValueError(f"chunks must be a power of two with chunks x block_rows <= {MAX_LANES}, got {t!r}")
        block_ptr = np.zeros(groups.size + 1, dtype=np.int64)
        np.cumsum(groups * r, out=block_ptr[1:])
        if block_ptr[-1] * GROUP_WORDS >= 2**31:
            raise ValueError(f"layer too large for 32-bit word offsets: {block_ptr[-1] * GROUP_WORDS} words")
        words = _pack(e, lane, slot, block_ptr, r, matrix.bits, ib)
        return cls(
            out_features=rows,
            in_features=n_cols,
            code_bits=matrix.bits,
            index_bits=ib,
            block_rows=r,
            chunks=t,
            nnz=matrix.nnz,
            fillers=int(np.count_nonzero(~e.kept)),
            groups=int(block_ptr[-1]),
            words=torch.from_numpy(words.view(np.int32)).to(device),
            block_ptr=torch.from_numpy(block_ptr.astype(np.int32)).to(device),
            starts=torch.from_numpy(_chunk_starts(e, lane, slot, groups, r, t, per_group).astype(np.int32)).to(device),
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
        """Stored entry slots: kept weights, fillers and waits."""
        return self.groups * self.slots_per_group

    def bit_counts(self) -> dict[str, int]:
        """Exact bits of every stored tensor, as the GPU reads them; the group words split into
        kept weights, fillers, waits and the unused top bits of each group."""
        eb = self.entry_bits
        waits = self.slots - self.nnz - self.fillers
        return {
            "kept_bits": self.nnz * eb,
            "filler_bits": self.fillers * eb,
            "wait_bits": waits * eb,
            "group_padding_bits": self.words.numel() * 32 - self.slots * eb,
            "block_ptr_bits": self.block_ptr.numel() * 32,
            "starts_bits": self.starts.numel() * 32,
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
    def decode_slots(self) -> dict[str, np.ndarray]:
        """Every stored slot in row order (block, row of the block, slot of the row): its block,
        row of the block, chunk and slot in the row, its code, whether it holds a kept weight,
        and the column after it. Raises `FixedLayoutError` on inconsistent tensors."""
        r, per_group, eb = self.block_rows, self.slots_per_group, self.entry_bits
        block_ptr = self.block_ptr.cpu().numpy().astype(np.int64)
        sizes = np.diff(block_ptr)
        if block_ptr[0] != 0 or block_ptr[-1] != self.groups or np.any(sizes < 0) or np.any(sizes % r):
            raise FixedLayoutError(
                f"block_ptr must grow from 0 to groups={self.groups} in steps of block_rows={r}"
            )
        groups = sizes // r  # groups per row of each block
        per_row = groups * per_group
        n = self.slots
        block = np.repeat(np.arange(self.n_blocks), per_row * r)
        within = np.arange(n, dtype=np.int64) - np.repeat(block_ptr[:-1] * per_group, per_row * r)
        row, k = np.divmod(within, np.maximum(per_row[block], 1))
        stored = (block_ptr[block] + (k // per_group) * r + row) * per_group + k % per_group
        logical = self.words.cpu().numpy()[_physical_words(block_ptr, r)]
        values = _unfields(logical, _slot_bits(stored, per_group, eb), eb)
        code = values & ((1 << self.code_bits) - 1)
        step = values >> self.code_bits
        kept = step != 0
        advance = np.where(kept, step, code << (self.index_bits - 1))
        chunk = self._chunk_of(groups[block], k // per_group)
        lane = (block * self.chunks + chunk) * r + row
        first = np.ones(n, dtype=bool)
        first[1:] = lane[1:] != lane[:-1]
        running = np.cumsum(advance)
        base = np.maximum.accumulate(np.where(first, running - advance, np.iinfo(np.int64).min)) if n else running
        # Every lane's starting column: -1 for chunk 0, the stored column for the others.
        starts = np.full((self.n_blocks, self.chunks, r), -1, dtype=np.int64)
        starts[:, 1:, :] = self.starts.cpu().numpy().reshape(self.n_blocks, self.chunks - 1, r)
        starts = starts.reshape(-1)
        column = running - base + starts[lane]
        # Continuity: a chunk starts where the row's previous chunk ended; empty chunks at -1.
        expected = np.full(starts.size, -1, dtype=np.int64)
        if n:
            last = np.ones(n, dtype=bool)
            last[:-1] = first[1:]
            nxt = chunk[last] + 1
            g = groups[block[last]]
            filled = (nxt < self.chunks) & (
                chunk_first_group(g, nxt + 1, self.chunks) > chunk_first_group(g, nxt, self.chunks)
            )
            expected[lane[last][filled] + r] = column[last][filled]
        if np.any(starts != expected):
            raise FixedLayoutError("starts do not continue each row's previous chunk")
        return {"block": block, "row": row, "chunk": chunk, "slot": k, "code": code, "kept": kept, "column": column}

    def _chunk_of(self, groups: np.ndarray, group: np.ndarray) -> np.ndarray:
        """The chunk decoding group ``group`` of a row of ``groups`` groups."""
        t = self.chunks
        size, extra = groups // t, groups % t
        long_part = extra * (size + 1)
        return np.where(group < long_part, group // np.maximum(size + 1, 1), extra + (group - long_part) // np.maximum(size, 1))

    def decode(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, column, code) of every kept weight, in lane order; raises `FixedLayoutError` on
        inconsistent tensors."""
        d = self.decode_slots()
        kept = d["kept"]
        position = d["block"][kept] * self.block_rows + d["row"][kept]
        column = d["column"][kept]
        if np.any(position >= self.out_features):
            raise FixedLayoutError("padding lanes of the last block hold kept weights")
        if column.size and (column.min() < 0 or column.max() >= self.in_features):
            raise FixedLayoutError(
                f"decoded columns {column.min()}..{column.max()} are outside 0..{self.in_features - 1}"
            )
        if int(np.count_nonzero(~kept & (d["code"] > 0))) != self.fillers:
            raise FixedLayoutError(f"stream holds {int(np.count_nonzero(~kept & (d['code'] > 0)))} fillers, metadata says {self.fillers}")
        row_ids = self.row_ids.cpu().numpy().astype(np.int64)
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
