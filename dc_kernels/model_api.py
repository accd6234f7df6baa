"""Model-level API: compress a model's nn.Linear layers in place (module swapping).

* `compress_(model, config)`: one-shot Deep Compression (prune + share, no retraining) of every
  selected ``nn.Linear`` and a swap to `CompressedLinear`, in the style of torchao's
  ``quantize_``; `swap_compressed_(model, layers)` swaps in layers compressed elsewhere (e.g.
  ``compress.Compressor(...).finalize()`` after retraining). Both return a `CompressionReport`.

Saving and loading a compressed model: `dc_kernels.checkpoint`.
"""

from __future__ import annotations

import importlib
import logging
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from compress.calibrated_layer import needs_calibration
from compress.calibration import CalibrationResult, calibrated_compress
from compress.config import FORMS, DeepCompressionConfig, LayerConfig
from compress.errors import ConfigError, UnsupportedModuleError
from compress.matrix import CompressedMatrix
from compress.one_shot import compress_as_configured
from compress.progress import ProgressBar
from compress.size import compare_bytes, format_bytes
from dc_kernels import sizes
from dc_kernels.backends import AUTO, GPU_FORMS
from dc_kernels.checks import SUPPORTED_DTYPES
from dc_kernels.linear import CompressedLinear

logger = logging.getLogger(__name__)

ConversionHook = Callable[[nn.Module, "DeepCompressionConfig | None"], None]
_CONVERSION_HOOKS: list[ConversionHook] = []
# library -> the module integrating with it, imported by name once that library is loaded (it
# builds on this module, which therefore does not import it).
INTEGRATIONS = {"transformers": "dc_kernels.hf"}
_UNAVAILABLE: set[str] = set()

#: ``filter(name, module) -> bool``: the one filter signature of the library (`compress.Compressor` too).
FilterFn = Callable[[str, nn.Module], bool]
#: The earlier ``filter_fn(module, name)`` order, still accepted with a DeprecationWarning.
LegacyFilterFn = Callable[[nn.Module, str], bool]


@dataclass(frozen=True)
class ConvertedLayer:
    """One swapped layer: its shape, code width, share of weights kept, bytes in memory
    (``compressed_bytes``; ``dense_bytes`` for the nn.Linear it replaces, in its dtype), GPU form,
    bytes on disk (``disk_bytes``: see `dc_kernels.sizes`; None where not computed), dtype, and the
    form its weights run in (``form``: ``"sparse"`` or ``"dense_codes"``,
    `CompressedLinear.effective_form`)."""

    in_features: int
    out_features: int
    bits: int
    density: float
    compressed_bytes: int
    dense_bytes: int
    gpu_form: str = "fixed"
    disk_bytes: int | None = None
    dtype: str = "float32"
    form: str = "sparse"


@dataclass
class CompressionReport:
    """What `compress_` / `swap_compressed_` / `load_compressed` converted (by module name), what
    they skipped and why, notes on converted layers that will not run faster (e.g. read through
    ``.weight``), the whole model's bytes in memory and on disk before and after (None where
    not known, e.g. before a load into a meta-device model; `dc_kernels.sizes` says what counts),
    and with calibration each layer's output error and time (`compress.CalibrationResult`)."""

    converted: dict[str, ConvertedLayer] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    memory_before: int | None = None
    memory_after: int | None = None
    disk_before: int | None = None
    disk_after: int | None = None
    calibration: CalibrationResult | None = None

    @property
    def compressed_bytes(self) -> int:
        return sum(layer.compressed_bytes for layer in self.converted.values())

    @property
    def dense_bytes(self) -> int:
        return sum(layer.dense_bytes for layer in self.converted.values())

    @property
    def disk_bytes(self) -> int | None:
        """Bytes of the converted layers on disk (None when some were not computed)."""
        values = [layer.disk_bytes for layer in self.converted.values()]
        return None if None in values else sum(values)

    def __str__(self) -> str:
        width = max([len("layer"), len("total"), *map(len, self.converted)])

        def row(name, shape, bits, density, dense, memory, disk, form, gpu_form) -> str:
            return (
                f"{name:<{width}} {shape:>11} {bits:>4} {density:>7} {dense:>9} {memory:>9} {disk:>9} "
                f"{form:>11} {gpu_form:>8}"
            ).rstrip()

        def size(count: int | None) -> str:
            return "-" if count is None else format_bytes(count)

        lines = [row("layer", "shape", "bits", "density", "dense", "memory", "disk", "form", "gpu_form")]
        if not self.converted:
            lines = ["no layer compressed"]
        for name, c in self.converted.items():
            shape, density = f"{c.out_features}x{c.in_features}", f"{c.density:.4f}"
            sizes_ = size(c.dense_bytes), size(c.compressed_bytes), size(c.disk_bytes)
            lines.append(row(name, shape, c.bits, density, *sizes_, c.form, c.gpu_form))
        if self.converted:
            sizes_ = size(self.dense_bytes), size(self.compressed_bytes), size(self.disk_bytes)
            lines.append(row("total", "", "", "", *sizes_, "", ""))
            dtypes = "/".join(sorted({c.dtype for c in self.converted.values()}))
            ratio = compare_bytes(self.dense_bytes, self.compressed_bytes, f"dense {dtypes}")
            lines.append(f"compressed layers in memory: {ratio}")
        for what, before, after in (
            ("in memory", self.memory_before, self.memory_after),
            ("on disk (save_compressed)", self.disk_before, self.disk_after),
        ):
            if before is not None and after is not None:
                lines.append(
                    f"whole model {what}: {size(before)} -> {size(after)} ({compare_bytes(before, after)})"
                )
            elif after is not None:
                lines.append(f"whole model {what}: {size(after)}")
        lines += [f"skipped {name}: {reason}" for name, reason in self.skipped.items()]
        lines += [f"note {name}: {note}" for name, note in self.notes.items()]
        if self.calibration is not None:
            lines += ["", str(self.calibration)]
        return "\n".join(lines)


@dataclass(frozen=True)
class PlannedLayer:
    """What `compress_` would do with one module: ``settings`` when it compresses it, else the
    ``reason`` it skips it."""

    name: str
    kind: str
    shape: tuple[int, ...]
    settings: LayerConfig | None
    reason: str | None


def plan_compression(
    model: nn.Module, config: DeepCompressionConfig | None = None, *, filter: FilterFn | None = None
) -> list[PlannedLayer]:
    """What ``compress_(model, config, filter=filter)`` would compress, with which settings, and
    what it would skip and why, without changing anything; works on a model built on the meta
    device (no weights needed)."""
    config = DeepCompressionConfig() if config is None else config
    _check_model(model)
    return [
        PlannedLayer(
            name,
            type(module).__name__,
            tuple(module.weight.shape) if isinstance(getattr(module, "weight", None), torch.Tensor) else (),
            config.for_layer(name) if reason is None else None,
            reason,
        )
        for name, module, _, _, reason in _plan(model, config, filter)
    ]


# ---------------------------------------------------------------------------------- swapping
def compress_(
    model: nn.Module,
    config: DeepCompressionConfig | Mapping[str, CompressedMatrix] | None = None,
    filter_fn: LegacyFilterFn | None = None,
    *,
    filter: FilterFn | None = None,
    backend: str = AUTO,
    progress: bool = False,
    calibration=None,
) -> CompressionReport:
    """Compress ``model``'s nn.Linear layers in place and swap them for `CompressedLinear`.

    ``config`` (default ``DeepCompressionConfig()``) gives per-layer density or quality, bits,
    k-means init and seed, and a skip list by name (e.g. ``skip=("lm_head",)``); a mapping of
    module name -> `compress.CompressedMatrix` (a ``Compressor.finalize()`` result) is handed to
    `swap_compressed_` instead. ``filter(name, module)`` returning False leaves a layer as it is;
    a module with a matrix weight that it selects but that is not an nn.Linear (an nn.Embedding,
    say) is reported as skipped. (``filter_fn(module, name)``, the earlier argument order, is
    still accepted with a DeprecationWarning.) Biases, devices and dtypes are kept; every layer is
    pruned and clustered from its float32 weight with no retraining.

    Nothing is ever skipped silently: the report lists each skipped layer with its reason (already
    compressed, excluded by the config or the filter, not an nn.Linear, weights on the meta
    device), and a call that converts no layer at all warns with the reasons. ``progress`` draws a
    progress bar on stderr (layer count, seconds, layer name); the logger ``dc_kernels.model_api``
    gets a summary (level INFO) and a line per layer (DEBUG).

    ``calibration`` (an iterable of input batches, e.g. ``compress.load_calibration(path)``, or a
    callable ``run(model)``) compresses the layers with `compress.calibrated_compress` first:
    layer by layer on those inputs, with the config's ``pruning`` and ``quantization`` methods;
    ``report.calibration`` then holds each layer's output error. Without it, a config that asks
    for a method needing data raises `compress.ConfigError`.
    """
    filter = _one_filter(filter, filter_fn)
    if isinstance(config, Mapping):
        return swap_compressed_(model, config, filter=filter, backend=backend)
    config = DeepCompressionConfig() if config is None else config
    if not isinstance(config, DeepCompressionConfig):
        raise TypeError(
            "config must be a compress.DeepCompressionConfig or a mapping of name -> CompressedMatrix, "
            f"got {type(config).__name__}"
        )
    _check_model(model)
    report = CompressionReport(memory_before=sizes.memory_bytes(model), disk_before=sizes.disk_bytes(model))
    swapped: dict[int, CompressedLinear] = {}
    disk: dict[int, int] = {}
    # What to do with each module, decided (the filter asked once each) before any is changed.
    plan = [
        (name, module, parent, child, reason or _meta_reason(module))
        for name, module, parent, child, reason in _plan(model, config, filter)
    ]
    chosen: dict[int, str] = {}  # the layers to compress, at their first name
    for name, module, _, _, reason in plan:
        if reason is None:
            chosen.setdefault(id(module), name)
    for name, module, _, _, reason in plan:
        if reason is None:
            _check_weight_dtype(module, name)
    for name in chosen.values():
        settings = config.for_layer(name)
        if settings.gpu_form not in GPU_FORMS:
            raise ConfigError(
                f"layer {name!r}: gpu_form must be one of {GPU_FORMS}, got {settings.gpu_form!r}"
            )
        if settings.form not in FORMS:
            raise ConfigError(f"layer {name!r}: form must be one of {FORMS}, got {settings.form!r}")
        if calibration is None and needs_calibration(settings):
            raise ConfigError(
                f"layer {name!r}: {', '.join(needs_calibration(settings))} needs calibration inputs: "
                "compress_(model, config, calibration=batches)"
            )
    skipped = sum(reason is not None for *_, reason in plan)
    logger.info("compress_: %d layers to compress, %d skipped", len(chosen), skipped)
    calibrated: dict[int, CompressedMatrix] = {}
    if calibration is not None and chosen:

        def announce(r) -> None:
            logger.info("compress_ calibrated %s: output error %.4f (%.1fs)", r.name, r.error, r.seconds)

        report.calibration = calibrated_compress(
            model, calibration, config, names=chosen.values(), on_layer=announce
        )
        modules = dict(model.named_modules(remove_duplicate=False))
        calibrated = {id(modules[n]): matrix for n, matrix in report.calibration.layers.items()}
    with ProgressBar(len(chosen), "compress_", enabled=progress) as bar:
        for name, module, parent, child, reason in plan:
            if reason is not None:
                report.skipped[name] = reason
                continue
            settings = config.for_layer(name)
            if id(module) not in swapped:
                logger.debug("compress_ %d/%d %s (%s)", len(swapped) + 1, len(chosen), name,
                            "x".join(map(str, module.weight.shape)))  # fmt: skip
                matrix = calibrated.get(id(module)) or compress_as_configured(
                    module.weight.detach(), settings, seed=config.seed, name=name
                )
                new = _compressed_module(module, matrix, backend, settings.gpu_form, settings.form)
                swapped[id(module)] = new
                disk[id(new)] = sizes.layer_disk_bytes(new, settings.index_bits)
                bar.step(name)
            new = swapped[id(module)]
            swap_module(parent, child, new, name, report, disk[id(new)])
    _finish(model, report, disk, config)
    return report


def swap_compressed_(
    model: nn.Module,
    layers: Mapping[str, CompressedMatrix],
    filter_fn: LegacyFilterFn | None = None,
    *,
    filter: FilterFn | None = None,
    backend: str = AUTO,
) -> CompressionReport:
    """Swap the nn.Linear modules named in ``layers`` for `CompressedLinear` modules computing
    those compressed weights (biases, devices and dtypes kept). Names of modules that are not
    nn.Linear (e.g. a compressed nn.Conv2d) and names ``filter(name, module)`` returns False for
    are skipped with the reason; unknown names and shapes that differ from the module's raise
    ValueError; a plain dict of settings (a config written as a dict) raises TypeError with the
    way to pass it."""
    filter = _one_filter(filter, filter_fn)
    if not isinstance(layers, Mapping):
        raise TypeError(f"layers must map module names to CompressedMatrix, got {type(layers).__name__}")
    _check_settings_dict(layers)
    _check_model(model)
    modules = dict(model.named_modules(remove_duplicate=False))
    unknown = sorted(set(layers) - set(modules))
    if unknown:
        raise ValueError(f"layers name modules the model does not have: {unknown}")
    for name, module, _, _ in _named_children(model):
        if name in layers and isinstance(module, nn.Linear):
            _check_weight_dtype(module, name)
    report = CompressionReport(memory_before=sizes.memory_bytes(model), disk_before=sizes.disk_bytes(model))
    swapped: dict[int, CompressedLinear] = {}
    disk: dict[int, int] = {}
    for name, module, parent, child in _named_children(model):
        if name not in layers:
            continue
        matrix = layers[name]
        if not isinstance(matrix, CompressedMatrix):
            raise TypeError(f"layers[{name!r}] must be a CompressedMatrix, got {type(matrix).__name__}")
        if not isinstance(module, nn.Linear):
            report.skipped[name] = _not_linear(module)
            continue
        if filter is not None and not filter(name, module):
            report.skipped[name] = "the filter returned False"
            continue
        if matrix.shape != tuple(module.weight.shape):
            raise ValueError(
                f"layers[{name!r}] has shape {matrix.shape}, the module's weight {tuple(module.weight.shape)}"
            )
        if id(module) not in swapped:
            swapped[id(module)] = _compressed_module(module, matrix, backend)
            disk[id(swapped[id(module)])] = sizes.layer_disk_bytes(swapped[id(module)])
        new = swapped[id(module)]
        swap_module(parent, child, new, name, report, disk[id(new)])
    _finish(model, report, disk, None)
    return report


def _one_filter(filter: FilterFn | None, filter_fn: LegacyFilterFn | None) -> FilterFn | None:
    """The filter as ``filter(name, module)``; the legacy ``filter_fn(module, name)`` is turned
    around, with a DeprecationWarning."""
    if filter_fn is None:
        return filter
    if filter is not None:
        raise TypeError("give filter(name, module) or the deprecated filter_fn(module, name), not both")
    warnings.warn(
        "filter_fn(module, name) is deprecated: pass filter=lambda name, module: ... (the order "
        "compress.Compressor and named_modules() use)",
        DeprecationWarning,
        stacklevel=3,
    )
    return lambda name, module: filter_fn(module, name)


def _check_settings_dict(layers: Mapping) -> None:
    """A dict of config settings passed where compressed layers go gets the way to pass it."""
    settings = set(DeepCompressionConfig.__dataclass_fields__)
    matrices = any(isinstance(v, CompressedMatrix) for v in layers.values())
    if layers and set(layers) <= settings and not matrices:
        raise TypeError(
            f"got a plain dict of settings {sorted(layers)} where compressed layers go: pass "
            "compress.DeepCompressionConfig(**settings) (or DeepCompressionConfig.from_dict(settings)) "
            "as the config"
        )


def _finish(
    model: nn.Module, report: CompressionReport, disk: dict[int, int], config: DeepCompressionConfig | None
) -> None:
    """Sizes after, the warning when nothing was converted, and the record Hugging Face models
    keep of their compression (so that ``save_pretrained`` output loads back compressed)."""
    report.memory_after = sizes.memory_bytes(model)
    report.disk_after = sizes.disk_bytes(model, disk)
    if not report.converted:
        reasons = sorted(set(report.skipped.values()))
        why = "; ".join(reasons) if reasons else "the model has no nn.Linear layer"
        warnings.warn(f"no layer was compressed: {why}", UserWarning, stacklevel=3)
    after_conversion(model, config)


def register_conversion_hook(hook: ConversionHook) -> None:
    """Call ``hook(model, config)`` after every conversion (`compress_`, `swap_compressed_`,
    `load_compressed`); ``config`` is None when no `DeepCompressionConfig` was involved."""
    if hook not in _CONVERSION_HOOKS:
        _CONVERSION_HOOKS.append(hook)


def after_conversion(model: nn.Module, config: DeepCompressionConfig | None) -> None:
    """Load the integration of each library already loaded (it registers its hook), then run
    the hooks: e.g. a Hugging Face model records its compression so that ``save_pretrained``
    writes a config that loads back compressed."""
    for library, integration in INTEGRATIONS.items():
        if library in sys.modules and integration not in _UNAVAILABLE:  # a model needs its library loaded
            try:
                importlib.import_module(integration)
            except ImportError as exc:  # e.g. a version too old for the integration
                _UNAVAILABLE.add(integration)
                warnings.warn(f"{integration} is not available ({exc}); {library} models will not record "
                              "their compression for saving", UserWarning, stacklevel=3)  # fmt: skip
    for hook in _CONVERSION_HOOKS:
        hook(model, config)


def _check_model(model: nn.Module) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(model, nn.Linear):
        raise ValueError(
            "the model is a bare nn.Linear, which cannot be swapped in place: use "
            "CompressedLinear.from_linear(model, ...) or wrap it in a container"
        )


def _check_weight_dtype(module: nn.Linear, name: str) -> None:
    """Refuse, before any layer is swapped, a weight dtype CompressedLinear cannot run."""
    if module.weight.dtype not in SUPPORTED_DTYPES:
        raise UnsupportedModuleError(
            f"layer {name!r} has {module.weight.dtype} weights; CompressedLinear runs float32, float16 and "
            "bfloat16 (float32 accumulation): convert the model first (e.g. model.float())"
        )


def _named_children(model: nn.Module):
    """(full name, module, parent, attribute name) of every submodule, shared ones at each of
    their names."""
    for parent_name, parent in model.named_modules(remove_duplicate=False):
        for child, module in list(parent._modules.items()):  # named_children() hides repeats
            if module is not None:
                yield (f"{parent_name}.{child}" if parent_name else child), module, parent, child


def _plan(model: nn.Module, config: DeepCompressionConfig, filter: FilterFn | None):
    """(name, module, parent, attribute, reason to skip or None) for each module `compress_`
    reports on: every nn.Linear, nn.Conv2d and `CompressedLinear`, and every other module with a
    matrix weight (an nn.Embedding, say) that the filter selects."""
    tied = _weights_tied_elsewhere(model)
    for name, module, parent, child in _named_children(model):
        if isinstance(module, nn.Linear) and id(module.weight) in tied:
            yield (
                name,
                module,
                parent,
                child,
                (
                    f"its weight is tied to {tied[id(module.weight)]} (compressing it would untie them; "
                    "tied output embeddings stay dense)"
                ),
            )
        elif isinstance(module, (nn.Linear, nn.Conv2d, CompressedLinear)):
            yield name, module, parent, child, _skip_reason(module, name, config, filter)
        elif filter is not None and _has_matrix_weight(module) and filter(name, module):
            yield name, module, parent, child, f"selected by the filter, but {_not_linear(module)}"


def _weights_tied_elsewhere(model: nn.Module) -> dict[int, str]:
    """id of each parameter that an nn.Linear shares with a module of another kind (a language
    model head tied to its input embedding) -> that module's parameter name."""
    owners: dict[int, list[tuple[str, nn.Module]]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        for key, parameter in module.named_parameters(recurse=False):
            owners.setdefault(id(parameter), []).append((f"{name}.{key}" if name else key, module))
    tied = {}
    for ident, found in owners.items():
        linear = [isinstance(m, nn.Linear) for _, m in found]
        if any(linear) and not all(linear):
            tied[ident] = next(n for n, m in found if not isinstance(m, nn.Linear))
    return tied


def _has_matrix_weight(module: nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return isinstance(weight, torch.Tensor) and weight.dim() >= 2


def _skip_reason(
    module: nn.Module, name: str, config: DeepCompressionConfig, filter: FilterFn | None
) -> str | None:
    if isinstance(module, CompressedLinear):
        return "already compressed (a CompressedLinear)"
    kind = "Linear" if isinstance(module, nn.Linear) else "Conv2d"
    if kind not in config.module_types:
        return f"config.module_types excludes {kind}"
    if kind == "Conv2d":
        return _not_linear(module)
    if config.is_skipped(name):
        return "in config.skip"
    if filter is not None and not filter(name, module):
        return "the filter returned False (it is called as filter(name, module))"
    return None


def _meta_reason(module: nn.Module) -> str | None:
    if module.weight.is_meta:
        return "weights on the meta device (load them first, or use load_compressed)"
    return None


def _not_linear(module: nn.Module) -> str:
    return f"{type(module).__name__}: CompressedLinear replaces nn.Linear only"


def _compressed_module(
    linear: nn.Linear, matrix: CompressedMatrix, backend: str, gpu_form: str = "fixed", form: str = "auto"
) -> CompressedLinear:
    bias = None if linear.bias is None else linear.bias.detach()
    return CompressedLinear.from_matrix(
        matrix, bias, device=linear.weight.device, dtype=linear.weight.dtype, backend=backend,
        gpu_form=gpu_form, form=form,
    )  # fmt: skip


def swap_module(
    parent: nn.Module,
    child: str,
    module: CompressedLinear,
    name: str,
    report: CompressionReport,
    disk_bytes: int | None = None,
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
        disk_bytes,
        str(module.weight_dtype).removeprefix("torch."),
        module.effective_form,
    )


__all__ = [
    "CompressionReport",
    "ConvertedLayer",
    "PlannedLayer",
    "compress_",
    "plan_compression",
    "swap_compressed_",
]
