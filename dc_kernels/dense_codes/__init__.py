"""The dense-codes form: every weight a code (`layout`, NumPy), for layers of moderate density.
Its Triton kernels (`kernels`) and their launcher (`launch`) are `CompressedLinear`'s
``"dense_codes"`` backend (CUDA); its C kernels (``dc_kernels/cpu/dense_codes.c``, built with the
other CPU kernels) and their launcher (`cpu`) the ``"dense_codes_cpu"`` backend. Both hold the
whole layer; in host memory a layer they serve keeps no canonical per-weight tensors.

Importing this package does not import Triton.
"""

from __future__ import annotations

import torch

from dc_kernels.backends import Backend, register_backend, remembered, triton_devices
from dc_kernels.cpu.batches import direct_route, linear_by_chunks
from dc_kernels.dense_codes import launch
from dc_kernels.dense_codes.cpu import CodesState, codes_linear_cpu, codes_state, decode
from dc_kernels.dense_codes.launch import Dispatch, dense_codes_linear
from dc_kernels.dense_codes.layout import DenseCodesLayout


def _pack(module) -> tuple[list[torch.Tensor], list[int]]:
    device = module.codebook.device
    layout = DenseCodesLayout.from_matrix(module.to_matrix(), codebook=module.codebook, device=device)
    return layout.tensors(), layout.metadata()


def _view(canonical, packed: list[torch.Tensor], meta: list[int]) -> DenseCodesLayout:
    """The layout over a module's packed tensors (built once per tensors, `remembered`)."""
    return remembered(
        packed,
        canonical.codebook,
        lambda: DenseCodesLayout.from_state(packed, meta, canonical.codebook),
        "dense_codes",
    )


def _cpu_view(canonical, packed: list[torch.Tensor], meta: list[int]) -> CodesState:
    """The layout and its CPU kernels over a module's packed tensors (built once, `remembered`)."""
    return remembered(
        packed,
        canonical.codebook,
        lambda: codes_state(DenseCodesLayout.from_state(packed, meta, canonical.codebook)),
        "dense_codes_cpu",
    )


def _cpu_dense(state: CodesState) -> torch.Tensor:
    return decode(state.layout)


def _cpu_matrix(state: CodesState):
    return state.layout.to_matrix()


def _cpu_only(device) -> bool:
    return device.type == "cpu"


register_backend(
    Backend("dense_codes", _view, launch.run, launch.decode_dense, _pack, triton_devices, holds_layer=True)
)
register_backend(
    Backend(
        "dense_codes_cpu",
        _cpu_view,
        linear_by_chunks,
        _cpu_dense,
        _pack,
        _cpu_only,
        holds_layer=True,
        to_matrix=_cpu_matrix,
        direct=direct_route,
    )
)

__all__ = ["DenseCodesLayout", "Dispatch", "codes_linear_cpu", "dense_codes_linear"]
