"""One-shot compression of a whole model with calibration inputs, layer by layer.

:func:`calibrated_compress` runs the model on the calibration inputs
(:class:`~compress.calibration_data.CalibrationSet`) and compresses its ``nn.Linear`` and
``nn.Conv2d`` layers in the order the forward pass first reaches them. For each layer it

1. runs the model with a forward pre-hook on the layer that adds the layer's inputs ``X`` (rows:
   tokens, batch entries; for a convolution the unfolded patches) to ``H = X^T X``, streaming;
2. compresses the layer as its :class:`~compress.LayerConfig` says
   (:func:`compress.calibrated_layer.compress_calibrated_layer`) and writes the decoded
   compressed weight into the model, so that the later layers are calibrated on the outputs of
   the compressed earlier ones (errors do not pile up unseen);
3. removes the hook and drops ``H`` before the next layer.

So one layer's Hessian (in_features^2 float32) is alive at a time. Layers that receive the very
same input tensor (the query, key and value projections of an attention block, say) share one
Hessian and one run. With batches (not a callable), each run stops as soon as the layers it
calibrates have seen their inputs, unless a layer is called more than once per forward pass.
The model runs in eval mode without gradients; its training flags are restored afterwards.

A layer the first batch never reaches (or a grouped or string-padded convolution, whose inputs
are not unfolded here) is compressed without data (magnitude pruning, k-means), with a note in
its report.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from compress.calibrated_layer import compress_calibrated_layer, needs_calibration
from compress.calibration_data import CalibrationSet
from compress.config import DeepCompressionConfig, LayerConfig
from compress.errors import CalibrationError, ConfigError, UnsupportedModuleError
from compress.matrix import CompressedMatrix
from compress.one_shot import compress_as_configured
from compress.pruning import check_weight

logger = logging.getLogger(__name__)

SUPPORTED = (nn.Linear, nn.Conv2d)


@dataclass(frozen=True)
class LayerReport:
    """How one layer was compressed. ``error_pruned`` and ``error`` are the layer's relative
    output error ``||X W^T - X W'^T|| / ||X W^T||`` on its calibration inputs X, after pruning
    alone and after pruning and weight sharing (NaN without calibration); ``rows`` counts the
    input vectors in X; ``seconds`` covers the layer's runs of the model (those of layers sharing
    one input count for the first of them) and its compression."""

    name: str
    shape: tuple[int, int]
    pruning: str
    quantization: str
    density: float
    bits: int
    rows: int
    error_pruned: float
    error: float
    damping: float
    seconds: float
    note: str = ""


@dataclass
class CalibrationResult:
    """The compressed layers by module name and the report of each, in the order compressed."""

    layers: dict[str, CompressedMatrix] = field(default_factory=dict)
    report: dict[str, LayerReport] = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        """The report as a table, one row per layer."""
        return pd.DataFrame([vars(r) for r in self.report.values()]).set_index("name")

    def __str__(self) -> str:
        lines = [f"{'layer':<32} {'shape':>11} {'method':>22} {'density':>7} {'error':>15} {'seconds':>7}"]
        for r in self.report.values():
            method = f"{r.pruning}+{r.quantization}"
            error = f"{r.error_pruned:.4f}->{r.error:.4f}"
            shape = f"{r.shape[0]}x{r.shape[1]}"
            line = f"{r.name:<32} {shape:>11} {method:>22} {r.density:>7.4f} {error:>15} {r.seconds:>7.2f}"
            lines.append(line + (f"  ({r.note})" if r.note else ""))
        return "\n".join(lines)


class HessianStats:
    """``H = X^T X`` of the inputs of a group of layers sharing one input, accumulated in float32
    from forward pre-hooks; each distinct input tensor is added once however many members see it."""

    def __init__(self, members: Sequence[tuple[str, nn.Module]]) -> None:
        self.members = list(members)
        module = self.members[0][1]
        self.features = _in_features(module)
        device = module.weight.device
        self.hessian = torch.zeros(self.features, self.features, dtype=torch.float32, device=device)
        self.rows = 0
        self.seen = {name: 0 for name, _ in self.members}  # rows each member received
        self.called: set[str] = set()  # members called in the current batch
        self._last: weakref.ref | None = None

    def add(self, name: str, module: nn.Module, args: tuple) -> None:
        if not args or not isinstance(args[0], torch.Tensor):
            raise CalibrationError(f"layer {name!r} was called without a tensor as its first argument")
        tensor = args[0]
        rows = _input_rows(module, tensor, name)
        self.seen[name] += rows.shape[0]
        self.called.add(name)
        if self._last is not None and self._last() is tensor:
            return
        self._last = weakref.ref(tensor)
        self.rows += rows.shape[0]
        self.hessian.addmm_(rows.t(), rows)


class _StopForward(BaseException):
    """Raised from a hook once a run has captured what it needs: ends that forward pass early.
    (A BaseException, so that a model's own ``except Exception`` does not swallow it.)"""


def calibrated_compress(
    model: nn.Module,
    calibration: Iterable | Callable[[nn.Module], object] | CalibrationSet,
    config: DeepCompressionConfig | None = None,
    *,
    names: Iterable[str] | None = None,
    on_layer: Callable[[LayerReport], None] | None = None,
) -> CalibrationResult:
    """Compress ``model``'s layers one shot, calibrated on ``calibration`` (see the module
    docstring); the model keeps the decoded compressed weights.

    ``calibration``: an iterable of batches (tensors, argument tuples or keyword mappings;
    ``compress.load_calibration`` reads them from a file) or a callable ``run(model)``.
    ``config`` gives each layer's density or quality, bits, init, pruning, quantization,
    damping and block size, the skip list and the module types. ``names`` selects the modules
    instead (``nn.Linear`` or ``nn.Conv2d``; the skip list does not apply then). ``on_layer`` is
    called with each layer's :class:`LayerReport` as soon as it is done; every layer is also
    logged at INFO level on the ``compress.calibration`` logger.

    Raises :class:`CalibrationError` for an empty calibration set, NaN or inf in its tensors,
    a batch the model refuses, or inputs that make a layer's Hessian NaN, inf or all zero
    (:class:`SingularHessianError`), naming the batch or the layer.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    config = DeepCompressionConfig() if config is None else config
    if not isinstance(config, DeepCompressionConfig):
        raise TypeError(f"config must be a DeepCompressionConfig, got {type(config).__name__}")
    selected = _select(model, config, names)
    inputs = CalibrationSet(calibration)
    flags = {module: module.training for module in model.modules()}
    model.eval()
    result = CalibrationResult()
    try:
        groups, repeated = _trace(model, selected, inputs)
        reached = {name for group in groups for name, _ in group}
        total, done = len(selected), 0
        for group in groups:
            start = time.perf_counter()
            early = inputs.batches is not None and not repeated & {name for name, _ in group}
            stats = _capture(model, group, inputs, early=early)
            for name, module in group:
                done += 1
                report = _compress_layer(
                    name, module, stats, config.for_layer(name), config.seed, start, result
                )
                _announce(report, done, total, on_layer)
                start = time.perf_counter()
            del stats
        for name, module in selected:
            if name not in reached:
                done += 1
                start = time.perf_counter()
                reason = _unsupported_reason(module) or "the calibration inputs never reach it"
                report = _compress_data_free(name, module, config, reason, start, result)
                _announce(report, done, total, on_layer)
    finally:
        for module, training in flags.items():
            module.training = training
    return result


def _select(model: nn.Module, config: DeepCompressionConfig, names: Iterable[str] | None):
    if names is None:
        allowed = tuple(t for t in SUPPORTED if t.__name__ in config.module_types)
        chosen = [
            (n, m) for n, m in model.named_modules() if isinstance(m, allowed) and not config.is_skipped(n)
        ]
    else:
        modules = dict(model.named_modules(remove_duplicate=False))
        names = list(names)
        unknown = [n for n in names if n not in modules]
        if unknown:
            raise ValueError(f"names holds modules the model does not have: {unknown}")
        # A module shared under several names is compressed once, under the first one given.
        chosen = list({id(modules[n]): (n, modules[n]) for n in reversed(names)}.values())[::-1]
    if not chosen:
        raise ConfigError(
            f"no layer of {type(model).__name__} was selected (module_types={config.module_types}, "
            f"skip={config.skip}, names={names})"
        )
    for name, module in chosen:
        if not isinstance(module, SUPPORTED):
            raise UnsupportedModuleError(
                f"module {name!r} of type {type(module).__name__} was selected, but only nn.Linear and "
                "nn.Conv2d layers can be compressed"
            )
        if parametrize.is_parametrized(module, "weight"):
            raise UnsupportedModuleError(f"module {name!r}: its weight is parametrized")
        if module.weight.is_meta:
            raise ValueError(f"module {name!r}: its weight is on the meta device (load it first)")
        check_weight(module.weight, name)
    return chosen


def _trace(model: nn.Module, selected, inputs: CalibrationSet):
    """Runs the model once (the first batch, or the callable) to find the order in which the
    selected layers are first called, which of them receive the same input tensor (they form a
    group: one Hessian, one run) and which are called more than once."""
    order: list[tuple[str, nn.Module]] = []
    group_of: dict[str, int] = {}
    calls: dict[str, int] = {}
    last: list = [None, -1, None]  # weak reference to the last input, its group, its input form

    def hook(name: str, module: nn.Module, args: tuple) -> None:
        calls[name] = calls.get(name, 0) + 1
        if name in group_of or not args or not isinstance(args[0], torch.Tensor):
            return
        form = _input_form(module)
        same = last[0] is not None and last[0]() is args[0] and last[2] == form
        group_of[name] = last[1] if same else max(group_of.values(), default=-1) + 1
        last[:] = [weakref.ref(args[0]), group_of[name], form]
        order.append((name, module))

    traced = [(name, module) for name, module in selected if _unsupported_reason(module) is None]
    first = inputs if inputs.batches is None else CalibrationSet(inputs.batches[:1])
    _run_with_hooks(model, traced, hook, first)
    groups: dict[int, list] = {}
    for name, module in order:
        groups.setdefault(group_of[name], []).append((name, module))
    return list(groups.values()), {name for name, count in calls.items() if count > 1}


def _capture(model: nn.Module, group, inputs: CalibrationSet, *, early: bool) -> HessianStats:
    """The Hessian of the group's shared input over the whole calibration set."""
    stats = HessianStats(group)

    def hook(name: str, module: nn.Module, args: tuple) -> None:
        stats.add(name, module, args)
        if early and len(stats.called) == len(stats.members):
            raise _StopForward

    _run_with_hooks(model, group, hook, inputs, start=stats.called.clear)
    names = [name for name, _ in group]
    if any(stats.seen[name] != stats.rows for name in names):
        raise CalibrationError(
            f"layers {names} received one input tensor in the first batch but different ones later "
            f"(rows {stats.seen}, {stats.rows} distinct); calibrate them with a callable or separately"
        )
    if stats.rows == 0:
        raise CalibrationError(f"layer {names[0]!r} received no input rows from the calibration set")
    if not bool(torch.isfinite(stats.hessian).all()):
        raise CalibrationError(
            f"layer {names[0]!r}: its inputs hold NaN or inf (the model makes them from the calibration set)"
        )
    return stats


def _run_with_hooks(model, modules, hook, inputs: CalibrationSet, start=None) -> None:
    handles = [
        module.register_forward_pre_hook(lambda m, args, name=name: hook(name, m, args))
        for name, module in modules
    ]
    try:
        inputs.run_all(model, start=start, stop=_StopForward)
    finally:
        for handle in handles:
            handle.remove()


def _compress_layer(name, module, stats: HessianStats, settings: LayerConfig, seed, start, result):
    layer = compress_calibrated_layer(module.weight, stats.hessian, settings, seed=seed, name=name)
    _write_back(module, layer.matrix)
    matrix = layer.matrix
    report = LayerReport(
        name, matrix.shape, settings.pruning, settings.quantization, matrix.density, matrix.bits,
        stats.rows, layer.error_pruned, layer.error, layer.damping, time.perf_counter() - start,
    )  # fmt: skip
    result.layers[name], result.report[name] = matrix, report
    return report


def _compress_data_free(name, module, config: DeepCompressionConfig, reason: str, start, result):
    settings = config.for_layer(name)
    matrix = compress_as_configured(module.weight.detach(), settings, seed=config.seed, name=name)
    _write_back(module, matrix)
    wanted = needs_calibration(settings)
    note = f"{reason}: magnitude pruning and k-means" + (f" instead of {', '.join(wanted)}" if wanted else "")
    logger.warning("layer %r: %s", name, note)
    nan = float("nan")
    report = LayerReport(
        name, matrix.shape, "magnitude", "kmeans", matrix.density, matrix.bits, 0, nan, nan, nan,
        time.perf_counter() - start, note,
    )  # fmt: skip
    result.layers[name], result.report[name] = matrix, report
    return report


def _announce(report: LayerReport, done: int, total: int, on_layer) -> None:
    logger.info(
        "[%d/%d] %s %dx%d %s+%s: output error %.4f after pruning, %.4f compressed (%.2f s)",
        done, total, report.name, *report.shape, report.pruning, report.quantization,
        report.error_pruned, report.error, report.seconds,
    )  # fmt: skip
    if on_layer is not None:
        on_layer(report)


def _write_back(module: nn.Module, matrix: CompressedMatrix) -> None:
    weight = module.weight
    with torch.no_grad():
        weight.copy_(matrix.to_dense_tensor(weight.dtype, weight.device).reshape(weight.shape))


def _unsupported_reason(module: nn.Module) -> str | None:
    """Why a layer's inputs are not unfolded here (None when they are)."""
    if isinstance(module, nn.Conv2d) and (
        module.groups != 1 or module.padding_mode != "zeros" or isinstance(module.padding, str)
    ):
        return "a grouped, non-zero-padded or string-padded convolution"
    return None


def _input_form(module: nn.Module) -> tuple:
    """What turns the layer's input into rows of X: layers sharing an input tensor share X only
    when this is the same."""
    if isinstance(module, nn.Conv2d):
        return ("conv", module.kernel_size, module.dilation, module.padding, module.stride)
    return ("linear", module.in_features)


def _in_features(module: nn.Module) -> int:
    if isinstance(module, nn.Conv2d):
        return module.weight[0].numel()
    return module.in_features


def _input_rows(module: nn.Module, tensor: torch.Tensor, name: str) -> torch.Tensor:
    """The layer's input as float32 rows of X (one per position the weight is applied at)."""
    features = _in_features(module)
    if isinstance(module, nn.Conv2d):
        if tensor.dim() not in (3, 4):
            raise CalibrationError(f"layer {name!r}: a convolution input of shape {tuple(tensor.shape)}")
        batched = tensor if tensor.dim() == 4 else tensor.unsqueeze(0)
        patches = F.unfold(
            batched.to(torch.float32), module.kernel_size, module.dilation, module.padding, module.stride
        )
        return patches.transpose(1, 2).reshape(-1, features)
    if tensor.shape[-1] != features:
        raise CalibrationError(
            f"layer {name!r}: input of shape {tuple(tensor.shape)} for {features} input features"
        )
    return tensor.detach().reshape(-1, features).to(torch.float32)
