"""Model-level API: compress a model's nn.Linear layers in place, save and load compressed models.

* `compress_(model, config)`: one-shot Deep Compression (prune + share, no retraining) of every
  selected ``nn.Linear`` and a swap to `CompressedLinear`, in the style of torchao's
  ``quantize_``; `swap_compressed_(model, layers)` swaps in layers compressed elsewhere (e.g.
  ``compress.Compressor(...).finalize()`` after retraining). Both return a `CompressionReport`.
* `save_compressed(model, path)` / `load_compressed(model, path)`: a directory with the
  compressed layers in the library's file format (`compress.save`: Huffman-coded, checksummed
  safetensors) and every other tensor of the state dict in ``dense.safetensors``, whose names,
  shapes, dtypes and CRC32s the compressed file's (checksummed) metadata records. Loading works
  into a model built on the meta device: the compressed layers are swapped in and the rest of
  the state is assigned, so no dense weight is ever allocated.
"""

from __future__ import annotations

import os
import sys
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import safetensors
import safetensors.torch
import torch
from torch import nn

import compress
from compress.calibrated_layer import needs_calibration
from compress.calibration import CalibrationResult, calibrated_compress
from compress.config import GPU_FORMS, DeepCompressionConfig
from compress.errors import ConfigError
from compress.file_errors import CompressedFileError, CorruptStreamError, InvalidHeaderError
from compress.matrix import CompressedMatrix
from compress.one_shot import compress_as_configured
from dc_kernels.backends import AUTO
from dc_kernels.linear import CompressedLinear

COMPRESSED_FILE = "compressed.safetensors"
DENSE_FILE = "dense.safetensors"
METADATA_KEY = "dc_kernels"
METADATA_VERSION = 1

FilterFn = Callable[[nn.Module, str], bool]
MODULE_KEYS = {"in_features", "out_features", "bias", "dtype", "gpu_form"}
# Weight dtypes a compressed module may declare in a file.
DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}


@dataclass(frozen=True)
class ConvertedLayer:
    """One swapped layer: its shape, code width, share of weights kept, bytes and GPU form."""

    in_features: int
    out_features: int
    bits: int
    density: float
    compressed_bytes: int
    dense_bytes: int
    gpu_form: str = "fixed"


@dataclass
class CompressionReport:
    """What `compress_` / `swap_compressed_` converted (by module name), what they skipped and
    why, and notes on converted layers that will not run faster (e.g. read through ``.weight``);
    with calibration, each layer's output error and time (`compress.CalibrationResult`)."""

    converted: dict[str, ConvertedLayer] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    calibration: CalibrationResult | None = None

    @property
    def compressed_bytes(self) -> int:
        return sum(layer.compressed_bytes for layer in self.converted.values())

    @property
    def dense_bytes(self) -> int:
        return sum(layer.dense_bytes for layer in self.converted.values())

    def __str__(self) -> str:
        header = f"{'layer':<32} {'shape':>13} {'bits':>4} {'density':>8} {'bytes':>11} {'smaller':>8}"
        lines = [f"{header} {'gpu_form':>8}"]
        for name, c in self.converted.items():
            shape = f"{c.out_features}x{c.in_features}"
            ratio = c.dense_bytes / max(c.compressed_bytes, 1)
            size = f"{c.compressed_bytes:>11} {ratio:>7.1f}x"
            lines.append(f"{name:<32} {shape:>13} {c.bits:>4} {c.density:>8.4f} {size} {c.gpu_form:>8}")
        if self.converted:
            ratio = self.dense_bytes / max(self.compressed_bytes, 1)
            lines.append(f"{'total':<32} {'':>13} {'':>4} {'':>8} {self.compressed_bytes:>11} {ratio:>7.1f}x")
        lines += [f"skipped {name}: {reason}" for name, reason in self.skipped.items()]
        lines += [f"note {name}: {note}" for name, note in self.notes.items()]
        if self.calibration is not None:
            lines += ["", str(self.calibration)]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------- swapping
def compress_(
    model: nn.Module,
    config: DeepCompressionConfig | Mapping[str, CompressedMatrix] | None = None,
    filter_fn: FilterFn | None = None,
    *,
    backend: str = AUTO,
    progress: bool = False,
    calibration=None,
) -> CompressionReport:
    """Compress ``model``'s nn.Linear layers in place and swap them for `CompressedLinear`.

    ``config`` (default ``DeepCompressionConfig()``) gives per-layer density or quality, bits,
    k-means init and seed, and a skip list by name (e.g. ``skip=("lm_head",)``); a mapping of
    module name -> `compress.CompressedMatrix` (a ``Compressor.finalize()`` result) is handed to
    `swap_compressed_` instead. ``filter_fn(module, name)`` returning False leaves a layer dense.
    Biases, devices and dtypes are kept; every layer is pruned and clustered from its float32
    weight with no retraining. ``progress`` prints a line per compressed layer to stderr (layer
    count, name, shape, seconds), for large models.

    ``calibration`` (an iterable of input batches, e.g. ``compress.load_calibration(path)``, or a
    callable ``run(model)``) compresses the layers with `compress.calibrated_compress` first:
    layer by layer on those inputs, with the config's ``pruning`` and ``quantization`` methods;
    ``report.calibration`` then holds each layer's output error. Without it, a config that asks
    for a method needing data raises `compress.ConfigError`.
    """
    if isinstance(config, Mapping):
        return swap_compressed_(model, config, filter_fn, backend=backend)
    config = DeepCompressionConfig() if config is None else config
    if not isinstance(config, DeepCompressionConfig):
        raise TypeError(
            "config must be a compress.DeepCompressionConfig or a mapping of name -> CompressedMatrix, "
            f"got {type(config).__name__}"
        )
    _check_model(model)
    report = CompressionReport()
    swapped: dict[int, CompressedLinear] = {}
    chosen: dict[int, str] = {}  # the layers to compress, at their first name (filter_fn is asked twice)
    for n, m, _, _ in _named_children(model):
        if isinstance(m, nn.Linear) and _skip_reason(m, n, config, filter_fn) is None:
            chosen.setdefault(id(m), n)
    calibrated: dict[int, CompressedMatrix] = {}
    if calibration is None:
        wanted = {n: needs_calibration(config.for_layer(n)) for n in chosen.values()}
        for name, settings in wanted.items():
            if settings:
                raise ConfigError(
                    f"layer {name!r}: {', '.join(settings)} needs calibration inputs: "
                    "compress_(model, config, calibration=batches)"
                )
    elif chosen:
        def announce(r) -> None:
            line = f"compress_ calibrated {r.name}: output error {r.error:.4f} ({r.seconds:.1f}s)"
            print(line, file=sys.stderr, flush=True)

        report.calibration = calibrated_compress(
            model, calibration, config, names=chosen.values(), on_layer=announce if progress else None
        )
        modules = dict(model.named_modules(remove_duplicate=False))
        calibrated = {id(modules[n]): matrix for n, matrix in report.calibration.layers.items()}
    start = time.perf_counter()
    for name, module, parent, child in _named_children(model):
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            continue
        reason = _skip_reason(module, name, config, filter_fn)
        if reason is not None:
            report.skipped[name] = reason
            continue
        if id(module) not in swapped:
            if progress:
                shape = "x".join(map(str, module.weight.shape))
                elapsed = time.perf_counter() - start
                print(f"[{elapsed:7.1f}s] compress_ {len(swapped) + 1}/{len(chosen)} {name} ({shape})",
                      file=sys.stderr, flush=True)  # fmt: skip
            settings = config.for_layer(name)
            matrix = calibrated.get(id(module)) or compress_as_configured(
                module.weight.detach(), settings, seed=config.seed, name=name
            )
            swapped[id(module)] = _compressed_module(module, matrix, backend, settings.gpu_form)
        _swap(parent, child, swapped[id(module)], name, report)
    return report


def swap_compressed_(
    model: nn.Module,
    layers: Mapping[str, CompressedMatrix],
    filter_fn: FilterFn | None = None,
    *,
    backend: str = AUTO,
) -> CompressionReport:
    """Swap the nn.Linear modules named in ``layers`` for `CompressedLinear` modules computing
    those compressed weights (biases, devices and dtypes kept). Names of modules that are not
    nn.Linear (e.g. a compressed nn.Conv2d) are skipped with the reason; unknown names and
    shapes that differ from the module's raise ValueError."""
    if not isinstance(layers, Mapping):
        raise TypeError(f"layers must map module names to CompressedMatrix, got {type(layers).__name__}")
    _check_model(model)
    modules = dict(model.named_modules(remove_duplicate=False))
    unknown = sorted(set(layers) - set(modules))
    if unknown:
        raise ValueError(f"layers name modules the model does not have: {unknown}")
    report = CompressionReport()
    swapped: dict[int, CompressedLinear] = {}
    for name, module, parent, child in _named_children(model):
        if name not in layers:
            continue
        matrix = layers[name]
        if not isinstance(matrix, CompressedMatrix):
            raise TypeError(f"layers[{name!r}] must be a CompressedMatrix, got {type(matrix).__name__}")
        if not isinstance(module, nn.Linear):
            report.skipped[name] = f"{type(module).__name__}: CompressedLinear replaces nn.Linear only"
            continue
        if filter_fn is not None and not filter_fn(module, name):
            report.skipped[name] = "filter_fn returned False"
            continue
        if matrix.shape != tuple(module.weight.shape):
            raise ValueError(
                f"layers[{name!r}] has shape {matrix.shape}, the module's weight {tuple(module.weight.shape)}"
            )
        if id(module) not in swapped:
            swapped[id(module)] = _compressed_module(module, matrix, backend)
        _swap(parent, child, swapped[id(module)], name, report)
    return report


def _check_model(model: nn.Module) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(model, nn.Linear):
        raise ValueError(
            "the model is a bare nn.Linear, which cannot be swapped in place: use "
            "CompressedLinear.from_linear(model, ...) or wrap it in a container"
        )


def _named_children(model: nn.Module):
    """(full name, module, parent, attribute name) of every submodule, shared ones at each of
    their names."""
    for parent_name, parent in model.named_modules(remove_duplicate=False):
        for child, module in list(parent._modules.items()):  # named_children() hides repeats
            if module is not None:
                yield (f"{parent_name}.{child}" if parent_name else child), module, parent, child


def _skip_reason(
    module: nn.Module, name: str, config: DeepCompressionConfig, filter_fn: FilterFn | None
) -> str | None:
    kind = "Linear" if isinstance(module, nn.Linear) else "Conv2d"
    if kind not in config.module_types:
        return f"config.module_types excludes {kind}"
    if kind == "Conv2d":
        return "nn.Conv2d: CompressedLinear replaces nn.Linear only"
    if config.is_skipped(name):
        return "in config.skip"
    if filter_fn is not None and not filter_fn(module, name):
        return "filter_fn returned False"
    if module.weight.is_meta:
        return "weights on the meta device (load them first, or use load_compressed)"
    return None


def _compressed_module(
    linear: nn.Linear, matrix: CompressedMatrix, backend: str, gpu_form: str = "fixed"
) -> CompressedLinear:
    bias = None if linear.bias is None else linear.bias.detach()
    return CompressedLinear.from_matrix(
        matrix, bias, device=linear.weight.device, dtype=linear.weight.dtype, backend=backend,
        gpu_form=gpu_form,
    )  # fmt: skip


def _swap(
    parent: nn.Module, child: str, module: CompressedLinear, name: str, report: CompressionReport
) -> None:
    setattr(parent, child, module)
    if isinstance(parent, nn.MultiheadAttention) and child == "out_proj":
        report.notes[name] = (
            "nn.MultiheadAttention reads out_proj.weight itself: the layer is decoded to dense on every "
            "call (exact and smaller at rest, not faster); put it in config.skip to keep it dense"
        )
    report.converted[name] = ConvertedLayer(
        module.in_features,
        module.out_features,
        module.bits,
        module.density,
        module.memory_bytes(),
        module.dense_bytes(),
        module.gpu_form,
    )


# ---------------------------------------------------------------------------------- files
def save_compressed(model: nn.Module, path: str | os.PathLike, *, index_bits: int = 5) -> int:
    """Write ``model`` (with `CompressedLinear` layers) to the directory ``path``: its
    compressed layers to ``compressed.safetensors`` (`compress.save`, relative index width
    ``index_bits``), every other tensor of its state dict to ``dense.safetensors``. Returns the
    total bytes written."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    compressed = {n: m for n, m in model.named_modules() if isinstance(m, CompressedLinear)}
    layers = {name: module.to_matrix() for name, module in compressed.items()}
    owned = {
        f"{name}.{buffer}" for name, module in compressed.items() for buffer, _ in module.named_buffers()
    }
    dense, aliases = {}, {}
    seen: dict[tuple, str] = {}
    for key, tensor in model.state_dict(keep_vars=False).items():
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
    every other tensor is assigned, on ``device``. A file defect raises a
    `compress.CompressedFileError`; a model that does not match the file raises ValueError.
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
        _swap(model.get_submodule(parent_name), child, module, name, report)
        state.update(module.state_dict(prefix=f"{name}."))
    state.update({k: t.to(device) for k, t in dense.items()})
    state.update({key: state[target] for key, target in metadata["aliases"].items()})
    result = model.load_state_dict(state, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"the model does not match {directory}: missing {result.missing_keys}, "
            f"unexpected {result.unexpected_keys}"
        )
    _retie(model, metadata["aliases"])
    return report


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
    if set(metadata) != {METADATA_KEY, "modules", "dense_file", "dense", "aliases"}:
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


__all__ = [
    "CompressedFileError",
    "CompressionReport",
    "ConvertedLayer",
    "compress_",
    "load_compressed",
    "save_compressed",
    "swap_compressed_",
]
