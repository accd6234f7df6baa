"""The CPU sparse form: C kernels (`sparse_linear.c`, built on first use with the other CPU
kernels) on the packed relative-index entries of a `SparseLayout`, registered as
`CompressedLinear`'s ``"cpu"`` backend. It holds the whole layer: a layer it serves keeps no
canonical per-weight tensors.
"""

from __future__ import annotations

from dc_kernels.backends import Backend, register_backend
from dc_kernels.cpu.batches import direct_route, linear_by_chunks
from dc_kernels.cpu.launch import SparseState, cpu_linear, dense, pack, to_matrix, view
from dc_kernels.cpu.layout import SparseLayout


def _cpu_only(device) -> bool:
    return device.type == "cpu"


register_backend(
    Backend(
        "cpu",
        view,
        linear_by_chunks,
        dense,
        pack,
        _cpu_only,
        holds_layer=True,
        to_matrix=to_matrix,
        direct=direct_route,
    )
)

__all__ = ["SparseLayout", "SparseState", "cpu_linear"]
