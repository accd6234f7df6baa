"""The canonical compressed layer: every other format in the library encodes this one.

A `CompressedMatrix` is a pruned and weight-shared matrix of shape (out_features, in_features):

* ``codebook``: float32[k], the shared weights, ``k <= 2**bits``;
* ``row_ptr``:  int64[out_features + 1], CSR row pointers into the kept weights;
* ``col_idx``:  int32[nnz], column of each kept weight, strictly increasing within a row;
* ``codes``:    uint8[nnz], the codebook index of each kept weight.

The arrays are NumPy arrays (the offline side of the library runs on CPU); they are validated
once at construction and never mutated afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from compress.checks import check_int

MAX_BITS = 8


def _as_numpy(array, name: str) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    if isinstance(array, np.ndarray):
        return array
    try:
        return np.asarray(array)
    except Exception as exc:
        raise TypeError(f"{name} must be array-like, got {type(array).__name__}") from exc


def check_bits(bits: int, name: str = "bits") -> int:
    """Validate a code width (1..8) and return it as an int."""
    return check_int(bits, name, 1, MAX_BITS)


@dataclass(frozen=True, eq=False)
class CompressedMatrix:
    """A pruned, weight-shared matrix in canonical CSR form (see the module docstring)."""

    shape: tuple[int, int]
    codebook: np.ndarray
    row_ptr: np.ndarray
    col_idx: np.ndarray
    codes: np.ndarray
    bits: int
    _dense_cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    #: ``matrix.size_report(index_bits=5)``: exact storage in the paper's relative-index format,
    #: this layer's row of `compress.size_table` (`compress.layer_size`). `compress.size` builds
    #: on this module and sets it, so that this module imports nothing that imports it back;
    #: importing any part of `compress` imports `compress.size`.
    size_report: ClassVar[Callable[..., dict]]

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"shape must be (out_features, in_features) with both >= 1, got {self.shape}")
        rows, cols = shape
        if cols >= 2**31 or rows >= 2**62:
            raise ValueError(f"shape {shape} is too large (in_features must be < 2**31)")
        bits = check_bits(self.bits)
        codebook = np.ascontiguousarray(_as_numpy(self.codebook, "codebook"), dtype=np.float32)
        row_ptr = _as_numpy(self.row_ptr, "row_ptr")
        col_idx = _as_numpy(self.col_idx, "col_idx")
        codes = _as_numpy(self.codes, "codes")
        if codebook.ndim != 1 or not 1 <= codebook.size <= 2**bits:
            raise ValueError(
                f"codebook must be 1-D with 1..{2**bits} entries for bits={bits}, got shape {codebook.shape}"
            )
        if not np.all(np.isfinite(codebook)):
            raise ValueError("codebook holds NaN or inf values")
        for name, arr in (("row_ptr", row_ptr), ("col_idx", col_idx), ("codes", codes)):
            if arr.ndim != 1:
                raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
            if arr.size and not np.issubdtype(arr.dtype, np.integer):
                raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
        if row_ptr.size != rows + 1:
            raise ValueError(f"row_ptr must have out_features + 1 = {rows + 1} entries, got {row_ptr.size}")
        row_ptr = row_ptr.astype(np.int64)
        nnz = int(row_ptr[-1])
        if row_ptr[0] != 0 or np.any(np.diff(row_ptr) < 0):
            raise ValueError("row_ptr must start at 0 and be non-decreasing")
        if col_idx.size != nnz or codes.size != nnz:
            raise ValueError(
                f"row_ptr[-1] = {nnz} kept weights, but col_idx has {col_idx.size} and codes has {codes.size}"
            )
        if nnz:
            if col_idx.min() < 0 or col_idx.max() >= cols:
                raise ValueError(
                    f"col_idx must lie in [0, {cols}), got range [{col_idx.min()}, {col_idx.max()}]"
                )
            if codes.min() < 0 or codes.max() >= codebook.size:
                raise ValueError(
                    f"codes must lie in [0, {codebook.size}) (the codebook size), "
                    f"got range [{codes.min()}, {codes.max()}]"
                )
            # Strictly increasing columns within each row: a decrease is only allowed at a row start.
            steps = np.diff(col_idx.astype(np.int64))
            row_starts = np.zeros(nnz, dtype=bool)
            row_starts[row_ptr[:-1][row_ptr[:-1] < nnz]] = True
            if np.any((steps <= 0) & ~row_starts[1:]):
                raise ValueError("col_idx must be strictly increasing within each row")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "bits", bits)
        object.__setattr__(self, "codebook", codebook)
        object.__setattr__(self, "row_ptr", np.ascontiguousarray(row_ptr))
        object.__setattr__(self, "col_idx", np.ascontiguousarray(col_idx, dtype=np.int32))
        object.__setattr__(self, "codes", np.ascontiguousarray(codes, dtype=np.uint8))
        for arr in (self.codebook, self.row_ptr, self.col_idx, self.codes):
            arr.setflags(write=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dense(cls, mask, codes, codebook, bits: int | None = None) -> CompressedMatrix:
        """Build from a boolean keep-mask, a dense array of codes and a codebook.

        ``mask`` and ``codes`` have the matrix's shape (a 2-D weight; use ``reshape`` for conv
        weights); codes at pruned positions are ignored. ``bits`` defaults to the fewest bits that
        address the codebook.
        """
        mask = _as_numpy(mask, "mask")
        codes = _as_numpy(codes, "codes")
        codebook = _as_numpy(codebook, "codebook")
        if mask.ndim != 2:
            raise ValueError(f"mask must be 2-D (out_features, in_features), got shape {mask.shape}")
        if codes.shape != mask.shape:
            raise ValueError(f"codes shape {codes.shape} does not match mask shape {mask.shape}")
        mask = mask.astype(bool)
        if bits is None:
            bits = max(1, int(np.ceil(np.log2(max(codebook.size, 1)))))
        rows, kept_cols = np.nonzero(mask)
        row_ptr = np.zeros(mask.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=mask.shape[0]), out=row_ptr[1:])
        return cls(mask.shape, codebook, row_ptr, kept_cols.astype(np.int32), codes[mask], bits)

    @classmethod
    def quantize(cls, weight, mask, codebook, bits: int | None = None) -> CompressedMatrix:
        """Build from a dense weight by assigning each kept weight to its nearest centroid."""
        weight = np.asarray(_as_numpy(weight, "weight"), dtype=np.float32)
        mask = _as_numpy(mask, "mask").astype(bool)
        codebook = np.asarray(_as_numpy(codebook, "codebook"), dtype=np.float32)
        if weight.shape != mask.shape:
            raise ValueError(f"weight shape {weight.shape} does not match mask shape {mask.shape}")
        if not np.all(np.isfinite(weight[mask])):
            raise ValueError("weight holds NaN or inf values at kept positions")
        codes = np.zeros(weight.shape, dtype=np.uint8)
        codes[mask] = nearest_centroid(weight[mask], codebook)
        return cls.from_dense(mask, codes, codebook, bits)

    # ------------------------------------------------------------------ properties
    @property
    def out_features(self) -> int:
        return self.shape[0]

    @property
    def in_features(self) -> int:
        return self.shape[1]

    @property
    def nnz(self) -> int:
        return int(self.row_ptr[-1])

    @property
    def density(self) -> float:
        return self.nnz / (self.shape[0] * self.shape[1])

    @property
    def row_idx(self) -> np.ndarray:
        """Row of each kept weight (int64[nnz]), derived from ``row_ptr``."""
        return np.repeat(np.arange(self.shape[0], dtype=np.int64), np.diff(self.row_ptr))

    @property
    def values(self) -> np.ndarray:
        """The decoded value of each kept weight (float32[nnz])."""
        return self.codebook[self.codes]

    # ------------------------------------------------------------------ decoding
    def mask(self) -> np.ndarray:
        out = np.zeros(self.shape, dtype=bool)
        out[self.row_idx, self.col_idx] = True
        return out

    def to_dense(self) -> np.ndarray:
        """The decoded float32 matrix: codebook values at kept positions, exact zeros elsewhere."""
        out = np.zeros(self.shape, dtype=np.float32)
        out[self.row_idx, self.col_idx] = self.values
        return out

    def to_dense_tensor(self, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
        return torch.from_numpy(self.to_dense()).to(device=device, dtype=dtype)

    def dense_codes(self) -> np.ndarray:
        """Codes as a dense uint8 matrix (0 at pruned positions; use ``mask()`` to tell them apart)."""
        out = np.zeros(self.shape, dtype=np.uint8)
        out[self.row_idx, self.col_idx] = self.codes
        return out

    def equals(self, other: CompressedMatrix) -> bool:
        """True when both hold exactly the same layer (same shape, bits, codebook bits and entries)."""
        return (
            self.shape == other.shape
            and self.bits == other.bits
            and np.array_equal(self.codebook.view(np.uint32), other.codebook.view(np.uint32))
            and np.array_equal(self.row_ptr, other.row_ptr)
            and np.array_equal(self.col_idx, other.col_idx)
            and np.array_equal(self.codes, other.codes)
        )

    def __repr__(self) -> str:
        return (
            f"CompressedMatrix(shape={self.shape}, nnz={self.nnz}, density={self.density:.4f}, "
            f"bits={self.bits}, codebook_size={self.codebook.size})"
        )


def nearest_centroid(values: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Index of the nearest codebook entry for each value (ties go to the lower centroid).

    1-D structure: sort the centroids once and bisect at their midpoints, O(n log k).
    """
    codebook = np.asarray(codebook, dtype=np.float32)
    order = np.argsort(codebook, kind="stable")
    sorted_centroids = codebook[order].astype(np.float64)
    midpoints = (sorted_centroids[1:] + sorted_centroids[:-1]) / 2
    slot = np.searchsorted(midpoints, np.asarray(values, dtype=np.float64), side="left")
    return order[slot].astype(np.uint8)
