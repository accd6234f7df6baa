"""Launch and dispatch of the fixed-width kernels over a `GpuLayout`.

Dispatch by batch size B (rows of x):

* ``1 <= B <= 16``: one launch of `codebook_spmm_kernel` with the batch padded to a bucket
  ``BB`` in {1, 2, 4, 8, 16}: each weight is decoded once and used for the whole batch;
* ``16 < B < dense_crossover_batch``: that kernel over chunks of 16 rows of x;
* ``B >= dense_crossover_batch``: decode the layer into a dense weight in x's dtype
  (`decode_dense_kernel`) and multiply with cuBLAS.

Kernel configurations come from a `Dispatch` (a fixed table keyed by the bucket, no
autotuning), so the set of compiled variants is bounded: bucket x dtype x code/index widths x
slice rows x bias. Benchmarks pass their own `Dispatch` instead of changing the default.
Importing this module does not import Triton; the kernels module is imported at the first launch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from dc_kernels.checks import SUPPORTED_DTYPES, check_layout_call, check_layout_device
from dc_kernels.fixed.layout import DEFAULT_SLICE_ROWS, GpuLayout

SMALL_BATCH_MAX = 16
BATCH_BUCKETS = (1, 2, 4, 8, 16)
# Codebook lookup: tl.gather from a register copy for codebooks of 2**GATHER_MIN_CODE_BITS
# entries or more (up to 1 KB: a global load would touch up to 8 cache lines per warp). Smaller
# codebooks (<= 128 bytes: one cache line, served to a whole warp in one L1 transaction) use a
# load from the L1-resident table: cheaper than gather's shared-memory round trip, and the
# gather lowering spills registers for 2- and 4-entry tables. Gather also needs at least as many
# slice rows as warps (Triton places warps on the non-gathered axis; fewer trip an assertion in
# some Triton releases).
GATHER_MIN_CODE_BITS = 6


@dataclass(frozen=True)
class KernelConfig:
    """Entries decoded per loop step over all rows of a slice (``slice_rows * BLOCK``) and warps."""

    tile_entries: int
    num_warps: int

    def block(self, slice_rows: int) -> int:
        return max(16, self.tile_entries // slice_rows)


SPMM_CONFIGS: Mapping[int, KernelConfig] = {
    1: KernelConfig(1024, 4),
    2: KernelConfig(512, 4),
    4: KernelConfig(512, 4),
    8: KernelConfig(256, 4),
    # 8 warps: at 4 warps, 2- and 4-bit entries in float16 spill 4 bytes on sm_90 (dcomp check-kernels).
    16: KernelConfig(128, 8),
}


@dataclass(frozen=True)
class Dispatch:
    """How `fixed_linear` launches: the small-batch kernel's configuration per batch bucket, the
    decode kernel's, the batch from which decode + cuBLAS replaces chunks of the small-batch
    kernel (provisional until a GPU run of ``perf/bench_gpu.py`` measures it), and the codebook
    lookup (``gather``: None follows `GATHER_MIN_CODE_BITS`, True/False force it)."""

    spmm: Mapping[int, KernelConfig] = field(default_factory=lambda: dict(SPMM_CONFIGS))
    decode: KernelConfig = KernelConfig(512, 4)
    dense_crossover_batch: int = 64
    gather: bool | None = None

    def use_gather(self, code_bits: int, slice_rows: int, num_warps: int) -> bool:
        """Whether a launch's codebook lookup uses tl.gather."""
        if self.gather is not None:
            return self.gather
        return code_bits >= GATHER_MIN_CODE_BITS and slice_rows >= num_warps


DEFAULT_DISPATCH = Dispatch()


def batch_bucket(batch: int) -> int:
    """The smallest bucket >= batch (batch in 1..SMALL_BATCH_MAX)."""
    for bucket in BATCH_BUCKETS:
        if batch <= bucket:
            return bucket
    raise ValueError(f"batch {batch} exceeds the small-batch kernel's maximum {SMALL_BATCH_MAX}")


def _decode_args(layout: GpuLayout, weight: torch.Tensor, dispatch: Dispatch) -> tuple[tuple, dict]:
    """(arguments, keyword arguments) of `decode_dense_kernel` writing into ``weight``."""
    cfg = dispatch.decode
    args = (layout.words, layout.slice_ptr, layout.row_ids, layout.codebook, weight,
            layout.out_features, layout.in_features, layout.codebook.numel())  # fmt: skip
    return args, {**_layout_constexprs(layout, cfg, dispatch), "num_warps": cfg.num_warps}


def _constexprs(
    code_bits: int, index_bits: int, slice_rows: int, cfg: KernelConfig, dispatch: Dispatch
) -> dict[str, int]:
    """The compile-time constants both kernels share."""
    return {
        "CODE_BITS": code_bits,
        "INDEX_BITS": index_bits,
        "CODEBOOK_PAD": 1 << code_bits,
        "R": slice_rows,
        "BLOCK": cfg.block(slice_rows),
        "GATHER": dispatch.use_gather(code_bits, slice_rows, cfg.num_warps),
    }


def _layout_constexprs(layout: GpuLayout, cfg: KernelConfig, dispatch: Dispatch) -> dict[str, int]:
    return _constexprs(layout.code_bits, layout.index_bits, layout.slice_rows, cfg, dispatch)


def run(
    x2d: torch.Tensor,
    layout: GpuLayout,
    bias: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    path: str | None = None,
    dispatch: Dispatch = DEFAULT_DISPATCH,
) -> torch.Tensor:
    """`fixed_linear` without its argument checks (the custom op and `fixed_linear` check)."""
    from dc_kernels.fixed.kernels import codebook_spmm_kernel, decode_dense_kernel

    batch = x2d.shape[0]
    if out is None:
        out = torch.empty((batch, layout.out_features), dtype=x2d.dtype, device=x2d.device)
    if batch == 0:
        return out
    if path == "dense" or (path is None and batch >= dispatch.dense_crossover_batch):
        weight = torch.zeros(layout.shape, dtype=x2d.dtype, device=layout.device)
        args, kwargs = _decode_args(layout, weight, dispatch)
        decode_dense_kernel[(layout.n_slices,)](*args, **kwargs)
        torch.matmul(x2d, weight.T, out=out)
        return out if bias is None else out.add_(bias.to(out.dtype))
    for lo in range(0, batch, SMALL_BATCH_MAX):
        hi = min(batch, lo + SMALL_BATCH_MAX)
        chunk = x2d[lo:hi]
        if hi - lo > 1 and chunk.stride(0) != 1:
            # Column-major x: the batch values of one column share a cache line, so each decoded
            # weight's gather costs one L1 transaction for the whole batch instead of one per row.
            chunk = chunk.T.contiguous().T
        bb = batch_bucket(hi - lo)
        cfg = dispatch.spmm[bb]
        y = out[lo:hi]
        codebook_spmm_kernel[(layout.n_slices,)](
            layout.words, layout.slice_ptr, layout.row_ids, layout.codebook, chunk,
            bias if bias is not None else layout.codebook, y,
            layout.out_features, layout.in_features, hi - lo, layout.codebook.numel(),
            chunk.stride(0), chunk.stride(1), y.stride(0), y.stride(1),
            **_layout_constexprs(layout, cfg, dispatch), BB=bb, HAS_BIAS=bias is not None,
            num_warps=cfg.num_warps,
        )  # fmt: skip
    return out


def fixed_linear(
    x2d: torch.Tensor,
    layout: GpuLayout,
    bias: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    path: str | None = None,
    dispatch: Dispatch = DEFAULT_DISPATCH,
) -> torch.Tensor:
    """y = x2d W^T + bias for the compressed layer; x2d (B, in_features) in float32, float16 or
    bfloat16 (any strides), bias (out_features,) or None; float32 accumulation; result
    (B, out_features) in x2d's dtype, written into ``out`` when given (any strides).

    ``path`` forces ``"spmm"`` (the compressed kernel, in chunks of 16 rows) or ``"dense"``
    (decode + cuBLAS); None chooses by ``dispatch.dense_crossover_batch``."""
    if path not in (None, "spmm", "dense"):
        raise ValueError(f"path must be None, 'spmm' or 'dense', got {path!r}")
    bias, out = check_layout_call(x2d, layout, GpuLayout, bias, out)
    return run(x2d, layout, bias, out, path, dispatch)


def decode_dense(
    layout: GpuLayout, dtype: torch.dtype = torch.float32, dispatch: Dispatch = DEFAULT_DISPATCH
) -> torch.Tensor:
    """The layer's dense weight (out_features, in_features) in ``dtype``, decoded on the device."""
    if not isinstance(layout, GpuLayout):
        raise TypeError(f"expected a GpuLayout, got {type(layout).__name__}")
    if dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"dtype must be one of {SUPPORTED_DTYPES}, got {dtype}")
    check_layout_device(layout.words, layout, "layout")
    from dc_kernels.fixed.kernels import decode_dense_kernel

    weight = torch.zeros(layout.shape, dtype=dtype, device=layout.device)
    args, kwargs = _decode_args(layout, weight, dispatch)
    decode_dense_kernel[(layout.n_slices,)](*args, **kwargs)
    return weight


def aot_configs(dtypes: Mapping[str, str], widths, dispatch: Dispatch = DEFAULT_DISPATCH) -> list[tuple]:
    """(kernel function, constexprs, num_warps, dtype, batch bucket) of every launch the
    dispatcher can make for the default slice rows, per dtype (torch name -> Triton's) and
    (code bits, index bits) in ``widths``."""
    from dc_kernels.fixed.kernels import codebook_spmm_kernel, decode_dense_kernel

    r = DEFAULT_SLICE_ROWS
    out = []
    for dtype in dtypes:
        for code_bits, index_bits in widths:
            for bb in BATCH_BUCKETS:
                cfg = dispatch.spmm[bb]
                consts = {**_constexprs(code_bits, index_bits, r, cfg, dispatch), "BB": bb, "HAS_BIAS": True}
                out.append((codebook_spmm_kernel, consts, cfg.num_warps, dtype, bb))
            cfg = dispatch.decode
            consts = _constexprs(code_bits, index_bits, r, cfg, dispatch)
            out.append((decode_dense_kernel, consts, cfg.num_warps, dtype, 0))
    return out


def loop_items(constexprs: Mapping[str, int]) -> int:
    """Entries one iteration of either kernel's main loop decodes: ``BLOCK`` entries of each of
    the slice's ``R`` rows (for `perf.cost`; an entry is a kept weight unless it is a filler or
    padding)."""
    return int(constexprs["R"]) * int(constexprs["BLOCK"])
