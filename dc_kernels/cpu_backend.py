"""The fast CPU path of `CompressedLinear`: sparse products straight from the compressed form.

Calls the compiled kernels of `csrc/sparse_linear.c` (see `cpu_build`), which keep only the
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

import torch

from dc_kernels import cpu_build

# Measured by perf/bench_cpu.py --sweep (see the module docstring).
GEMV_MAX_BATCH = 2
DENSE_MIN_DENSITY = 0.5
DENSE_MIN_BATCH = 128
# Decoded rows per GEMM of the dense path: a block of about the size of a core's L2 cache.
DECODE_BLOCK_BYTES = 2 << 20


def uses_sparse(batch: int, density: float) -> bool:
    """Whether `cpu_linear` takes the sparse kernels (True) or decode + dense GEMM (False)."""
    return density < DENSE_MIN_DENSITY or batch < DENSE_MIN_BATCH


def pack(
    codebook: torch.Tensor, row_ptr: torch.Tensor, col_idx: torch.Tensor, codes: torch.Tensor
) -> list[torch.Tensor]:
    """Tensors the path needs beside the canonical ones: none for the compiled kernels; the
    CSR indices and decoded values of torch's sparse fallback otherwise."""
    if cpu_build.library() is not None:
        return []
    index_dtype = torch.int32 if codes.numel() < 2**31 else torch.int64
    return [row_ptr.to(index_dtype), col_idx.to(index_dtype), codebook[codes.long()]]


def decode(
    codebook: torch.Tensor,
    row_ptr: torch.Tensor,
    col_idx: torch.Tensor,
    codes: torch.Tensor,
    in_features: int,
) -> torch.Tensor | None:
    """The dense float32 weight decoded by the compiled decoder; None when it is unavailable."""
    lib = cpu_build.library()
    if lib is None:
        return None
    rows = row_ptr.numel() - 1
    weight = torch.empty((rows, in_features), dtype=torch.float32)
    lib.dc_decode(
        rows,
        in_features,
        *_pointers(codebook, row_ptr, col_idx, codes),
        weight.data_ptr(),
        torch.get_num_threads(),
    )
    return weight


def _pointers(codebook, row_ptr, col_idx, codes) -> tuple[int, ...]:
    """The kernels' (row_ptr, col, col_bits, codes, codebook, k) arguments, after the checks that
    keep the C code inside its arrays' memory (the values were validated with the layer)."""
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


def _decode_gemm(lib, xf, codebook, row_ptr, col_idx, codes, bias_f, in_features: int) -> torch.Tensor:
    """x W^T + b by blocks of rows: decode a block into a cache-sized buffer, multiply it by x
    (a GEMM), next block. Never holds the whole dense weight, and each block is multiplied
    while it is still in cache."""
    rows, batch = row_ptr.numel() - 1, xf.shape[0]
    block_rows = max(1, min(rows, DECODE_BLOCK_BYTES // (4 * in_features)))
    buffer = torch.empty(block_rows * in_features, dtype=torch.float32)
    y_t = torch.empty((rows, batch), dtype=torch.float32)
    row_ptr_address, *rest = _pointers(codebook, row_ptr, col_idx, codes)
    threads = torch.get_num_threads()
    for r0 in range(0, rows, block_rows):
        n = min(block_rows, rows - r0)
        block = buffer[: n * in_features].view(n, in_features)
        # The row pointers are absolute offsets into col_idx/codes: pass the block's slice of them.
        lib.dc_decode(n, in_features, row_ptr_address + 8 * r0, *rest, block.data_ptr(), threads)
        torch.mm(block, xf.t(), out=y_t[r0 : r0 + n])
    y = y_t.t().contiguous()
    return y if bias_f is None else y.add_(bias_f)


def cpu_linear(
    x2d: torch.Tensor,
    codebook: torch.Tensor,
    row_ptr: torch.Tensor,
    col_idx: torch.Tensor,
    codes: torch.Tensor,
    bias: torch.Tensor | None,
    in_features: int,
    packed: list[torch.Tensor],
    path: str | None = None,
) -> torch.Tensor:
    """y = x W^T + b for CPU tensors, float32 accumulation, returned in x2d's dtype. ``path``
    ("sparse" or "dense") overrides the choice of `uses_sparse` (for benchmarks)."""
    rows = row_ptr.numel() - 1
    batch = x2d.shape[0]
    xf = x2d.float()
    bias_f = None if bias is None else bias.float().contiguous()
    lib = cpu_build.library()
    if packed or lib is None:
        crow, col, values = packed if packed else pack(codebook, row_ptr, col_idx, codes)
        weight = torch.sparse_csr_tensor(crow, col, values, (rows, in_features), check_invariants=False)
        y = (weight @ xf.t()).t()
        return (y if bias_f is None else y + bias_f).to(x2d.dtype)
    if path not in (None, "sparse", "dense"):
        raise ValueError(f"path must be None, 'sparse' or 'dense', got {path!r}")
    sparse = uses_sparse(batch, codes.numel() / (rows * in_features)) if path is None else path == "sparse"
    if not sparse:
        return _decode_gemm(lib, xf, codebook, row_ptr, col_idx, codes, bias_f, in_features).to(x2d.dtype)
    threads = torch.get_num_threads()
    common = _pointers(codebook, row_ptr, col_idx, codes)
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
        xt = torch.zeros((in_features, padded), dtype=torch.float32)
        xt[:, :batch] = xf.t()
        lib.dc_gemm(rows, batch, padded, *common, xt.data_ptr(), bias_ptr, y.data_ptr(), threads)
    return y.to(x2d.dtype)
