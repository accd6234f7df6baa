"""Launchers of the Huffman kernels (`dc_kernels.huffman.kernels`).

* `huffman_linear`: y = x W^T + b straight from the Huffman stream, batch padded to a bucket
  ``BB`` in {1, 2, 4, 8} (each weight decoded once per launch); larger batches run in chunks of 8.
* `huffman_decode`: the standalone decoder, stream -> (codes, columns) of every kept weight.

One configuration per bucket (one warp per 32 lanes, at least 4; the lanes are fixed by the
layout), so the compiled variants are bounded: bucket x dtype x lanes shape x bias. Importing
this module does not import Triton; the kernels module is imported at the first launch.
"""

from __future__ import annotations

import torch

from dc_kernels.checks import check_layout_call, check_layout_device
from dc_kernels.huffman.layout import HuffmanLayout

BATCH_BUCKETS = (1, 2, 4, 8)
MAX_BATCH = BATCH_BUCKETS[-1]
MIN_WARPS = 4
# The fused kernel's bit buffer with a prefetched word (see huffman_spmm_kernel); chosen by the
# side-by-side GPU measurement of perf/bench_gpu_huffman.py.
USE_PREFETCH = False


def num_warps(layout: HuffmanLayout) -> int:
    """Warps of one program: one lane (segment) per thread."""
    return max(MIN_WARPS, layout.lanes // 32)


def _bucket(batch: int) -> int:
    return next(b for b in BATCH_BUCKETS if batch <= b)


def run(
    x2d: torch.Tensor,
    layout: HuffmanLayout,
    bias: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    prefetch: bool | None = None,
) -> torch.Tensor:
    """`huffman_linear` without its argument checks (the custom op and `huffman_linear` check)."""
    from dc_kernels.huffman.kernels import huffman_spmm_kernel

    batch = x2d.shape[0]
    if out is None:
        out = torch.empty((batch, layout.out_features), dtype=x2d.dtype, device=x2d.device)
    for lo in range(0, batch, MAX_BATCH):
        hi = min(batch, lo + MAX_BATCH)
        x, y = x2d[lo:hi], out[lo:hi]
        huffman_spmm_kernel[(layout.n_programs,)](
            layout.words, layout.prog_base, layout.seg_len, layout.prog_steps, layout.table, layout.codebook,
            x, bias if bias is not None else layout.codebook, y,
            layout.out_features, layout.in_features, layout.n_segments, layout.len_base, layout.len_unit,
            layout.words.numel() * 32, layout.block_cols, layout.table_bits,
            hi - lo, x.stride(0), x.stride(1), y.stride(0), y.stride(1),
            ROWS=layout.rows_per_program, NCB=layout.col_blocks, BB=_bucket(hi - lo),
            HAS_BIAS=bias is not None, PREFETCH=USE_PREFETCH if prefetch is None else prefetch,
            num_warps=num_warps(layout),
        )  # fmt: skip
    return out


def huffman_linear(
    x2d: torch.Tensor,
    layout: HuffmanLayout,
    bias: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    prefetch: bool | None = None,
) -> torch.Tensor:
    """y = x2d W^T + bias from the Huffman stream; x2d (B, in_features) in float32, float16 or
    bfloat16 (any strides), bias (out_features,) or None; float32 accumulation; result
    (B, out_features) in x2d's dtype (written into ``out`` when given). ``prefetch`` overrides
    the kernel variant (`USE_PREFETCH`)."""
    bias, out = check_layout_call(x2d, layout, HuffmanLayout, bias, out)
    if x2d.numel() >= 2**31:
        raise ValueError(f"x2d has {x2d.numel()} elements; 32-bit column offsets need < 2**31")
    return run(x2d, layout, bias, out, prefetch)


def _decode_args(layout: HuffmanLayout, dense: bool, *outputs: torch.Tensor) -> tuple[tuple, dict]:
    """(arguments, keyword arguments) of the decoder kernel writing into (codes, cols) or into a
    dense weight (``dense``); the unused pointers get the table (never read: their code is
    compiled out)."""
    check_layout_device(layout.words, layout, "layout")
    codes, cols, weight = (layout.table, layout.table, outputs[0]) if dense else (*outputs, layout.table)
    args = (
        layout.words, layout.prog_base, layout.seg_len, layout.prog_steps, layout.table,
        layout.table if dense else layout.seg_first, codes, cols, layout.codebook, weight,
        layout.out_features, layout.in_features, layout.n_segments, layout.nnz, layout.len_base,
        layout.len_unit, layout.words.numel() * 32, layout.block_cols, layout.table_bits,
    )  # fmt: skip
    kwargs = {"ROWS": layout.rows_per_program, "NCB": layout.col_blocks, "DENSE": dense}
    return args, {**kwargs, "num_warps": num_warps(layout)}


def huffman_decode(layout: HuffmanLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes uint8[nnz], columns int32[nnz]) of every kept weight in CSR order, decoded on the
    layout's device (rows follow from the canonical row pointers). Needs the layout's
    ``seg_first`` (a `CompressedLinear`'s packed form leaves it out: use `huffman_decode_dense`)."""
    if not isinstance(layout, HuffmanLayout):
        raise TypeError(f"expected a HuffmanLayout, got {type(layout).__name__}")
    if layout.seg_first is None:
        raise ValueError("this HuffmanLayout has no seg_first (a module's packed form): use from_matrix")
    from dc_kernels.huffman.kernels import huffman_decode_kernel

    codes = torch.empty(layout.nnz, dtype=torch.uint8, device=layout.device)
    cols = torch.empty(layout.nnz, dtype=torch.int32, device=layout.device)
    if layout.nnz:
        args, kwargs = _decode_args(layout, False, codes, cols)
        huffman_decode_kernel[(layout.n_programs,)](*args, **kwargs)
    return codes, cols


def huffman_decode_dense(layout: HuffmanLayout) -> torch.Tensor:
    """The layer's float32 weight (out_features, in_features), decoded on the layout's device
    straight from the stream (every weight written at its row and column)."""
    if not isinstance(layout, HuffmanLayout):
        raise TypeError(f"expected a HuffmanLayout, got {type(layout).__name__}")
    from dc_kernels.huffman.kernels import huffman_decode_kernel

    weight = torch.zeros(layout.shape, dtype=torch.float32, device=layout.device)
    if layout.nnz:
        args, kwargs = _decode_args(layout, True, weight)
        huffman_decode_kernel[(layout.n_programs,)](*args, **kwargs)
    return weight


# Lanes shapes (ROWS, NCB) compiled ahead of time: one column block per row, a typical paper
# layer, and the widest rows (8 warps); with the narrow and the wide offsets and lengths.
AOT_SHAPES = ((128, 1, "i32", "u8"), (4, 32, "i32", "i16"), (1, 256, "i64", "i16"))


def _aot_signature(fn, consts: dict, ty: str, offsets: str, lengths: str) -> dict[str, str]:
    pointers = {
        "words_ptr": "*i32",
        "prog_base_ptr": f"*{offsets}",
        "seg_len_ptr": f"*{lengths}",
        "prog_steps_ptr": "*i32",
        "table_ptr": "*i32",
        "codebook_ptr": "*fp32",
        "bias_ptr": "*fp32",
        "seg_first_ptr": "*i64",
        "codes_ptr": "*u8",
        "cols_ptr": "*i32",
        "w_ptr": "*fp32",
        "x_ptr": f"*{ty}",
        "y_ptr": f"*{ty}",
    }
    scalar = {n: "i64" if n.startswith("stride") else "i32" for n in fn.arg_names}
    return {n: "constexpr" if n in consts else pointers.get(n, scalar[n]) for n in fn.arg_names}


def aot_configs(dtypes: dict[str, str]) -> list[tuple]:
    """(kernel function, signature, constexprs, num_warps, dtype, batch bucket) of the Huffman
    kernels for `perf.kernel_check`; ``dtypes`` maps torch names to Triton's (fp32, ...)."""
    from dc_kernels.huffman.kernels import huffman_decode_kernel, huffman_spmm_kernel

    out = []
    for rows, ncb, offsets, lengths in AOT_SHAPES:
        warps = max(MIN_WARPS, rows * ncb // 32)
        consts = {"ROWS": rows, "NCB": ncb}
        for dense in (False, True):
            decode = {**consts, "DENSE": dense}
            sig = _aot_signature(huffman_decode_kernel, decode, "fp32", offsets, lengths)
            # The pointers `_decode_args` fills with the table (int32), unused by that variant.
            unused = ("seg_first_ptr", "codes_ptr", "cols_ptr") if dense else ("w_ptr",)
            sig.update(dict.fromkeys(unused, "*i32"))
            out.append((huffman_decode_kernel, sig, decode, warps, "dense" if dense else "-", 0))
        for dtype, ty in dtypes.items():
            for bb in (BATCH_BUCKETS[0], BATCH_BUCKETS[-1]):
                spmm = {**consts, "BB": bb, "HAS_BIAS": True, "PREFETCH": USE_PREFETCH}
                sig = _aot_signature(huffman_spmm_kernel, spmm, ty, offsets, lengths)
                out.append((huffman_spmm_kernel, sig, spmm, warps, dtype, bb))
    return out


def loop_items(constexprs: dict) -> int:
    """Symbols one step of either kernel's main loop decodes: one per lane, ``ROWS x NCB`` lanes
    (for `perf.cost`; a symbol is a kept weight unless it is an escape)."""
    return int(constexprs["ROWS"]) * int(constexprs["NCB"])
