"""Model-level API: compress a model's nn.Linear layers in place (module swapping).

* `compress_(model, config)`: one-shot Deep Compression (prune + share, no retraining) of every
  selected ``nn.Linear`` and a swap to `CompressedLinear`, in the style of torchao's
  ``quantize_``; `swap_compressed_(model, layers)` swaps in layers compressed elsewhere (e.g.
  ``compress.Compressor(...).finalize()`` after retraining). Both return a `CompressionReport`.

Saving and loading a compressed model: `dc_kernels.checkpoint`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from torch import nn

from compress.config import DeepCompressionConfig
from compress.errors import ConfigError
from compress.matrix import CompressedMatrix
from compress.one_shot import compress_matrix
from dc_kernels.backends import AUTO, GPU_FORMS
from dc_kernels.linear import CompressedLinear

FilterFn = Callable[[nn.Module, str], bool]


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
    why, and notes on converted layers that will not run faster (e.g. read through ``.weight``)."""

    converted: dict[str, ConvertedLayer] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

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
        return "\n".join(lines)


# ---------------------------------------------------------------------------------- swapping
def compress_(
    model: nn.Module,
    config: DeepCompressionConfig | Mapping[str, CompressedMatrix] | None = None,
    filter_fn: FilterFn | None = None,
    *,
    backend: str = AUTO,
    progress: bool = False,
) -> CompressionReport:
    """Compress ``model``'s nn.Linear layers in place and swap them for `CompressedLinear`.

    ``config`` (default ``DeepCompressionConfig()``) gives per-layer density or quality, bits,
    k-means init and seed, and a skip list by name (e.g. ``skip=("lm_head",)``); a mapping of
    module name -> `compress.CompressedMatrix` (a ``Compressor.finalize()`` result) is handed to
    `swap_compressed_` instead. ``filter_fn(module, name)`` returning False leaves a layer dense.
    Biases, devices and dtypes are kept; every layer is pruned and clustered from its float32
    weight with no retraining. ``progress`` prints a line per compressed layer to stderr (layer
    count, name, shape, seconds), for large models.
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
    # The layers to compress (filter_fn is asked twice), checked before any is changed.
    selected = {
        id(m): n for n, m, _, _ in _named_children(model)
        if isinstance(m, (nn.Linear, nn.Conv2d)) and _skip_reason(m, n, config, filter_fn) is None
    }  # fmt: skip
    for name in selected.values():
        form = config.for_layer(name).gpu_form
        if form not in GPU_FORMS:
            raise ConfigError(f"layer {name!r}: gpu_form must be one of {GPU_FORMS}, got {form!r}")
    total = len(selected)
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
                print(f"[{elapsed:7.1f}s] compress_ {len(swapped) + 1}/{total} {name} ({shape})",
                      file=sys.stderr, flush=True)  # fmt: skip
            settings = config.for_layer(name)
            matrix = compress_matrix(
                module.weight.detach(),
                settings.density if settings.quality is None else None,
                settings.bits,
                settings.init,
                config.seed,
                quality=settings.quality,
                name=name,
            )
            swapped[id(module)] = _compressed_module(module, matrix, backend, settings.gpu_form)
        swap_module(parent, child, swapped[id(module)], name, report)
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
        swap_module(parent, child, swapped[id(module)], name, report)
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


def swap_module(
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


__all__ = ["CompressionReport", "ConvertedLayer", "compress_", "swap_compressed_"]
