"""The fixed-width GPU form's layout of a compressed FC layer (pure NumPy/PyTorch, no Triton here).

Format ("sliced relative-index"):

* Every row is first written in the paper's relative-index form: one entry per kept weight plus
  filler entries, each entry ``(z, code)`` where ``z`` counts the pruned columns skipped since the
  previous entry of the row; ``z = 2**index_bits - 1`` is an escape (a filler) that advances that
  many columns and holds no weight (the convention of `compress.relative_index`).
* Rows are sorted by entry count (longest first, stable) and cut into *slices* of ``slice_rows``
  consecutive sorted rows. A slice is one tile of work for one GPU program: it owns whole rows (no
  atomics, no second pass), and since slices hold rows of near-equal length the padding is small
  and the work of a tile is its entry count; longest-first order lets the GPU scheduler balance
  uneven layers (largest tiles start first). The rows of a slice are padded with escape entries
  to the slice's longest row.
* Within a slice, entries are stored entry-major: entry ``j`` of the slice's row ``r`` sits at
  ``slice_ptr[s] + j * slice_rows + r``, so a program reading ``BLOCK`` entries of all its rows
  reads one contiguous run of the packed stream.
* Each entry is ``code | z << code_bits`` (``code_bits + index_bits`` <= 16 bits) and the entries
  are bit-packed back to back, little-endian, into 32-bit words (an entry may straddle two words);
  one zero word is appended so that reading ``word + 1`` never leaves the array.

Tensors (the module stores them as buffers): ``words`` int32 (bit pattern of uint32),
``slice_ptr`` int64[n_slices + 1] (entry offsets), ``row_ids`` int32[out_features] (the original
row of each sorted position), ``codebook`` float32[k]. Everything else is integer metadata.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from compress.matrix import CompressedMatrix, check_bits
from compress.relative_index import check_index_bits

DEFAULT_SLICE_ROWS = 4
MAX_SLICE_ROWS = 64
TENSOR_NAMES = ("words", "slice_ptr", "row_ids", "codebook")
METADATA_NAMES = ("out_features", "in_features", "code_bits", "index_bits", "slice_rows", "nnz", "entries")


def _row_gaps(matrix: CompressedMatrix) -> np.ndarray:
    """Pruned columns skipped before each kept weight since the previous one of its row."""
    cols = matrix.col_idx.astype(np.int64)
    prev = np.empty_like(cols)
    if cols.size:
        prev[1:] = cols[:-1]
        starts = matrix.row_ptr[:-1]
        prev[starts[starts < cols.size]] = -1
    return cols - prev - 1


def best_index_bits(matrix: CompressedMatrix) -> int:
    """The index width (1..8) that minimizes the entry bits ``(nnz + fillers) * (code + index)``."""
    gaps = _row_gaps(matrix)
    costs = [(matrix.nnz + int(np.sum(gaps // ((1 << ib) - 1)))) * (matrix.bits + ib) for ib in range(1, 9)]
    return int(np.argmin(costs)) + 1


def pack_bits(values: np.ndarray, width: int) -> np.ndarray:
    """Pack unsigned ``values`` (< 2**width, width <= 16) back to back into little-endian uint32
    words, plus one trailing zero word."""
    n = values.size
    n_words = (n * width + 31) // 32 + 1
    bit = np.arange(n, dtype=np.int64) * width
    word = bit >> 5
    shift = bit & 31
    v = values.astype(np.uint64)
    low = (v << shift.astype(np.uint64)) & np.uint64(0xFFFFFFFF)
    high = v >> (32 - shift).astype(np.uint64)  # bits that spill into the next word (0 if none)
    # Fields of different entries never overlap, so summing them is OR; float64 holds 32-bit sums exactly.
    packed = np.bincount(word, weights=low.astype(np.float64), minlength=n_words)
    packed += np.bincount(word + 1, weights=high.astype(np.float64), minlength=n_words + 1)[:n_words]
    return packed.astype(np.uint64).astype(np.uint32)


def unpack_bits(words: np.ndarray, width: int, count: int) -> np.ndarray:
    """Inverse of `pack_bits`: the first ``count`` fields of ``width`` bits (int64)."""
    words = np.asarray(words).view(np.uint32).astype(np.uint64)
    bit = np.arange(count, dtype=np.int64) * width
    word = bit >> 5
    shift = (bit & 31).astype(np.uint64)
    pair = words[word] | (words[np.minimum(word + 1, words.size - 1)] << np.uint64(32))
    return ((pair >> shift) & np.uint64((1 << width) - 1)).astype(np.int64)


@dataclass(frozen=True, eq=False)
class GpuLayout:
    """A compressed layer in the kernels' layout (see the module docstring); tensors on any device.

    Construction checks dtypes, shapes and sizes but never reads tensor values, so building a view
    of device tensors (e.g. from a module's buffers) costs no host synchronization; `decode`
    checks the values."""

    out_features: int
    in_features: int
    code_bits: int
    index_bits: int
    slice_rows: int
    nnz: int
    entries: int  # stored entries: kept weights, fillers and padding (= slice_ptr[-1])
    words: torch.Tensor
    slice_ptr: torch.Tensor
    row_ids: torch.Tensor
    codebook: torch.Tensor

    def __post_init__(self) -> None:
        check_bits(self.code_bits, "code_bits")
        check_index_bits(self.index_bits)
        r = self.slice_rows
        if not (isinstance(r, int) and 1 <= r <= MAX_SLICE_ROWS and r & (r - 1) == 0):
            raise ValueError(f"slice_rows must be a power of two in 1..{MAX_SLICE_ROWS}, got {r!r}")
        expected = {
            "words": torch.int32,
            "slice_ptr": torch.int64,
            "row_ids": torch.int32,
            "codebook": torch.float32,
        }
        for name, dtype in expected.items():
            t = getattr(self, name)
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            if t.dtype != dtype or t.dim() != 1:
                raise ValueError(f"{name} must be 1-D {dtype}, got {t.dtype} of shape {tuple(t.shape)}")
        devices = {t.device for t in (self.words, self.slice_ptr, self.row_ids, self.codebook)}
        if len(devices) != 1:
            raise ValueError(f"all tensors must be on one device, got {sorted(map(str, devices))}")
        if self.row_ids.numel() != self.out_features:
            raise ValueError(f"row_ids has {self.row_ids.numel()} entries for {self.out_features} rows")
        if self.slice_ptr.numel() != self.n_slices + 1:
            raise ValueError(f"slice_ptr has {self.slice_ptr.numel()} entries, expected {self.n_slices + 1}")
        if not 1 <= self.codebook.numel() <= 2**self.code_bits:
            raise ValueError(f"codebook has {self.codebook.numel()} entries for code_bits={self.code_bits}")
        need_words = (self.entries * self.entry_bits + 31) // 32 + 1
        if self.words.numel() != need_words:
            raise ValueError(
                f"words has {self.words.numel()} words, {self.entries} entries need {need_words}"
            )

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_matrix(
        cls,
        matrix: CompressedMatrix,
        index_bits: int | None = None,
        slice_rows: int = DEFAULT_SLICE_ROWS,
        device: torch.device | str | None = None,
    ) -> GpuLayout:
        """Build the layout (vectorized). ``index_bits=None`` picks the width with the fewest bits."""
        if not isinstance(matrix, CompressedMatrix):
            raise TypeError(f"matrix must be a CompressedMatrix, got {type(matrix).__name__}")
        index_bits = best_index_bits(matrix) if index_bits is None else check_index_bits(index_bits)
        r = slice_rows
        if isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= MAX_SLICE_ROWS or r & (r - 1):
            raise ValueError(f"slice_rows must be a power of two in 1..{MAX_SLICE_ROWS}, got {r!r}")
        rows, cols = matrix.shape
        escape = (1 << index_bits) - 1
        row_of = matrix.row_idx
        gaps = _row_gaps(matrix)
        fillers = gaps // escape
        z = gaps - fillers * escape
        cum_fill = np.cumsum(fillers)
        fill_before_row = np.concatenate(([0], cum_fill))[matrix.row_ptr[:-1]]
        row_nnz = np.diff(matrix.row_ptr)
        row_entries = row_nnz + np.concatenate(([0], cum_fill))[matrix.row_ptr[1:]] - fill_before_row

        order = np.argsort(-row_entries, kind="stable")
        slot_of_row = np.empty(rows, dtype=np.int64)
        slot_of_row[order] = np.arange(rows)
        n_slices = -(-rows // r)
        padded = np.zeros(n_slices * r, dtype=np.int64)
        padded[:rows] = row_entries[order]
        slice_len = padded.reshape(n_slices, r).max(axis=1)
        slice_ptr = np.zeros(n_slices + 1, dtype=np.int64)
        np.cumsum(slice_len * r, out=slice_ptr[1:])

        # Position of each kept weight in its row's entry sequence: after the earlier kept weights
        # of the row and all fillers up to and including its own.
        k = np.arange(matrix.nnz, dtype=np.int64)
        j = k - matrix.row_ptr[row_of] + cum_fill - fill_before_row[row_of]
        slot = slot_of_row[row_of]
        position = slice_ptr[slot // r] + j * r + slot % r
        entries = np.full(int(slice_ptr[-1]), escape << matrix.bits, dtype=np.int64)
        entries[position] = (z << matrix.bits) | matrix.codes.astype(np.int64)
        words = pack_bits(entries, matrix.bits + index_bits).view(np.int32)
        return cls(
            out_features=rows,
            in_features=cols,
            code_bits=matrix.bits,
            index_bits=index_bits,
            slice_rows=r,
            nnz=matrix.nnz,
            entries=int(slice_ptr[-1]),
            words=torch.from_numpy(words.copy()).to(device),
            slice_ptr=torch.from_numpy(slice_ptr).to(device),
            row_ids=torch.from_numpy(order.astype(np.int32)).to(device),
            codebook=torch.from_numpy(matrix.codebook.copy()).to(device),
        )

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], metadata: dict[str, int]) -> GpuLayout:
        """Rebuild from `tensors()` and `metadata()` (e.g. a module's buffers and config)."""
        missing = [n for n in TENSOR_NAMES if n not in tensors]
        missing += [n for n in METADATA_NAMES if n not in metadata]
        if missing:
            raise ValueError(f"missing layout fields: {missing}")
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
    def n_slices(self) -> int:
        return -(-self.out_features // self.slice_rows)

    @property
    def entry_bits(self) -> int:
        return self.code_bits + self.index_bits

    def bit_counts(self) -> dict[str, int]:
        """Exact bits of every stored tensor, as the GPU reads them."""
        return {
            "entry_bits": self.entries * self.entry_bits,
            "word_padding_bits": self.words.numel() * 32 - self.entries * self.entry_bits,
            "slice_ptr_bits": self.slice_ptr.numel() * 64,
            "row_ids_bits": self.row_ids.numel() * 32,
            "codebook_bits": self.codebook.numel() * 32,
        }

    def total_bits(self) -> int:
        return sum(self.bit_counts().values())

    def total_bytes(self) -> int:
        return (self.total_bits() + 7) // 8

    def bits_per_kept_weight(self) -> float:
        return self.total_bits() / max(self.nnz, 1)

    # ------------------------------------------------------------------ decoding
    def decode(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, column, code) of every kept weight, in stored order; raises ValueError on
        inconsistent streams."""
        escape = (1 << self.index_bits) - 1
        r = self.slice_rows
        slice_ptr = self.slice_ptr.cpu().numpy()
        total = self.entries
        if slice_ptr[-1] != total:
            raise ValueError(f"slice_ptr ends at {slice_ptr[-1]}, metadata says {total} entries")
        if slice_ptr[0] != 0 or np.any(np.diff(slice_ptr) < 0) or np.any(np.diff(slice_ptr) % r):
            raise ValueError("slice_ptr must start at 0 and grow by multiples of slice_rows")
        entries = unpack_bits(self.words.cpu().numpy(), self.entry_bits, total)
        code = entries & ((1 << self.code_bits) - 1)
        z = entries >> self.code_bits
        e = np.arange(total, dtype=np.int64)
        slice_of = np.repeat(np.arange(self.n_slices, dtype=np.int64), np.diff(slice_ptr))
        within = e - slice_ptr[slice_of]
        slot = slice_of * r + within % r
        j = within // r
        # Sort entries by (slot, j) so each row's entries are consecutive, then a running sum of
        # the column advances restarted at each row gives the columns.
        order = np.lexsort((j, slot))
        slot, z, code = slot[order], z[order], code[order]
        advance = np.where(z == escape, escape, z + 1)
        running = np.cumsum(advance)
        first = np.ones(total, dtype=bool)
        first[1:] = slot[1:] != slot[:-1]
        base = np.maximum.accumulate(np.where(first, running - advance, 0)) if total else running
        col = running - base - 1
        real = z != escape
        if np.any(real & (slot >= self.out_features)):
            raise ValueError("padding rows of the last slice hold kept weights")
        if real.any() and col[real].max() >= self.in_features:
            raise ValueError(f"decoded column {col[real].max()} is outside in_features={self.in_features}")
        row_ids = self.row_ids.cpu().numpy().astype(np.int64)
        return row_ids[slot[real]], col[real], code[real]

    def to_matrix(self) -> CompressedMatrix:
        rows, cols, codes = self.decode()
        if rows.size != self.nnz:
            raise ValueError(f"stream holds {rows.size} kept weights, metadata says nnz={self.nnz}")
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
