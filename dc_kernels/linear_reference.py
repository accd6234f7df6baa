"""Pure-PyTorch reference of `CompressedLinear` (the test oracle and the "reference" backend).

Works on the canonical tensors of `compress.CompressedMatrix` (any device): the codebook
(float32), CSR ``row_ptr`` (int64), the column of each kept weight (int16 or int32) and its code
(uint8). Decodes the dense float32 weight, then one `torch.nn.functional.linear` in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def decode_dense(
    codebook: torch.Tensor,
    row_ptr: torch.Tensor,
    col_idx: torch.Tensor,
    codes: torch.Tensor,
    in_features: int,
) -> torch.Tensor:
    """The decoded weight (out_features, in_features) in float32 on the tensors' device:
    codebook values at the kept positions, exact zeros elsewhere."""
    rows = row_ptr.numel() - 1
    nnz = codes.numel()
    row_idx = torch.repeat_interleave(
        torch.arange(rows, device=row_ptr.device), torch.diff(row_ptr), output_size=nnz
    )
    dense = torch.zeros(rows * in_features, dtype=torch.float32, device=codebook.device)
    dense[row_idx * in_features + col_idx.long()] = codebook.float()[codes.long()]
    return dense.view(rows, in_features)


def linear_reference(
    x2d: torch.Tensor,
    codebook: torch.Tensor,
    row_ptr: torch.Tensor,
    col_idx: torch.Tensor,
    codes: torch.Tensor,
    bias: torch.Tensor | None,
    in_features: int,
) -> torch.Tensor:
    """y = x W^T + b in float32 (x2d: (B, in_features), any float dtype), returned in x2d's dtype."""
    weight = decode_dense(codebook, row_ptr, col_idx, codes, in_features)
    y = F.linear(x2d.float(), weight, None if bias is None else bias.float())
    return y.to(x2d.dtype)
