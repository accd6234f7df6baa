"""Argument checks of `dc_kernels`, in one place so that every entry point words them alike.

* `check_input`: what ``dc_kernels::compressed_linear`` (the one entry of `CompressedLinear`'s
  forward) checks, with `torch.nn.Linear`'s own messages;
* `check_canonical`: the canonical tensors of a layer, at every boundary to code that indexes
  with them (the ops, the CPU kernels' launcher): their structure on every call (O(1)), their
  values whenever one of them was replaced or changed since they were last validated;
* `check_layout_call`: what the public launchers of the GPU forms (`fixed_linear`,
  `huffman_linear`) check when called directly, not through the module.
"""

from __future__ import annotations

import functools
import math
import os
import weakref
from typing import TYPE_CHECKING

import torch
from torch.utils.weak import WeakIdKeyDictionary

from dc_kernels.errors import (
    CorruptLayerError,
    DeviceMismatchError,
    DtypeMismatchError,
    LayoutMismatchError,
    ShapeMismatchError,
)

if TYPE_CHECKING:
    from dc_kernels.reference import CanonicalTensors

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

_DTYPE_NAMES = {
    torch.float32: "Float",
    torch.float64: "Double",
    torch.float16: "Half",
    torch.bfloat16: "BFloat16",
    torch.int64: "Long",
    torch.int32: "Int",
    torch.int16: "Short",
    torch.int8: "Char",
    torch.uint8: "Byte",
    torch.bool: "Bool",
}


def dtype_name(dtype: torch.dtype) -> str:
    """PyTorch's C++ name of a dtype, as its error messages print it."""
    return _DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def interpreting() -> bool:
    """True when Triton's CPU interpreter replaces compilation (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.cache  # asked at every launch; the installed Triton does not change
def triton_at_least(version: tuple[int, int]) -> bool:
    """Whether the installed Triton is ``version`` (major, minor) or newer (the kernels' code
    and register budgets follow what each release's compiler does with them)."""
    import triton

    major, minor = (int(part) for part in triton.__version__.split(".")[:2])
    return (major, minor) >= version


def check_strided(x: torch.Tensor) -> None:
    """Refuse, by name, an input tensor without strides (sparse, nested, MKL-DNN), which the
    kernels cannot read and PyTorch's own operators reject with internal messages."""
    if x.layout != torch.strided or x.is_nested:
        kind = "nested" if x.is_nested else str(x.layout).removeprefix("torch.")
        raise LayoutMismatchError(
            f"CompressedLinear takes a dense (strided) input, got a {kind} tensor: convert it (.to_dense())"
        )


def check_input(x: torch.Tensor, in_features: int, out_features: int, *tensors: torch.Tensor | None) -> None:
    """Raise nn.Linear's own errors for an input ``x`` (..., in_features) that a
    (out_features, in_features) layer cannot take, or whose device differs from ``tensors``'."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"linear(): argument 'input' must be Tensor, not {type(x).__name__}")
    check_strided(x)
    if x.dim() == 0:
        raise ShapeMismatchError("both arguments to linear need to be at least 1D, but they are 0D and 2D")
    if x.dtype not in SUPPORTED_DTYPES:
        raise DtypeMismatchError(
            f"mat1 and mat2 must have the same dtype, but got {dtype_name(x.dtype)} and Float"
        )
    if x.shape[-1] != in_features:
        mat1 = f"{x.shape[:-1].numel()}x{x.shape[-1]}"
        raise ShapeMismatchError(
            f"mat1 and mat2 shapes cannot be multiplied ({mat1} and {in_features}x{out_features})"
        )
    for t in tensors:
        if t is not None and t.device != x.device:
            raise DeviceMismatchError(
                "Expected all tensors to be on the same device, but found at least two devices, "
                f"{t.device} and {x.device}!"
            )


MAX_CODEBOOK = 256
COLUMN_DTYPES = (torch.int16, torch.int32)

# Canonical tensors validated with their values, by their row_ptr tensor: weak references to the
# other tensors (and the bias) and a stamp of every one's version counter (`torch.Tensor._version`,
# bumped by each in-place change), in_features and the device at that time. A call with the same
# tensors, unchanged, is not checked again; a tensor replaced or changed since is.
_validated: WeakIdKeyDictionary = WeakIdKeyDictionary()


def check_canonical(
    t: CanonicalTensors, device: torch.device, values: bool = True, bias: torch.Tensor | None = None
) -> None:
    """Raise `CorruptLayerError` unless ``t`` is a layer's canonical tensors on ``device`` (and
    ``bias`` its bias) that code indexing with them may trust: dtypes, sizes and contiguity (O(1));
    with ``values``, also the row pointers (0 to nnz, non-decreasing), the columns (below
    in_features), the codes (below the codebook's size) and a finite codebook. With ``values``,
    the whole check runs once per change of any of the tensors (their version counters)."""
    others = (t.codebook, t.col_idx, t.codes, bias)
    cached = values and device.type != "meta"
    if cached:
        stamp = _stamp(t, device, bias)
        known = _validated.get(t.row_ptr)
        if (
            stamp is not None
            and known is not None
            and known[1] == stamp
            and all((ref() if ref is not None else None) is x for ref, x in zip(known[0], others))
        ):
            return
    _check_structure(t, device, bias)
    if cached:
        _check_values(t)
        if stamp is not None:
            refs = tuple(None if x is None else weakref.ref(x) for x in others)
            _validated[t.row_ptr] = (refs, stamp)


def _stamp(t: CanonicalTensors, device: torch.device, bias: torch.Tensor | None) -> tuple | None:
    try:
        versions = (t.codebook._version, t.row_ptr._version, t.col_idx._version, t.codes._version)
        if bias is not None:
            versions += (bias._version,)
    except (RuntimeError, AttributeError):  # inference tensors keep no version counter
        return None
    return versions, t.in_features, device


def _check_structure(t: CanonicalTensors, device: torch.device, bias: torch.Tensor | None) -> None:
    codebook, row_ptr, col_idx, codes, in_features = t
    expected = (
        ("codebook", codebook, (torch.float32,)),
        ("row_ptr", row_ptr, (torch.int64,)),
        ("col_idx", col_idx, COLUMN_DTYPES),
        ("codes", codes, (torch.uint8,)),
    )
    for name, tensor, dtypes in expected:
        if (
            not isinstance(tensor, torch.Tensor)
            or tensor.dtype not in dtypes
            or tensor.dim() != 1
            or tensor.device != device
            or not tensor.is_contiguous()
        ):
            got = (
                f"{tensor.dtype} {tuple(tensor.shape)} on {tensor.device}"
                if isinstance(tensor, torch.Tensor)
                else (type(tensor).__name__)
            )
            raise CorruptLayerError(
                f"{name} must be a contiguous 1-D tensor of {dtypes} on {device}, got {got}"
            )
    if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1:
        raise CorruptLayerError(f"in_features must be a positive int, got {in_features!r}")
    if not 1 <= codebook.numel() <= MAX_CODEBOOK or row_ptr.numel() < 2 or col_idx.numel() != codes.numel():
        raise CorruptLayerError(
            f"expected 1..{MAX_CODEBOOK} codebook entries, at least 2 row pointers and one column per code, "
            f"got {codebook.numel()}, {row_ptr.numel()}, {col_idx.numel()} columns and {codes.numel()} codes"
        )
    if bias is not None and (
        not isinstance(bias, torch.Tensor)
        or bias.dtype not in SUPPORTED_DTYPES
        or bias.shape != (row_ptr.numel() - 1,)
        or bias.device != device
    ):
        got = f"{bias.dtype} {tuple(bias.shape)}" if isinstance(bias, torch.Tensor) else type(bias).__name__
        raise CorruptLayerError(
            f"bias must be a float32, float16 or bfloat16 tensor of shape ({row_ptr.numel() - 1},), got {got}"
        )


def _check_values(t: CanonicalTensors) -> None:
    codebook, row_ptr, col_idx, codes, in_features = t
    nnz = col_idx.numel()
    first, last = row_ptr[0].item(), row_ptr[-1].item()
    if first != 0 or last != nnz:
        raise CorruptLayerError(
            f"row_ptr must run from 0 to {nnz} (the number of kept weights), got {first} .. {last}"
        )
    decreasing = torch.diff(row_ptr) < 0
    if decreasing.any():
        row = int(decreasing.int().argmax())
        raise CorruptLayerError(
            f"row_ptr decreases at row {row + 1}: {row_ptr[row].item()} then {row_ptr[row + 1].item()}"
        )
    if nnz:
        low, high = col_idx.min().item(), col_idx.max().item()
        if low < 0 or high >= in_features:
            raise CorruptLayerError(
                f"col_idx holds columns {low} .. {high}, outside 0 .. {in_features - 1} (in_features)"
            )
        top = codes.max().item()
        if top >= codebook.numel():
            raise CorruptLayerError(
                f"codes hold code {top}, beyond the codebook's {codebook.numel()} entries"
            )
    if not torch.isfinite(codebook).all():
        raise CorruptLayerError("the codebook holds NaN or inf")


def check_layout_device(t: torch.Tensor, layout, name: str) -> None:
    """``t`` must sit on the layout's device, and that must be CUDA unless interpreting."""
    if t.device != layout.device:
        raise ValueError(f"{name} is on {t.device} but the {type(layout).__name__} is on {layout.device}")
    if t.device.type != "cuda" and not interpreting():
        raise ValueError(f"Triton kernels need CUDA tensors (or TRITON_INTERPRET=1), got {t.device}")


def check_layout_call(
    x2d: torch.Tensor,
    layout,
    layout_type: type,
    bias: torch.Tensor | None,
    out: torch.Tensor | None,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Validate the arguments of ``x2d W^T + bias`` over a GPU-form ``layout`` and return
    (contiguous bias or None, the output tensor: ``out`` checked, or a new (B, out_features)
    tensor in x2d's dtype)."""
    if not isinstance(x2d, torch.Tensor) or not isinstance(layout, layout_type):
        raise TypeError(
            f"expected (Tensor, {layout_type.__name__}), got ({type(x2d).__name__}, {type(layout).__name__})"
        )
    if x2d.dim() != 2 or x2d.shape[1] != layout.in_features:
        raise ValueError(f"x2d must have shape (B, {layout.in_features}), got {tuple(x2d.shape)}")
    if x2d.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"x2d dtype must be one of {SUPPORTED_DTYPES}, got {x2d.dtype}")
    check_layout_device(x2d, layout, "x2d")
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or bias.shape != (layout.out_features,):
            raise ValueError(f"bias must be a tensor of shape ({layout.out_features},)")
        check_layout_device(bias, layout, "bias")
        bias = bias.contiguous()
    shape = (x2d.shape[0], layout.out_features)
    if out is None:
        out = torch.empty(shape, dtype=x2d.dtype, device=x2d.device)
    elif out.shape != shape or out.dtype != x2d.dtype or out.device != x2d.device:
        raise ValueError(
            f"out must be {shape} {x2d.dtype} on {x2d.device}, "
            f"got {tuple(out.shape)} {out.dtype} on {out.device}"
        )
    return bias, out


def nan_where_x_is_not_finite(x2d: torch.Tensor, y: torch.Tensor) -> None:
    """The rule for non-finite inputs (`dc_kernels.ops`): NaN in every output of a row of x that
    holds a NaN or an infinity. No copy of x is made."""
    if x2d.device.type != "cpu":  # no host sync: a row's min and max are finite iff all of it is
        lowest, highest = torch.aminmax(x2d, dim=1)
        y.masked_fill_(~(lowest.isfinite() & highest.isfinite()).unsqueeze(1), float("nan"))
        return
    # A sum is finite unless a summand is a NaN or an infinity (or it overflows): one cheap
    # reduction, then, if need be, the rows whose sums are not are looked at value by value.
    if math.isfinite(x2d.sum().item()):
        return
    suspects = torch.nonzero(~x2d.sum(dim=1).isfinite()).squeeze(1)
    y[suspects[~x2d[suspects].isfinite().all(dim=1)]] = float("nan")
