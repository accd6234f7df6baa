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

from dc_kernels.cpu import build
from dc_kernels.reference import CanonicalTensors, decode_dense

# Measured by perf/bench_cpu.py --sweep (see the module docstring).
GEMV_MAX_BATCH = 2
DENSE_MIN_DENSITY = 0.5
DENSE_MIN_BATCH = 128
# Decoded rows per GEMM of the dense path: a block of about the size of a core's L2 cache.
DECODE_BLOCK_BYTES = 2 << 20


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
    lib = build.library()
    t = state.tensors
    if lib is None:
        return decode_dense(t)
    weight = torch.empty((t.out_features, t.in_features), dtype=torch.float32)
    lib.dc_decode(t.out_features, t.in_features, *_pointers(t), weight.data_ptr(), torch.get_num_threads())
    return weight


def _pointers(t: CanonicalTensors) -> tuple[int, ...]:
    """The kernels' (row_ptr, col, col_bits, codes, codebook, k) arguments, after the checks that
    keep the C code inside its arrays' memory (the values were validated with the layer)."""
    codebook, row_ptr, col_idx, codes, _ = t
    expected = (
        ("codebook", codebook, (torch.float32,)),
        ("row_ptr", row_ptr, (torch.int64,)),
        ("col_idx", col_idx, (torch.int16, torch.int32)),
        ("codes", codes, (torch.uint8,)),
    )
    for name, t, dtypes in expected:
        if t.device.type != "cpu" or t.dtype not in dtypes or t.dim() != 1 or not t.is_contiguous():
            got = f"{t.dtype} {tuple(t.shape)} on {t.device}"
            raise ValueError(f"{name} must be a contiguous 1-D CPU tensor of {dtypes}, got {got}")
    if not 1 <= codebook.numel() <= 256 or col_idx.numel() != codes.numel():
        raise ValueError(
            f"codebook must hold 1..256 entries and col_idx/codes one per kept weight, got "
            f"{codebook.numel()}, {col_idx.numel()}, {codes.numel()}"
        )
    col_bits = 16 if col_idx.dtype == torch.int16 else 32
    return (
        row_ptr.data_ptr(),
        col_idx.data_ptr(),
        col_bits,
        codes.data_ptr(),
        codebook.data_ptr(),
        codebook.numel(),
    )


def cpu_linear(
    x2d: torch.Tensor, state: CpuState, bias: torch.Tensor | None = None, path: str | None = None
) -> torch.Tensor:
    """y = x2d W^T + b for CPU tensors (x2d validated by the caller), float32 accumulation,
    returned in x2d's dtype. ``path`` ("sparse" or "dense") overrides the choice of
    `uses_sparse` (for benchmarks)."""
    t = state.tensors
    rows, batch = t.out_features, x2d.shape[0]
    xf = x2d.float()
    bias_f = None if bias is None else bias.float().contiguous()
    lib = build.library()
    if state.fallback or lib is None:
        crow, col, values = state.fallback or pack(t)
        weight = torch.sparse_csr_tensor(crow, col, values, (rows, t.in_features), check_invariants=False)
        y = (weight @ xf.t()).t()
        return (y if bias_f is None else y + bias_f).to(x2d.dtype)
    if path not in (None, "sparse", "dense"):
        raise ValueError(f"path must be None, 'sparse' or 'dense', got {path!r}")
    density = t.codes.numel() / (rows * t.in_features)
    sparse = uses_sparse(batch, density) if path is None else path == "sparse"
    threads = torch.get_num_threads()
    common = _pointers(t)
    if not sparse:
        # By blocks of rows: decode a block into a cache-sized buffer, multiply it by x (a GEMM),
        # next block; never the whole dense weight, and each block multiplied while in cache.
        block_rows = max(1, min(rows, DECODE_BLOCK_BYTES // (4 * t.in_features)))
        buffer = torch.empty(block_rows * t.in_features, dtype=torch.float32)
        y_t = torch.empty((rows, batch), dtype=torch.float32)
        for r0 in range(0, rows, block_rows):
            n = min(block_rows, rows - r0)
            block = buffer[: n * t.in_features].view(n, t.in_features)
            # The row pointers are absolute offsets into col_idx/codes: pass the block's slice of them.
            lib.dc_decode(n, t.in_features, common[0] + 8 * r0, *common[1:], block.data_ptr(), threads)
            torch.mm(block, xf.t(), out=y_t[r0 : r0 + n])
        y = y_t.t().contiguous()
        return (y if bias_f is None else y.add_(bias_f)).to(x2d.dtype)
    y = torch.empty((batch, rows), dtype=torch.float32)
    if batch == 0:
        return y.to(x2d.dtype)
    bias_ptr = None if bias_f is None else bias_f.data_ptr()
    if batch <= GEMV_MAX_BATCH:
        xf = xf.contiguous()
        for b in range(batch):
            lib.dc_gemv(rows, *common, xf[b].data_ptr(), bias_ptr, y[b].data_ptr(), threads)
    else:
        tile = lib.dc_batch_tile()  # x is padded to whole register tiles of batch columns
        padded = -(-batch // tile) * tile
        xt = torch.zeros((t.in_features, padded), dtype=torch.float32)
        xt[:, :batch] = xf.t()
        lib.dc_gemm(rows, batch, padded, *common, xt.data_ptr(), bias_ptr, y.data_ptr(), threads)
    return y.to(x2d.dtype)
