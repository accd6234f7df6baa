"""Checkpoints of compressed models: `save_compressed(model, path)` / `load_compressed(model, path)`.

A checkpoint is a directory with the compressed layers in the library's file format
(`compress.save`: Huffman-coded, checksummed safetensors) and every other tensor of the state
dict in ``dense.safetensors``, whose names, shapes, dtypes and CRC32s the compressed file's
(checksummed) metadata records. Loading works into a model built on the meta device: the
compressed layers are swapped in and the rest of the state is assigned, so no dense weight is
ever allocated. Non-persistent buffers (which a state dict leaves out, such as BERT's
``position_ids`` or a rotary embedding's ``inv_freq``) are stored too and restored, and a load
that would leave any tensor on the meta device raises, naming them.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping
from pathlib import Path

import safetensors
import safetensors.torch
import torch
from torch import nn

import compress
from compress.file_errors import CompressedFileError, CorruptStreamError, InvalidHeaderError
from compress.matrix import CompressedMatrix
from dc_kernels import sizes
from dc_kernels.backends import AUTO, GPU_FORMS
from dc_kernels.linear import CompressedLinear
from dc_kernels.model_api import CompressionReport, after_conversion, swap_module

COMPRESSED_FILE = "compressed.safetensors"
DENSE_FILE = "dense.safetensors"
METADATA_KEY = "dc_kernels"
METADATA_VERSION = 1

MODULE_KEYS = {"in_features", "out_features", "bias", "dtype", "gpu_form"}
METADATA_KEYS = {METADATA_KEY, "modules", "dense_file", "dense", "aliases"}
# Optional in the metadata: the names of the stored non-persistent buffers (files of earlier
# versions have none).
BUFFERS_KEY = "buffers"
# Weight dtypes a compressed module may declare in a file.
DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}


def save_compressed(model: nn.Module, path: str | os.PathLike, *, index_bits: int = 5) -> int:
    """Write ``model`` (with `CompressedLinear` layers) to the directory ``path``: its
    compressed layers to ``compressed.safetensors`` (`compress.save`, relative index width
    ``index_bits``), every other tensor of its state dict and its non-persistent buffers to
    ``dense.safetensors``. Returns the total bytes written. A model without any `CompressedLinear`
    raises ValueError (compress it first with `dc_kernels.compress_`)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    compressed = {n: m for n, m in model.named_modules() if isinstance(m, CompressedLinear)}
    if not compressed:
        raise ValueError(
            f"{type(model).__name__} has no CompressedLinear layer, so there is nothing compressed to save: "
            "compress it first with dc_kernels.compress_(model, config)"
        )
    layers = {name: module.to_matrix() for name, module in compressed.items()}
    owned = {
        f"{name}.{buffer}" for name, module in compressed.items() for buffer, _ in module.named_buffers()
    }
    dense, aliases = {}, {}
    seen: dict[tuple, str] = {}
    buffers = dict(_non_persistent_buffers(model))
    for key, tensor in [*model.state_dict(keep_vars=False).items(), *buffers.items()]:
        if key in owned:
            continue
        if tensor.is_meta:
            raise ValueError(f"{key} is on the meta device: there is nothing to save")
        identity = (
            tensor.untyped_storage().data_ptr(),
            tensor.storage_offset(),
            tensor.shape,
            tensor.stride(),
        )
        if identity in seen:  # tied weights: stored once
            aliases[key] = seen[identity]
            continue
        seen[identity] = key
        dense[key] = tensor.detach().cpu().contiguous()
    modules = {
        name: {
            "in_features": m.in_features,
            "out_features": m.out_features,
            "bias": m.bias is not None,
            "dtype": str(m._weight_dtype).removeprefix("torch."),
            "gpu_form": m.gpu_form,
        }
        for name, m in compressed.items()
    }
    metadata = {
        METADATA_KEY: METADATA_VERSION,
        "modules": modules,
        "dense_file": DENSE_FILE,
        "dense": {k: _tensor_record(t) for k, t in dense.items()},
        "aliases": aliases,
        BUFFERS_KEY: sorted(buffers),
    }
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    dense_bytes = safetensors.torch.save(dense)
    temporary = directory / (DENSE_FILE + ".tmp")
    temporary.write_bytes(dense_bytes)
    os.replace(temporary, directory / DENSE_FILE)
    return len(dense_bytes) + compress.save(
        directory / COMPRESSED_FILE, layers, metadata, index_bits=index_bits
    )


def _non_persistent_buffers(model: nn.Module):
    """(name, tensor) of the buffers ``model.state_dict()`` leaves out."""
    for name, module in model.named_modules():
        for buffer in sorted(module._non_persistent_buffers_set):
            tensor = module._buffers.get(buffer)
            if tensor is not None:
                yield (f"{name}.{buffer}" if name else buffer), tensor


def _tensor_record(tensor: torch.Tensor) -> dict:
    data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    return {
        "dtype": str(tensor.dtype).removeprefix("torch."),
        "shape": list(tensor.shape),
        "crc32": zlib.crc32(data),
    }


def load_compressed(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    device: torch.device | str = "cpu",
    backend: str = AUTO,
) -> CompressionReport:
    """Load a directory written by `save_compressed` into ``model`` in place.

    ``model`` has the architecture that was saved, with nn.Linear (or `CompressedLinear`)
    modules where the compressed layers go, typically built on the meta device
    (``with torch.device("meta"): model = Net()``); the compressed layers are swapped in and
    every other tensor is assigned, on ``device``, the stored non-persistent buffers included. A
    file defect raises a `compress.CompressedFileError`; a model that does not match the file, or
    one that would keep any tensor on the meta device, raises ValueError naming them. The report
    gives the files' bytes on disk (``disk_after``) and the model's in memory (``memory_after``).
    """
    directory = Path(path)
    loaded = compress.load(directory / COMPRESSED_FILE)
    metadata = _check_metadata(loaded.metadata, loaded)
    dense = _load_dense(directory, metadata)
    modules = dict(model.named_modules(remove_duplicate=False))
    report = CompressionReport()
    state: dict[str, torch.Tensor] = {}
    for name, info in metadata["modules"].items():
        target = modules.get(name)
        if not isinstance(target, (nn.Linear, CompressedLinear)):
            raise ValueError(
                f"{name!r} must be an nn.Linear or CompressedLinear in the model, got {target!r}"
            )
        if (target.in_features, target.out_features) != (info["in_features"], info["out_features"]):
            raise ValueError(
                f"{name!r} is {target.out_features}x{target.in_features} in the model, "
                f"{info['out_features']}x{info['in_features']} in the file"
            )
        bias = dense.get(f"{name}.bias") if info["bias"] else None
        module = CompressedLinear.from_matrix(
            loaded[name],
            bias,
            device=device,
            dtype=DTYPES[info["dtype"]],
            backend=backend,
            gpu_form=info["gpu_form"],
        )
        parent_name, _, child = name.rpartition(".")
        swap_module(model.get_submodule(parent_name), child, module, name, report)
        state.update(module.state_dict(prefix=f"{name}."))
    buffers = set(metadata.get(BUFFERS_KEY, []))
    state.update({k: t.to(device) for k, t in dense.items()})
    state.update({key: state[target] for key, target in metadata["aliases"].items()})
    restored = {key: state.pop(key) for key in buffers}
    result = model.load_state_dict(state, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"the model does not match {directory}: missing {result.missing_keys}, "
            f"unexpected {result.unexpected_keys}"
        )
    _retie(model, metadata["aliases"])
    for key, tensor in restored.items():
        owner, _, buffer = key.rpartition(".")
        module = model.get_submodule(owner)
        if buffer not in module._non_persistent_buffers_set:
            raise ValueError(f"{key} is stored as a non-persistent buffer, but the model has no such buffer")
        module._buffers[buffer] = tensor
    check_not_meta(model, f"after loading {directory}")
    after_conversion(model, None)
    report.memory_after = sizes.memory_bytes(model)
    report.disk_after = sum(f.stat().st_size for f in (directory / COMPRESSED_FILE, directory / DENSE_FILE))
    return report


def check_not_meta(model: nn.Module, when: str) -> None:
    """Raise ValueError naming every parameter and buffer of ``model`` still on the meta device."""
    left = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:
        raise ValueError(
            f"{when}, {len(left)} tensors are still on the meta device (they hold no values): {left}. "
            "A file written before non-persistent buffers were stored cannot fill those: build the model on "
            "the CPU rather than on the meta device, or save it again"
        )


def _retie(model: nn.Module, aliases: Mapping[str, str]) -> None:
    """Make tied tensors one object again (load_state_dict(assign=True) wraps each key anew)."""
    for key, target in aliases.items():
        owner_name, _, attr = key.rpartition(".")
        target_owner, _, target_attr = target.rpartition(".")
        owner, source = model.get_submodule(owner_name), model.get_submodule(target_owner)
        for table in ("_parameters", "_buffers"):
            if attr in getattr(owner, table) and target_attr in getattr(source, table):
                getattr(owner, table)[attr] = getattr(source, table)[target_attr]


def _check_metadata(metadata: object, loaded: Mapping[str, CompressedMatrix]) -> dict:
    """The model metadata of a compressed file, checked field by field (the file's checksum
    only proves that it was not damaged, not that it was written by `save_compressed`)."""

    def fail(message: str, field: str | None = None) -> InvalidHeaderError:
        return InvalidHeaderError(f"model metadata: {message}", field=field)

    if not isinstance(metadata, dict) or metadata.get(METADATA_KEY) != METADATA_VERSION:
        raise fail(f"missing, or not dc_kernels model metadata version {METADATA_VERSION}")
    if not METADATA_KEYS <= set(metadata) <= METADATA_KEYS | {BUFFERS_KEY}:
        raise fail(f"unexpected keys {sorted(metadata)}")
    if metadata["dense_file"] != DENSE_FILE:
        raise fail(f"dense_file must be {DENSE_FILE!r}, got {metadata['dense_file']!r}", "dense_file")
    modules, dense, aliases = metadata["modules"], metadata["dense"], metadata["aliases"]
    if not isinstance(modules, dict) or set(modules) != set(loaded):
        raise fail("modules must list exactly the stored layers", "modules")
    for name, info in modules.items():
        if not isinstance(info, dict) or set(info) != MODULE_KEYS:
            raise fail(f"modules[{name!r}] must hold exactly {sorted(MODULE_KEYS)}", "modules")
        if [info["out_features"], info["in_features"]] != list(loaded[name].shape):
            raise fail(f"modules[{name!r}] does not match the stored layer's shape", "modules")
        if (
            not isinstance(info["bias"], bool)
            or not isinstance(info["dtype"], str)
            or info["dtype"] not in DTYPES
            or info["gpu_form"] not in GPU_FORMS
        ):
            raise fail(
                f"modules[{name!r}]: bias must be a bool, dtype one of {sorted(DTYPES)}, gpu_form one of "
                f"{GPU_FORMS}",
                "modules",
            )
    if not isinstance(dense, dict) or not all(isinstance(r, dict) for r in dense.values()):
        raise fail("dense must map tensor names to records", "dense")
    if not isinstance(aliases, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v in dense for k, v in aliases.items()
    ):
        raise fail("aliases must map names to stored dense tensors", "aliases")
    buffers = metadata.get(BUFFERS_KEY, [])
    stored = set(dense) | set(aliases)
    if not isinstance(buffers, list) or not all(isinstance(b, str) and b in stored for b in buffers):
        raise fail("buffers must list stored dense tensors", BUFFERS_KEY)
    return metadata


def _load_dense(directory: Path, metadata: dict) -> dict[str, torch.Tensor]:
    path = directory / DENSE_FILE
    try:
        tensors = safetensors.torch.load(path.read_bytes())
    except (safetensors.SafetensorError, ValueError, TypeError) as exc:
        raise InvalidHeaderError(f"{path} is not a readable safetensors file: {exc}") from exc
    records = metadata.get("dense")
    if not isinstance(records, dict) or set(records) != set(tensors):
        raise InvalidHeaderError(f"{path} does not hold the tensors the metadata lists")
    for key, tensor in tensors.items():
        if records[key] != _tensor_record(tensor):
            raise CorruptStreamError(f"{path}: tensor differs from its record {records[key]}", field=key)
    return tensors


__all__ = ["CompressedFileError", "load_compressed", "save_compressed"]
