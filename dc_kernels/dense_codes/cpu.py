"""The dense-codes form on the CPU: the compiled kernels of ``dc_kernels/cpu/dense_codes.c``
(built with the other CPU kernels, `dc_kernels.cpu.build`) on a `DenseCodesLayout`.

Dispatch by batch size (rows of x), measured by ``perf/bench_cpu.py --sweep-codes``: up to
`CODES_MAX_BATCH` rows the lookup kernel, which decodes each code once per 8 rows of x; from
there blocks of rows decoded to float32 and a dense GEMM (the kernel's multiply-adds cost more
than a GEMM's once the decoding is spread over enough rows).

Without a C compiler the rows are decoded by NumPy and multiplied by a dense GEMM, block by block.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from dc_kernels.cpu import build
from dc_kernels.cpu.batches import CompiledKernels, linear_by_chunks
from dc_kernels.cpu.launch import check_cpu_call
from dc_kernels.dense_codes.layout import DenseCodesLayout
from dc_kernels.planes import read_planes

# Measured by perf/bench_cpu.py --sweep-codes (see the module docstring; the committed run is
# perf/results/cpu/bench_cpu_codes_sweep.csv): on 4096 x 4096 at density 0.8, 4-bit codes, 1 thread,
# the kernel against nn.Linear 1.31x at batch 32, 1.07x at 48 (decode + GEMM 1.00x) and 0.95x at
# 64 (decode + GEMM 1.02x), in a first run of the kernel that takes up to four rows of codes per
# load of x.
CODES_MAX_BATCH = 48


class CodesState(NamedTuple):
    """What the dense-codes CPU backend runs from: its layout and its kernels (`codes_state`)."""

    layout: DenseCodesLayout
    kernels: _Compiled | _NumPy


def codes_state(layout: DenseCodesLayout) -> CodesState:
    """The state over ``layout``: the compiled kernels, or NumPy's decoding without them."""
    return CodesState(layout, _NumPy(layout) if build.library() is None else _Compiled(layout))


class _Compiled(CompiledKernels):
    """The compiled kernels over one layout (`dc_kernels.cpu.batches.Kernels`)."""

    LINEAR = "dc_codes_linear"
    DECODE = "dc_codes_decode"

    def __init__(self, layout: DenseCodesLayout) -> None:
        descriptor = build.CodesLayer(
            layout.out_features, layout.in_features, layout.stride, layout.planes.data_ptr(), layout.codes,
            layout.width, 0, layout.codebook.data_ptr(), layout.codebook.numel(),
        )  # fmt: skip
        super().__init__(layout, descriptor)

    def dense(self, batch: int, path: str | None = None) -> bool:
        return batch > CODES_MAX_BATCH if path is None else path == "dense"


class _NumPy:
    """Rows decoded by NumPy: the form without a C compiler (always decode + GEMM)."""

    def __init__(self, layout: DenseCodesLayout) -> None:
        self.layout = layout
        self.out_features, self.in_features = layout.shape
        self.table = torch.zeros(1 << layout.width)
        self.table[: layout.codebook.numel()] = layout.codebook

    def dense(self, batch: int, path: str | None = None) -> bool:
        return True

    def decode_call(self, first: int, block: torch.Tensor) -> tuple:
        return self.decode_rows, (first, block)

    def decode_rows(self, first: int, block: torch.Tensor) -> None:
        lay = self.layout
        m = block.shape[0]
        codes = read_planes(lay.planes.numpy(), lay.width, lay.codes, first * lay.stride, m * lay.stride)
        block.copy_(self.table[torch.from_numpy(codes).view(m, lay.stride)[:, : lay.in_features]])


def codes_linear_cpu(
    x2d: torch.Tensor, layout: DenseCodesLayout, bias: torch.Tensor | None = None, path: str | None = None
) -> torch.Tensor:
    """y = x2d W^T + b for CPU tensors from dense codes, float32 accumulation, in x2d's dtype.
    ``path`` ("codes" or "dense") overrides the dispatch by batch (for benchmarks)."""
    if not isinstance(layout, DenseCodesLayout):
        raise TypeError(f"layout must be a DenseCodesLayout, got {type(layout).__name__}")
    if layout.device.type != "cpu":
        raise ValueError(f"the layout is on {layout.device}; the CPU kernels need it in host memory")
    check_cpu_call(x2d, layout.shape, bias)
    if path not in (None, "codes", "dense"):
        raise ValueError(f"path must be None, 'codes' or 'dense', got {path!r}")
    return linear_by_chunks(x2d, codes_state(layout), bias, path)


def decode(layout: DenseCodesLayout) -> torch.Tensor:
    """The dense float32 weight."""
    weight = torch.empty(layout.shape, dtype=torch.float32)
    fn, args = codes_state(layout).kernels.decode_call(0, weight)
    fn(*args)
    return weight
