"""Argument checks shared by the Triton launchers (`triton_ops`, `huffman_ops`).

Kept apart from the launchers so that both layouts (fixed-width and Huffman) validate the same
way and with the same messages.
"""

from __future__ import annotations

import os

import torch

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def interpreting() -> bool:
    """True when Triton's CPU interpreter replaces compilation (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_device(t: torch.Tensor, layout, name: str) -> None:
    """``t`` must sit on the layout's device, and that must be CUDA unless interpreting."""
    if t.device != layout.device:
        raise ValueError(f"{name} is on {t.device} but the {type(layout).__name__} is on {layout.device}")
    if t.device.type != "cuda" and not interpreting():
        raise ValueError(f"Triton kernels need CUDA tensors (or TRITON_INTERPRET=1), got {t.device}")


def prepare_linear(
    x2d: torch.Tensor,
    layout,
    layout_type: type,
    bias: torch.Tensor | None,
    out: torch.Tensor | None,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Validate the arguments of ``x2d W^T + bias`` over a compressed ``layout`` and return
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
    check_device(x2d, layout, "x2d")
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or bias.shape != (layout.out_features,):
            raise ValueError(f"bias must be a tensor of shape ({layout.out_features},)")
        check_device(bias, layout, "bias")
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
