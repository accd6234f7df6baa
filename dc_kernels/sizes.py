"""Whole-model sizes, in memory and on disk, before and after compression.

In memory: every byte the model's parameters and buffers hold (a storage shared by several
tensors, such as tied weights, counted once; a `CompressedLinear` counts its buffers, its bias
and the packed form it runs from, on its device and in host memory). On disk: the state dict as
`dc_kernels.save_compressed` stores it: every tensor but the compressed layers' buffers in
dense form (tied tensors once), each compressed layer as its Huffman-coded streams, codebook
and row pointers (exact bit counts from the encoder, `compress.layer_size`) plus its bias.
File headers (about 1% for small layers) are not counted: a written checkpoint's size is
measured from its files.
"""

from __future__ import annotations

from collections.abc import MutableMapping

import torch
from torch import nn

from compress.size import layer_size
from dc_kernels.linear import CompressedLinear


def layer_disk_bytes(module: CompressedLinear, index_bits: int = 5) -> int:
    """Bytes of ``module`` in a `save_compressed` checkpoint (see the module docstring)."""
    bias = 0 if module.bias is None else module.bias.numel() * module.bias.element_size()
    return int(layer_size(module.to_matrix(), index_bits)["bytes_pqh"]) + bias


def memory_bytes(model: nn.Module) -> int:
    """Bytes ``model``'s parameters and buffers hold, each storage once (meta tensors hold none)."""
    total = 0
    storages: set[int] = set()
    for module in model.modules():
        if isinstance(module, CompressedLinear):
            total += module.memory_bytes() + module.host_bytes()
            continue
        for tensor in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
            if tensor.is_meta:
                continue
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in storages:
                storages.add(storage.data_ptr())
                total += storage.nbytes()
    return total


def disk_bytes(model: nn.Module, cache: MutableMapping[int, int] | None = None, index_bits: int = 5) -> int:
    """Bytes of ``model``'s state dict as `save_compressed` stores it (see the module docstring).
    ``cache`` maps ``id(module)`` of compressed layers whose disk bytes are known already (filled
    in for the others, encoded with ``index_bits``)."""
    cache = {} if cache is None else cache
    compressed = {name: m for name, m in model.named_modules() if isinstance(m, CompressedLinear)}
    owned = {f"{name}.{key}" for name, m in compressed.items() for key in m.state_dict()}
    total = 0
    for module in {id(m): m for m in compressed.values()}.values():
        if id(module) not in cache:
            cache[id(module)] = layer_disk_bytes(module, index_bits)
        total += cache[id(module)]
    seen: set[tuple] = set()
    for key, tensor in model.state_dict().items():
        if key in owned or not isinstance(tensor, torch.Tensor):
            continue
        identity = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tensor.shape, tensor.dtype)
        if tensor.is_meta or identity not in seen:
            seen.add(identity)
            total += tensor.numel() * tensor.element_size()
    return total


__all__ = ["disk_bytes", "layer_disk_bytes", "memory_bytes"]
