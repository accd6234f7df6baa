"""`CompressedLinear`'s "triton" backend: the Triton kernels of `triton_ops` on a `GpuLayout`.

The layout is built once per module and device from the canonical tensors (`pack`) and handed
to the custom op as plain tensors and integers; `run` rebuilds the `GpuLayout` view of them. The
view is remembered per tensor so that a forward pass does not re-validate the layout (its
validation reads a device value, a host synchronization per call).
"""

from __future__ import annotations

import torch
from torch.utils.weak import WeakIdKeyDictionary

from compress.matrix import CompressedMatrix
from dc_kernels.gpu_layout import METADATA_NAMES, TENSOR_NAMES, GpuLayout
from dc_kernels.triton_ops import decode_dense, triton_linear

_layouts: WeakIdKeyDictionary = WeakIdKeyDictionary()


def pack(matrix: CompressedMatrix, device: torch.device) -> tuple[list[torch.Tensor], list[int]]:
    """The `GpuLayout` of the layer on ``device``, as (tensors, integers)."""
    layout = GpuLayout.from_matrix(matrix, device=device)
    tensors = [layout.tensors()[name] for name in TENSOR_NAMES]
    _layouts[tensors[0]] = layout
    return tensors, [layout.metadata()[name] for name in METADATA_NAMES]


def _layout(packed: list[torch.Tensor], meta: list[int]) -> GpuLayout:
    layout = _layouts.get(packed[0])
    if layout is None or any(a is not b for a, b in zip(layout.tensors().values(), packed)):
        layout = GpuLayout.from_state(dict(zip(TENSOR_NAMES, packed)), dict(zip(METADATA_NAMES, meta)))
        _layouts[packed[0]] = layout
    return layout


def run(
    x2d: torch.Tensor, bias: torch.Tensor | None, packed: list[torch.Tensor], meta: list[int]
) -> torch.Tensor:
    return triton_linear(x2d, _layout(packed, meta), bias)


def dense(packed: list[torch.Tensor], meta: list[int]) -> torch.Tensor:
    """The layer's float32 weight, decoded on the layout's device by the Triton kernel."""
    return decode_dense(_layout(packed, meta), torch.float32)
