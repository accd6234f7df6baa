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

from compress.matrix import CompressedMatrix

MAX_INDEX_BITS = 8


def check_index_bits(index_bits: int) -> int:
    if isinstance(index_bits, bool) or not isinstance(index_bits, (int, np.integer)):
        raise TypeError(f"index_bits must be an int in 1..{MAX_INDEX_BITS}, got {index_bits!r}")
    if not 1 <= int(index_bits) <= MAX_INDEX_BITS:
        raise ValueError(f"index_bits must be in 1..{MAX_INDEX_BITS}, got {index_bits}")
    return int(index_bits)


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


def encode_relative(matrix: CompressedMatrix, index_bits: int) -> RelativeIndexLayer:
    """Encode a canonical matrix in the relative-index format (vectorized)."""
    index_bits = check_index_bits(index_bits)
    escape = (1 << index_bits) - 1
    nnz = matrix.nnz
    row_starts = matrix.row_ptr[:-1]
    cols = matrix.col_idx.astype(np.int64)
    prev = np.empty(nnz, dtype=np.int64)
    if nnz:
        prev[1:] = cols[:-1]
        starts = row_starts[row_starts < nnz]
        prev[starts] = -1
    gap = cols - prev - 1
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
    """Decode back to the canonical form; raises ValueError on inconsistent streams."""
    index_bits = check_index_bits(layer.index_bits)
    escape = (1 << index_bits) - 1
    rows, cols = layer.shape
    z = np.asarray(layer.z).astype(np.int64)
    row_ptr = np.asarray(layer.row_ptr, dtype=np.int64)
    if row_ptr.size != rows + 1 or row_ptr[0] != 0 or row_ptr[-1] != z.size:
        raise ValueError(f"row_ptr must run from 0 to {z.size} over {rows + 1} entries")
    # Range first: np.diff of huge values would overflow int64 and hide a non-monotone pointer.
    if np.any((row_ptr < 0) | (row_ptr > z.size)):
        raise ValueError(f"row_ptr values must lie in [0, {z.size}]")
    if np.any(np.diff(row_ptr) < 0):
        raise ValueError("row_ptr is not monotone")
    if np.asarray(layer.codes).size != z.size:
        raise ValueError(f"{np.asarray(layer.codes).size} codes for {z.size} index entries")
    if z.size and z.max() > escape:
        raise ValueError(f"index values must lie in 0..{escape} for index_bits={index_bits}")
    is_real = z != escape
    advance = np.where(is_real, z + 1, escape)
    running = np.cumsum(advance)
    before_row = np.concatenate(([0], running))[row_ptr[:-1]]
    entry_row = np.repeat(np.arange(rows, dtype=np.int64), np.diff(row_ptr))
    col = running - before_row[entry_row] - 1
    real_cols = col[is_real]
    if real_cols.size and real_cols.max() >= cols:
        raise ValueError(f"decoded column {real_cols.max()} is outside in_features={cols}")
    real_rows = entry_row[is_real]
    kept_row_ptr = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(real_rows, minlength=rows), out=kept_row_ptr[1:])
    return CompressedMatrix(
        layer.shape, layer.codebook, kept_row_ptr, real_cols, np.asarray(layer.codes)[is_real], layer.bits
    )
