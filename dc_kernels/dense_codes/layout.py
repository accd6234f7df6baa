"""The dense-codes form's layout: every weight a code (NumPy/PyTorch, no Triton here).

For layers of moderate density (from about 30-50% kept, with 4-bit codes) a code per weight takes
fewer bits than a code and a relative index per kept weight, and a kernel reads x contiguously
instead of gathering it. Codes ``0 .. k-1`` select the codebook's shared weights; a pruned weight
holds the *zero code* ``k``, just past the codebook, whose entry of the kernels' zero-padded table
is 0. So a code takes ``width = bit_length(k)`` bits (`compress.size.dense_code_width`): ``bits``
when the codebook has at most ``2**bits - 1`` entries (``compress`` reserves the code when a layer
is compressed for this form), one bit more when it is full.

Row ``r``'s codes are values ``r * stride .. r * stride + in_features`` of one bit-plane stream
(`dc_kernels.planes`), ``stride`` = in_features rounded up to a multiple of 16 (padding positions
hold the zero code). The same stream serves the CPU kernels (``dc_kernels/cpu/dense_codes.c``) and
the Triton kernels (`dc_kernels.dense_codes.kernels`).

Tensors: ``planes`` uint8 and the layer's ``codebook`` float32[k]. Everything else is integer
metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from compress.matrix import CompressedMatrix, check_bits
from compress.size import dense_code_width
from dc_kernels.layout_state import LayoutState
from dc_kernels.planes import GROUP, planes_bytes, read_planes, write_planes

TENSOR_NAMES = ("planes",)
METADATA_NAMES = ("out_features", "in_features", "bits", "width", "nnz")
MAX_WIDTH = 9  # a full 256-entry codebook and the zero code
# Values packed or unpacked per NumPy step when building or decoding (bounds the temporaries).
_CHUNK_VALUES = 1 << 22


def row_stride(in_features: int) -> int:
    """Codes stored per row: in_features rounded up to a multiple of the kernels' step."""
    return -(-in_features // GROUP) * GROUP


@dataclass(frozen=True, eq=False)
class DenseCodesLayout(LayoutState):
    """A compressed layer as dense codes (see the module docstring); tensors on any device.

    Construction checks dtypes and sizes (what keeps a kernel inside the arrays: the codebook is
    padded to every code of ``width`` bits) but never reads tensor values; `to_matrix` checks
    those."""

    TENSOR_NAMES: ClassVar[tuple[str, ...]] = TENSOR_NAMES
    METADATA_NAMES: ClassVar[tuple[str, ...]] = METADATA_NAMES

    out_features: int
    in_features: int
    bits: int  # the layer's code width (CompressedMatrix.bits)
    width: int  # bits per stored code: room for the zero code
    nnz: int
    planes: torch.Tensor
    codebook: torch.Tensor

    def __post_init__(self) -> None:
        check_bits(self.bits, "bits")
        if (
            isinstance(self.width, bool)
            or not isinstance(self.width, int)
            or not 1 <= self.width <= MAX_WIDTH
        ):
            raise ValueError(f"width must be an int in 1..{MAX_WIDTH}, got {self.width!r}")
        for name, dtype in (("planes", torch.uint8), ("codebook", torch.float32)):
            t = getattr(self, name)
            if not isinstance(t, torch.Tensor) or t.dtype != dtype or t.dim() != 1 or not t.is_contiguous():
                got = f"{t.dtype} {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"{name} must be a contiguous 1-D tensor of {dtype}, got {got}")
        if self.planes.device != self.codebook.device:
            raise ValueError(f"planes on {self.planes.device} but codebook on {self.codebook.device}")
        k = self.codebook.numel()
        if not 1 <= k <= 1 << self.bits or dense_code_width(k) != self.width:
            raise ValueError(
                f"a codebook of {k} entries (bits={self.bits}) takes codes of {dense_code_width(k)} bits "
                f"with the zero code, got width={self.width}"
            )
        if self.planes.numel() != planes_bytes(self.codes, self.width):
            raise ValueError(
                f"{self.codes} codes of {self.width} bits take {planes_bytes(self.codes, self.width)} bytes "
                f"of planes, got {self.planes.numel()}"
            )

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_matrix(
        cls,
        matrix: CompressedMatrix,
        codebook: torch.Tensor | None = None,
        device: torch.device | str | None = None,
    ) -> DenseCodesLayout:
        """Build the layout on ``device``; ``codebook`` (the layer's float32 tensor, on that
        device) defaults to a copy of the matrix's."""
        if not isinstance(matrix, CompressedMatrix):
            raise TypeError(f"matrix must be a CompressedMatrix, got {type(matrix).__name__}")
        rows, cols = matrix.shape
        k = int(matrix.codebook.size)
        width = dense_code_width(k)
        stride = row_stride(cols)
        length = rows * stride
        planes = np.zeros(planes_bytes(length, width), dtype=np.uint8)
        row_block = max(1, _CHUNK_VALUES // stride)
        row_idx = matrix.row_idx
        for r0 in range(0, rows, row_block):
            r1 = min(rows, r0 + row_block)
            codes = np.full((r1 - r0, stride), k, dtype=np.uint16)
            lo, hi = matrix.row_ptr[r0], matrix.row_ptr[r1]
            codes[row_idx[lo:hi] - r0, matrix.col_idx[lo:hi]] = matrix.codes[lo:hi]
            write_planes(planes, codes.reshape(-1), width, length, r0 * stride)
        if codebook is None:
            codebook = torch.from_numpy(matrix.codebook.copy()).to(device)
        return cls(rows, cols, matrix.bits, width, matrix.nnz, torch.from_numpy(planes).to(device), codebook)

    def to(self, device: torch.device | str) -> DenseCodesLayout:
        return DenseCodesLayout(*self.metadata(), self.planes.to(device), self.codebook.to(device))

    # ------------------------------------------------------------------ sizes
    @property
    def shape(self) -> tuple[int, int]:
        return (self.out_features, self.in_features)

    @property
    def device(self) -> torch.device:
        return self.planes.device

    @property
    def stride(self) -> int:
        return row_stride(self.in_features)

    @property
    def codes(self) -> int:
        """Codes stored (rows times stride)."""
        return self.out_features * self.stride

    @property
    def zero_code(self) -> int:
        return self.codebook.numel()

    def total_bytes(self) -> int:
        """Bytes of the packed codes (the codebook is the layer's own)."""
        return self.planes.numel()

    # ------------------------------------------------------------------ decoding
    def to_matrix(self) -> CompressedMatrix:
        """The canonical matrix (ValueError when a code lies past the zero code or the counts
        disagree)."""
        planes = self.planes.cpu().numpy()
        rows, cols, stride, k = self.out_features, self.in_features, self.stride, self.zero_code
        row_block = max(1, _CHUNK_VALUES // stride)
        row_ptr = np.zeros(rows + 1, dtype=np.int64)
        col_parts, code_parts = [], []
        for r0 in range(0, rows, row_block):
            r1 = min(rows, r0 + row_block)
            codes = read_planes(planes, self.width, self.codes, r0 * stride, (r1 - r0) * stride)
            codes = codes.reshape(r1 - r0, stride)[:, :cols]
            if codes.size and codes.max() > k:
                raise ValueError(f"the stream holds code {codes.max()}, past the zero code {k}")
            kept_rows, kept_cols = np.nonzero(codes != k)
            row_ptr[r0 + 1 : r1 + 1] = np.bincount(kept_rows, minlength=r1 - r0)
            col_parts.append(kept_cols)
            code_parts.append(codes[kept_rows, kept_cols])
        np.cumsum(row_ptr, out=row_ptr)
        if row_ptr[-1] != self.nnz:
            raise ValueError(f"the stream holds {row_ptr[-1]} kept weights, metadata says nnz={self.nnz}")
        cols = np.concatenate(col_parts).astype(np.int32)
        kept_codes = np.concatenate(code_parts).astype(np.uint8)
        return CompressedMatrix(self.shape, self.codebook.cpu().numpy(), row_ptr, cols, kept_codes, self.bits)
