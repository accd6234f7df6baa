"""The backend registry of `CompressedLinear` (in the style of bitsandbytes' backends).

A backend computes y = x W^T + b for one compressed layer from its canonical tensors (codebook,
row_ptr, col_idx, codes) and, optionally, tensors it derives from them once per device (`pack`;
the module caches them, e.g. the Triton kernels' `GpuLayout`). Built in:

* ``"reference"``: pure PyTorch, any device: decode to dense float32, one `F.linear` (the oracle);
* ``"cpu"``: the compiled sparse kernels (`cpu_backend`); CPU tensors;
* ``"triton"``: the Triton kernels (`triton_ops.triton_linear`); CUDA tensors, or CPU tensors
  under ``TRITON_INTERPRET=1``.
* ``"huffman"``: the fused Huffman kernels (`huffman_ops.huffman_linear`), the least-memory GPU
  form; same devices as ``"triton"``.

``"auto"`` resolves per call: ``"cpu"`` on CPU, on CUDA (when Triton imports) ``"triton"`` or
``"huffman"`` as the layer's ``gpu_form`` says (``"fixed"`` or ``"huffman"``), else
``"reference"``. Each device backend itself switches from its sparse kernels to decode + dense
GEMM at the batch size measured on that device.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from dc_kernels import cpu_backend
from dc_kernels.linear_reference import linear_reference

# run(x2d, codebook, row_ptr, col_idx, codes, bias, in_features, packed, packed_meta) -> y
RunFn = Callable[..., torch.Tensor]
# pack(module: CompressedLinear) -> (tensors, ints), on the module's device
PackFn = Callable[..., tuple[list[torch.Tensor], list[int]]]
# dense(packed, packed_meta) -> float32 (out_features, in_features) weight, on the packed device
DenseFn = Callable[..., torch.Tensor]


def any_device(device: torch.device) -> bool:
    return True


def cpu_only(device: torch.device) -> bool:
    return device.type == "cpu"


def triton_devices(device: torch.device) -> bool:
    """CUDA; CPU tensors only under Triton's interpreter (``TRITON_INTERPRET=1``)."""
    return device.type == "cuda" or (device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1")


@dataclass(frozen=True)
class Backend:
    """A registered backend: its kernel ``run``, an optional ``pack`` of derived tensors (cached
    per module and device) and ``supports(device)``. A backend whose packed tensors hold the
    whole layer gives ``dense``, their decoded weight on their device: its ``run`` then never
    reads ``col_idx`` and ``codes`` (`CompressedLinear` keeps those off the GPU) and backward
    decodes the weight from the packed tensors."""

    name: str
    run: RunFn
    pack: PackFn | None = None
    supports: Callable[[torch.device], bool] = any_device
    dense: DenseFn | None = None


BACKENDS: dict[str, Backend] = {}
AUTO = "auto"


def register_backend(backend: Backend) -> Backend:
    """Add (or replace) a backend; its name becomes a valid ``CompressedLinear.backend``."""
    if not isinstance(backend, Backend):
        raise TypeError(f"expected a Backend, got {type(backend).__name__}")
    if backend.name == AUTO:
        raise ValueError(f"{AUTO!r} is reserved for automatic selection")
    BACKENDS[backend.name] = backend
    return backend


def backend_names() -> tuple[str, ...]:
    """Valid values of ``CompressedLinear.backend``."""
    return (AUTO, *BACKENDS)


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; known: {backend_names()}")
    return BACKENDS[name]


def resolve(name: str, device: torch.device, gpu_form: str = "fixed") -> Backend:
    """The backend that runs for ``name`` (possibly ``"auto"``) on ``device`` for a layer whose
    GPU form is ``gpu_form``."""
    if name == AUTO:
        if device.type == "cpu":
            return BACKENDS["cpu"]
        if device.type == "cuda" and importlib.util.find_spec("triton") is not None:
            return BACKENDS["huffman" if gpu_form == "huffman" else "triton"]
        return BACKENDS["reference"]
    backend = get_backend(name)
    if not backend.supports(device):
        raise ValueError(f"backend {name!r} does not run on {device.type} tensors")
    return backend


# ---------------------------------------------------------------------- built-in backends
def _run_reference(x2d, codebook, row_ptr, col_idx, codes, bias, in_features, packed, meta):
    return linear_reference(x2d, codebook, row_ptr, col_idx, codes, bias, in_features)


def _run_cpu(x2d, codebook, row_ptr, col_idx, codes, bias, in_features, packed, meta):
    return cpu_backend.cpu_linear(x2d, codebook, row_ptr, col_idx, codes, bias, in_features, packed)


def _pack_cpu(module):
    return cpu_backend.pack(module.codebook, module.row_ptr, module.col_idx, module.codes), []


def _pack_triton(module):
    from dc_kernels import triton_backend

    return triton_backend.pack(module.to_matrix(), module.codebook.device)


def _run_triton(x2d, codebook, row_ptr, col_idx, codes, bias, in_features, packed, meta):
    from dc_kernels import triton_backend

    return triton_backend.run(x2d, bias, packed, meta)


def _dense_triton(packed, meta):
    from dc_kernels import triton_backend

    return triton_backend.dense(packed, meta)


def _pack_huffman(module):
    from dc_kernels import huffman_backend

    return huffman_backend.pack(module.to_matrix(), module.codebook.device)


def _run_huffman(x2d, codebook, row_ptr, col_idx, codes, bias, in_features, packed, meta):
    from dc_kernels import huffman_backend

    return huffman_backend.run(x2d, bias, packed, meta)


def _dense_huffman(packed, meta):
    from dc_kernels import huffman_backend

    return huffman_backend.dense(packed, meta)


register_backend(Backend("reference", _run_reference))
register_backend(Backend("cpu", _run_cpu, _pack_cpu, cpu_only))
register_backend(Backend("triton", _run_triton, _pack_triton, triton_devices, _dense_triton))
register_backend(Backend("huffman", _run_huffman, _pack_huffman, triton_devices, _dense_huffman))
