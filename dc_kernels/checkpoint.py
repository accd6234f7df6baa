"""Checkpoints of compressed models: `save_compressed(model, path)` / `load_compressed(model, path)`.

A checkpoint is a directory with two files: the compressed layers in the library's file format
(``compressed.safetensors``, `compress.save`: Huffman-coded, checksummed safetensors) and every
other tensor of the state dict, and the non-persistent buffers (which a state dict leaves out,
such as BERT's ``position_ids`` or a rotary embedding's ``inv_freq``), in
``dense-<16 random hex digits>.safetensors``. The compressed file's (checksummed) metadata is the
manifest: it names the dense file and records the names, shapes, dtypes and CRC32s of its tensors,
the settings of every compressed module and the names under which a module or a tensor is shared;
it is written last.

Replacing a model is atomic as a whole: the new dense file is written under a new name first,
then the compressed file is replaced in one rename (`compress.atomic_write`), then the dense file
the old manifest named is removed. A crash at any point leaves the old model or the new one,
each complete. Of concurrent saves to one directory the last rename wins (a dense file of a
losing save may be left behind, unreferenced); a load running while a save replaces the model
raises FileNotFoundError if the dense file it was about to read is gone. Checkpoints of metadata
version 1 (dense file ``dense.safetensors``, no module aliases) still load.

Loading works into a model built on the meta device: the compressed layers are swapped in and
the rest of the state is assigned, so no dense weight is ever allocated, and a load that would
leave any tensor on the meta device raises, naming them. The two files are checked against each
other: a bias the manifest declares must be in the dense file (and one it does not declare must
not), and no dense tensor may stand in for a compressed layer's buffers.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import zlib
from collections.abc import Mapping
from pathlib import Path

import safetensors
import safetensors.torch
import torch
from torch import nn

import compress
from compress.atomic_write import fsync_directory, write_atomic
from compress.config import FORMS
from compress.file_errors import CompressedFileError, CorruptStreamError, InvalidHeaderError
from compress.file_format import DEFAULT_MAX_ENTRIES, read_metadata
from compress.matrix import CompressedMatrix
from dc_kernels import sizes
from dc_kernels.backends import AUTO, GPU_FORMS
from dc_kernels.linear import CompressedLinear
from dc_kernels.model_api import CompressionReport, after_conversion, swap_module

COMPRESSED_FILE = "compressed.safetensors"
#: The dense file of metadata version 1; version 2 names it ``dense-<16 hex digits>.safetensors``.
DENSE_FILE = "dense.safetensors"
DENSE_FILE_PATTERN = re.compile(r"dense(-[0-9a-f]{16})?\.safetensors")
METADATA_KEY = "dc_kernels"
METADATA_VERSION = 2
# The keys each metadata version requires.
_METADATA_KEYS = {
    1: {METADATA_KEY, "modules", "dense_file", "dense", "aliases"},
    2: {METADATA_KEY, "modules", "dense_file", "dense", "aliases", "module_aliases"},
}

MODULE_KEYS = {"in_features", "out_features", "bias", "dtype", "gpu_form"}
# Optional in a module's record: its ``form`` setting (earlier files have none: "auto").
FORM_KEY = "form"
# Optional in the metadata of either version: the names of the stored non-persistent buffers
# (earlier files have none).
BUFFERS_KEY = "buffers"
# Weight dtypes a compressed module may declare in a file.
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def save_compressed(model: nn.Module, path: str | os.PathLike, *, index_bits: int = 5) -> int:
    """Write ``model`` (with `CompressedLinear` layers) to the directory ``path``, replacing any
    checkpoint there as a whole (module docstring): its compressed layers to
    ``compressed.safetensors`` (`compress.save`, relative index width ``index_bits``), every
    other tensor of its state dict and its non-persistent buffers to the dense file. Returns the
    total bytes written. A model without any `CompressedLinear` raises ValueError (compress it
    first with `dc_kernels.compress_`)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    compressed: dict[str, CompressedLinear] = {}
    module_aliases: dict[str, str] = {}
    first_name: dict[int, str] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, CompressedLinear):
            if id(module) in first_name:  # one module under two names: stored once
                module_aliases[name] = first_name[id(module)]
            else:
                first_name[id(module)] = name
                compressed[name] = module
    if not compressed:
        raise ValueError(
            f"{type(model).__name__} has no CompressedLinear layer, so there is nothing compressed to save: "
            "compress it first with dc_kernels.compress_(model, config)"
        )
    layers = {name: module.to_matrix() for name, module in compressed.items()}
    owned = {
        f"{name}.{buffer}"
        for name in (*compressed, *module_aliases)
        for buffer in CompressedLinear.CANONICAL_BUFFERS
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
            "dtype": str(m.weight_dtype).removeprefix("torch."),
            "gpu_form": m.gpu_form,
            FORM_KEY: m.form,
        }
        for name, m in compressed.items()
    }
    dense_bytes = safetensors.torch.save(dense)
    # A new name per save: a dense file is named by one manifest only, so removing the one the
    # previous manifest named can never take a file that a later (or concurrent) save uses.
    dense_file = f"dense-{secrets.token_hex(8)}.safetensors"
    metadata = {
        METADATA_KEY: METADATA_VERSION,
        "modules": modules,
        "module_aliases": module_aliases,
        "dense_file": dense_file,
        "dense": {k: _tensor_record(t) for k, t in dense.items()},
        "aliases": aliases,
        BUFFERS_KEY: sorted(buffers),
    }
    compressed_bytes = compress.save_bytes(layers, metadata, index_bits=index_bits)
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    previous = _previous_dense_file(directory)
    write_atomic(directory / dense_file, dense_bytes)
    write_atomic(directory / COMPRESSED_FILE, compressed_bytes)  # the commit point
    if previous is not None and previous != dense_file:
        with contextlib.suppress(FileNotFoundError):
            (directory / previous).unlink()
        fsync_directory(directory)
    return len(dense_bytes) + len(compressed_bytes)


def _previous_dense_file(directory: Path) -> str | None:
    """The dense file the checkpoint now in ``directory`` names (None if there is none that
    reads as one: nothing is removed then)."""
    try:
        metadata = read_metadata(directory / COMPRESSED_FILE)
    except (OSError, CompressedFileError):
        return None
    name = metadata.get("dense_file") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) and DENSE_FILE_PATTERN.fullmatch(name) else None


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
    max_entries: int | None = DEFAULT_MAX_ENTRIES,
) -> CompressionReport:
    """Load a directory written by `save_compressed` into ``model`` in place.

    ``model`` has the architecture that was saved, with nn.Linear (or `CompressedLinear`)
    modules where the compressed layers go, typically built on the meta device
    (``with torch.device("meta"): model = Net()``); the compressed layers are swapped in (one
    module wherever the saved model shared one) and every other tensor is assigned, on
    ``device``, the stored non-persistent buffers included. A file defect, or files that
    disagree with each other, raise a `compress.CompressedFileError` (``max_entries``: see
    `compress.load`); a model that does not match the files, or one that would keep any tensor on
    the meta device, raises ValueError naming them. The report gives the files' bytes on disk
    (``disk_after``) and the model's in memory (``memory_after``).
    """
    directory = Path(path)
    loaded = compress.load(directory / COMPRESSED_FILE, max_entries=max_entries)
    metadata = _check_metadata(loaded.metadata, loaded)
    dense = _load_dense(directory, metadata)
    modules = dict(model.named_modules(remove_duplicate=False))
    report = CompressionReport()
    state: dict[str, torch.Tensor] = {}
    names_of = {name: [name] for name in metadata["modules"]}
    for alias, name in metadata.get("module_aliases", {}).items():
        names_of[name].append(alias)
    for name, info in metadata["modules"].items():
        for where in names_of[name]:
            target = modules.get(where)
            if not isinstance(target, (nn.Linear, CompressedLinear)):
                raise ValueError(
                    f"{where!r} must be an nn.Linear or CompressedLinear in the model, got {target!r}"
                )
            if (target.in_features, target.out_features) != (info["in_features"], info["out_features"]):
                raise ValueError(
                    f"{where!r} is {target.out_features}x{target.in_features} in the model, "
                    f"{info['out_features']}x{info['in_features']} in the file"
                )
        bias_key = metadata["aliases"].get(f"{name}.bias", f"{name}.bias")
        module = CompressedLinear.from_matrix(
            loaded[name],
            dense[bias_key] if info["bias"] else None,
            device=device,
            dtype=DTYPES[info["dtype"]],
            backend=backend,
            gpu_form=info["gpu_form"],
            form=info.get(FORM_KEY, "auto"),
        )
        for where in names_of[name]:
            parent_name, _, child = where.rpartition(".")
            swap_module(model.get_submodule(parent_name), child, module, where, report)
            state.update(module.state_dict(prefix=f"{where}."))
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
    report.disk_after = sum(
        f.stat().st_size for f in (directory / COMPRESSED_FILE, directory / metadata["dense_file"])
    )
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

    version = metadata.get(METADATA_KEY) if isinstance(metadata, dict) else None
    if type(version) is not int or version not in _METADATA_KEYS:
        raise fail(f"missing, or not dc_kernels model metadata of version {sorted(_METADATA_KEYS)}")
    if not _METADATA_KEYS[version] <= set(metadata) <= _METADATA_KEYS[version] | {BUFFERS_KEY}:
        raise fail(f"unexpected keys {sorted(metadata)} for version {version}")
    dense_file = metadata["dense_file"]
    if not isinstance(dense_file, str) or not DENSE_FILE_PATTERN.fullmatch(dense_file):
        raise fail(f"dense_file must be a name like {DENSE_FILE!r}, got {dense_file!r}", "dense_file")
    modules, dense, aliases = metadata["modules"], metadata["dense"], metadata["aliases"]
    module_aliases = metadata.get("module_aliases", {})
    if not isinstance(modules, dict) or set(modules) != set(loaded):
        raise fail("modules must list exactly the stored layers", "modules")
    for name, info in modules.items():
        if not isinstance(info, dict) or not MODULE_KEYS <= set(info) <= MODULE_KEYS | {FORM_KEY}:
            raise fail(
                f"modules[{name!r}] must hold exactly {sorted(MODULE_KEYS)} and optionally {FORM_KEY!r}",
                "modules",
            )
        if [info["out_features"], info["in_features"]] != list(loaded[name].shape):
            raise fail(f"modules[{name!r}] does not match the stored layer's shape", "modules")
        if (
            not isinstance(info["bias"], bool)
            or not isinstance(info["dtype"], str)
            or info["dtype"] not in DTYPES
            or info["gpu_form"] not in GPU_FORMS
            or info.get(FORM_KEY, "auto") not in FORMS
        ):
            raise fail(
                f"modules[{name!r}]: bias must be a bool, dtype one of {sorted(DTYPES)}, gpu_form one of "
                f"{GPU_FORMS}, form one of {FORMS}",
                "modules",
            )
    if not isinstance(module_aliases, dict) or not all(
        isinstance(k, str) and k not in modules and v in modules for k, v in module_aliases.items()
    ):
        raise fail("module_aliases must map other names to stored layers", "module_aliases")
    if not isinstance(dense, dict) or not all(isinstance(r, dict) for r in dense.values()):
        raise fail("dense must map tensor names to records", "dense")
    if not isinstance(aliases, dict) or not all(
        isinstance(k, str) and k not in dense and isinstance(v, str) and v in dense
        for k, v in aliases.items()
    ):
        raise fail("aliases must map other names to stored dense tensors", "aliases")
    buffers = metadata.get(BUFFERS_KEY, [])
    stored = set(dense) | set(aliases)
    if not isinstance(buffers, list) or not all(isinstance(b, str) and b in stored for b in buffers):
        raise fail("buffers must list stored dense tensors", BUFFERS_KEY)
    _check_dense_keys(modules, module_aliases, dense, aliases, fail)
    return metadata


def _check_dense_keys(modules: dict, module_aliases: dict, dense: dict, aliases: dict, fail) -> None:
    """The dense tensors against the compressed modules: under a compressed module's name only
    its bias, exactly when the module declares one (nothing may replace its buffers)."""
    declared = {**{name: info["bias"] for name, info in modules.items()},
                **{alias: modules[name]["bias"] for alias, name in module_aliases.items()}}  # fmt: skip
    for key in (*dense, *aliases):
        owner, _, attr = key.rpartition(".")
        if owner in declared and attr != "bias":
            raise fail(f"{key!r} would replace a buffer of the compressed layer {owner!r}", "dense")
        if owner in declared and not declared[owner]:
            raise fail(f"{key!r} is stored but the compressed layer {owner!r} has no bias", "dense")
    for owner, has_bias in declared.items():
        if has_bias and f"{owner}.bias" not in dense and f"{owner}.bias" not in aliases:
            raise fail(f"the compressed layer {owner!r} declares a bias that the dense file lacks", "dense")
    for name, info in modules.items():
        if not info["bias"]:
            continue
        record = dense[aliases.get(f"{name}.bias", f"{name}.bias")]
        if record.get("shape") != [info["out_features"]] or record.get("dtype") not in DTYPES:
            raise fail(
                f"the bias of {name!r} must be a float tensor of shape [{info['out_features']}], "
                f"got {record.get('dtype')!r} {record.get('shape')!r}",
                "dense",
            )


def _load_dense(directory: Path, metadata: dict) -> dict[str, torch.Tensor]:
    path = directory / metadata["dense_file"]
    try:
        tensors = safetensors.torch.load(path.read_bytes())
    except (safetensors.SafetensorError, ValueError, TypeError) as exc:
        raise InvalidHeaderError(f"{path} is not a readable safetensors file: {exc}") from exc
    records = metadata["dense"]
    if set(records) != set(tensors):
        raise InvalidHeaderError(f"{path} does not hold the tensors the metadata lists")
    for key, tensor in tensors.items():
        if records[key] != _tensor_record(tensor):
            raise CorruptStreamError(f"{path}: tensor differs from its record {records[key]}", field=key)
    return tensors


__all__ = ["CompressedFileError", "load_compressed", "save_compressed"]
