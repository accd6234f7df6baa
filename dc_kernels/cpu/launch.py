"""The CPU sparse form of `CompressedLinear`: the compiled kernels of `sparse_linear.c` (see
`dc_kernels.cpu.build`) on the packed relative-index entries of a `SparseLayout`.

The batch sweep of ``perf/bench_cpu.py --sweep`` sets the dispatch: batches of up to
`GEMV_MAX_BATCH` rows run the batch-1 kernel once per row (the batched kernel pads the batch to a
whole register); larger batches run the batched kernel, whose cost per multiply-add is about
twice a dense GEMM's, so only layers denser than `DENSE_MIN_DENSITY` at batches of
`DENSE_MIN_BATCH` or more are decoded, block by block, and multiplied by a dense GEMM instead.

Where no C compiler works, PyTorch's sparse CSR kernels run instead on decoded float32 values
that are built once and cached by the module (`pack`), at 8 more bytes per kept weight.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from dc_kernels.backends import remembered
from dc_kernels.checks import SUPPORTED_DTYPES
from dc_kernels.cpu import build
from dc_kernels.cpu.batches import linear_by_chunks
from dc_kernels.cpu.layout import SparseLayout
from dc_kernels.errors import DtypeMismatchError, ShapeMismatchError

HOST = torch.device("cpu")

# Measured by perf/bench_cpu.py --sweep (see the module docstring; perf/results/cpu/bench_cpu_sweep.csv,
# 4096 x 4096, 1 thread): at batch 128 decode + GEMM took 79 ms against the kernels' 84 ms at
# density 0.25 and 40 against 57 ms at 0.4; at batch 256 124 against 251 ms at 0.25, while at
# 0.09 the kernels stayed ahead (99 against 127 ms).
GEMV_MAX_BATCH = 2
DENSE_MIN_DENSITY = 0.25
DENSE_MIN_BATCH = 128
# Batch columns of x the batched kernel takes per register tile: a multiple of every build's
# ``dc_batch_tile()`` (16 with AVX-512, else 8), so x is padded once, whatever the build.
BATCH_TILE = 16


def uses_sparse(batch: int, density: float) -> bool:
    """Whether `cpu_linear` takes the sparse kernels (True) or decode + dense GEMM (False)."""
    return density < DENSE_MIN_DENSITY or batch < DENSE_MIN_BATCH


class SparseState(NamedTuple):
    """What the CPU sparse form runs from: the layout and, without compiled kernels, the torch
    sparse CSR fallback's (crow, col, values), else an empty list."""

    layout: SparseLayout
    fallback: list[torch.Tensor]

    def kernels(self, path: str | None = None) -> _Compiled | _TorchSparse:
        lib = build.library()
        if lib is None:
            return _TorchSparse(self.layout, self.fallback or _fallback(self.layout))
        return _Compiled(lib, self.layout, path)


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
    layout = SparseLayout.from_matrix(module.to_matrix(), codebook=module.codebook)
    return layout.tensors() + ([] if build.library() is not None else _fallback(layout)), layout.metadata()


def view(canonical, packed: list[torch.Tensor], meta: list[int]) -> SparseState:
    """The state over a module's packed tensors (built once per tensors, `remembered`)."""

    def build_state() -> SparseState:
        return SparseState(SparseLayout.from_state(packed[:2], meta, canonical.codebook), packed[2:])

    return remembered(packed, canonical.codebook, build_state)


def to_matrix(state: SparseState):
    """The canonical matrix the packed form holds (`compress.CompressedMatrix`)."""
    return state.layout.to_matrix()


class _Compiled:
    """The compiled kernels over one layout (`dc_kernels.cpu.batches.Kernels`)."""

    def __init__(self, lib, layout: SparseLayout, path: str | None) -> None:
        self.lib, self.layout, self.path = lib, layout, path
        self.out_features, self.in_features = layout.shape
        self.threads = torch.get_num_threads()
        codebook = layout.codebook
        self.stream = (layout.planes.data_ptr(), layout.entries, layout.bits, layout.index_bits,
                       codebook.data_ptr(), codebook.numel())  # fmt: skip

    def dense(self, batch: int) -> bool:
        return not uses_sparse(batch, self.layout.density) if self.path is None else self.path == "dense"

    def direct_calls(self, x: torch.Tensor, out: torch.Tensor, bias: torch.Tensor | None) -> list[tuple]:
        lay, lib = self.layout, self.lib
        rows, cols = lay.shape
        bias_ptr = None if bias is None else bias.data_ptr()
        n = x.shape[0]
        if n <= GEMV_MAX_BATCH:
            calls = []
            for b in range(n):
                args = (rows, cols, lay.entry_ptr.data_ptr(), *self.stream, x[b].data_ptr(), bias_ptr,
                        out[b].data_ptr(), self.threads)  # fmt: skip
                calls.append((lib.dc_sparse_gemv, args))
            return calls
        # x is padded to whole register tiles of batch columns (`BATCH_TILE`).
        xt = torch.zeros((cols, -(-n // BATCH_TILE) * BATCH_TILE), dtype=torch.float32)
        xt[:, :n].copy_(x.t())
        args = (rows, cols, n, xt.shape[1], lay.entry_ptr.data_ptr(), *self.stream, xt.data_ptr(), bias_ptr,
                out.data_ptr(), self.threads)  # fmt: skip
        return [(lib.dc_sparse_gemm, args, xt)]

    def decode_call(self, first: int, block: torch.Tensor) -> tuple:
        # The entry pointers are absolute offsets into the stream: pass the block's slice.
        ptr = self.layout.entry_ptr.data_ptr() + 8 * first
        args = (block.shape[0], self.in_features, ptr, *self.stream, block.data_ptr(), self.threads)
        return self.lib.dc_sparse_decode, args


class _TorchSparse:
    """torch's sparse CSR matmul on decoded values: the form without a C compiler."""

    def __init__(self, layout: SparseLayout, fallback: list[torch.Tensor]) -> None:
        self.out_features, self.in_features = layout.shape
        self.weight = torch.sparse_csr_tensor(*fallback, layout.shape, check_invariants=False)

    def dense(self, batch: int) -> bool:
        return False

    def direct_calls(self, x: torch.Tensor, out: torch.Tensor, bias: torch.Tensor | None) -> list[tuple]:
        def product() -> None:
            out.copy_((self.weight @ x.t()).t())
            if bias is not None:
                out.add_(bias)

        return [(product, ())]


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
    return linear_by_chunks(x2d, SparseState(layout, []), bias, path)


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
    lib = build.library()
    if lib is None:
        return layout.to_matrix().to_dense_tensor()
    weight = torch.empty(layout.shape, dtype=torch.float32)
    fn, args = _Compiled(lib, layout, None).decode_call(0, weight)
    fn(*args)
    return weight


def dense(state: SparseState) -> torch.Tensor:
    """`decode` of the state's layout (the backend's ``dense``)."""
    return decode(state.layout)
