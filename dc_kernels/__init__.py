"""Online: compressed FC layers at inference time (Triton kernels, reference path, modules).

Importing this package never initializes CUDA and never compiles a kernel.
"""

# Neither module imports Triton: kernels are imported (and compiled) at their first launch.
from dc_kernels.gpu_layout import GpuLayout
from dc_kernels.triton_ops import decode_dense, triton_linear

__all__ = ["GpuLayout", "decode_dense", "triton_linear"]
