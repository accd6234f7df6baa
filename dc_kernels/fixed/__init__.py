"""The fixed-width GPU form: the sliced relative-index layout (`layout`, NumPy), its Triton
kernels (`kernels`) and their launcher (`launch`), registered as `CompressedLinear`'s
``"fixed"`` backend (the fastest GPU form; ``gpu_form="fixed"``).

Importing this package does not import Triton.
"""

from __future__ import annotations

import torch
from torch.utils.weak import WeakIdKeyDictionary

from dc_kernels.backends import Backend, register_backend, triton_devices
from dc_kernels.fixed.launch import Dispatch, KernelConfig, decode_dense, fixed_linear, run
from dc_kernels.fixed.layout import METADATA_NAMES, TENSOR_NAMES, GpuLayout

# The layout view of a module's packed tensors, remembered per tensor so that a forward pass
# does not rebuild and re-check the dataclass on every call.
_views: WeakIdKeyDictionary = WeakIdKeyDictionary()


def _pack(module) -> tuple[list[torch.Tensor], list[int]]:
    layout = GpuLayout.from_matrix(module.to_matrix(), device=module.codebook.device)
    tensors = [layout.tensors()[name] for name in TENSOR_NAMES]
    _views[tensors[0]] = layout
    return tensors, [layout.metadata()[name] for name in METADATA_NAMES]


def _view(canonical, packed: list[torch.Tensor], meta: list[int]) -> GpuLayout:
    layout = _views.get(packed[0])
    if layout is None or any(a is not b for a, b in zip(layout.tensors().values(), packed)):
        layout = GpuLayout.from_state(dict(zip(TENSOR_NAMES, packed)), dict(zip(METADATA_NAMES, meta)))
        _views[packed[0]] = layout
    return layout


register_backend(Backend("fixed", _view, run, decode_dense, _pack, triton_devices, holds_layer=True))

__all__ = ["Dispatch", "GpuLayout", "KernelConfig", "decode_dense", "fixed_linear"]
