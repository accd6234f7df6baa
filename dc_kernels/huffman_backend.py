"""`CompressedLinear`'s "huffman" backend: the fused Huffman kernels of `huffman_ops` on a
`HuffmanLayout` (the layer's least-memory GPU form; the "triton" backend's fixed-width form is
the fastest).

The layout is built once per module and device from the canonical tensors (`pack`) and handed
to the custom op as plain tensors and integers; `run` rebuilds the `HuffmanLayout` view of them
without re-validating (they were built here from validated canonical tensors).
"""

from __future__ import annotations

import torch

from compress.matrix import CompressedMatrix
from dc_kernels.huffman_layout import METADATA_NAMES, TENSOR_NAMES, HuffmanLayout
from dc_kernels.huffman_ops import huffman_decode_dense, huffman_linear

# seg_first (one int64 per segment) only serves the standalone decoder: not kept.
DERIVED_NAMES = ("table", "prog_steps")
PACKED_NAMES = TENSOR_NAMES + DERIVED_NAMES


def pack(matrix: CompressedMatrix, device: torch.device) -> tuple[list[torch.Tensor], list[int]]:
    """The `HuffmanLayout` of the layer on ``device``, as (tensors, integers)."""
    layout = HuffmanLayout.from_matrix(matrix, device=device)
    return [getattr(layout, name) for name in PACKED_NAMES], [getattr(layout, n) for n in METADATA_NAMES]


def _layout(packed: list[torch.Tensor], meta: list[int]) -> HuffmanLayout:
    return HuffmanLayout(**dict(zip(METADATA_NAMES, meta)), **dict(zip(PACKED_NAMES, packed)), seg_first=None)


def run(
    x2d: torch.Tensor, bias: torch.Tensor | None, packed: list[torch.Tensor], meta: list[int]
) -> torch.Tensor:
    return huffman_linear(x2d, _layout(packed, meta), bias)


def dense(packed: list[torch.Tensor], meta: list[int]) -> torch.Tensor:
    """The layer's float32 weight, decoded on the layout's device by the Huffman decoder kernel."""
    return huffman_decode_dense(_layout(packed, meta))
