"""Launch and dispatch of the dense-codes Triton kernels over a `DenseCodesLayout`.

Dispatch by batch size B (rows of x):

* ``B = 1``: `dense_codes_gemv_kernel`: each thread decodes whole groups of 16 codes of a row,
  one load per plane, and sums their products in registers (one reduction after the loop);
* ``2 <= B <= 16`` on layers of at least ``tile_min_rows`` (2048) rows: one launch of
  `dense_codes_gemm_kernel` with the batch padded to a bucket ``BB`` in {2, 4, 8, 16}: each code
  decoded once per launch from whole groups of 16 and the tile multiplied on tensor cores (float16;
  float32 products for float32 x and for bfloat16 x, read as float32);
* otherwise (``B >= dense_crossover_batch``, 17, or fewer rows from batch 2): decode the layer
  into a dense weight in x's dtype (`dense_codes_decode_kernel`) and multiply with cuBLAS;
* ``path="codes"`` forces the tile kernel at any batch above 1 (in chunks of 16 rows of x).

Tile configurations come from a `Dispatch` (a fixed table keyed by the bucket, no autotuning), so
the compiled variants are bounded: bucket x dtype x plane counts x bias. The rule comes from the
cost model (`dcomp predict-gpu`; predictions, not measurements, H100 SXM, batch 16): the tile
kernel (16 x 256 tiles) 17.4 us on a 4096 x 4096 layer against 25.8 us for decode + cuBLAS
(cuBLAS float16 alone: 13.5 us), 0.67-0.88x decode + cuBLAS on every layer of at least 2048 rows;
on layers of 600-1000 rows its 38-63 programs leave it latency-bound (14.7 us against 9.7-10.8
us). It holds until a GPU run (`perf/bench_gpu_dense_codes.py` times both paths at batch 4 and 16)
says otherwise. Importing this module does not import Triton.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from dc_kernels.checks import SUPPORTED_DTYPES, check_layout_call, check_layout_device
from dc_kernels.dense_codes.layout import DenseCodesLayout
from dc_kernels.planes import plane_offsets, plane_widths

SMALL_BATCH_MAX = 16
BATCH_BUCKETS = (1, 2, 4, 8, 16)


@dataclass(frozen=True)
class TileConfig:
    """Rows and columns of codes one program decodes per loop step, and its warps."""

    block_n: int
    block_k: int
    num_warps: int


# 16 rows (the smallest tensor-core tile) of 256 codes a step whatever the bucket: 16 x 64 tiles
# were latency-bound (32.2 us predicted on 4096 x 4096 at batch 16), 16 x 512 and 8 warps issued
# more (19.6-22.6 us against 17.4 us).
GEMM_CONFIGS: Mapping[int, TileConfig] = {bb: TileConfig(16, 256, 4) for bb in (2, 4, 8, 16)}


@dataclass(frozen=True)
class Dispatch:
    """How `dense_codes_linear` launches: the GEMM kernel's tiles per batch bucket (bucket 1: the
    GEMV kernel's ``gemv`` instead), the decode kernel's, and where decode + cuBLAS replaces the
    GEMM kernel (from a batch, or on layers of few rows)."""

    gemm: Mapping[int, TileConfig] = field(default_factory=lambda: dict(GEMM_CONFIGS))
    # Batch 1: rows a program and columns a loop step (32 threads of a row, 16 codes each).
    gemv: TileConfig = TileConfig(4, 512, 4)
    # As the GEMV: 4 whole rows a program (enough programs to fill a GPU), 32 groups of 16 a step.
    decode: TileConfig = TileConfig(4, 512, 4)
    # Decode + cuBLAS from this batch on (the tile kernel would decode every chunk of 16 again) and,
    # on layers of fewer than ``tile_min_rows`` rows, from batch 2 (module docstring).
    dense_crossover_batch: int = 17
    tile_min_rows: int = 2048

    def __post_init__(self) -> None:
        # The kernels decode whole groups of 16 codes: a step of columns is a multiple of 16.
        steps = {f"gemm[{bb}]": cfg for bb, cfg in self.gemm.items()}
        for name, cfg in {**steps, "gemv": self.gemv, "decode": self.decode}.items():
            if cfg.block_k < 16 or cfg.block_k % 16 or cfg.block_n < 1:
                raise ValueError(f"{name}: block_k must be a multiple of 16 and block_n >= 1, got {cfg}")
        if missing := set(BATCH_BUCKETS[1:]) - set(self.gemm):
            raise ValueError(f"gemm needs a TileConfig for every bucket of 2..16, missing {sorted(missing)}")


DEFAULT_DISPATCH = Dispatch()


def batch_bucket(batch: int) -> int:
    """The smallest bucket >= batch (batch in 1..SMALL_BATCH_MAX)."""
    for bucket in BATCH_BUCKETS:
        if batch <= bucket:
            return bucket
    raise ValueError(f"batch {batch} exceeds the small-batch kernel's maximum {SMALL_BATCH_MAX}")


def plane_constexprs(width: int) -> dict[str, int]:
    """How many byte, nibble and bit planes a stream of ``width`` bits has (N8, N4, N1)."""
    widths = plane_widths(width)
    return {"N8": widths.count(8), "N4": widths.count(4), "N1": widths.count(1)}


def _plane_args(layout: DenseCodesLayout) -> tuple[int, int, int, int]:
    """(bytes of a byte plane, offset of the nibble plane, of the first bit plane, bytes of a bit
    plane): the kernels' view of `dc_kernels.planes.plane_offsets`."""
    planes = plane_offsets(layout.codes, layout.width)
    starts = {w: [offset for offset, pw, _ in planes if pw == w] for w in (8, 4, 1)}
    byte_bytes = starts[8][1] - starts[8][0] if len(starts[8]) > 1 else 0
    bit_bytes = starts[1][1] - starts[1][0] if len(starts[1]) > 1 else 0
    return byte_bytes, (starts[4] or [0])[0], (starts[1] or [0])[0], bit_bytes


def _common(layout: DenseCodesLayout) -> tuple:
    return (layout.out_features, layout.in_features, layout.stride)


def _decode_args(layout: DenseCodesLayout, weight: torch.Tensor, dispatch: Dispatch) -> tuple:
    """(grid, args, kwargs) of `dense_codes_decode_kernel` writing the layer into ``weight`` (the
    callers launch it themselves: one frame less on the forward path)."""
    cfg = dispatch.decode
    grid = (-(-layout.out_features // cfg.block_n),)
    codebook = layout.codebook
    args = (layout.planes, codebook, weight, *_common(layout), codebook.numel(), *_plane_args(layout))
    kwargs = {**plane_constexprs(layout.width), "R": cfg.block_n, "G": cfg.block_k // 16}
    return grid, args, {**kwargs, "num_warps": cfg.num_warps}


def run(
    x2d: torch.Tensor,
    layout: DenseCodesLayout,
    bias: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    path: str | None = None,
    dispatch: Dispatch = DEFAULT_DISPATCH,
) -> torch.Tensor:
    """`dense_codes_linear` without its argument checks (the custom op and `dense_codes_linear` check)."""
    from dc_kernels.dense_codes.kernels import dense_codes_gemm_kernel, dense_codes_gemv_kernel

    batch = x2d.shape[0]
    if out is None:
        out = torch.empty((batch, layout.out_features), dtype=x2d.dtype, device=x2d.device)
    if batch == 0:
        return out
    decodes = batch >= dispatch.dense_crossover_batch or layout.out_features < dispatch.tile_min_rows
    if path == "dense" or (path is None and batch > 1 and decodes):
        from dc_kernels.dense_codes.kernels import dense_codes_decode_kernel

        weight = torch.empty(layout.shape, dtype=x2d.dtype, device=layout.device)
        grid, args, kwargs = _decode_args(layout, weight, dispatch)
        dense_codes_decode_kernel[grid](*args, **kwargs)
        torch.matmul(x2d, weight.T, out=out)
        return out if bias is None else out.add_(bias.to(out.dtype))
    for lo in range(0, batch, SMALL_BATCH_MAX):
        hi = min(batch, lo + SMALL_BATCH_MAX)
        chunk, y = x2d[lo:hi], out[lo:hi]
        bb = batch_bucket(hi - lo)
        if bb == 1:
            cfg = dispatch.gemv
            dense_codes_gemv_kernel[(-(-layout.out_features // cfg.block_n),)](
                layout.planes, layout.codebook, chunk, bias if bias is not None else layout.codebook, y,
                *_common(layout), layout.codebook.numel(), *_plane_args(layout), chunk.stride(1), y.stride(1),
                **plane_constexprs(layout.width), R=cfg.block_n, G=cfg.block_k // 16,
                HAS_BIAS=bias is not None, VEC_X=chunk.stride(1) == 1 and chunk.data_ptr() % 16 == 0,
                num_warps=cfg.num_warps,
            )  # fmt: skip
            continue
        cfg = dispatch.gemm[bb]
        if chunk.dtype == torch.bfloat16:
            # Read as float32 (at most 16 rows of x): Triton's interpreter multiplies a bfloat16
            # dot's raw bits, so a tensor-core path for it could not be tested on the CPU, and the
            # kernel converting bfloat16 tiles itself spilled 80-192 bytes.
            chunk = chunk.float()
        dense_codes_gemm_kernel[(-(-layout.out_features // cfg.block_n),)](
            layout.planes, layout.codebook, chunk, bias if bias is not None else layout.codebook, y,
            *_common(layout), hi - lo, layout.codebook.numel(), *_plane_args(layout),
            chunk.stride(0), chunk.stride(1), y.stride(0), y.stride(1),
            **plane_constexprs(layout.width), BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, BB=bb,
            HAS_BIAS=bias is not None, num_warps=cfg.num_warps,
        )  # fmt: skip
    return out


def dense_codes_linear(
    x2d: torch.Tensor,
    layout: DenseCodesLayout,
    bias: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    path: str | None = None,
    dispatch: Dispatch = DEFAULT_DISPATCH,
) -> torch.Tensor:
    """y = x2d W^T + bias from dense codes on the GPU; x2d (B, in_features) in float32, float16
    or bfloat16 (any strides), bias (out_features,) or None; float32 accumulation; result
    (B, out_features) in x2d's dtype, written into ``out`` when given.

    ``path`` forces ``"codes"`` (the GEMV kernel at batch 1, else the tile kernel in chunks of 16
    rows) or ``"dense"`` (decode + cuBLAS); None chooses by ``dispatch`` (module docstring)."""
    if path not in (None, "codes", "dense"):
        raise ValueError(f"path must be None, 'codes' or 'dense', got {path!r}")
    bias, out = check_layout_call(x2d, layout, DenseCodesLayout, bias, out)
    return run(x2d, layout, bias, out, path, dispatch)


def decode_dense(
    layout: DenseCodesLayout, dtype: torch.dtype = torch.float32, dispatch: Dispatch = DEFAULT_DISPATCH
) -> torch.Tensor:
    """The layer's dense weight (out_features, in_features) in ``dtype``, decoded on the device."""
    if not isinstance(layout, DenseCodesLayout):
        raise TypeError(f"expected a DenseCodesLayout, got {type(layout).__name__}")
    if dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"dtype must be one of {SUPPORTED_DTYPES}, got {dtype}")
    check_layout_device(layout.planes, layout, "layout")
    from dc_kernels.dense_codes.kernels import dense_codes_decode_kernel

    weight = torch.empty(layout.shape, dtype=dtype, device=layout.device)
    grid, args, kwargs = _decode_args(layout, weight, dispatch)
    dense_codes_decode_kernel[grid](*args, **kwargs)
    return weight


def aot_configs(dtypes: Mapping[str, str], widths, dispatch: Dispatch = DEFAULT_DISPATCH) -> list[tuple]:
    """(kernel function, constexprs, num_warps, dtype, batch bucket) of every launch the
    dispatcher can make, per dtype (torch name -> Triton's) and code width in ``widths``."""
    from dc_kernels.dense_codes.kernels import (
        dense_codes_decode_kernel,
        dense_codes_gemm_kernel,
        dense_codes_gemv_kernel,
    )

    out = []
    for dtype in dtypes:
        for width in widths:
            planes = plane_constexprs(width)
            cfg = dispatch.gemv
            consts = {**planes, "R": cfg.block_n, "G": cfg.block_k // 16, "HAS_BIAS": True, "VEC_X": True}
            out.append((dense_codes_gemv_kernel, consts, cfg.num_warps, dtype, 1))
            for bb in BATCH_BUCKETS[1:]:
                cfg = dispatch.gemm[bb]
                consts = {
                    **planes,
                    "BLOCK_N": cfg.block_n,
                    "BLOCK_K": cfg.block_k,
                    "BB": bb,
                    "HAS_BIAS": True,
                }
                out.append((dense_codes_gemm_kernel, consts, cfg.num_warps, dtype, bb))
            cfg = dispatch.decode
            consts = {**planes, "R": cfg.block_n, "G": cfg.block_k // 16}
            out.append((dense_codes_decode_kernel, consts, cfg.num_warps, dtype, 0))
    return out


def loop_items(constexprs: Mapping[str, int]) -> int:
    """Weights one iteration of a kernel's main loop decodes: ``BLOCK_N * BLOCK_K`` codes, or
    ``R * G * 16`` for the GEMV kernel (for `perf.cost`; a code is a kept weight or the zero code)."""
    if "G" in constexprs:
        return int(constexprs["R"]) * int(constexprs["G"]) * 16
    return int(constexprs["BLOCK_N"]) * int(constexprs["BLOCK_K"])
