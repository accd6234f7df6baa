"""The launches the dispatcher makes, recorded from the launchers themselves (no GPU needed).

The fixed-width, Huffman and dense-codes launchers (`dc_kernels.fixed.launch`,
`dc_kernels.huffman.launch`, `dc_kernels.dense_codes.launch`) are run on *shell* layouts: layouts
whose tensors sit on PyTorch's ``meta`` device (no memory, no data) but carry a real layer's
metadata. While they run, `recorded_launches` stands a recorder in for every Triton kernel, so
``kernel[grid](*args, **kwargs)`` stores the exact arguments (integer values, strides, tensor
dtypes) instead of launching; `perf.cost.specialize` then specializes them as Triton's JIT would.
The launchers' device checks are bypassed while recording (the shells are not on a GPU); nothing
else of them changes, so the recorded launch is the dispatcher's own.

A meta tensor's data pointer is 0: every pointer counts as 16-byte aligned, as fresh CUDA
allocations are (the caching allocator aligns them to 512 bytes).

`dispatched_configurations` pairs every entry of the launchers' ``aot_configs()`` with its
recorded launch on a reference layer, and refuses (`UndispatchedConfiguration`) an entry the
launchers do not launch as listed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from perf.cost.errors import UndispatchedConfiguration
from perf.cost.layer_stats import LayerStats

#: The layer whose metadata fills the shells of `dispatched_configurations` (a Llama-class
#: 4096 x 4096 projection at 10% density: every dimension a multiple of 16).
REFERENCE_LAYER = "llm-4096x4096-d10"
#: torch dtype name -> Triton's, the activations' dtypes a launch may get.
DTYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
#: Code widths of the dense-codes configurations (4 bits: 15 shared weights and the zero code).
DENSE_CODE_WIDTHS = (4,)
_META = torch.device("meta")


@dataclass(frozen=True)
class Launch:
    """One recorded ``kernel[grid](*args, **kwargs)``."""

    kernel: Any
    grid: tuple
    args: tuple
    kwargs: dict

    @property
    def name(self) -> str:
        return self.kernel.__name__

    @property
    def constexprs(self) -> dict[str, Any]:
        """The keyword arguments that are kernel parameters (the launch's compile-time constants)."""
        return {k: v for k, v in self.kwargs.items() if k in self.kernel.arg_names}

    @property
    def num_warps(self) -> int:
        return int(self.kwargs.get("num_warps", 4))


@dataclass(frozen=True)
class Configuration:
    """An ``aot_configs()`` entry with its recorded launch: ``family`` ``fixed``, ``huffman`` or
    ``dense_codes``; ``dtype`` of the activations (``-`` / ``dense`` for the Huffman decoders);
    ``block``: lanes of a program (fixed and Huffman) or codes per tile (dense codes, whose width
    is ``code_bits``); ``items_per_iteration``: kept weights, symbols or codes one iteration of the
    kernel's main loop handles (the launcher's ``loop_items``)."""

    family: str
    dtype: str
    batch_bucket: int
    code_bits: int
    index_bits: int
    block: int
    items_per_iteration: int
    launch: Launch

    @property
    def kernel(self) -> str:
        return self.launch.name

    @property
    def num_warps(self) -> int:
        return self.launch.num_warps

    def label(self) -> str:
        consts = self.launch.constexprs
        if self.family == "fixed":
            widths = f" {self.code_bits}+{self.index_bits} lanes {consts['R']}x{consts['T']}"
        elif self.family == "dense_codes":
            widths = f" {self.code_bits}-bit codes"
        else:
            on_chip = f" x on chip {consts['XW']}" if consts.get("XW") else ""
            widths = f" lanes {consts['ROWS']}x{consts['PIECES']}{on_chip}"
        return f"{self.kernel} {self.dtype}{widths} BB{self.batch_bucket}"


class _Recorder:
    """Stands in for a Triton kernel: ``recorder[grid](*args, **kwargs)`` records the launch."""

    def __init__(self, kernel, sink: list[Launch]) -> None:
        self._kernel, self._sink = kernel, sink

    def __getitem__(self, grid):
        def launch(*args, **kwargs) -> None:
            self._sink.append(Launch(self._kernel, tuple(grid), args, kwargs))

        return launch


@contextlib.contextmanager
def recorded_launches() -> Iterator[list[Launch]]:
    """Within the block, the fixed-width, Huffman and dense-codes kernels record their launches
    into the list it yields instead of running."""
    from triton.runtime.jit import KernelInterface  # compiled and interpreted kernels alike

    import dc_kernels.dense_codes.kernels
    import dc_kernels.dense_codes.launch
    import dc_kernels.fixed.kernels
    import dc_kernels.fixed.launch
    import dc_kernels.huffman.kernels
    import dc_kernels.huffman.launch

    sink: list[Launch] = []
    patches = [
        (module, name, _Recorder(obj, sink))
        for module in (dc_kernels.fixed.kernels, dc_kernels.huffman.kernels, dc_kernels.dense_codes.kernels)
        for name, obj in vars(module).items()
        if isinstance(obj, KernelInterface)
    ]
    patches += [
        (module, "check_layout_device", lambda *args: None)
        for module in (dc_kernels.fixed.launch, dc_kernels.huffman.launch, dc_kernels.dense_codes.launch)
        if hasattr(module, "check_layout_device")
    ]
    saved = [(module, name, getattr(module, name)) for module, name, _ in patches]
    try:
        for module, name, value in patches:
            setattr(module, name, value)
        yield sink
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


def _meta(n: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(max(int(n), 0), dtype=dtype, device=_META)


def fixed_shell(
    stats: LayerStats,
    code_bits: int | None = None,
    index_bits: int | None = None,
    block_rows: int | None = None,
    chunks: int | None = None,
):
    """A meta-device `GpuLayout` with the layer's metadata (widths and lane shape overridable; the
    codebook then has ``2**code_bits`` entries)."""
    from dc_kernels.fixed.layout import GROUP_WORDS, GpuLayout, slots_per_group, starts_dtype

    f = stats.fixed
    overrides = {"code_bits": code_bits, "index_bits": index_bits, "block_rows": block_rows, "chunks": chunks}
    meta = {**f.metadata, **{k: v for k, v in overrides.items() if v is not None}}
    codebook = f.codebook_size if meta["code_bits"] == f.code_bits else 1 << meta["code_bits"]
    blocks = -(-stats.outputs // meta["block_rows"])
    # A reshaped shell keeps the layer's stored slots (in groups of its own entry width) and has at
    # least its chunk heads.
    slots = f.steps * f.block_rows * slots_per_group(f.code_bits + f.index_bits)
    groups = -(-slots // slots_per_group(meta["code_bits"] + meta["index_bits"]))
    meta["steps"] = max(-(-groups // meta["block_rows"]), blocks * meta["chunks"])
    return GpuLayout(
        **meta,
        words=_meta(meta["steps"] * meta["block_rows"] * GROUP_WORDS, torch.int32),
        blocks=_meta(2 * blocks, torch.int32),
        starts=_meta(blocks * (meta["chunks"] - 1) * meta["block_rows"], starts_dtype(meta["in_features"])),
        row_ids=_meta(stats.outputs, torch.int32),
        codebook=_meta(codebook, torch.float32),
    )


def huffman_shell(
    stats: LayerStats,
    fields: Mapping[str, int] | None = None,
    offsets: str | None = None,
    spans: str | None = None,
    seg_first: bool = False,
):
    """A meta-device `HuffmanLayout` with the layer's metadata (``fields``: metadata overriding
    the layer's, e.g. an ``aot_configs()`` entry's; the offset and span dtypes overridable;
    ``seg_first``: include it, as the standalone decoder needs)."""
    from dc_kernels.huffman.layout import HuffmanLayout, high_codes, stored_rows, stored_warps

    h = stats.huffman
    meta = {**h.metadata, **(fields or {})}
    rows = stored_rows(meta["out_features"], meta["rows_per_program"], meta["slabs"])
    n_prog = -(-rows // meta["rows_per_program"])
    n_seg = rows * meta["pieces"]
    return HuffmanLayout(
        **meta,
        words=_meta(h.words, torch.int32),
        warp_base=_meta(stored_warps(rows, meta["pieces"]) + 1, getattr(torch, offsets or h.offsets_dtype)),
        seg_span=_meta(rows * (meta["pieces"] - 1), getattr(torch, spans or h.spans_dtype)),
        row_ids=_meta(rows, getattr(torch, h.row_ids_dtype)),
        code_lengths=_meta(
            high_codes(h.codebook_size, meta["code_raw_bits"]) * meta["q_levels"] + 2, torch.uint8
        ),
        codebook=_meta(h.codebook_size, torch.float32),
        table=_meta(1 << h.table_bits, torch.int32),
        prog_steps=_meta(n_prog, torch.int32),
        seg_first=_meta(n_seg, torch.int64) if seg_first else None,
    )


def dense_codes_shell(stats: LayerStats, width: int):
    """A meta-device `DenseCodesLayout` of the layer's shape with ``width``-bit codes (a codebook
    of ``2**width - 1`` shared weights and the zero code)."""
    from dc_kernels.dense_codes.layout import DenseCodesLayout, row_stride
    from dc_kernels.planes import planes_bytes

    planes = _meta(planes_bytes(stats.outputs * row_stride(stats.inputs), width), torch.uint8)
    codebook = _meta((1 << width) - 1, torch.float32)
    return DenseCodesLayout(stats.outputs, stats.inputs, width, width, 0, planes, codebook)


def _x(batch: int, inputs: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty((batch, inputs), dtype=dtype, device=_META)


# The kernels that decode a layer's weight for a dense GEMM: on the launchers' dense paths
# (fixed-width and dense codes) `torch.matmul` (cuBLAS, not recorded) multiplies it next.
DENSE_DECODERS = ("decode_dense_kernel", "dense_codes_decode_kernel")


def decodes_for_cublas(launches: list[Launch]) -> bool:
    """Whether ``launches`` (of one `layer_launches` call) decode the weight for cuBLAS."""
    return any(launch.name in DENSE_DECODERS for launch in launches)


def layer_launches(
    form: str, stats: LayerStats, batch: int, dtype: torch.dtype = torch.float16, bias: bool = False
) -> list[Launch]:
    """The launches ``y = x W^T (+ bias)`` makes for the layer at ``batch`` rows of x in
    ``dtype``: ``form`` ``fixed`` (`fixed_linear`'s dispatch), ``huffman`` or ``dense_codes``
    (codes of ``DENSE_CODE_WIDTHS[0]`` bits)."""
    from dc_kernels.dense_codes import launch as codes_launch
    from dc_kernels.fixed import launch as fixed_launch
    from dc_kernels.huffman import launch as huffman_launch

    if form not in ("fixed", "huffman", "dense_codes"):
        raise ValueError(f"form must be 'fixed', 'huffman' or 'dense_codes', got {form!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    x = _x(batch, stats.inputs, dtype)
    b = _meta(stats.outputs, torch.float32) if bias else None
    with recorded_launches() as launches:
        if form == "fixed":
            fixed_launch.run(x, fixed_shell(stats), b)
        elif form == "huffman":
            huffman_launch.run(x, huffman_shell(stats), b)
        else:
            codes_launch.run(x, dense_codes_shell(stats, DENSE_CODE_WIDTHS[0]), b)
    return launches


def dispatched_configurations(
    reference: LayerStats, dtypes: Mapping[str, str] = DTYPES, widths=((5, 6),)
) -> list[Configuration]:
    """Every ``aot_configs()`` entry of the three launchers (fixed-width for ``widths``, dense
    codes for `DENSE_CODE_WIDTHS`) with the launch the dispatcher makes for it on the
    ``reference`` layer's metadata."""
    return (
        _fixed_configurations(reference, dtypes, widths)
        + _huffman_configurations(reference, dtypes)
        + _dense_codes_configurations(reference, dtypes)
    )


def _single(launches: list[Launch], entry_kernel, consts: dict, warps: int, what: str) -> Launch:
    """The one launch recorded for an ``aot_configs()`` entry, checked against the entry."""
    if len(launches) != 1 or launches[0].kernel is not entry_kernel:
        names = [launch.name for launch in launches]
        raise UndispatchedConfiguration(
            f"{what}: the launcher made launches {names}, not one of {entry_kernel}"
        )
    launch = launches[0]
    differs = {k: (v, launch.constexprs.get(k)) for k, v in consts.items() if launch.constexprs.get(k) != v}
    if differs or launch.num_warps != warps:
        raise UndispatchedConfiguration(
            f"{what}: the dispatcher never launches this configuration (listed -> launched: {differs}, "
            f"num_warps {warps} -> {launch.num_warps})"
        )
    return launch


def _fixed_configurations(reference: LayerStats, dtypes: Mapping[str, str], widths) -> list[Configuration]:
    from dc_kernels.fixed import launch as fixed_launch

    out = []
    for kernel, consts, warps, dtype, bb in fixed_launch.aot_configs(dtypes, widths):
        layout = fixed_shell(reference, consts["CODE_BITS"], consts["INDEX_BITS"], consts["R"], consts["T"])
        torch_dtype = getattr(torch, dtype)
        with recorded_launches() as launches:
            if kernel.__name__ == "codebook_spmm_kernel":
                bias = _meta(reference.outputs, torch.float32) if consts.get("HAS_BIAS") else None
                fixed_launch.run(_x(bb, reference.inputs, torch_dtype), layout, bias, path="spmm")
            elif kernel.__name__ == "decode_dense_kernel":
                fixed_launch.decode_dense(layout, torch_dtype)
            else:
                raise UndispatchedConfiguration(
                    f"no launcher call known for fixed-width kernel {kernel.__name__}"
                )
        launch = _single(launches, kernel, consts, warps, f"{kernel.__name__} {dtype} BB{bb}")
        out.append(
            Configuration(
                "fixed",
                dtype,
                bb,
                consts["CODE_BITS"],
                consts["INDEX_BITS"],
                consts["R"] * consts["T"],
                fixed_launch.loop_items(launch.constexprs),
                launch,
            )
        )
    return out


def _huffman_configurations(reference: LayerStats, dtypes: Mapping[str, str]) -> list[Configuration]:
    from dc_kernels.huffman import launch as huffman_launch

    out = []
    for kernel, signature, consts, warps, dtype, bb, fields in huffman_launch.aot_configs(dict(dtypes)):
        shell = {
            "fields": fields,
            "offsets": _torch_name(signature["warp_base_ptr"]),
            "spans": _torch_name(signature["seg_span_ptr"]),
        }
        with recorded_launches() as launches:
            if kernel.__name__ == "huffman_spmm_kernel":
                layout = huffman_shell(reference, **shell)
                bias = _meta(layout.out_features, torch.float32) if consts.get("HAS_BIAS") else None
                huffman_launch.run(_x(bb, fields["in_features"], getattr(torch, dtype)), layout, bias)
            elif kernel.__name__ == "huffman_decode_kernel" and consts.get("DENSE"):
                huffman_launch.huffman_decode_dense(huffman_shell(reference, **shell))
            elif kernel.__name__ == "huffman_decode_kernel":
                huffman_launch.huffman_decode(huffman_shell(reference, **shell, seg_first=True))
            else:
                raise UndispatchedConfiguration(
                    f"no launcher call known for Huffman kernel {kernel.__name__}"
                )
        launch = _single(launches, kernel, consts, warps, f"{kernel.__name__} {dtype} BB{bb}")
        lanes = consts["ROWS"] * consts["PIECES"]
        out.append(
            Configuration(
                "huffman", dtype, bb, 0, 0, lanes, huffman_launch.loop_items(launch.constexprs), launch
            )
        )
    return out


def _dense_codes_configurations(reference: LayerStats, dtypes: Mapping[str, str]) -> list[Configuration]:
    from dc_kernels.dense_codes import launch as codes_launch

    out = []
    for kernel, consts, warps, dtype, bb in codes_launch.aot_configs(dtypes, DENSE_CODE_WIDTHS):
        width = 8 * consts["N8"] + 4 * consts["N4"] + consts["N1"]
        layout = dense_codes_shell(reference, width)
        torch_dtype = getattr(torch, dtype)
        with recorded_launches() as launches:
            if kernel.__name__ in ("dense_codes_gemm_kernel", "dense_codes_gemv_kernel"):
                bias = _meta(reference.outputs, torch.float32) if consts.get("HAS_BIAS") else None
                codes_launch.run(_x(bb, reference.inputs, torch_dtype), layout, bias, path="codes")
            elif kernel.__name__ == "dense_codes_decode_kernel":
                codes_launch.decode_dense(layout, torch_dtype)
            else:
                raise UndispatchedConfiguration(
                    f"no launcher call known for dense-codes kernel {kernel.__name__}"
                )
        launch = _single(launches, kernel, consts, warps, f"{kernel.__name__} {dtype} BB{bb}")
        block = codes_launch.loop_items(consts)
        out.append(
            Configuration(
                "dense_codes", dtype, bb, width, 0, block, codes_launch.loop_items(launch.constexprs), launch
            )
        )
    return out


_TRITON_TO_TORCH = {"i32": "int32", "i64": "int64", "u8": "uint8", "i16": "int16"}


def _torch_name(pointer_type: str) -> str:
    return _TRITON_TO_TORCH[pointer_type.lstrip("*")]
