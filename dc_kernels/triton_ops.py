"""Launch and dispatch of the Triton kernels over a `GpuLayout` (what `CompressedLinear` calls).

Dispatch by batch size B (rows of x):

* ``B == 0``: an empty (0, out_features) result, no launch;
* ``1 <= B <= 16``: one launch of `codebook_spmm_kernel` with the batch padded to a bucket
  ``BB`` in {1, 2, 4, 8, 16}: each weight is decoded once and used for the whole batch;
* ``16 < B < DENSE_CROSSOVER_BATCH``: that kernel over chunks of 16 rows of x;
* ``B >= DENSE_CROSSOVER_BATCH``: decode the layer into a dense weight in x's dtype
  (`decode_dense_kernel`) and multiply with cuBLAS (`torch.nn.functional.linear`).

Kernel configurations come from a fixed table keyed by the bucket (no autotuning), so the set of
compiled variants is bounded: bucket x dtype x code/index widths x slice rows x bias. Importing
this module does not import Triton; the kernels module is imported at the first launch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dc_kernels.gpu_layout import GpuLayout
from dc_kernels.launch_checks import SUPPORTED_DTYPES, check_device, prepare_linear

SMALL_BATCH_MAX = 16
BATCH_BUCKETS = (1, 2, 4, 8, 16)
# Batch from which decoding to dense + cuBLAS beats chunks of the small-batch kernel.
# Provisional until the H200 run of perf/bench_gpu.py measures it (its "crossover" phase).
DENSE_CROSSOVER_BATCH = 64
# Codebook lookup: tl.gather from a register copy for codebooks of 2**GATHER_MIN_CODE_BITS
# entries or more (up to 1 KB: a global load would touch up to 8 cache lines per warp). Smaller
# codebooks (<= 128 bytes: one cache line, served to a whole warp in one L1 transaction) use a
# load from the L1-resident table: cheaper than gather's shared-memory round trip, and the
# gather lowering spills registers for 2- and 4-entry tables. Gather also needs at least as many
# slice rows as warps (Triton places warps on the non-gathered axis; fewer trip an assertion in
# some Triton releases). USE_GATHER=False disables it everywhere.
USE_GATHER = True
GATHER_MIN_CODE_BITS = 6


@dataclass(frozen=True)
class KernelConfig:
    """Entries decoded per loop step over all rows of a slice (``slice_rows * BLOCK``) and warps."""

    tile_entries: int
    num_warps: int

    def block(self, slice_rows: int) -> int:
        return max(16, self.tile_entries // slice_rows)


SPMM_CONFIGS: dict[int, KernelConfig] = {
    1: KernelConfig(1024, 4),
    2: KernelConfig(512, 4),
    4: KernelConfig(512, 4),
    8: KernelConfig(256, 4),
    # 8 warps: at 4 warps, 2- and 4-bit entries in float16 spill 4 bytes on sm_90 (dcomp check-kernels).
    16: KernelConfig(128, 8),
}
DECODE_CONFIG = KernelConfig(512, 4)


def batch_bucket(batch: int) -> int:
    """The smallest bucket >= batch (batch in 1..SMALL_BATCH_MAX)."""
    for bucket in BATCH_BUCKETS:
        if batch <= bucket:
            return bucket
    raise ValueError(f"batch {batch} exceeds the small-batch kernel's maximum {SMALL_BATCH_MAX}")


def _codebook_pad(layout: GpuLayout) -> int:
    return 1 << layout.code_bits


def use_gather(code_bits: int, slice_rows: int, num_warps: int) -> bool:
    """Whether the codebook lookup of a launch uses tl.gather (see GATHER_MIN_CODE_BITS)."""
    return USE_GATHER and code_bits >= GATHER_MIN_CODE_BITS and slice_rows >= num_warps


def launch_spmm(
    x2d: torch.Tensor,
    layout: GpuLayout,
    bias: torch.Tensor | None,
    out: torch.Tensor,
    config: KernelConfig | None = None,
    gather: bool | None = None,
) -> torch.Tensor:
    """One launch of the small-batch kernel into ``out`` (B, out_features), B <= 16; no checks
    beyond the bucket (`triton_linear` validates). ``config``/``gather`` override the table."""
    from dc_kernels.kernels.codebook_spmv import codebook_spmm_kernel

    bb = batch_bucket(x2d.shape[0])
    config = config or SPMM_CONFIGS[bb]
    codebook_spmm_kernel[(layout.n_slices,)](
        layout.words,
        layout.slice_ptr,
        layout.row_ids,
        layout.codebook,
        x2d,
        bias if bias is not None else layout.codebook,
        out,
        layout.out_features,
        layout.in_features,
        x2d.shape[0],
        layout.codebook.numel(),
        x2d.stride(0),
        x2d.stride(1),
        out.stride(0),
        out.stride(1),
        CODE_BITS=layout.code_bits,
        INDEX_BITS=layout.index_bits,
        CODEBOOK_PAD=_codebook_pad(layout),
        R=layout.slice_rows,
        BLOCK=config.block(layout.slice_rows),
        BB=bb,
        HAS_BIAS=bias is not None,
        GATHER=use_gather(layout.code_bits, layout.slice_rows, config.num_warps)
        if gather is None
        else gather,
        num_warps=config.num_warps,
    )
    return out


def decode_dense(layout: GpuLayout, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The layer's dense weight (out_features, in_features) in ``dtype``, decoded on the device."""
    if dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"dtype must be one of {SUPPORTED_DTYPES}, got {dtype}")
    check_device(layout.words, layout, "layout")
    from dc_kernels.kernels.codebook_spmv import decode_dense_kernel

    weight = torch.zeros(layout.shape, dtype=dtype, device=layout.device)
    decode_dense_kernel[(layout.n_slices,)](
        layout.words,
        layout.slice_ptr,
        layout.row_ids,
        layout.codebook,
        weight,
        layout.out_features,
        layout.in_features,
        layout.codebook.numel(),
        CODE_BITS=layout.code_bits,
        INDEX_BITS=layout.index_bits,
        CODEBOOK_PAD=_codebook_pad(layout),
        R=layout.slice_rows,
        BLOCK=DECODE_CONFIG.block(layout.slice_rows),
        GATHER=use_gather(layout.code_bits, layout.slice_rows, DECODE_CONFIG.num_warps),
        num_warps=DECODE_CONFIG.num_warps,
    )
    return weight


def triton_linear(
    x2d: torch.Tensor,
    layout: GpuLayout,
    bias: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    path: str | None = None,
) -> torch.Tensor:
    """y = x2d W^T + bias for the compressed layer; x2d (B, in_features) in float32, float16 or
    bfloat16 (any strides), bias (out_features,) or None; float32 accumulation; result
    (B, out_features) in x2d's dtype, written into ``out`` when given (any strides).

    ``path`` forces ``"spmm"`` (the compressed kernel, in chunks of 16 rows) or ``"dense"``
    (decode + cuBLAS); None chooses by ``DENSE_CROSSOVER_BATCH``."""
    if path not in (None, "spmm", "dense"):
        raise ValueError(f"path must be None, 'spmm' or 'dense', got {path!r}")
    bias, out = prepare_linear(x2d, layout, GpuLayout, bias, out)
    batch = x2d.shape[0]
    if batch == 0:
        return out
    if path == "dense" or (path is None and batch >= DENSE_CROSSOVER_BATCH):
        weight = decode_dense(layout, x2d.dtype)
        torch.matmul(x2d, weight.T, out=out)
        return out if bias is None else out.add_(bias.to(out.dtype))
    for lo in range(0, batch, SMALL_BATCH_MAX):
        hi = min(batch, lo + SMALL_BATCH_MAX)
        chunk = x2d[lo:hi]
        if hi - lo > 1 and chunk.stride(0) != 1:
            # Column-major x: the batch values of one column share a cache line, so each decoded
            # weight's gather costs one L1 transaction for the whole batch instead of one per row.
            chunk = chunk.T.contiguous().T
        launch_spmm(chunk, layout, bias, out[lo:hi])
    return out
