"""The canonical tensors of a compressed layer and the pure-PyTorch reference on them.

`CanonicalTensors` is `compress.CompressedMatrix` as torch tensors on any device: the codebook
(float32), CSR ``row_ptr`` (int64), the column of each kept weight (int16 or int32) and its code
(uint8). `decode_dense` and `reference_linear` on them are the one oracle of every kernel (the
tests compare each form's kernels with them, through ``layout.to_matrix()``) and the
``"reference"`` backend of `CompressedLinear`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from compress.matrix import CompressedMatrix
from dc_kernels.backends import Backend, register_backend


class CanonicalTensors(NamedTuple):
    """`compress.CompressedMatrix` as tensors (see the module docstring)."""

    codebook: torch.Tensor
    row_ptr: torch.Tensor
    col_idx: torch.Tensor
    codes: torch.Tensor
    in_features: int

    @classmethod
    def from_matrix(
        cls, matrix: CompressedMatrix, device: torch.device | str | None = None
    ) -> CanonicalTensors:
        def tensor(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
            return torch.from_numpy(np.array(array)).to(device=device, dtype=dtype)

        return cls(
            tensor(matrix.codebook, torch.float32),
            tensor(matrix.row_ptr, torch.int64),
            tensor(matrix.col_idx, torch.int32),
            tensor(matrix.codes, torch.uint8),
            matrix.shape[1],
        )

    @property
    def out_features(self) -> int:
        return self.row_ptr.numel() - 1


def decode_dense(t: CanonicalTensors) -> torch.Tensor:
    """The decoded weight (out_features, in_features) in float32 on the tensors' device:
    codebook values at the kept positions, exact zeros elsewhere."""
    rows, nnz = t.out_features, t.codes.numel()
    row_idx = torch.repeat_interleave(
        torch.arange(rows, device=t.row_ptr.device), torch.diff(t.row_ptr), output_size=nnz
    )
    dense = torch.zeros(rows * t.in_features, dtype=torch.float32, device=t.codebook.device)
    dense[row_idx * t.in_features + t.col_idx.long()] = t.codebook.float()[t.codes.long()]
    return dense.view(rows, t.in_features)


def reference_linear(
    x2d: torch.Tensor,
    t: CanonicalTensors,
    bias: torch.Tensor | None = None,
    accumulate: torch.dtype = torch.float32,
) -> torch.Tensor:
    """y = x2d W^T + b computed in ``accumulate`` (float32; the tests' oracle uses float64) and
    returned in x2d's dtype."""
    weight = decode_dense(t).to(device=x2d.device, dtype=accumulate)
    y = F.linear(x2d.to(accumulate), weight, None if bias is None else bias.to(x2d.device, accumulate))
    return y.to(x2d.dtype)


def _view(canonical: CanonicalTensors, packed: list[torch.Tensor], meta: list[int]) -> CanonicalTensors:
    return canonical


register_backend(Backend("reference", _view, reference_linear, decode_dense))
