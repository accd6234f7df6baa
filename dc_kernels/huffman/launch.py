"""Launchers of the Huffman kernels (`dc_kernels.huffman.kernels`).

* `huffman_linear`: y = x W^T + b straight from the Huffman stream, batch padded to a bucket
  ``BB`` in {1, 2, 4, 8} (each weight decoded once per launch); larger batches run in chunks of
  `max_batch` (8; float32: 4). Batch 1 keeps x on chip when it fits (`on_chip_columns`); a larger
  batch is handed to the kernel transposed and padded to ``BB`` columns (one copy per call), so
  each decoded weight reads its ``BB`` values with one 16-byte load.
* `huffman_decode`, `huffman_decode_dense`: the standalone decoder, stream -> (codes, columns) of
  every kept weight, or the dense weight.

The configuration follows from the layout and the batch alone (`launch_config`): one lane per
thread, the steps per loop iteration ``K`` up to a piece's steps with x on chip
(`steps_per_iteration`). `aot_configs()` lists the configurations `dcomp check-kernels`
compiles; importing this module does not import Triton (the kernels module is imported at the
first launch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dc_kernels.checks import check_layout_call, check_layout_device, interpreting, triton_at_least
from dc_kernels.huffman.layout import HuffmanLayout, slab_width

BATCH_BUCKETS = (1, 2, 4, 8)
# A decoded weight reads its batch columns of x as one vector of at most this many bytes: wider
# (float32 at 8 columns) splits a column over two threads, and the products then cross threads
# (14 barriers an iteration, 2.0 warp-instructions a symbol, a spill on sm_80, where two launches
# of 4 columns take 1.17 each).
COLUMN_BYTES = 16
X_CHIP_BYTES_PER_LANE = 128  # on-chip x: at most 32 registers a thread
MIN_X_WINDOW = 1024
MAX_STEPS_PER_ITERATION = 16
# With x read from memory (batches 2..8) the ptxas of Triton 3.9 gave some 256-lane launches 32
# registers a thread on sm_80 and spilled 4 bytes there (float16 and bfloat16 at batch 8, float32
# at batch 4, once the reader held one stream word instead of four); with a budget of 40, the
# count it picks for the others, it spills nothing.
MEMORY_X_REGISTER_BUDGET = 40
# float32 x on chip with 128 lanes (4 warps: small layers) and 4 steps an iteration or fewer, the
# ptxas of Triton 3.6 gave the launch 64 registers a thread on sm_80 and spilled 4 bytes; with a
# budget of 72, the count Triton 3.9's picks there unbidden, it spills nothing (Triton 3.9 is left
# to choose: with the budget its loop took 3 instructions more). With 8 steps that budget spilled
# 24 bytes, and with 16 (80 registers) 164-188, where Triton 3.6 unbidden picks 80-96 and spills
# nothing.
SMALL_ON_CHIP_REGISTER_BUDGET = 72
SMALL_ON_CHIP_BUDGET_BEFORE_TRITON = (3, 9)


@dataclass(frozen=True)
class LaunchConfig:
    """What a launch compiles in: steps per loop iteration ``K``, batch bucket ``BB``, the on-chip
    x window ``XW`` (0: x read from memory) and warps."""

    K: int
    BB: int
    XW: int
    num_warps: int


def register_budget(config: LaunchConfig, dtype: torch.dtype) -> dict[str, int]:
    """``maxnreg`` for launches where ptxas's own choice spills (empty: ptxas chooses)."""
    if config.XW == 0:
        return {"maxnreg": MEMORY_X_REGISTER_BUDGET}
    small_float32 = config.num_warps == 4 and dtype == torch.float32 and config.K <= 4
    if small_float32 and not triton_at_least(SMALL_ON_CHIP_BUDGET_BEFORE_TRITON):
        return {"maxnreg": SMALL_ON_CHIP_REGISTER_BUDGET}
    return {}


def _bucket(batch: int) -> int:
    return next(b for b in BATCH_BUCKETS if batch <= b)


def max_batch(dtype: torch.dtype) -> int:
    """The largest batch bucket for x of ``dtype``: its columns' values fit `COLUMN_BYTES`."""
    return min(BATCH_BUCKETS[-1], COLUMN_BYTES // torch.empty(0, dtype=dtype).element_size())


def _pow2_at_most(n: float) -> int:
    return 1 << (max(int(n), 1).bit_length() - 1)


def on_chip_columns(in_features: int, dtype: torch.dtype, lanes: int) -> int:
    """The on-chip x window (a power of two >= ``in_features``) for batch 1, or 0 when x of this
    width and dtype is read from memory instead (more than `X_CHIP_BYTES_PER_LANE` a lane)."""
    window = max(MIN_X_WINDOW, 1 << max(in_features - 1, 0).bit_length())
    fits = window * torch.empty(0, dtype=dtype).element_size() <= X_CHIP_BYTES_PER_LANE * lanes
    return window if fits else 0


def steps_per_iteration(on_chip: bool, piece_steps: float) -> int:
    """``K``: with x on chip, a piece's steps (a power of two, at most
    `MAX_STEPS_PER_ITERATION`; the closing iterations of ``K / 2`` and ``K / 4`` steps take the
    rest); x read from memory: 2. Every iteration refreshes the on-chip copies of x and the
    codebook (four barriers), and the warps of a small layer issue alone: with their loops
    replayed from the compiled code (`perf.cost.warp_issue`) the longest iterations are predicted
    fastest (NT-Wd 6.6 -> 5.8 us, NT-LSTM 5.3 -> 5.1, NT-We 4.8 -> 4.6, the LLM shape 4096 ->
    14336 at 30% 28.5 -> 26.7, 4096 x 4096 at 10% 4.74 -> 4.79). Until stop 38 the iterations were
    kept to half a piece's steps and to 4 bytes of x refreshed a lane-step, which the model
    without the replay had favoured."""
    if not on_chip:
        return 2
    return int(min(max(2, _pow2_at_most(piece_steps)), MAX_STEPS_PER_ITERATION))


def steps_granularity(steps_per_iteration: int) -> int:
    """What a program's steps are rounded up to: the fused kernel runs whole iterations of ``K``
    steps, then closing ones of ``K / 2`` (``K >= 4``) and ``K / 4`` (``K >= 8``) steps as the
    rest needs (with ``K / 2`` alone, Alex-8's ``K = 16`` left its lanes idle a sixth of its steps)."""
    if steps_per_iteration >= 8:
        return steps_per_iteration // 4
    return steps_per_iteration // 2 if steps_per_iteration >= 4 else steps_per_iteration


def launch_config(layout: HuffmanLayout, batch: int, dtype: torch.dtype) -> LaunchConfig:
    bb = _bucket(min(batch, max_batch(dtype)))
    window = on_chip_columns(layout.slab_width, dtype, layout.lanes) if bb == 1 else 0
    piece_steps = layout.nnz / max(layout.n_segments, 1)
    return LaunchConfig(steps_per_iteration(window > 0, piece_steps), bb, window, layout.lanes // 32)


def run(
    x2d: torch.Tensor,
    layout: HuffmanLayout,
    bias: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """`huffman_linear` without its argument checks (the custom op and `huffman_linear` check)."""
    from dc_kernels.huffman.kernels import huffman_spmm_kernel

    batch = x2d.shape[0]
    if out is None:
        out = torch.empty((batch, layout.out_features), dtype=x2d.dtype, device=x2d.device)
    chunk = max_batch(x2d.dtype)
    for lo in range(0, batch, chunk):
        hi = min(batch, lo + chunk)
        config = launch_config(layout, hi - lo, x2d.dtype)
        x, y = x2d[lo:hi], out[lo:hi]
        stride_xb, stride_xk = x.stride(0), x.stride(1)
        if config.BB > 1:  # transposed, padded with zero columns: BB contiguous values a column
            xt = torch.zeros((layout.in_features, config.BB), dtype=x.dtype, device=x.device)
            xt[:, : hi - lo] = x.t()
            x, stride_xb, stride_xk = xt, 1, config.BB
        partial, count = slab_scratch(layout)
        huffman_spmm_kernel[(layout.n_programs,)](
            layout.words, layout.warp_base, layout.seg_span, layout.row_ids,
            layout.prog_steps, layout.table, layout.codebook, x,
            bias if bias is not None else layout.codebook, y, partial, count,
            layout.stored_rows, layout.in_features, layout.out_features, layout.slab_width,
            layout.slab_programs, layout.codebook_size, layout.gap_raw_bits, layout.gap_mask,
            layout.span_base, layout.span_unit, layout.words.numel(), layout.table_bits,
            hi - lo, stride_xb, stride_xk, y.stride(0), y.stride(1),
            ROWS=layout.rows_per_program, PIECES=layout.pieces, K=config.K, BB=config.BB, XW=config.XW,
            HAS_BIAS=bias is not None, SLABS=layout.slabs, PREFETCH=not interpreting(),
            num_warps=config.num_warps, **register_budget(config, x.dtype),
        )  # fmt: skip
    return out


def slab_scratch(layout: HuffmanLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """(partial sums float32 [slabs * out_features * 8], counts int32 [out_features]) of a layout
    with column slabs, made on its device at first use and kept with it (the counts are read
    modulo the slabs, so they never need resetting; two launches of one layout must not run
    concurrently on different streams); for one slab two unused tensors."""
    if layout.slabs == 1:
        return layout.codebook, layout.codebook  # never read: the code is compiled out
    if "slabs" not in layout.scratch:
        device = layout.device
        layout.scratch["slabs"] = (
            torch.empty(
                layout.slabs * layout.out_features * BATCH_BUCKETS[-1], dtype=torch.float32, device=device
            ),
            torch.zeros(layout.out_features, dtype=torch.int32, device=device),
        )
    return layout.scratch["slabs"]


def huffman_linear(
    x2d: torch.Tensor,
    layout: HuffmanLayout,
    bias: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """y = x2d W^T + bias from the Huffman stream; x2d (B, in_features) in float32, float16 or
    bfloat16 (any strides), bias (out_features,) or None; float32 accumulation; result
    (B, out_features) in x2d's dtype (written into ``out`` when given)."""
    bias, out = check_layout_call(x2d, layout, HuffmanLayout, bias, out)
    if x2d.numel() >= 2**31:
        raise ValueError(f"x2d has {x2d.numel()} elements; 32-bit column offsets need < 2**31")
    return run(x2d, layout, bias, out)


def _decode_args(layout: HuffmanLayout, dense: bool, *outputs: torch.Tensor) -> tuple[tuple, dict]:
    """(arguments, keyword arguments) of the decoder kernel writing into (codes, cols) or into a
    dense weight (``dense``); the unused pointers get the table (never read: their code is
    compiled out)."""
    check_layout_device(layout.words, layout, "layout")
    codes, cols, weight = (layout.table, layout.table, outputs[0]) if dense else (*outputs, layout.table)
    args = (
        layout.words, layout.warp_base, layout.seg_span, layout.row_ids, layout.prog_steps,
        layout.table, layout.codebook, layout.table if dense else layout.seg_first, codes, cols, weight,
        layout.stored_rows, layout.in_features, layout.out_features, layout.slab_width,
        layout.slab_programs, layout.codebook_size, layout.gap_raw_bits, layout.gap_mask,
        layout.nnz, layout.span_base, layout.span_unit, layout.words.numel(), layout.table_bits,
    )  # fmt: skip
    kwargs = {
        "ROWS": layout.rows_per_program, "PIECES": layout.pieces, "DENSE": dense, "SLABS": layout.slabs,
        "PREFETCH": not interpreting(),
    }  # fmt: skip
    return args, {**kwargs, "num_warps": layout.lanes // 32}


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


# Layouts compiled ahead of time (the fields that decide a launch): one piece a row, a 4096 x 4096
# layer as `HuffmanLayout.from_matrix` lays it out (8 pieces a row, 256 lanes), small layers of
# short pieces (8 and 16 steps an iteration, 128 lanes: the latter NT-We's), VGG-6's width in 4
# column slabs (as `from_matrix` lays it out) and in one (a wide x read on chip by 16 warps), with
# narrow and wide offsets and spans; 4096 rows at 10% density.
AOT_ROWS, AOT_DENSITY = 4096, 0.1
AOT_SHAPES = (
    (4096, 256, 1, 1, "i32", "u8"),
    (4096, 256, 8, 1, "i32", "u8"),
    (4096, 128, 32, 1, "i32", "i16"),
    (4096, 128, 16, 1, "i32", "u8"),
    (25088, 256, 4, 4, "i64", "u8"),
    (25088, 512, 16, 1, "i64", "u8"),
)


def _aot_layout_fields(in_features: int, lanes: int, pieces: int, slabs: int) -> dict[str, int]:
    return {
        "out_features": AOT_ROWS,
        "in_features": in_features,
        "rows_per_program": lanes // pieces,
        "pieces": pieces,
        "nnz": int(AOT_ROWS * in_features * AOT_DENSITY),
        "slabs": slabs,
    }


def _aot_signature(fn, consts: dict, ty: str, offsets: str, spans: str) -> dict[str, str]:
    pointers = {
        "words_ptr": "*i32",
        "warp_base_ptr": f"*{offsets}",
        "seg_span_ptr": f"*{spans}",
        "row_ids_ptr": "*i16",
        "prog_steps_ptr": "*i32",
        "table_ptr": "*i32",
        "codebook_ptr": "*fp32",
        "bias_ptr": "*fp32",
        "partial_ptr": "*fp32",
        "count_ptr": "*i32",
        "seg_first_ptr": "*i64",
        "codes_ptr": "*u8",
        "cols_ptr": "*i32",
        "w_ptr": "*fp32",
        "x_ptr": f"*{ty}",
        "y_ptr": f"*{ty}",
    }
    scalar = {n: "i64" if n.startswith("stride") else "i32" for n in fn.arg_names}
    return {n: "constexpr" if n in consts else pointers.get(n, scalar[n]) for n in fn.arg_names}


_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def aot_configs(dtypes: dict[str, str]) -> list[tuple]:
    """(kernel function, signature, constexprs, num_warps, dtype, batch bucket, layout fields) of
    the Huffman kernels for `perf.kernel_check`: every configuration `launch_config` gives the
    `AOT_SHAPES` (``layout fields``: the metadata of a layout it is launched for, 4096 rows);
    ``dtypes`` maps torch names to Triton's (fp32, ...)."""
    from types import SimpleNamespace

    from dc_kernels.huffman.kernels import huffman_decode_kernel, huffman_spmm_kernel

    out = []
    for in_features, lanes, pieces, slabs, offsets, spans in AOT_SHAPES:
        fields = _aot_layout_fields(in_features, lanes, pieces, slabs)
        consts = {"ROWS": lanes // pieces, "PIECES": pieces}
        for dense in (False, True):
            decode = {**consts, "DENSE": dense, "SLABS": slabs}
            sig = _aot_signature(huffman_decode_kernel, decode, "fp32", offsets, spans)
            # The pointers `_decode_args` fills with the table (int32), unused by that variant.
            unused = ("seg_first_ptr", "codes_ptr", "cols_ptr") if dense else ("w_ptr",)
            sig.update(dict.fromkeys(unused, "*i32"))
            variant = "dense" if dense else "-"
            out.append((huffman_decode_kernel, sig, decode, lanes // 32, variant, 0, fields))
        width = slab_width(in_features, slabs)
        shell = SimpleNamespace(**fields, lanes=lanes, n_segments=AOT_ROWS * slabs * pieces, slab_width=width)
        for dtype, ty in dtypes.items():
            for bb in (BATCH_BUCKETS[0], max_batch(_TORCH_DTYPES[dtype])):
                config = launch_config(shell, bb, _TORCH_DTYPES[dtype])
                spmm = {**consts, "K": config.K, "BB": bb, "XW": config.XW, "HAS_BIAS": True, "SLABS": slabs}
                sig = _aot_signature(huffman_spmm_kernel, spmm, ty, offsets, spans)
                out.append((huffman_spmm_kernel, sig, spmm, lanes // 32, dtype, bb, fields))
    return out


def loop_items(constexprs: dict) -> int:
    """Symbols one iteration of either kernel's main loop decodes: ``K`` (the decoder: 1) per
    lane, ``ROWS x PIECES`` lanes (for `perf.cost`; a symbol is a kept weight unless it is an
    escape)."""
    return int(constexprs.get("K", 1)) * int(constexprs["ROWS"]) * int(constexprs["PIECES"])
