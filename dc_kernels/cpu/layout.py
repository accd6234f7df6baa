"""The CPU sparse form's layout: the paper's relative-index entries, bit-packed (NumPy/PyTorch).

Every row is written in the relative-index form of `compress.relative_index` (one entry per kept
weight plus fillers, entry ``(z, code)``: ``z`` pruned columns skipped since the previous entry,
``z = 2**index_bits - 1`` a filler that advances that many columns and holds no weight) at the
index width with the fewest bits (`compress.size.best_index_bits`), then padded with fillers to
a multiple of 16 entries (one SIMD step of the kernels). Each entry is the value
``code | z << bits`` of ``bits + index_bits`` bits, and all entries form one bit-plane stream
(`dc_kernels.planes`); ``entry_ptr[r]`` is row r's first entry. A kept weight therefore costs
``bits + index_bits`` bits plus its share of fillers and padding (5-bit codes at 9% density:
about 14 bits, where the canonical tensors take 24), and the kernels
(``dc_kernels/cpu/sparse_linear.c``) decode it in registers.

Tensors: ``entry_ptr`` int64[out_features + 1], ``planes`` uint8, and the layer's ``codebook``
float32[k] (the module's own buffer: it is not copied). Everything else is integer metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from compress.matrix import CompressedMatrix, check_bits
from compress.relative_index import check_index_bits, encode_relative, row_gaps
from compress.size import best_index_bits, entry_bits_by_index_width
from dc_kernels.layout_state import LayoutState
from dc_kernels.planes import GROUP, planes_bytes, read_planes, write_planes

TENSOR_NAMES = ("entry_ptr", "planes")
METADATA_NAMES = ("out_features", "in_features", "bits", "index_bits", "nnz", "entries")
# The entries the AVX2 kernels decode in byte steps (``BYTE_STEPS`` in sparse_linear.c): 8 to 11
# bits, codes of up to 5 bits, indices of up to 8.
BYTE_STEP_WIDTHS = range(8, 12)
BYTE_STEP_MAX_CODE_BITS = 5


def byte_step_index_bits(gaps: np.ndarray, bits: int, slack: float) -> int:
    """The relative-index width for a layer of these `compress.relative_index.row_gaps` and code
    width whose entries the byte steps decode: the one of those widths with the fewest entry bits
    where they take at most ``slack`` more than `best_index_bits`' (which it is when its entries
    are already 8 to 11 bits), else `best_index_bits`'."""
    costs = entry_bits_by_index_width(gaps, bits)
    fewest = min(costs, key=costs.get)  # best_index_bits' choice
    covered = [w for w in costs if bits + w in BYTE_STEP_WIDTHS] if bits <= BYTE_STEP_MAX_CODE_BITS else []
    if not covered or bits + fewest in BYTE_STEP_WIDTHS:
        return fewest
    best = min(covered, key=costs.get)
    return best if costs[best] <= (1 + slack) * costs[fewest] else fewest


@dataclass(frozen=True, eq=False)
class SparseLayout(LayoutState):
    """A compressed layer in the CPU sparse kernels' layout (see the module docstring).

    Construction checks dtypes, sizes and the entry pointers (what keeps the kernels inside the
    arrays: they clamp columns to the row and the codebook is padded to every code); `to_matrix`
    checks the rest of the values."""

    TENSOR_NAMES: ClassVar[tuple[str, ...]] = TENSOR_NAMES
    METADATA_NAMES: ClassVar[tuple[str, ...]] = METADATA_NAMES

    out_features: int
    in_features: int
    bits: int
    index_bits: int
    nnz: int
    entries: int  # stored entries: kept weights, fillers and padding (= entry_ptr[-1])
    entry_ptr: torch.Tensor
    planes: torch.Tensor
    codebook: torch.Tensor

    def __post_init__(self) -> None:
        check_bits(self.bits, "bits")
        check_index_bits(self.index_bits)
        for name, dtype in (("entry_ptr", torch.int64), ("planes", torch.uint8), ("codebook", torch.float32)):
            t = getattr(self, name)
            if not isinstance(t, torch.Tensor) or t.dtype != dtype or t.dim() != 1 or t.device.type != "cpu":
                got = (
                    f"{t.dtype} {tuple(t.shape)} on {t.device}"
                    if isinstance(t, torch.Tensor)
                    else type(t).__name__
                )
                raise ValueError(f"{name} must be a 1-D CPU tensor of {dtype}, got {got}")
            if not t.is_contiguous():
                raise ValueError(f"{name} must be contiguous")
        if not 1 <= self.codebook.numel() <= 1 << self.bits:
            raise ValueError(f"codebook has {self.codebook.numel()} entries for bits={self.bits}")
        if self.entry_ptr.numel() != self.out_features + 1:
            raise ValueError(f"entry_ptr has {self.entry_ptr.numel()} entries for {self.out_features} rows")
        if self.entries % GROUP or self.planes.numel() != planes_bytes(self.entries, self.width):
            raise ValueError(
                f"{self.entries} entries of {self.width} bits take {planes_bytes(self.entries, self.width)} "
                f"bytes of planes (a multiple of {GROUP} entries), got {self.planes.numel()}"
            )
        ptr = self.entry_ptr.numpy()
        steps = np.diff(ptr)
        if ptr[0] != 0 or ptr[-1] != self.entries or np.any(steps < 0) or np.any(steps % GROUP):
            raise ValueError(
                f"entry_ptr must run from 0 to {self.entries} in non-decreasing multiples of {GROUP}, "
                f"got {ptr[0]} .. {ptr[-1]}"
            )

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_matrix(
        cls, matrix: CompressedMatrix, index_bits: int | None = None, codebook: torch.Tensor | None = None
    ) -> SparseLayout:
        """Build the layout; ``index_bits=None`` takes the width with the fewest bits, ``codebook``
        (the layer's, float32 on the CPU) defaults to a copy of the matrix's."""
        if not isinstance(matrix, CompressedMatrix):
            raise TypeError(f"matrix must be a CompressedMatrix, got {type(matrix).__name__}")
        gaps = row_gaps(matrix.row_ptr, matrix.col_idx)
        index_bits = (
            best_index_bits(gaps, matrix.bits) if index_bits is None else check_index_bits(index_bits)
        )
        relative = encode_relative(matrix, index_bits)
        escape = (1 << index_bits) - 1
        lengths = np.diff(relative.row_ptr)
        entry_ptr = np.zeros(matrix.out_features + 1, dtype=np.int64)
        np.cumsum(-(-lengths // GROUP) * GROUP, out=entry_ptr[1:])
        entries = int(entry_ptr[-1])
        row_of = np.repeat(np.arange(matrix.out_features), lengths)
        position = (
            np.arange(relative.entries, dtype=np.int64) + (entry_ptr[:-1] - relative.row_ptr[:-1])[row_of]
        )
        values = np.full(entries, escape << matrix.bits, dtype=np.int64)
        values[position] = relative.codes.astype(np.int64) | relative.z.astype(np.int64) << matrix.bits
        width = matrix.bits + index_bits
        planes = np.zeros(planes_bytes(entries, width), dtype=np.uint8)
        write_planes(planes, values, width, entries)
        if codebook is None:
            codebook = torch.from_numpy(matrix.codebook.copy())
        return cls(
            matrix.out_features, matrix.in_features, matrix.bits, index_bits, matrix.nnz, entries,
            torch.from_numpy(entry_ptr), torch.from_numpy(planes), codebook,
        )  # fmt: skip

    # ------------------------------------------------------------------ sizes
    @property
    def shape(self) -> tuple[int, int]:
        return (self.out_features, self.in_features)

    @property
    def width(self) -> int:
        """Bits per entry."""
        return self.bits + self.index_bits

    @property
    def density(self) -> float:
        return self.nnz / (self.out_features * self.in_features)

    def total_bytes(self) -> int:
        """Bytes of the packed tensors (the codebook is the layer's own)."""
        return self.planes.numel() + 8 * self.entry_ptr.numel()

    # ------------------------------------------------------------------ decoding
    def to_matrix(self) -> CompressedMatrix:
        """The canonical matrix (ValueError when the stream does not hold a valid layer)."""
        values = read_planes(self.planes.numpy(), self.width, self.entries)
        escape = (1 << self.index_bits) - 1
        z = values >> self.bits
        advance = np.where(z == escape, escape, z + 1)
        running = np.cumsum(advance)
        ptr = self.entry_ptr.numpy()
        row_of = np.repeat(np.arange(self.out_features), np.diff(ptr))
        before_row = np.concatenate(([0], running))[ptr[:-1]]
        cols = running - before_row[row_of] - 1
        real = z != escape
        rows = row_of[real]
        row_ptr = np.zeros(self.out_features + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=self.out_features), out=row_ptr[1:])
        if row_ptr[-1] != self.nnz:
            raise ValueError(f"the stream holds {row_ptr[-1]} kept weights, metadata says nnz={self.nnz}")
        return CompressedMatrix(
            self.shape,
            self.codebook.numpy(),
            row_ptr,
            cols[real],
            values[real] & ((1 << self.bits) - 1),
            self.bits,
        )
