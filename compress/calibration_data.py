"""Calibration inputs: checked batches (or a function that runs the model), and a file format.

A calibration set is either

* batches: an iterable of model inputs, each a tensor (``model(batch)``), a tuple or list
  (``model(*batch)``) or a mapping of keyword arguments (``model(**batch)``); it is read once
  and kept, since the layer-by-layer driver runs the model on it many times. Every floating
  tensor must be finite; tensors move to the device of the model's first parameter;
* or a callable ``run(model)`` that runs the model on the user's data itself (any loop,
  any arguments); its return value is ignored.

Batches round-trip through a safetensors file (no pickle), :func:`save_calibration` /
:func:`load_calibration`: tensor ``"<batch>"`` is a tensor batch, ``"<batch>/<position>"``
the positional arguments of a tuple batch, ``"<batch>.<keyword>"`` the keyword arguments of a
mapping batch, batches numbered from 0 without gaps; the metadata names the format.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from compress.errors import CalibrationError

FORMAT = "compress.calibration"
FORMAT_VERSION = "1"
_KEY = re.compile(r"(?P<batch>0|[1-9][0-9]*)(?:(?P<kind>[./])(?P<part>.+))?")

Batch = Any  # a tensor, a tuple or list of arguments, or a mapping of keyword arguments


class CalibrationSet:
    """Calibration inputs, checked (see the module docstring): ``batches`` (a list) or ``run``
    (a callable), exactly one of them set."""

    def __init__(self, calibration: Iterable[Batch] | Callable[[nn.Module], Any]) -> None:
        if isinstance(calibration, CalibrationSet):
            self.batches, self.run = calibration.batches, calibration.run
            return
        if isinstance(calibration, (str, os.PathLike)):
            raise TypeError(
                "calibration must be batches or a callable; load a calibration file with "
                f"compress.load_calibration({os.fspath(calibration)!r})"
            )
        if callable(calibration) and not isinstance(calibration, (nn.Module, torch.Tensor)):
            self.batches, self.run = None, calibration
            return
        if isinstance(calibration, (torch.Tensor, Mapping)) or not isinstance(calibration, Iterable):
            raise TypeError(
                "calibration must be an iterable of batches (a list of tensors, say) or a callable "
                f"run(model), got {type(calibration).__name__}"
            )
        self.batches = [check_batch(batch, index) for index, batch in enumerate(calibration)]
        self.run = None
        if not self.batches:
            raise CalibrationError("the calibration set is empty: give at least one batch of inputs")

    def run_all(
        self,
        model: nn.Module,
        start: Callable[[], None] | None = None,
        stop: type[BaseException] | None = None,
    ) -> None:
        """Run ``model`` on every batch (or the callable once), without gradients. ``start`` is
        called before each batch; an exception of type ``stop`` ends the batch (or the callable's
        run) early. A model that raises on a batch raises :class:`CalibrationError` naming it."""
        if self.run is not None:
            runs = [lambda: self.run(model)]
        else:
            device = _device_of(model)
            runs = [
                functools.partial(run_batch, model, batch, index, device)
                for index, batch in enumerate(self.batches)
            ]
        with torch.no_grad():
            for run in runs:
                if start is not None:
                    start()
                with contextlib.suppress(stop or _Never):
                    run()


class _Never(BaseException):
    """Never raised: the ``stop`` of a run that is not ended early."""


def check_batch(batch: Batch, index: int) -> Batch:
    """``batch`` if it is a tensor, tuple/list or mapping whose floating tensors are all finite
    and none empty; :class:`CalibrationError` naming the batch (and argument) otherwise."""
    if isinstance(batch, torch.Tensor):
        _check_tensor(batch, f"calibration batch {index}")
    elif isinstance(batch, (tuple, list)):
        for position, value in enumerate(batch):
            if isinstance(value, torch.Tensor):
                _check_tensor(value, f"calibration batch {index}, argument {position}")
    elif isinstance(batch, Mapping):
        for key, value in batch.items():
            if not isinstance(key, str):
                raise CalibrationError(f"calibration batch {index}: keyword {key!r} is not a string")
            if isinstance(value, torch.Tensor):
                _check_tensor(value, f"calibration batch {index}, argument {key!r}")
    else:
        raise CalibrationError(
            f"calibration batch {index} must be a tensor, a tuple or list of arguments or a mapping "
            f"of keyword arguments, got {type(batch).__name__}"
        )
    return batch


def _check_tensor(tensor: torch.Tensor, where: str) -> None:
    if tensor.numel() == 0:
        raise CalibrationError(f"{where} is empty (shape {tuple(tensor.shape)})")
    # A finite sum proves every entry finite (NaN and inf propagate); only an overflowing or
    # non-finite sum costs the full check.
    if tensor.is_floating_point() and not math.isfinite(float(tensor.detach().sum())):
        bad = int(torch.count_nonzero(~torch.isfinite(tensor)))
        if bad:
            raise CalibrationError(f"{where}: {bad} of {tensor.numel()} values are NaN or inf")


def run_batch(model: nn.Module, batch: Batch, index: int = 0, device: torch.device | None = None) -> Any:
    """``model(batch)``, ``model(*batch)`` or ``model(**batch)`` by the batch's type, its
    tensors moved to ``device`` first; an exception from the model becomes
    :class:`CalibrationError` naming the batch."""
    batch = _to(batch, device)
    try:
        if isinstance(batch, (tuple, list)):
            return model(*batch)
        if isinstance(batch, Mapping):
            return model(**batch)
        return model(batch)
    except (RuntimeError, ValueError, TypeError, IndexError, KeyError) as exc:
        if isinstance(exc, CalibrationError):
            raise
        raise CalibrationError(
            f"the model raised on calibration batch {index}: {type(exc).__name__}: {exc}"
        ) from exc


def _device_of(model: nn.Module) -> torch.device | None:
    parameter = next(model.parameters(), None)
    return None if parameter is None or parameter.is_meta else parameter.device


def _to(batch: Batch, device: torch.device | None) -> Batch:
    if device is None:
        return batch
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(value, device) for value in batch)
    if isinstance(batch, Mapping):
        return {key: _to(value, device) for key, value in batch.items()}
    return batch


# ---------------------------------------------------------------------------------- files
def save_calibration(path: str | os.PathLike, batches: Iterable[Batch]) -> None:
    """Write ``batches`` (tensors, tuples/lists of tensors or mappings of tensors) to a
    safetensors file that :func:`load_calibration` reads back."""
    tensors: dict[str, torch.Tensor] = {}
    for index, batch in enumerate(batches):
        check_batch(batch, index)
        if isinstance(batch, torch.Tensor):
            parts = {str(index): batch}
        elif isinstance(batch, (tuple, list)):
            parts = {f"{index}/{position}": value for position, value in enumerate(batch)}
        else:
            parts = {f"{index}.{key}": value for key, value in batch.items()}
        for key, value in parts.items():
            if not isinstance(value, torch.Tensor):
                raise CalibrationError(f"{key}: only tensors can be saved, got {type(value).__name__}")
            tensors[key] = value.detach().cpu().contiguous()
    if not tensors:
        raise CalibrationError("the calibration set is empty: nothing to save")
    safetensors.torch.save_file(
        tensors, os.fspath(path), metadata={"format": FORMAT, "version": FORMAT_VERSION}
    )


def load_calibration(path: str | os.PathLike) -> list[Batch]:
    """The batches of a file written by :func:`save_calibration` (or by any tool following its
    naming), checked like any calibration set; :class:`CalibrationError` names what is wrong."""
    path = Path(path)
    try:
        with safetensors.safe_open(os.fspath(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
    except (OSError, safetensors.SafetensorError, ValueError) as exc:
        raise CalibrationError(f"{path} is not a readable safetensors file: {exc}") from exc
    if metadata.get("format") != FORMAT or metadata.get("version") != FORMAT_VERSION:
        raise CalibrationError(
            f"{path}: not a calibration file (metadata format {metadata.get('format')!r}, version "
            f"{metadata.get('version')!r}; expected {FORMAT!r}, {FORMAT_VERSION!r})"
        )
    grouped: dict[int, dict[str, dict[str, torch.Tensor]]] = {}
    for key, tensor in tensors.items():
        match = _KEY.fullmatch(key)
        if match is None:
            raise CalibrationError(
                f"{path}: tensor name {key!r} is not <batch>, <batch>/<position> or <batch>.<keyword>"
            )
        kind = match["kind"] or ""
        grouped.setdefault(int(match["batch"]), {}).setdefault(kind, {})[match["part"] or ""] = tensor
    if sorted(grouped) != list(range(len(grouped))):
        raise CalibrationError(f"{path}: batches must be numbered 0..n-1 without gaps, got {sorted(grouped)}")
    batches = []
    for index in range(len(grouped)):
        kinds = grouped[index]
        if len(kinds) != 1:
            raise CalibrationError(f"{path}: batch {index} mixes a tensor, positional and keyword arguments")
        kind, parts = next(iter(kinds.items()))
        if kind == "":
            batches.append(parts[""])
        elif kind == ".":
            batches.append(dict(sorted(parts.items())))
        else:
            positions = [str(position) for position in range(len(parts))]
            if set(parts) != set(positions):
                raise CalibrationError(
                    f"{path}: batch {index} has argument positions {sorted(parts)}, not 0..{len(parts) - 1}"
                )
            batches.append(tuple(parts[position] for position in positions))
    return CalibrationSet(batches).batches
