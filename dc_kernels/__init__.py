"""Online: compressed FC layers at inference time (Triton kernels, CPU kernels, modules).

One room per form, each owning its layout, its kernels and their launcher and registering
itself as a backend of `CompressedLinear`: `dc_kernels.fixed` (fixed-width GPU form),
`dc_kernels.huffman` (Huffman GPU form), `dc_kernels.cpu` (the sparse form's C kernels),
`dc_kernels.dense_codes` (the dense-codes form, C and Triton kernels); `dc_kernels.reference` is
the pure-PyTorch oracle. Importing this package never initializes CUDA, never imports Triton
and never compiles a kernel.
"""

from compress._lazy import lazy_exports
from compress._version import __version__
from dc_kernels import cpu, dense_codes, fixed, huffman, reference  # each registers its backend
from dc_kernels.backends import GPU_FORMS, Backend, register_backend
from dc_kernels.fixed import Dispatch, GpuLayout, decode_dense, fixed_linear
from dc_kernels.huffman import (
    HuffmanLayout,
    HuffmanLayoutError,
    huffman_decode,
    huffman_decode_dense,
    huffman_linear,
)

# The fixed form's launcher under its earlier name.
triton_linear = fixed_linear

__all__ = [
    "GPU_FORMS",
    "Backend",
    "Dispatch",
    "GpuLayout",
    "HuffmanLayout",
    "HuffmanLayoutError",
    "__version__",
    "cpu",
    "decode_dense",
    "dense_codes",
    "fixed",
    "fixed_linear",
    "huffman",
    "huffman_decode",
    "huffman_decode_dense",
    "huffman_linear",
    "reference",
    "register_backend",
    "triton_linear",
]

# The module API loads on first use: it registers the custom ops and pulls in the pipeline.
_LAZY = {
    "CompressedLinear": "dc_kernels.linear",
    "compress_": "dc_kernels.model_api",
    "swap_compressed_": "dc_kernels.model_api",
    "plan_compression": "dc_kernels.model_api",
    "CompressionReport": "dc_kernels.model_api",
    "save_compressed": "dc_kernels.checkpoint",
    "load_compressed": "dc_kernels.checkpoint",
}
__all__ += list(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
