"""Online: compressed FC layers at inference time (Triton kernels, reference path, modules).

Importing this package never initializes CUDA and never compiles a kernel.
"""

# Neither module imports Triton: kernels are imported (and compiled) at their first launch.
from dc_kernels.gpu_layout import GpuLayout
from dc_kernels.huffman_layout import HuffmanLayout, HuffmanLayoutError
from dc_kernels.huffman_ops import huffman_decode, huffman_decode_dense, huffman_linear
from dc_kernels.triton_ops import decode_dense, triton_linear

__all__ = [
    "GpuLayout",
    "HuffmanLayout",
    "HuffmanLayoutError",
    "decode_dense",
    "huffman_decode",
    "huffman_decode_dense",
    "huffman_linear",
    "triton_linear",
]

# The module API loads on first use: it registers the custom ops and pulls in the pipeline.
_LAZY = {
    "CompressedLinear": "dc_kernels.linear",
    "compress_": "dc_kernels.model_api",
    "swap_compressed_": "dc_kernels.model_api",
    "CompressionReport": "dc_kernels.model_api",
    "save_compressed": "dc_kernels.model_api",
    "load_compressed": "dc_kernels.model_api",
}
__all__ += list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dc_kernels' has no attribute {name!r}")
