"""The CPU sparse form of `CompressedLinear`: the compiled kernels of `sparse_linear.c` (see
`dc_kernels.cpu.build`) on the packed relative-index entries of a `SparseLayout`.

The batch sweep of ``perf/bench_cpu.py --sweep`` sets the dispatch: the batched kernel costs about
twice a dense GEMM per multiply-add, so layers denser than `DENSE_MIN_DENSITY` at batches of
`DENSE_MIN_BATCH` or more (with the AVX2 kernels `AVX2_DENSE_MIN_DENSITY` and
`AVX2_DENSE_MIN_BATCH`: `dense_from`) are decoded, block by block, and multiplied by a dense GEMM
instead; every other batch runs the kernels (up to two rows the batch-1 kernel row by row, more the batched
kernel, in passes of batch columns whose transposed input stays in a core's L2 cache).

Where no C compiler works, PyTorch's sparse CSR kernels run instead on decoded float32 values
that are built once and cached by the module (`pack`), at 8 more bytes per kept weight.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from compress.relative_index import row_gaps
from compress.size import best_index_bits
from dc_kernels.backends import remembered
from dc_kernels.checks import SUPPORTED_DTYPES
from dc_kernels.cpu import build
from dc_kernels.cpu.batches import CompiledKernels, linear_by_chunks
from dc_kernels.cpu.layout import SparseLayout, byte_step_index_bits
from dc_kernels.errors import DtypeMismatchError, ShapeMismatchError

HOST = torch.device("cpu")

# Measured by perf/bench_cpu.py --sweep (see the module docstring; perf/results/cpu/bench_cpu_sweep.csv,
# 4096 x 4096, 1 thread), with the batched kernel in passes whose transposed x stays in L2, two
# runs: the kernels beat decode + GEMM at every batch at density <= 0.25 (at 0.25 and batch 256
# 52-53 ms against 78-87), and at 0.4 up to batch 128 (at 256 decode + GEMM was ahead by 6%); at
# 0.6 decode + GEMM won from batch 128 on (48 ms against 71 at 128, 81-89 against 141-142 at 256),
# while from batch 8 to 64 one run favoured it and the other the kernels, by 5-15% each.
DENSE_MIN_DENSITY = 0.5
DENSE_MIN_BATCH = 128
# The AVX2 kernels (no AVX-512; perf/results/cpu/avx2/bench_cpu_sweep.csv, AMD EPYC Zen 3, 1
# thread): the kernels won at every batch up to density 0.25; at 0.4 decode + GEMM won from batch
# 128 (0.84x of nn.Linear against 0.65x; at 64 0.77x against 0.76x), at 0.6 from 64 (0.57x
# against 0.47x).
AVX2_DENSE_MIN_DENSITY = 0.4
AVX2_DENSE_MIN_BATCH = 64


# With the AVX2 kernels, entries of 8 to 11 bits run in byte steps (`dc_kernels.cpu.layout.
# BYTE_STEP_WIDTHS`), which 4-bit codes at 25% density, whose fewest bits come with 3-bit indices
# (7-bit entries), reach with 4-bit indices for 0.4% more bits: 1000 x 4096, 1 thread, AMD EPYC
# Zen 3, 0.50 ms against 1.36 at batch 1, 0.74 against 2.71 at 2, 1.20 against 2.23 at 8, 2.82
# against 3.81 at 32; at 40% density 11% more bits, 2.5x faster at batch 1; 3-bit codes at 25%
# with 5-bit indices 15% more bits, 2.2x. The packing takes such a width where it costs at most
# this share of bits more than the fewest.
AVX2_BYTE_STEP_SLACK = 0.2


def packing_index_bits(matrix) -> int:
    """The relative-index width the packed layout of ``matrix`` takes on this machine: the fewest
    bits (`compress.size.best_index_bits`), or with the AVX2 kernels a width of byte steps at most
    `AVX2_BYTE_STEP_SLACK` more (`dc_kernels.cpu.layout.byte_step_index_bits`)."""
    gaps = row_gaps(matrix.row_ptr, matrix.col_idx)
    if build.vector_bits() == 256:
        return byte_step_index_bits(gaps, matrix.bits, AVX2_BYTE_STEP_SLACK)
    return best_index_bits(gaps, matrix.bits)


def dense_from() -> tuple[float, int]:
    """(density, batch) from which decode + GEMM replaces the kernels this machine built."""
    if build.vector_bits() == 256:
        return AVX2_DENSE_MIN_DENSITY, AVX2_DENSE_MIN_BATCH
    return DENSE_MIN_DENSITY, DENSE_MIN_BATCH


def kernel_max_batch(density: float) -> int:
    """The most rows of x the sparse kernels run on a layer of ``density`` (decode + GEMM beyond;
    below `dense_from`'s density no batch is beyond)."""
    min_density, min_batch = dense_from()
    return min_batch - 1 if density >= min_density else 2**62


def uses_sparse(batch: int, density: float) -> bool:
    """Whether `cpu_linear` takes the sparse kernels (True) or decode + dense GEMM (False)."""
    return batch <= kernel_max_batch(density)


class SparseState(NamedTuple):
    """What the CPU sparse form runs from: the layout and its kernels (`sparse_state`)."""

    layout: SparseLayout
    kernels: _Compiled | _TorchSparse


def sparse_state(layout: SparseLayout, fallback: list[torch.Tensor]) -> SparseState:
    """The state over ``layout``: the compiled kernels, or without them torch's sparse CSR
    kernels on the fallback's (crow, col, values) (built here when ``fallback`` is empty)."""
    if build.library() is None:
        return SparseState(layout, _TorchSparse(layout, fallback or _fallback(layout)))
    return SparseState(layout, _Compiled(layout))


def _fallback(layout: SparseLayout) -> list[torch.Tensor]:
    m = layout.to_matrix()
    index_dtype = torch.int32 if m.nnz < 2**31 else torch.int64
    return [
        torch.from_numpy(m.row_ptr).to(index_dtype),
        torch.from_numpy(m.col_idx).to(index_dtype),
        torch.from_numpy(m.values.copy()),
    ]


def pack(module) -> tuple[list[torch.Tensor], list[int]]:
    """The module's packed tensors and metadata: the layout's, plus the CSR fallback's tensors
    where no compiled kernels are available."""
    matrix = module.to_matrix()
    layout = SparseLayout.from_matrix(matrix, packing_index_bits(matrix), codebook=module.codebook)
    return layout.tensors() + ([] if build.library() is not None else _fallback(layout)), layout.metadata()


def view(canonical, packed: list[torch.Tensor], meta: list[int]) -> SparseState:
    """The state over a module's packed tensors (built once per tensors, `remembered`)."""

    def build_state() -> SparseState:
        return sparse_state(SparseLayout.from_state(packed[:2], meta, canonical.codebook), packed[2:])

    return remembered(packed, canonical.codebook, build_state, "cpu")


def to_matrix(state: SparseState):
    """The canonical matrix the packed form holds (`compress.CompressedMatrix`)."""
    return state.layout.to_matrix()


class _Compiled(CompiledKernels):
    """The compiled kernels over one layout (`dc_kernels.cpu.batches.Kernels`)."""

    LINEAR = "dc_sparse_linear"
    DECODE = "dc_sparse_decode"

    def __init__(self, layout: SparseLayout) -> None:
        codebook = layout.codebook
        descriptor = build.SparseLayer(
            layout.out_features, layout.in_features, layout.entry_ptr.data_ptr(), layout.planes.data_ptr(),
            layout.entries, layout.bits, layout.index_bits, codebook.data_ptr(), codebook.numel(),
        )  # fmt: skip
        super().__init__(layout, descriptor)
        self.max_batch = kernel_max_batch(layout.density)

    def dense(self, batch: int, path: str | None = None) -> bool:
        return batch > self.max_batch if path is None else path == "dense"


class _TorchSparse:
    """torch's sparse CSR matmul on decoded values: the form without a C compiler."""

    def __init__(self, layout: SparseLayout, fallback: list[torch.Tensor]) -> None:
        self.out_features, self.in_features = layout.shape
        self.weight = torch.sparse_csr_tensor(*fallback, layout.shape, check_invariants=False)

    def dense(self, batch: int, path: str | None = None) -> bool:
        return False

    def linear_call(self, x: torch.Tensor, out: torch.Tensor, bias: torch.Tensor | None) -> tuple:
        def product() -> None:
            out.copy_((self.weight @ x.t()).t())
            if bias is not None:
                out.add_(bias)

        return product, ()


def cpu_linear(
    x2d: torch.Tensor, layout: SparseLayout, bias: torch.Tensor | None = None, path: str | None = None
) -> torch.Tensor:
    """y = x2d W^T + b for CPU tensors, float32 accumulation, returned in x2d's dtype. ``path``
    ("sparse" or "dense") overrides the choice of `uses_sparse` (for benchmarks)."""
    if not isinstance(layout, SparseLayout):
        raise TypeError(f"layout must be a SparseLayout, got {type(layout).__name__}")
    check_cpu_call(x2d, layout.shape, bias)
    if path not in (None, "sparse", "dense"):
        raise ValueError(f"path must be None, 'sparse' or 'dense', got {path!r}")
    return linear_by_chunks(x2d, sparse_state(layout, []), bias, path)


def check_cpu_call(x2d: torch.Tensor, shape: tuple[int, int], bias: torch.Tensor | None) -> None:
    """The arguments of a CPU form's public launcher: x2d (batch, in_features) and bias."""
    rows, cols = shape
    if not isinstance(x2d, torch.Tensor) or x2d.dim() != 2 or x2d.shape[1] != cols:
        got = tuple(x2d.shape) if isinstance(x2d, torch.Tensor) else type(x2d).__name__
        raise ShapeMismatchError(f"x2d must be a (batch, {cols}) tensor, got {got}")
    if x2d.device != HOST or x2d.dtype not in SUPPORTED_DTYPES:
        raise DtypeMismatchError(
            f"x2d must be a CPU tensor of {SUPPORTED_DTYPES}, got {x2d.dtype} on {x2d.device}"
        )
    if bias is not None and (
        not isinstance(bias, torch.Tensor)
        or bias.shape != (rows,)
        or bias.dtype not in SUPPORTED_DTYPES
        or bias.device != HOST
    ):
        got = f"{bias.dtype} {tuple(bias.shape)} on {bias.device}" if isinstance(bias, torch.Tensor) else bias
        raise ShapeMismatchError(f"bias must be a CPU tensor of shape ({rows},), got {got}")


def decode(layout: SparseLayout) -> torch.Tensor:
    """The dense float32 weight, by the compiled decoder where it is available."""
    if build.library() is None:
        return layout.to_matrix().to_dense_tensor()
    weight = torch.empty(layout.shape, dtype=torch.float32)
    fn, args = _Compiled(layout).decode_call(0, weight)
    fn(*args)
    return weight


def dense(state: SparseState) -> torch.Tensor:
    """`decode` of the state's layout (the backend's ``dense``)."""
    return decode(state.layout)
