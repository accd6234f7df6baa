"""The backend registry of `CompressedLinear` (in the style of bitsandbytes' backends).

A backend computes y = x W^T + b for one compressed layer. The custom op
``dc_kernels::compressed_linear`` (`dc_kernels.ops`) hands it the layer's canonical tensors
(`reference.CanonicalTensors`) and the tensors and integers it derived from them once per device
(``pack``, cached by the module: a GPU layout, say); the backend's ``view`` turns those into
its state and ``run(x2d, state, bias)`` launches its kernel. Each room of `dc_kernels` registers
its own backend when imported:

* ``"reference"`` (`dc_kernels.reference`): pure PyTorch, any device (the oracle);
* ``"cpu"`` (`dc_kernels.cpu`): the compiled sparse kernels on packed relative-index entries; CPU
  tensors;
* ``"dense_codes_cpu"`` (`dc_kernels.dense_codes`): the compiled dense-codes kernels; CPU tensors;
* ``"fixed"`` (`dc_kernels.fixed`): the fixed-width Triton kernels, the fastest sparse GPU form;
* ``"huffman"`` (`dc_kernels.huffman`): the fused Huffman Triton kernels, the least-memory sparse
  GPU form;
* ``"dense_codes"`` (`dc_kernels.dense_codes`): the dense-codes Triton kernels.

The Triton forms run on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1``.
``"auto"`` resolves per call by the layer's form (`resolve`): a sparse layer runs ``"cpu"`` on
CPU and its ``gpu_form`` on CUDA (when Triton imports); a dense-codes layer
``"dense_codes_cpu"`` and ``"dense_codes"``; elsewhere ``"reference"``. ``"triton"``, the fixed
form's earlier name, is accepted for ``"fixed"``.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

AUTO = "auto"
ALIASES = {"triton": "fixed"}
# The GPU forms a sparse layer can choose (``CompressedLinear.gpu_form``): each is also a backend name.
GPU_FORMS = ("fixed", "huffman")
# The backends ``"auto"`` runs for a dense-codes layer, by device type.
DENSE_CODES = {"cpu": "dense_codes_cpu", "cuda": "dense_codes"}


def any_device(device: torch.device) -> bool:
    return True


def triton_devices(device: torch.device) -> bool:
    """CUDA; CPU tensors only under Triton's interpreter (``TRITON_INTERPRET=1``)."""
    return device.type == "cuda" or (device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1")


@dataclass(frozen=True)
class Backend:
    """A registered backend.

    * ``view(canonical, packed, meta) -> state``: the state ``run`` and ``dense`` take, from the
      canonical tensors and this backend's packed tensors and integers (cheap: no host sync);
    * ``run(x2d, state, bias) -> y``: y = x2d W^T + b, x2d (B >= 1, in_features) already
      validated by the op; y in x2d's dtype;
    * ``dense(state) -> W``: the float32 weight (out_features, in_features) on the state's device;
    * ``pack(module) -> (tensors, ints)``: derived tensors on the module's device, or None;
    * ``supports(device)``: where it runs;
    * ``holds_layer``: the packed tensors hold the whole layer, so ``view``, ``run`` and
      ``dense`` never read the canonical ``col_idx`` and ``codes`` (`CompressedLinear` then keeps
      those in host memory);
    * ``to_matrix(state) -> compress.CompressedMatrix``: for a backend that holds the layer, the
      canonical form decoded from its state. Where it is given, a layer served in host memory
      keeps no canonical ``col_idx`` and ``codes`` at all (its bytes follow the packed form's)
      and decodes them through it when they are read;
    * ``direct(state) -> route or None``: for a backend that holds the layer, a callable
      ``route(x, bias) -> y or None`` that `CompressedLinear.forward` calls without the op for
      calls `dc_kernels.ops.direct_call` allows, while the module's buffers stay as they were
      when it was made; it checks what else it needs of x and bias and returns None (the op
      then runs) for anything it does not take.
    """

    name: str
    view: Callable[..., Any]
    run: Callable[..., torch.Tensor]
    dense: Callable[[Any], torch.Tensor]
    pack: Callable[..., tuple[list[torch.Tensor], list[int]]] | None = None
    supports: Callable[[torch.device], bool] = any_device
    holds_layer: bool = False
    to_matrix: Callable[[Any], Any] | None = None
    direct: Callable[[Any], Callable[..., torch.Tensor | None] | None] | None = None


BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    """Add (or replace) a backend; its name becomes a valid ``CompressedLinear.backend``."""
    if not isinstance(backend, Backend):
        raise TypeError(f"expected a Backend, got {type(backend).__name__}")
    if backend.name == AUTO or backend.name in ALIASES:
        raise ValueError(f"{backend.name!r} is reserved")
    BACKENDS[backend.name] = backend
    return backend


def backend_names() -> tuple[str, ...]:
    """Valid values of ``CompressedLinear.backend`` (aliases aside)."""
    return (AUTO, *BACKENDS)


def canonical_name(name: str) -> str:
    """``name`` with aliases resolved; ValueError for a name that is not registered."""
    name = ALIASES.get(name, name)
    if name != AUTO and name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; known: {backend_names()}")
    return name


def get_backend(name: str) -> Backend:
    """The registered backend ``name`` (aliases resolved; ``"auto"`` names none: `resolve` it)."""
    name = canonical_name(name)
    if name == AUTO:
        raise ValueError(f"{AUTO!r} names no backend until resolved for a device")
    return BACKENDS[name]


def resolve(name: str, device: torch.device, gpu_form: str = "fixed", form: str = "sparse") -> Backend:
    """The backend that runs for ``name`` (possibly ``"auto"``) on ``device`` for a layer in
    ``form`` (``"sparse"`` or ``"dense_codes"``, `compress.config.WEIGHT_FORMS`) whose sparse
    GPU form is ``gpu_form``."""
    name = canonical_name(name)
    if name == AUTO:
        if device.type == "cuda" and importlib.util.find_spec("triton") is None:
            return BACKENDS["reference"]
        if form == "dense_codes" and device.type in DENSE_CODES:
            return BACKENDS[DENSE_CODES[device.type]]
        if device.type == "cpu":
            return BACKENDS["cpu"]
        if device.type == "cuda":
            return BACKENDS[gpu_form]
        return BACKENDS["reference"]
    backend = BACKENDS[name]
    if not backend.supports(device):
        raise ValueError(f"backend {name!r} does not run on {device.type} tensors")
    return backend


def remembered(
    packed: list[torch.Tensor], codebook: torch.Tensor, build: Callable[[], Any], kind: str
) -> Any:
    """``build()``, the state of the backend named ``kind`` over a module's ``packed`` tensors and
    ``codebook``, built once and remembered on the first packed tensor, so that a forward pass does
    not rebuild and re-check it on every call. (Kept as the tensor's attribute, the state is
    collected with it; a weak-keyed dictionary whose values refer to their keys would keep both
    forever.)"""
    if not packed:  # nothing to remember it on (a direct call of the op): build() reports it
        return build()
    states = packed[0].__dict__.setdefault("_dc_kernels_states", {})
    cached = states.get(kind)
    if (
        cached is not None
        and cached[0] is codebook
        and len(cached[1]) == len(packed)
        and all(a is b for a, b in zip(cached[1], packed))
    ):
        return cached[2]
    state = build()
    states[kind] = (codebook, tuple(packed), state)
    return state
