"""The `torch.library` custom ops behind `CompressedLinear`.

* ``dc_kernels::compressed_linear(x, codebook, row_ptr, col_idx, codes, bias, packed,
  packed_meta, in_features, backend) -> y``: y = x W^T + b for a 2-D ``x`` (B, in_features) in
  float32, float16 or bfloat16, result in x's dtype; runs the registered backend ``backend``
  (`dc_kernels.backends`) on the canonical tensors plus the backend's ``packed`` tensors and
  integers. Differentiable in ``x`` and ``bias``.
* ``dc_kernels::csr_to_dense(codebook, row_ptr, col_idx, codes, in_features) -> W``: the decoded
  float32 weight (used by backward and by `CompressedLinear.weight`);
* ``dc_kernels::packed_to_dense(row_ptr, packed, packed_meta, in_features, backend) -> W``: the
  same weight decoded from a backend's packed tensors on their device, for the backends whose
  packed form holds the whole layer (`Backend.dense`). For those, `compressed_linear` may get
  empty ``col_idx`` and ``codes``: `CompressedLinear` keeps them off the GPU.

All have fake (meta) implementations, so `torch.compile(fullgraph=True)` traces through them
without graph breaks and modules on the meta device run. The ops trust the values of the
canonical tensors (columns in range, monotone row pointers): `CompressedLinear` validates them
once when they are built or loaded, not on every call.
"""

from __future__ import annotations

import torch

from dc_kernels import cpu_backend
from dc_kernels.backends import get_backend
from dc_kernels.errors import DeviceMismatchError, DtypeMismatchError, ShapeMismatchError
from dc_kernels.linear_reference import decode_dense

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


def check_input(x: torch.Tensor, in_features: int, out_features: int) -> None:
    """Raise nn.Linear's own errors for an input that a (out_features, in_features) layer
    cannot take."""
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


@torch.library.custom_op(
    "dc_kernels::csr_to_dense",
    mutates_args=(),
    schema="(Tensor codebook, Tensor row_ptr, Tensor col_idx, Tensor codes, int in_features) -> Tensor",
)
def csr_to_dense(
    codebook: torch.Tensor,
    row_ptr: torch.Tensor,
    col_idx: torch.Tensor,
    codes: torch.Tensor,
    in_features: int,
) -> torch.Tensor:
    if codebook.device.type == "cpu":
        dense = cpu_backend.decode(codebook, row_ptr, col_idx, codes, in_features)
        if dense is not None:
            return dense
    return decode_dense(codebook, row_ptr, col_idx, codes, in_features)


@csr_to_dense.register_fake
def _(codebook, row_ptr, col_idx, codes, in_features):
    return codebook.new_empty((row_ptr.shape[0] - 1, in_features), dtype=torch.float32)


@torch.library.custom_op(
    "dc_kernels::packed_to_dense",
    mutates_args=(),
    schema="(Tensor row_ptr, Tensor[] packed, int[] packed_meta, int in_features, str backend) -> Tensor",
)
def packed_to_dense(
    row_ptr: torch.Tensor, packed: list[torch.Tensor], packed_meta: list[int], in_features: int, backend: str
) -> torch.Tensor:
    dense = get_backend(backend).dense
    if dense is None:
        raise ValueError(f"backend {backend!r} cannot decode its packed tensors alone")
    return dense(packed, packed_meta)


@packed_to_dense.register_fake
def _(row_ptr, packed, packed_meta, in_features, backend):
    return row_ptr.new_empty((row_ptr.shape[0] - 1, in_features), dtype=torch.float32)


@torch.library.custom_op(
    "dc_kernels::compressed_linear",
    mutates_args=(),
    schema=(
        "(Tensor x, Tensor codebook, Tensor row_ptr, Tensor col_idx, Tensor codes, Tensor? bias, "
        "Tensor[] packed, int[] packed_meta, int in_features, str backend) -> Tensor"
    ),
)
def compressed_linear(
    x: torch.Tensor,
    codebook: torch.Tensor,
    row_ptr: torch.Tensor,
    col_idx: torch.Tensor,
    codes: torch.Tensor,
    bias: torch.Tensor | None,
    packed: list[torch.Tensor],
    packed_meta: list[int],
    in_features: int,
    backend: str,
) -> torch.Tensor:
    out_features = row_ptr.shape[0] - 1
    _check_2d(x, in_features, out_features, codebook, row_ptr, col_idx, codes, bias, *packed)
    if x.shape[0] == 0:
        return x.new_empty((0, out_features))
    return get_backend(backend).run(
        x, codebook, row_ptr, col_idx, codes, bias, in_features, packed, packed_meta
    )


@compressed_linear.register_fake
def _(x, codebook, row_ptr, col_idx, codes, bias, packed, packed_meta, in_features, backend):
    out_features = row_ptr.shape[0] - 1
    _check_2d(x, in_features, out_features, codebook, row_ptr, col_idx, codes, bias, *packed)
    return x.new_empty((x.shape[0], out_features))


def _check_2d(x: torch.Tensor, in_features: int, out_features: int, *tensors: torch.Tensor | None) -> None:
    if x.dim() != 2:
        raise ShapeMismatchError(f"x must be 2-D (batch, {in_features}), got shape {tuple(x.shape)}")
    check_input(x, in_features, out_features)
    for t in tensors:
        if t is not None and t.device != x.device:
            raise DeviceMismatchError(
                "Expected all tensors to be on the same device, but found at least two devices, "
                f"{t.device} and {x.device}!"
            )


def _setup_context(ctx, inputs, output):
    x, codebook, row_ptr, col_idx, codes, bias, packed, meta, in_features, backend = inputs
    ctx.save_for_backward(codebook, row_ptr, col_idx, codes, *packed)
    ctx.backend = backend
    ctx.packed_meta = list(meta)
    # torch.library flattens a list argument only when it holds nothing but tensors (so also
    # when empty); backward must mirror that: a list of Nones there, one None otherwise.
    ctx.no_grads = tuple(
        [None] * len(a) if all(isinstance(t, torch.Tensor) for t in a) else None for a in (packed, meta)
    )
    ctx.in_features = in_features
    ctx.x_dtype = x.dtype
    ctx.bias_dtype = None if bias is None else bias.dtype


def _backward(ctx, grad):
    codebook, row_ptr, col_idx, codes, *packed = ctx.saved_tensors
    grad_x = grad_bias = None
    if ctx.needs_input_grad[0]:
        if get_backend(ctx.backend).dense is not None:
            weight = packed_to_dense(row_ptr, packed, ctx.packed_meta, ctx.in_features, ctx.backend)
        else:
            weight = csr_to_dense(codebook, row_ptr, col_idx, codes, ctx.in_features)
        grad_x = (grad.float() @ weight).to(ctx.x_dtype)
    if ctx.needs_input_grad[5]:
        grad_bias = grad.float().sum(0).to(ctx.bias_dtype)
    return grad_x, None, None, None, None, grad_bias, *ctx.no_grads, None, None


compressed_linear.register_autograd(_backward, setup_context=_setup_context)
