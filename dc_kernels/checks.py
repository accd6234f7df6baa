"""Argument checks of `dc_kernels`, in one place so that every entry point words them alike.

* `check_input`: what ``dc_kernels::compressed_linear`` (the one entry of `CompressedLinear`'s
  forward) checks, with `torch.nn.Linear`'s own messages;
* `check_layout_call`: what the public launchers of the GPU forms (`fixed_linear`,
  `huffman_linear`) check when called directly, not through the module.
"""

from __future__ import annotations

import os

import torch

from dc_kernels.errors import DeviceMismatchError, DtypeMismatchError, ShapeMismatchError

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


def check_input(x: torch.Tensor, in_features: int, out_features: int, *tensors: torch.Tensor | None) -> None:
    """Raise nn.Linear's own errors for an input ``x`` (..., in_features) that a
    (out_features, in_features) layer cannot take, or whose device differs from ``tensors``'."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"linear(): argument 'input' must be Tensor, not {type(x).__name__}")
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
