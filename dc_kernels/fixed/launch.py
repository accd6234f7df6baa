"""Launch and dispatch of the fixed-width kernels over a `GpuLayout`.

Dispatch by batch size B (rows of x):

* ``1 <= B <= 16``: one launch of `codebook_spmm_kernel` with the batch padded to a bucket
  ``BB`` in {1, 2, 4, 8, 16}: each weight is decoded once and used for the whole batch (x handed
  over column-major for ``B > 1``: a kept weight's batch values are one or a few 16-byte loads);
* ``16 < B < dense_crossover_batch``: that kernel over chunks of 16 rows of x;
* ``B >= dense_crossover_batch``: decode the layer into a dense weight in x's dtype
  (`decode_dense_kernel`) and multiply with cuBLAS.

A launch has one program per block of the layout (``grid = n_blocks``) and one thread per lane
(``chunks x block_rows`` lanes; `KernelConfig.lanes_per_thread` packs several lanes into a thread).
Kernel configurations come from a `Dispatch` (a fixed table keyed by the bucket, no autotuning),
so the set of compiled variants is bounded: bucket x dtype x code/index widths x the layout's
lane shape x bias. Benchmarks pass their own `Dispatch` instead of changing the default.
Importing this module does not import Triton; the kernels module is imported at the first launch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from dc_kernels.checks import (
    SUPPORTED_DTYPES,
    check_layout_call,
    check_layout_device,
    interpreting,
    triton_at_least,
)
from dc_kernels.fixed.layout import GpuLayout

SMALL_BATCH_MAX = 16
BATCH_BUCKETS = (1, 2, 4, 8, 16)
# Codebook lookup: a warp shuffle from a register copy (tl.gather) for codebooks of exactly
# 2**GATHER_CODE_BITS = 32 entries (one entry a lane: one SHFL per slot); the others load from the
# L1-resident table (for larger ones a shuffle per 32 entries and a select chain would cost more;
# smaller ones the compiler lays out through shared memory, 2-4x the instructions of the table).
GATHER_CODE_BITS = 5
# The oldest Triton release checked to compile that lookup (3.6 does not; 3.9 does).
GATHER_MIN_TRITON = (3, 9)
# Lane shapes (block_rows, chunks) that `aot_configs` lists: 32 rows a block, one warp a chunk
# (the builder's choice for 4096-row layers), and 4 rows with 16 chunks, several chunks a warp
# (small layers); the kernels' code differs by lane shape only in those two ways.
AOT_LANE_SHAPES = ((32, 8), (4, 16))
# Told a launch's exact thread count, the ptxas of Triton 3.9 (CUDA 13.4) sizes the batch-1 walk of
# 32-slot groups (8-bit entries) to 64 registers a thread and spills there (sm_90, float16 4+4:
# 36 bytes); with a budget of 80, the count it picks for the float32 kernel and without that hint,
# it spills nothing on sm_80 or sm_90 for any 8-bit entry split and dtype. The ptxas of Triton 3.6
# needs no budget there (32 registers, no spill) and spills 4 bytes with this one (bfloat16), so
# the budget applies from the release where it was checked.
REGISTER_BUDGET_8BIT_ENTRIES_BATCH_1 = 80
REGISTER_BUDGET_MIN_TRITON = (3, 9)


@dataclass(frozen=True)
class KernelConfig:
    """Lanes (chunk, row pairs) each thread decodes: more lanes per thread, fewer warps, more
    independent work per thread."""

    lanes_per_thread: int = 1

    def __post_init__(self) -> None:
        n = self.lanes_per_thread
        if isinstance(n, bool) or not isinstance(n, int) or n < 1 or n & (n - 1):
            raise ValueError(f"lanes_per_thread must be a power of two >= 1, got {n!r}")

    def num_warps(self, lanes: int) -> int:
        return max(1, lanes // (32 * self.lanes_per_thread))


SPMM_CONFIGS: Mapping[int, KernelConfig] = {bb: KernelConfig() for bb in BATCH_BUCKETS}


@dataclass(frozen=True)
class Dispatch:
    """How `fixed_linear` launches: the small-batch kernel's configuration per batch bucket, the
    decode kernel's, the batch from which decode + cuBLAS replaces chunks of the small-batch
    kernel (provisional until a GPU run of ``perf/bench_gpu.py`` measures it), and the codebook
    lookup (``gather``: None follows `GATHER_CODE_BITS`, True/False force it)."""

    spmm: Mapping[int, KernelConfig] = field(default_factory=lambda: dict(SPMM_CONFIGS))
    decode: KernelConfig = KernelConfig()
    dense_crossover_batch: int = 64
    gather: bool | None = None

    def use_gather(self, code_bits: int) -> bool:
        """Whether a launch's codebook lookup is a warp shuffle (tl.gather)."""
        if self.gather is not None:
            return self.gather
        return code_bits == GATHER_CODE_BITS and triton_at_least(GATHER_MIN_TRITON)


DEFAULT_DISPATCH = Dispatch()


def batch_bucket(batch: int) -> int:
    """The smallest bucket >= batch (batch in 1..SMALL_BATCH_MAX)."""
    for bucket in BATCH_BUCKETS:
        if batch <= bucket:
            return bucket
    raise ValueError(f"batch {batch} exceeds the small-batch kernel's maximum {SMALL_BATCH_MAX}")


def _constexprs(
    code_bits: int, index_bits: int, block_rows: int, chunks: int, cfg: KernelConfig, dispatch: Dispatch
) -> dict[str, int]:
    """The compile-time constants both kernels share, and their ``num_warps``."""
    return {
        "CODE_BITS": code_bits,
        "INDEX_BITS": index_bits,
        "CODEBOOK_PAD": 1 << code_bits,
        "R": block_rows,
        "T": chunks,
        "GATHER": dispatch.use_gather(code_bits),
        "num_warps": cfg.num_warps(block_rows * chunks),
    }


def register_budget(code_bits: int, index_bits: int, bucket: int) -> dict[str, int]:
    """``maxnreg`` for `codebook_spmm_kernel` launches where ptxas's own choice spills (empty:
    ptxas chooses)."""
    if code_bits + index_bits == 8 and bucket == 1 and triton_at_least(REGISTER_BUDGET_MIN_TRITON):
        return {"maxnreg": REGISTER_BUDGET_8BIT_ENTRIES_BATCH_1}
    return {}


def _layout_constexprs(layout: GpuLayout, cfg: KernelConfig, dispatch: Dispatch) -> dict[str, int]:
    return _constexprs(layout.code_bits, layout.index_bits, layout.block_rows, layout.chunks, cfg, dispatch)


def _decode_args(layout: GpuLayout, weight: torch.Tensor, dispatch: Dispatch) -> tuple[tuple, dict]:
    """(arguments, keyword arguments) of `decode_dense_kernel` writing the layer into the
    zero-filled ``weight``."""
    args = (layout.words, layout.blocks, layout.starts, layout.row_ids, layout.codebook, weight,
            layout.out_features, layout.in_features, layout.words.numel(),
            layout.codebook.numel())  # fmt: skip
    return args, _layout_constexprs(layout, dispatch.decode, dispatch)


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
        decode_dense_kernel[(layout.n_blocks,)](*args, **kwargs)
        torch.matmul(x2d, weight.T, out=out)
        return out if bias is None else out.add_(bias.to(out.dtype))
    for lo in range(0, batch, SMALL_BATCH_MAX):
        hi = min(batch, lo + SMALL_BATCH_MAX)
        bb = batch_bucket(hi - lo)
        xp, strides = _pieces(x2d[lo:hi], bb)
        y = out[lo:hi]
        codebook_spmm_kernel[(layout.n_blocks,)](
            layout.words, layout.blocks, layout.starts, layout.row_ids, layout.codebook, xp,
            bias if bias is not None else layout.codebook, y,
            layout.out_features, layout.in_features, layout.words.numel(), hi - lo, layout.codebook.numel(),
            *strides, y.stride(0), y.stride(1),
            **_layout_constexprs(layout, dispatch.spmm[bb], dispatch), BB=bb, HAS_BIAS=bias is not None,
            FRESH_PID=not interpreting(), **register_budget(layout.code_bits, layout.index_bits, bb),
        )  # fmt: skip
    return out


def piece_columns(bucket: int, dtype: torch.dtype) -> int:
    """Batch columns of one 16-byte piece of x for a launch of ``bucket`` (the kernel's ``V``)."""
    return min(bucket, 16 // torch.empty(0, dtype=dtype).element_size())


def _pieces(chunk: torch.Tensor, bucket: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """x rows ``chunk`` as the kernel reads them, and its (piece, column) strides: one row as it
    is; more rows transposed into pieces of `piece_columns` batch columns, ``[piece, column,
    batch in piece]`` contiguous, so that a kept weight's batch values are one 16-byte load per
    piece and a warp's loads of neighbouring columns share cache lines."""
    rows, n = chunk.shape
    if rows == 1:
        return chunk, (0, chunk.stride(1))
    v = piece_columns(bucket, chunk.dtype)
    full = rows // v
    # Every piece the kernel reads exists; batch columns past ``rows`` (zeros) only reach sums
    # that are never stored.
    alloc = torch.empty if full * v == bucket else torch.zeros
    xp = alloc((bucket // v, n, v), dtype=chunk.dtype, device=chunk.device)
    if full:
        xp[:full].copy_(chunk[: full * v].reshape(full, v, n).transpose(1, 2))
    if rows > full * v:
        xp[full, :, : rows - full * v].copy_(chunk[full * v :].T)
    return xp, (n * v, v)


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
    decode_dense_kernel[(layout.n_blocks,)](*args, **kwargs)
    return weight


def aot_configs(
    dtypes: Mapping[str, str], widths, dispatch: Dispatch = DEFAULT_DISPATCH, lane_shapes=AOT_LANE_SHAPES
) -> list[tuple]:
    """(kernel function, constexprs, num_warps, dtype, batch bucket) of every launch the
    dispatcher makes for layouts of the ``lane_shapes`` (block rows, chunks), per dtype (torch
    name -> Triton's) and (code bits, index bits) in ``widths``."""
    from dc_kernels.fixed.kernels import codebook_spmm_kernel, decode_dense_kernel

    out = []
    for rows, chunks in lane_shapes:
        for dtype in dtypes:
            for code_bits, index_bits in widths:
                for bb in BATCH_BUCKETS:
                    consts = _constexprs(code_bits, index_bits, rows, chunks, dispatch.spmm[bb], dispatch)
                    warps = consts.pop("num_warps")
                    out.append(
                        (codebook_spmm_kernel, {**consts, "BB": bb, "HAS_BIAS": True}, warps, dtype, bb)
                    )
                consts = _constexprs(code_bits, index_bits, rows, chunks, dispatch.decode, dispatch)
                warps = consts.pop("num_warps")
                out.append((decode_dense_kernel, consts, warps, dtype, 0))
    return out


def loop_items(constexprs: Mapping[str, int]) -> int:
    """Slots one iteration of either kernel's main loop decodes: one 256-bit group of each of the
    program's ``T x R`` lanes (for `perf.cost`; a slot is a kept weight unless it is a filler or
    a wait)."""
    slots = 256 // (int(constexprs["CODE_BITS"]) + int(constexprs["INDEX_BITS"]))
    return int(constexprs["R"]) * int(constexprs["T"]) * slots
