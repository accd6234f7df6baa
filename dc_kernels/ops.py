"""The `torch.library` custom ops behind `CompressedLinear`.

* ``dc_kernels::compressed_linear(x, codebook, row_ptr, col_idx, codes, bias, packed,
  packed_meta, in_features, backend) -> y``: y = x W^T + b for ``x`` (..., in_features) in
  float32, float16 or bfloat16, result (..., out_features) in x's dtype. The one place the input
  is checked (`checks.check_input`, nn.Linear's messages); then the registered backend
  ``backend`` (`dc_kernels.backends`) builds its state from the canonical tensors and its
  ``packed`` tensors and integers and runs. Differentiable in ``x`` and ``bias``.
* ``dc_kernels::dense_weight(codebook, row_ptr, col_idx, codes, packed, packed_meta,
  in_features, backend) -> W``: the decoded float32 weight, by the same backend on the same
  tensors (used by backward and by `CompressedLinear.weight`).

For backends whose packed tensors hold the whole layer (``Backend.holds_layer``) both ops may get
empty ``col_idx`` and ``codes``: `CompressedLinear` keeps those off the GPU. Both ops have fake
(meta) implementations, so `torch.compile(fullgraph=True)` traces through them without graph
breaks and modules on the meta device run.

`CompressedLinear` calls the op's implementation directly (`run_linear`) when the call needs
nothing of the dispatcher (`direct_call`: no gradient, no tracing or compiling, no dispatch or
function mode, a plain tensor): the op's dispatch alone costs several times a 384 x 384 layer's
kernel.

Both ops check the canonical tensors before a backend reads them (`checks.check_canonical`): their
structure on every call, their values (row pointers, columns and codes in range) the first time
and again whenever one of them was replaced or changed in place (its version counter moved), so
a direct call with inconsistent tensors or a buffer edited in place raises `CorruptLayerError`
instead of reading out of bounds. Writes that bypass the version counter (``tensor.data``,
NumPy views, DLPack) are not seen.

Non-finite inputs, on every backend alike: a NaN or an infinity anywhere in a row of ``x`` makes
every output of that row NaN, as nn.Linear with the decoded weight gives (its zeros at pruned
positions times NaN or inf are NaN; nn.Linear gives +-inf instead only where every weight the
infinity meets is nonzero). Sparse kernels skip pruned positions, so the op applies the rule.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

from dc_kernels.backends import get_backend
from dc_kernels.checks import check_canonical, check_input, nan_where_x_is_not_finite
from dc_kernels.reference import CanonicalTensors


@torch.library.custom_op(
    "dc_kernels::dense_weight",
    mutates_args=(),
    schema=(
        "(Tensor codebook, Tensor row_ptr, Tensor col_idx, Tensor codes, Tensor[] packed, "
        "int[] packed_meta, int in_features, str backend) -> Tensor"
    ),
)
def dense_weight(
    codebook: torch.Tensor,
    row_ptr: torch.Tensor,
    col_idx: torch.Tensor,
    codes: torch.Tensor,
    packed: list[torch.Tensor],
    packed_meta: list[int],
    in_features: int,
    backend: str,
) -> torch.Tensor:
    impl = get_backend(backend)
    canonical = CanonicalTensors(codebook, row_ptr, col_idx, codes, in_features)
    check_canonical(canonical, codebook.device, values=not impl.holds_layer)
    return impl.dense(impl.view(canonical, packed, packed_meta))


@dense_weight.register_fake
def _(codebook, row_ptr, col_idx, codes, packed, packed_meta, in_features, backend):
    check_canonical(CanonicalTensors(codebook, row_ptr, col_idx, codes, in_features), codebook.device, False)
    return codebook.new_empty((row_ptr.numel() - 1, in_features), dtype=torch.float32)


def run_linear(
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
    out_features = row_ptr.numel() - 1
    check_input(x, in_features, out_features, codebook, row_ptr, col_idx, codes, bias, *packed)
    impl = get_backend(backend)
    canonical = CanonicalTensors(codebook, row_ptr, col_idx, codes, in_features)
    check_canonical(canonical, x.device, not impl.holds_layer, bias)
    x2d = x.reshape(-1, in_features)
    if x2d.shape[0] == 0:
        return x.new_empty((*x.shape[:-1], out_features))
    y = impl.run(x2d, impl.view(canonical, packed, packed_meta), bias)
    nan_where_x_is_not_finite(x2d, y)
    return y.reshape(*x.shape[:-1], out_features)


compressed_linear = torch.library.custom_op(
    "dc_kernels::compressed_linear",
    mutates_args=(),
    schema=(
        "(Tensor x, Tensor codebook, Tensor row_ptr, Tensor col_idx, Tensor codes, Tensor? bias, "
        "Tensor[] packed, int[] packed_meta, int in_features, str backend) -> Tensor"
    ),
)(run_linear)


def direct_call(x, bias: torch.Tensor | None) -> bool:
    """Whether `run_linear` may run without the op's dispatch and give the same result: a plain
    tensor x off the meta device, no gradient to record, and nothing that watches the dispatcher
    (tracing, compiling, a dispatch or function mode, functorch transforms)."""
    return (
        type(x) is torch.Tensor
        and not x.is_meta
        and not (torch.is_grad_enabled() and (x.requires_grad or (bias is not None and bias.requires_grad)))
        and not torch.compiler.is_compiling()
        and torch._C._get_tracing_state() is None
        and not torch._C._is_torch_function_mode_enabled()
        and _get_current_dispatch_mode() is None
        and not torch._C._functorch.is_functorch_wrapped_tensor(x)
    )


@compressed_linear.register_fake
def _(x, codebook, row_ptr, col_idx, codes, bias, packed, packed_meta, in_features, backend):
    out_features = row_ptr.numel() - 1
    check_input(x, in_features, out_features, codebook, row_ptr, col_idx, codes, bias, *packed)
    check_canonical(CanonicalTensors(codebook, row_ptr, col_idx, codes, in_features), x.device, False, bias)
    return x.new_empty((*x.shape[:-1], out_features))


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
        weight = dense_weight(
            codebook, row_ptr, col_idx, codes, packed, ctx.packed_meta, ctx.in_features, ctx.backend
        )
        grad_x = (grad.float() @ weight).to(ctx.x_dtype)
    if ctx.needs_input_grad[5]:
        grad_bias = grad.float().reshape(-1, grad.shape[-1]).sum(0).to(ctx.bias_dtype)
    return grad_x, None, None, None, None, grad_bias, *ctx.no_grads, None, None


compressed_linear.register_autograd(_backward, setup_context=_setup_context)
