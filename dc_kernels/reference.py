"""Pure-PyTorch reference of the Triton kernels (the tests' oracle): decode the layout, multiply."""

from __future__ import annotations

import torch

from dc_kernels.gpu_layout import GpuLayout


def reference_dense(layout: GpuLayout, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The decoded weight (out_features, in_features) in ``dtype``."""
    return layout.to_dense().to(dtype)


def reference_linear(x2d: torch.Tensor, layout: GpuLayout, bias: torch.Tensor | None = None) -> torch.Tensor:
    """y = x W^T + b computed in float64, returned in x's dtype."""
    weight = layout.to_dense().to(device=x2d.device, dtype=torch.float64)
    y = x2d.to(torch.float64) @ weight.T
    if bias is not None:
        y = y + bias.to(device=x2d.device, dtype=torch.float64)
    return y.to(x2d.dtype)
