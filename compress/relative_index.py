"""The Deep Compression paper's storage format: CSR with relative column indices.

Each row is a sequence of entries ``(code, z)`` where ``z`` (``index_bits`` wide) counts the
pruned positions skipped since the previous entry of the row (or since column 0). Gaps too wide
for ``z`` are bridged with filler entries, as in the paper.

Filler convention (exact decoding without a reserved codebook entry): ``z = 2**index_bits - 1``
is an escape that advances ``2**index_bits - 1`` columns and holds no weight; its code field is
stored as 0 and counted in the size. A real entry therefore has ``z`` in ``0 .. 2**index_bits - 2``.
The paper's filler instead holds a zero weight in a real slot; both need one filler per
``~2**index_bits`` skipped columns, and ours needs no zero centroid, so every codebook entry
stays available to k-means.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compress.checks import check_int
from compress.matrix import CompressedMatrix

MAX_INDEX_BITS = 8


def check_index_bits(index_bits: int) -> int:
    return check_int(index_bits, "index_bits", 1, MAX_INDEX_BITS)


def pointer_bits(max_value: int) -> int:
    """Bits of one row pointer able to hold 0..max_value."""
    return max(1, int(max_value).bit_length())


@dataclass(frozen=True, eq=False)
class RelativeIndexLayer:
    """A layer in the paper's relative-index format (entries include fillers)."""

    shape: tuple[int, int]
    bits: int
    index_bits: int
    codebook: np.ndarray  # float32[k]
    row_ptr: np.ndarray  # int64[rows + 1], into the entries (fillers included)
    z: np.ndarray  # uint8[entries]
    codes: np.ndarray  # uint8[entries], 0 for fillers

    @property
    def entries(self) -> int:
        return int(self.z.size)

    @property
    def fillers(self) -> int:
        return int(np.count_nonzero(self.z == (1 << self.index_bits) - 1))

    def bit_counts(self) -> dict[str, int]:
        """Exact storage of every stream in bits."""
        return {
            "code_bits": self.entries * self.bits,
            "index_bits": self.entries * self.index_bits,
            "codebook_bits": int(self.codebook.size) * 32,
            "row_ptr_bits": (self.shape[0] + 1) * pointer_bits(self.entries),
        }

    def total_bits(self) -> int:
        return sum(self.bit_counts().values())


def row_gaps(row_ptr: np.ndarray, col_idx: np.ndarray) -> np.ndarray:
    """Pruned columns skipped before each kept weight since the previous kept weight of its row
    (int64[nnz]), from CSR positions."""
    cols = np.asarray(col_idx).astype(np.int64)
    prev = np.empty_like(cols)
    if cols.size:
        prev[1:] = cols[:-1]
        starts = np.asarray(row_ptr)[:-1]
        prev[starts[starts < cols.size]] = -1
    return cols - prev - 1


def relative_entries(gaps: np.ndarray, index_bits: int) -> int:
    """Entries of the relative-index format (kept weights plus fillers) for these `row_gaps`."""
    return int(gaps.size + np.sum(gaps // ((1 << check_index_bits(index_bits)) - 1)))


def encode_relative(matrix: CompressedMatrix, index_bits: int) -> RelativeIndexLayer:
    """Encode a canonical matrix in the relative-index format (vectorized)."""
    index_bits = check_index_bits(index_bits)
    escape = (1 << index_bits) - 1
    nnz = matrix.nnz
    gap = row_gaps(matrix.row_ptr, matrix.col_idx)
    fillers = gap // escape
    z_real = gap - fillers * escape
    # Entry i of the output for kept weight k sits after its fillers and all earlier entries.
    fillers_before = np.cumsum(fillers)
    position = np.arange(nnz, dtype=np.int64) + fillers_before
    entries = nnz + int(fillers_before[-1]) if nnz else 0
    z = np.full(entries, escape, dtype=np.uint8)
    codes = np.zeros(entries, dtype=np.uint8)
    z[position] = z_real
    codes[position] = matrix.codes
    fillers_upto = np.concatenate(([0], fillers_before))
    row_ptr = matrix.row_ptr + fillers_upto[matrix.row_ptr]
    return RelativeIndexLayer(
        matrix.shape, matrix.bits, index_bits, matrix.codebook.copy(), row_ptr, z, codes
    )


def decode_relative(layer: RelativeIndexLayer) -> CompressedMatrix:
    """Decode back to the canonical form; raises ValueError on inconsistent streams.

    Works on the real entries only: besides the uint8 streams it allocates a byte per entry and
    a few int64 per real entry and per row, so a stream of fillers costs no more than its bytes.
    Fillers must stay inside the row (``in_features`` columns), as real entries do.
    """
    index_bits = check_index_bits(layer.index_bits)
    escape = (1 << index_bits) - 1
    rows, cols = layer.shape
    z = np.asarray(layer.z)
    codes = np.asarray(layer.codes)
    row_ptr = np.asarray(layer.row_ptr, dtype=np.int64)
    if row_ptr.size != rows + 1 or row_ptr[0] != 0 or row_ptr[-1] != z.size:
        raise ValueError(f"row_ptr must run from 0 to {z.size} over {rows + 1} entries")
    # Range first: np.diff of huge values would overflow int64 and hide a non-monotone pointer.
    if np.any((row_ptr < 0) | (row_ptr > z.size)):
        raise ValueError(f"row_ptr values must lie in [0, {z.size}]")
    if np.any(np.diff(row_ptr) < 0):
        raise ValueError("row_ptr is not monotone")
    if codes.size != z.size:
        raise ValueError(f"{codes.size} codes for {z.size} index entries")
    if z.size and z.max() > escape:
        raise ValueError(f"index values must lie in 0..{escape} for index_bits={index_bits}")
    position = np.flatnonzero(z != escape)  # of every real entry
    # Real entries before each row start: the canonical row pointers.
    kept_row_ptr = np.searchsorted(position, row_ptr).astype(np.int64)
    kept_per_row = np.diff(kept_row_ptr)
    fillers_per_row = np.diff(row_ptr) - kept_per_row
    # The column after an entry: the row's (z + 1) of real entries so far plus escape per filler.
    advance = z[position].astype(np.int64) + 1
    np.cumsum(advance, out=advance)
    advance_before_row = np.concatenate(([0], advance))[kept_row_ptr]
    row_length = advance_before_row[1:] - advance_before_row[:-1] + escape * fillers_per_row
    if rows and row_length.max() > cols:
        row = int(np.argmax(row_length))
        raise ValueError(
            f"row {row}'s entries reach column {row_length[row] - 1}, outside in_features={cols}"
        )
    entry_row = np.repeat(np.arange(rows, dtype=np.int64), kept_per_row)
    # Fillers before a real entry in its row: entries before it in the row, minus real ones.
    real_before = np.arange(position.size) - kept_row_ptr[:-1][entry_row]
    fillers_before = position - row_ptr[:-1][entry_row] - real_before
    column = advance - advance_before_row[:-1][entry_row] + escape * fillers_before - 1
    return CompressedMatrix(layer.shape, layer.codebook, kept_row_ptr, column, codes[position], layer.bits)
