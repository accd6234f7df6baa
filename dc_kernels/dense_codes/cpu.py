"""The dense-codes form on the CPU: the compiled kernels of ``dc_kernels/cpu/dense_codes.c``
(built with the other CPU kernels, `dc_kernels.cpu.build`) on a `DenseCodesLayout`.

Dispatch by batch size (rows of x), measured by ``perf/bench_cpu.py --sweep-codes``: the lookup
kernels up to `kernel_max_batch` rows (the row kernel, which decodes each code once per 8 rows of
x, below 24 rows; the tile kernel, which decodes panels of 32 rows once into L1 and multiplies them
with tiles of 12 rows of x, from there while x fits one 2 MB block, up to 512 rows), and beyond,
blocks of rows decoded to float32 and a dense GEMM (the tile kernel would decode every weight once
per block of x, and writes y in columns of 32 outputs).

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
        self.max_batch = kernel_max_batch(layout.in_features)

    def dense(self, batch: int, path: str | None = None) -> bool:
        return batch > self.max_batch if path is None else path == "dense"


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


def kernel_max_batch(in_features: int) -> int:
    """The most rows of x that the lookup kernels run on a layer of ``in_features`` inputs (decode
    + GEMM beyond; the rule and its measurements are in ``dc_kernels/cpu/dense_codes.c``); 0
    without a C compiler."""
    lib = build.library()
    return 0 if lib is None else lib.dc_codes_kernel_max_batch(in_features)


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
