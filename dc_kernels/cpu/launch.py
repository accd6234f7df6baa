"""The CPU form of `CompressedLinear`: sparse products straight from the canonical tensors.

Calls the compiled kernels of `sparse_linear.c` (see `dc_kernels.cpu.build`), which keep only the
codes (1 byte) and the columns (2 bytes, 4 beyond 32768 inputs) of every kept weight and decode
in registers. The batch sweep of ``perf/bench_cpu.py --sweep`` sets the dispatch: batches of up to
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

from dc_kernels.checks import SUPPORTED_DTYPES, check_canonical
from dc_kernels.cpu import build
from dc_kernels.errors import DtypeMismatchError, ShapeMismatchError
from dc_kernels.reference import CanonicalTensors, decode_dense

HOST = torch.device("cpu")

# Measured by perf/bench_cpu.py --sweep (see the module docstring).
GEMV_MAX_BATCH = 2
DENSE_MIN_DENSITY = 0.5
DENSE_MIN_BATCH = 128
# Decoded rows per GEMM of the dense path: a block of about the size of a core's L2 cache.
DECODE_BLOCK_BYTES = 2 << 20
# Rows of x per pass of the kernels: their float32 copy and output take at most about this many
# bytes (16 MB: 512 rows of a 4096 x 4096 layer, plenty to amortize a pass).
CHUNK_BYTES = 16 << 20


def uses_sparse(batch: int, density: float) -> bool:
    """Whether `cpu_linear` takes the sparse kernels (True) or decode + dense GEMM (False)."""
    return density < DENSE_MIN_DENSITY or batch < DENSE_MIN_BATCH


class CpuState(NamedTuple):
    """What the CPU kernels read: the canonical tensors and, without compiled kernels, the
    torch sparse CSR fallback's (crow, col, values), else an empty list."""

    tensors: CanonicalTensors
    fallback: list[torch.Tensor]


def pack(t: CanonicalTensors) -> list[torch.Tensor]:
    """Tensors the path needs beside the canonical ones: none for the compiled kernels; the
    CSR indices and decoded values of torch's sparse fallback otherwise."""
    if build.library() is not None:
        return []
    index_dtype = torch.int32 if t.codes.numel() < 2**31 else torch.int64
    return [t.row_ptr.to(index_dtype), t.col_idx.to(index_dtype), t.codebook[t.codes.long()]]


def decode(state: CpuState) -> torch.Tensor:
    """The dense float32 weight, by the compiled decoder where it is available."""
    t = state.tensors
    pointers = _pointers(t)
    lib = build.library()
    if lib is None:
        return decode_dense(t)
    weight = torch.empty((t.out_features, t.in_features), dtype=torch.float32)
    lib.dc_decode(t.out_features, t.in_features, *pointers, weight.data_ptr(), torch.get_num_threads())
    return weight


def _pointers(t: CanonicalTensors, bias: torch.Tensor | None = None) -> tuple[int, ...]:
    """The kernels' (row_ptr, col, col_bits, codes, codebook, k) arguments, after the checks that
    keep the C code inside its arrays (`check_canonical`: structure on every call, values once
    per change of the tensors)."""
    check_canonical(t, HOST, True, bias)
    return (
        t.row_ptr.data_ptr(),
        t.col_idx.data_ptr(),
        16 if t.col_idx.dtype == torch.int16 else 32,
        t.codes.data_ptr(),
        t.codebook.data_ptr(),
        t.codebook.numel(),
    )


def cpu_linear(
    x2d: torch.Tensor, state: CpuState, bias: torch.Tensor | None = None, path: str | None = None
) -> torch.Tensor:
    """y = x2d W^T + b for CPU tensors, float32 accumulation, returned in x2d's dtype. ``path``
    ("sparse" or "dense") overrides the choice of `uses_sparse` (for benchmarks).

    Rows of x2d go through the kernels in chunks of at most `CHUNK_BYTES` of float32 input and
    output, so the memory beside x2d and y stays bounded whatever the batch (one conversion of
    each chunk, never a float32 copy of the whole input)."""
    t = state.tensors
    common = _pointers(t, bias)
    if not isinstance(x2d, torch.Tensor) or x2d.dim() != 2 or x2d.shape[1] != t.in_features:
        got = tuple(x2d.shape) if isinstance(x2d, torch.Tensor) else type(x2d).__name__
        raise ShapeMismatchError(f"x2d must be a (batch, {t.in_features}) tensor, got {got}")
    if x2d.device != HOST or x2d.dtype not in SUPPORTED_DTYPES:
        raise DtypeMismatchError(
            f"x2d must be a CPU tensor of {SUPPORTED_DTYPES}, got {x2d.dtype} on {x2d.device}"
        )
    if path not in (None, "sparse", "dense"):
        raise ValueError(f"path must be None, 'sparse' or 'dense', got {path!r}")
    rows, batch = t.out_features, x2d.shape[0]
    y = torch.empty((batch, rows), dtype=x2d.dtype)
    if batch == 0:
        return y
    lib = build.library()
    fallback = state.fallback or (pack(t) if lib is None else None)
    sparse = (
        uses_sparse(batch, t.codes.numel() / (rows * t.in_features)) if path is None else path == "sparse"
    )
    bias_f = None if bias is None else bias.float().contiguous()
    bias_ptr = None if bias_f is None else bias_f.data_ptr()
    threads = torch.get_num_threads()
    step = max(1, CHUNK_BYTES // (4 * (t.in_features + rows)))
    # float32 output: the chunks are written into y; else into a float32 buffer, then converted.
    buffer = None if y.dtype == torch.float32 else torch.empty((min(step, batch), rows), dtype=torch.float32)
    if fallback:
        weight = torch.sparse_csr_tensor(*fallback, (rows, t.in_features), check_invariants=False)
    elif not sparse:
        # By blocks of rows: decode a block into a cache-sized buffer, multiply it by x (a GEMM),
        # next block; never the whole dense weight, and each block multiplied while in cache.
        block_rows = max(1, min(rows, DECODE_BLOCK_BYTES // (4 * t.in_features)))
        block_buffer = torch.empty(block_rows * t.in_features, dtype=torch.float32)
        x_buffer = None if x2d.dtype == torch.float32 else torch.empty((min(step, batch), t.in_features))
        y_t_buffer = torch.empty((rows, min(step, batch)), dtype=torch.float32)
    elif batch > GEMV_MAX_BATCH:
        tile = lib.dc_batch_tile()  # x is padded to whole register tiles of batch columns
        xt = torch.zeros((t.in_features, -(-min(step, batch) // tile) * tile), dtype=torch.float32)
    for b0 in range(0, batch, step):
        xs = x2d[b0 : b0 + step]
        n = xs.shape[0]
        out = y[b0 : b0 + n] if buffer is None else buffer[:n]
        if fallback:
            out.copy_((weight @ xs.t().float()).t())
        elif not sparse:
            xf = xs if x_buffer is None else x_buffer[:n].copy_(xs)
            y_t = y_t_buffer if n == y_t_buffer.shape[1] else torch.empty((rows, n), dtype=torch.float32)
            for r0 in range(0, rows, block_rows):
                m = min(block_rows, rows - r0)
                block = block_buffer[: m * t.in_features].view(m, t.in_features)
                # The row pointers are absolute offsets into col_idx/codes: pass the block's slice.
                lib.dc_decode(m, t.in_features, common[0] + 8 * r0, *common[1:], block.data_ptr(), threads)
                torch.mm(block, xf.t(), out=y_t[r0 : r0 + m])
            out.copy_(y_t.t())
        elif n <= GEMV_MAX_BATCH:
            xf = xs.float().contiguous()
            for b in range(n):
                lib.dc_gemv(rows, *common, xf[b].data_ptr(), bias_ptr, out[b].data_ptr(), threads)
        else:
            xt[:, :n].copy_(xs.t())
            lib.dc_gemm(rows, n, xt.shape[1], *common, xt.data_ptr(), bias_ptr, out.data_ptr(), threads)
        if bias_f is not None and (fallback or not sparse):
            out.add_(bias_f)
        if buffer is not None:
            y[b0 : b0 + n].copy_(out)
    return y
