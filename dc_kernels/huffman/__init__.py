"""The Huffman GPU form: the segmented joint-symbol Huffman layout (`layout`, NumPy), its Triton
decoder and fused decode + GEMV kernels (`kernels`) and their launcher (`launch`), registered
as `CompressedLinear`'s ``"huffman"`` backend (the least-memory GPU form;
``gpu_form="huffman"``).

Importing this package does not import Triton.
"""

from __future__ import annotations

import torch

from dc_kernels.backends import Backend, register_backend, triton_devices
from dc_kernels.huffman.launch import huffman_decode, huffman_decode_dense, huffman_linear, run
from dc_kernels.huffman.layout import METADATA_NAMES, TENSOR_NAMES, HuffmanLayout, HuffmanLayoutError

# seg_first (one int64 per segment) only serves the standalone decoder: a module keeps the rest.
PACKED_NAMES = (*TENSOR_NAMES, "table", "prog_steps")


def _pack(module) -> tuple[list[torch.Tensor], list[int]]:
    layout = HuffmanLayout.from_matrix(module.to_matrix(), device=module.codebook.device)
    return [getattr(layout, n) for n in PACKED_NAMES], [getattr(layout, n) for n in METADATA_NAMES]


def _view(canonical, packed: list[torch.Tensor], meta: list[int]) -> HuffmanLayout:
    # Built by `_pack` from validated canonical tensors: no second validation.
    return HuffmanLayout(**dict(zip(METADATA_NAMES, meta)), **dict(zip(PACKED_NAMES, packed)), seg_first=None)


register_backend(
    Backend("huffman", _view, run, huffman_decode_dense, _pack, triton_devices, holds_layer=True)
)

__all__ = ["HuffmanLayout", "HuffmanLayoutError", "huffman_decode", "huffman_decode_dense", "huffman_linear"]
